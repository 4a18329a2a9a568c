"""RunConfig: defaults are the "fast default" preset; every problem is reported at once, named and fixable."""

import pytest

from lora_app.config import ConfigError, RunConfig


def test_defaults_are_the_fast_default_recipe():
    c = RunConfig()
    assert (c.lora.r, c.lora.lora_alpha, c.lora.lora_dropout, c.lora.bias) == (16, 32, 0.0, "none")
    assert (c.lora.use_rslora, c.lora.use_dora, c.lora.target_modules) == (True, False, ["all-linear"])
    t = c.training
    assert (
        t.per_device_train_batch_size,
        t.gradient_accumulation_steps,
        t.warmup_steps,
        t.warmup_ratio,
        t.max_steps,
        t.learning_rate,
    ) == (4, 4, 0, 0.1, 30, 3e-4)
    assert t.warmup() == 3  # ceil(30 * 0.1)
    assert c.model.base_model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert c.model.trust_remote_code is False


def test_all_problems_reported_together_with_field_and_fix():
    with pytest.raises(ConfigError) as e:
        RunConfig.build(
            {
                "lora": {"r": 0, "lora_alpha": 0, "lora_dropout": 1.0},
                "training": {"learning_rate": 0, "max_steps": 0, "per_device_train_batch_size": 0, "max_length": 4},
            }
        )
    probs = e.value.problems
    fields = [p.split(":")[0] for p in probs]
    assert fields == [
        "lora.r",
        "lora.lora_alpha",
        "lora.lora_dropout",
        "training.max_steps",
        "training.learning_rate",
        "training.per_device_train_batch_size",
        "training.max_length",
    ]
    assert all("Fix:" in p for p in probs)
    assert "(got 0)" in probs[0]


@pytest.mark.parametrize("r", [1.5, "eight", 2.0])
def test_r_must_be_a_whole_number(r):
    with pytest.raises(ConfigError, match=r"lora\.r: must be a whole number"):
        RunConfig.build({"lora": {"r": r}})


def test_unknown_setting_is_named():
    with pytest.raises(ConfigError, match=r"training\.lr: is not a known setting"):
        RunConfig.build({"training": {"lr": 1e-3}})


def test_target_modules_from_text():
    c = RunConfig.build({"lora": {"target_modules": " q_proj, v_proj ,,"}})
    assert c.lora.target_modules == ["q_proj", "v_proj"]
    assert RunConfig.build({"lora": {"target_modules": ""}}).lora.target_modules is None


def test_yaml_round_trip(tmp_path):
    c = RunConfig.build(
        {"data": {"path": "x.jsonl"}, "lora": {"r": 8, "target_modules": ["q_proj"]}, "training": {"max_steps": 7}}
    )
    c.save(tmp_path / "c.yaml")
    back = RunConfig.load(tmp_path / "c.yaml")
    assert back == c
    assert back.training.max_steps == 7 and back.lora.target_modules == ["q_proj"]


def test_bad_yaml_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.from_yaml("lora: [r: 1")
    with pytest.raises(ConfigError, match="expected a mapping"):
        RunConfig.from_yaml("- 1\n- 2\n")

"""Presets (issue 14, section 3): the reference recipe stays reachable exactly, by YAML, the CLI and the
form; a preset's values sit under the ones given; a bad name is refused naming the field and the fix."""

from __future__ import annotations

import pytest

from lora_app.config import ConfigError, RunConfig
from lora_app.presets import FAST, PRESETS, REFERENCE

REFERENCE_VALUES = dict(
    learning_rate=2e-4,
    warmup_steps=100,
    max_steps=200,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
)


def _training(cfg: RunConfig) -> dict:
    return {k: getattr(cfg.training, k) for k in REFERENCE_VALUES}


def test_the_reference_recipe_is_exactly_the_reference_values_and_the_default():
    cfg = RunConfig.from_yaml("preset: reference recipe\n")
    assert _training(cfg) == REFERENCE_VALUES
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.training.warmup_ratio, cfg.training.warmup()) == (16, 32, None, 100)
    assert cfg.lora.use_rslora is False
    assert cfg == RunConfig()  # the app's defaults are the reference recipe


def test_the_fast_preset_warms_up_a_tenth_of_its_run_and_given_values_win():
    cfg = RunConfig.from_yaml("preset: fast default\ntraining:\n  max_steps: 80\n")
    assert (cfg.training.learning_rate, cfg.training.warmup_ratio, cfg.lora.use_rslora) == (1e-3, 0.1, True)
    assert (cfg.training.max_steps, cfg.training.warmup()) == (80, 8)  # ceil(80 * 0.1), as transformers
    # a run's config.yaml records the values, not the name: it reloads to the same settings
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg and "preset" not in cfg.to_yaml()
    # switching a fast config back to the reference recipe gives the reference exactly
    back = RunConfig.build({"preset": REFERENCE, "lora": {"r": 16}})
    assert _training(back) == REFERENCE_VALUES and back.training.warmup() == 100


def test_an_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ConfigError) as err:
        RunConfig.build({"preset": "fastest"})
    assert err.value.problems == [
        "preset: 'fastest' is not a preset. Fix: choose one of 'reference recipe', 'fast default'."
    ]


def test_cli_preset_and_bad_name(tmp_path, capsys):
    from lora_app.__main__ import main

    (tmp_path / "run.yaml").write_text("preset: reference recipe\n")
    rc = main(["train", "--config", str(tmp_path / "run.yaml"), "--preset", "nope", "--runs", str(tmp_path / "r")])
    assert rc == 2
    assert "preset: 'nope' is not a preset. Fix: choose one of" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_form_values_of_each_preset_build_that_preset():
    from lora_app.ui import form

    for name, values in PRESETS.items():
        flat = {f"{sec}.{k}": v for sec, vals in values.items() for k, v in vals.items()}
        cfg = form.to_config(flat, {"path": "x.jsonl"})
        assert cfg == RunConfig.build({"preset": name, "data": {"path": "x.jsonl"}})
    fast = RunConfig.build({"preset": FAST})
    keys = ["training.warmup_ratio", "training.learning_rate", "lora.modules_to_save"]
    assert form.from_config(fast, keys) == [0.1, 1e-3, ""]


def test_the_form_preset_dropdown_fills_the_widgets(tmp_path):
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs")
    try:
        demo = build_app(AppContext(jm, None, frozenset()))
        (bf,) = [b for b in demo.fns.values() if getattr(b.fn, "__name__", "") == "fill"]
        assert [i.elem_id for i in bf.inputs] == ["preset"] and bf.inputs[0].value == REFERENCE
        labels = [o.label.split(" ")[0] for o in bf.outputs]
        fast = dict(zip(labels, bf.fn(FAST), strict=True))
        assert fast == {
            "gradient_accumulation_steps": 4,
            "learning_rate": 1e-3,
            "lora_alpha": 32,
            "max_steps": 50,
            "per_device_train_batch_size": 4,
            "r": 16,
            "use_rslora": True,
            "warmup_ratio": 0.1,
            "warmup_steps": 0,
        }
        ref = dict(zip(labels, bf.fn(REFERENCE), strict=True))
        assert {k: ref[k] for k in REFERENCE_VALUES} == REFERENCE_VALUES and ref["warmup_ratio"] is None
    finally:
        jm.close()

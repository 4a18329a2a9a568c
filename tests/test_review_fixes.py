"""Bugs a newcomer found: each gets a test with the right value."""

import pytest

from lora_app.config import ConfigError, ModelConfig, RunConfig


def test_empty_prompt_is_refused_before_any_model_loads():
    from lora_app.generate import Generator

    gen = Generator()
    for prompt in ("", "   "):
        with pytest.raises(ConfigError, match=r"prompt: is empty\. Fix:"):
            list(gen.stream(prompt, adapter="/no/such/adapter"))
    assert gen._loaded is None


def test_cli_generate_reports_problems_without_a_traceback(capsys):
    from lora_app.__main__ import main

    assert main(["generate", "--adapter", "/no/such/adapter"]) == 2
    err = capsys.readouterr().err
    assert "Cannot generate:" in err and "adapter: '/no/such/adapter'" in err and "Traceback" not in err


@pytest.mark.parametrize("value", [1.5, 16.5])
def test_ui_form_refuses_a_fractional_r_instead_of_rounding(value):
    from lora_app.ui import form

    with pytest.raises(ConfigError, match=rf"lora\.r: must be a whole number \(got {value}\)"):
        form.to_config({"lora.r": value}, {"path": "x.jsonl"})
    assert form.to_config({"lora.r": 16.0}, {"path": "x.jsonl"}).lora.r == 16


def test_all_linear_means_every_linear_layer(tiny_model):
    from conftest import EXAMPLE_QUOTES
    from lora_app.validate import validate

    cfg = RunConfig.build({"data": {"path": str(EXAMPLE_QUOTES)},
                           "model": {"base_model_name_or_path": str(tiny_model)},
                           "lora": {"target_modules": "all-linear", "r": 2}})
    pre = validate(cfg)
    assert pre.targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    # 2 layers: q(64->64) k(64->32) v(64->32) o(64->64) gate/up(64->128) down(128->64); r=2 x (in + out)
    per_layer = 2 * ((64 + 64) + (64 + 32) * 2 + (64 + 64) + (64 + 128) * 2 + (128 + 64))
    assert pre.trainable == 2 * per_layer


def test_unreachable_hub_says_so_instead_of_not_found(monkeypatch):
    from lora_app import models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ConfigError, match=r"is not on this machine and the Hub .* cannot be reached\. Fix: connect"):
        models.load_model_config(ModelConfig(base_model_name_or_path="nobody/no-such-model"))

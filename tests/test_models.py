"""lora_app.models: target modules and where a model comes from."""

import pytest

from lora_app.config import ConfigError, ModelConfig, RunConfig


def test_all_linear_means_every_linear_layer(tiny_model):
    from conftest import EXAMPLE_QUOTES

    from lora_app.validate import validate

    cfg = RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES)},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {"target_modules": "all-linear", "r": 2},
        }
    )
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

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


def _ctrl():
    from transformers import CTRLConfig

    return CTRLConfig(n_embd=32, n_layer=3, n_head=2, dff=64, vocab_size=100, n_positions=64)


def _gpt2():
    from transformers import GPT2Config

    return GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)


@pytest.mark.parametrize("make,names", [(_ctrl, ["Wk", "Wq", "Wv", "dense", "ffn.0", "ffn.2"]), (_gpt2, None)])
def test_all_linear_selects_exactly_the_linear_layers_where_a_leaf_name_is_shared(make, names):
    """CTRL's feed-forward is an nn.Sequential: its Linear layers are ``ffn.0`` and ``ffn.2``, and
    with leaf names ``0`` and ``2`` PEFT also matched blocks ``h.0`` and ``h.2`` and refused them
    ("Target module ... is not supported"), so all-linear could not train CTRL (found by the
    breaker). Path suffixes where a leaf name is shared make PEFT wrap exactly the linear layers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    from lora_app import models

    m = AutoModelForCausalLM.from_config(make())
    available = models.linear_module_names(m)
    if names is not None:
        assert available == names
    head = m.get_output_embeddings()
    linear = {n for n, x in m.named_modules() if isinstance(x, (torch.nn.Linear, Conv1D)) and x is not head}
    pm = get_peft_model(m, LoraConfig(r=2, target_modules=models.expand_target_modules(["all-linear"], available)))
    wrapped = {n.removeprefix("base_model.model.") for n, x in pm.named_modules() if hasattr(x, "lora_A")}
    assert wrapped == linear and len(linear) >= 8


def test_modules_to_save_is_left_out_of_all_linear(tiny_model):
    """With the default target_modules (all-linear), modules_to_save: [o_proj] was refused as "also
    in target_modules"; a layer trained in full is now left out of the expansion. A list the user
    wrote with the same name is still refused, naming both fields."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.validate import validate

    raw = {
        "data": {"path": str(EXAMPLE_QUOTES)},
        "model": {"base_model_name_or_path": str(tiny_model)},
        "lora": {"r": 2, "modules_to_save": ["o_proj"]},
    }
    pre = validate(RunConfig.build(raw))
    assert pre.targets == ["down_proj", "gate_proj", "k_proj", "q_proj", "up_proj", "v_proj"]
    # 2 layers: LoRA r=2 on q k v gate up down, plus o_proj (64x64, no bias) trained in full
    lora = 2 * ((64 + 64) + (64 + 32) * 2 + (64 + 128) * 2 + (128 + 64))
    assert pre.trainable == 2 * (lora + 64 * 64)
    raw["lora"]["target_modules"] = ["q_proj", "o_proj"]
    with pytest.raises(ConfigError, match=r"lora\.modules_to_save: o_proj names modules that target_modules wraps \(q_proj, o_proj\)"):
        validate(RunConfig.build(raw))

"""LoRA variants (issue 14, section 4): rsLoRA, DoRA, init_lora_weights, modules_to_save and per-module
rank/alpha patterns reach the PeftModel, are counted right before training, train, save and reload,
are refused with a message naming the field and the fix, and are listed in the model card."""

from __future__ import annotations

import math

import pytest
import torch

from lora_app import models
from lora_app.card import render_card
from lora_app.config import ConfigError, ModelConfig, RunConfig
from lora_app.events import read_events
from lora_app.train import train
from lora_app.validate import preflight

# The tiny Llama: hidden 64, 4 heads of 16, 2 kv heads (k/v_proj 64 -> 32), 2 layers.
QV = ["q_proj", "v_proj"]


def make_run(tmp_path, tiny_model, lora: dict, steps: int = 4, model: dict | None = None, **training):
    from conftest import EXAMPLE_QUOTES

    rd = tmp_path / "run"
    rd.mkdir()
    t = dict(max_steps=steps, warmup_steps=0, learning_rate=3e-2, max_length=48, per_device_train_batch_size=8)
    t.update(gradient_accumulation_steps=1, save_steps=100, eval_rows=8, eval_steps=steps)
    t.update(training)
    cfg = RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 40},
            "model": {"base_model_name_or_path": str(tiny_model), "precision": "float32", **(model or {})},
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": QV, **lora},
            "training": t,
        }
    )
    cfg.save(rd / "config.yaml")
    return rd, cfg


def trained(rd) -> dict:
    keep: dict = {}
    assert train(rd, keep=keep) == 0, [e for e in read_events(rd)[0] if e["type"] == "status"][-1]
    return keep


def logits(model, tok) -> torch.Tensor:
    ids = tok("Two things are infinite: the universe", return_tensors="pt")["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_every_option_reaches_the_peft_model_and_the_count_is_the_real_one(tmp_path, tiny_model):
    lora = dict(
        use_rslora=True,
        use_dora=True,
        init_lora_weights="gaussian",
        modules_to_save="model.norm",
        rank_pattern={"q_proj": 4},
        alpha_pattern={"layers.1.self_attn.v_proj": 4},
    )
    rd, cfg = make_run(tmp_path, tiny_model, lora, steps=2)
    _, pf = preflight(cfg)
    keep = trained(rd)
    pm = keep["model"]
    pc = pm.peft_config["default"]
    assert (pc.use_rslora, pc.use_dora, pc.init_lora_weights) == (True, True, "gaussian")
    assert set(pc.modules_to_save) == {"model.norm"}
    assert pc.rank_pattern == {"q_proj": 4} and pc.alpha_pattern == {"layers.1.self_attn.v_proj": 4}
    layers = pm.base_model.model.model.layers
    assert layers[0].self_attn.q_proj.lora_A["default"].weight.shape == (4, 64)  # rank_pattern
    assert layers[0].self_attn.v_proj.lora_A["default"].weight.shape == (8, 64)
    # rsLoRA: alpha / sqrt(r); alpha_pattern only on layer 1's v_proj
    assert layers[0].self_attn.v_proj.scaling["default"] == pytest.approx(16 / 8**0.5)
    assert layers[1].self_attn.v_proj.scaling["default"] == pytest.approx(4 / 8**0.5)
    assert layers[0].self_attn.q_proj.scaling["default"] == pytest.approx(16 / 4**0.5)
    real = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    # LoRA: q 4*(64+64), v 8*(64+32) per layer; DoRA magnitudes: 64 + 32 per layer; norm copy: 64
    assert real == 2 * (4 * 128 + 8 * 96) + 2 * (64 + 32) + 64 == 2816
    assert pf.trainable == real  # counted on the meta skeleton before anything was loaded
    info = next(e for e in read_events(rd)[0] if e.get("trainable_params") is not None)
    assert info["trainable_params"] == real
    assert (
        "targets q_proj,v_proj, rsLoRA, DoRA, init gaussian, modules_to_save model.norm, rank_pattern 1 / "
        in (info["message"])
    )


def test_count_parameters_adds_dora_magnitudes_and_saved_module_copies(tiny_model):
    mc = models.load_model_config(ModelConfig(base_model_name_or_path=str(tiny_model)))
    base = RunConfig.build({"lora": {"r": 8}}).lora
    plain, total = models.count_parameters(mc, base, QV)[:2]
    assert plain == 2 * 8 * (128 + 96)
    dora, _ = models.count_parameters(mc, base.model_copy(update={"use_dora": True}), QV)[:2]
    assert dora - plain == 2 * (64 + 32)
    saved, total2 = models.count_parameters(mc, base.model_copy(update={"modules_to_save": ["model.norm"]}), QV)[:2]
    assert (saved - plain, total2 - total) == (64, 64)  # a trainable copy beside the frozen original
    # PEFT matches the end of the path: "norm" is also each layer's input_ and post_attention_layernorm
    every, _ = models.count_parameters(mc, base.model_copy(update={"modules_to_save": ["norm"]}), QV)[:2]
    assert every - plain == 5 * 64


def test_counting_a_huge_r_allocates_nothing(tiny_model):
    """Check counts the parameters of any r a visitor types: PEFT built each LoRA layer on the CPU
    before moving it to the meta skeleton, so r=10**9 tried to allocate 256 GB (RuntimeError, an
    error page) and r=20000 on SmolLM2 took 16 s and +0.5 GB of the server's memory per Check."""
    import resource

    mc = models.load_model_config(ModelConfig(base_model_name_or_path=str(tiny_model)))
    small = RunConfig.build({"lora": {"r": 8, "lora_alpha": 8}}).lora
    for dora in (False, True):  # PEFT's lazy imports first (+56 MB when this test ran alone)
        models.count_parameters(mc, small.model_copy(update={"use_dora": dora}), QV)
    for r in (10**9, 10**12):
        lora = RunConfig.build({"lora": {"r": r, "lora_alpha": 8}}).lora
        for dora in (False, True):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            counted = models.count_parameters(mc, lora.model_copy(update={"use_dora": dora}), QV)[0]
            assert counted == 2 * r * (128 + 96) + (2 * (64 + 32) if dora else 0)
            assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB: no peak grew


@pytest.mark.parametrize("variant", ["use_dora", "use_rslora"])
def test_dora_and_rslora_train_save_and_reload(tmp_path, tiny_model, variant):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_app.generate import Generator

    rd, _ = make_run(tmp_path, tiny_model, {variant: True}, steps=6)
    keep = trained(rd)
    losses = [e["loss"] for e in read_events(rd)[0] if e["type"] == "log"]
    assert losses[-1] < losses[0]
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    again = PeftModel.from_pretrained(base, rd / "adapter")
    assert getattr(again.peft_config["default"], variant) is True
    tok = keep["tokenizer"]
    assert torch.allclose(logits(keep["model"], tok), logits(again, tok), atol=1e-5)
    loaded = Generator().load(adapter=str(rd / "adapter"), base=str(tiny_model))  # the Try tab's path
    assert getattr(loaded.model.peft_config["default"], variant) is True
    assert "| " + variant + " | True |" in (rd / "adapter" / "README.md").read_text()


def test_dora_on_a_4bit_base_trains(tmp_path, tiny_model):
    pytest.importorskip("bitsandbytes")
    rd, _ = make_run(tmp_path, tiny_model, {"use_dora": True}, steps=3, model={"quantization": "4bit"})
    pm = trained(rd)["model"]
    q = pm.base_model.model.model.layers[0].self_attn.q_proj
    assert type(q.base_layer).__name__ == "Linear4bit" and q.lora_magnitude_vector["default"].weight.shape == (64,)
    losses = [e["loss"] for e in read_events(rd)[0] if e["type"] == "log"]
    assert len(losses) == 3 and all(map(math.isfinite, losses))


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_pissa_and_olora_save_an_adapter_of_the_unchanged_base(tmp_path, tiny_model, init):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rd, _ = make_run(tmp_path, tiny_model, {"init_lora_weights": init}, steps=3)
    keep = trained(rd)
    tok = keep["tokenizer"]
    want = logits(keep["model"], tok)  # the trained model: residual base + A B
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    plain = logits(base, tok)
    again = PeftModel.from_pretrained(base, rd / "adapter")  # the original base + (A B - A0 B0)
    assert again.peft_config["default"].r == 16  # PEFT's conversion: twice the rank
    got = logits(again, tok)
    assert not torch.allclose(plain, want, atol=1e-3)  # training changed the outputs
    assert torch.allclose(got, want, atol=1e-4)


def _problems(tmp_path, tiny_model, lora: dict, model: dict | None = None) -> list[str]:
    from conftest import EXAMPLE_QUOTES

    raw = {
        "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 40},
        "model": {"base_model_name_or_path": str(tiny_model), **(model or {})},
        "lora": {"target_modules": QV, **lora},
    }
    with pytest.raises(ConfigError) as err:
        preflight(raw)
    return err.value.problems


def test_bad_values_are_refused_with_the_field_and_the_fix(tmp_path, tiny_model):
    p = _problems(tmp_path, tiny_model, {"init_lora_weights": "xavier", "rank_pattern": {"q_proj": 0}})
    assert any(m.startswith("lora.init_lora_weights: ") and "pissa_niter_N" in m and "Fix: choose" in m for m in p)
    assert any(m.startswith("lora.rank_pattern.q_proj: ") and "Fix: map module names" in m for m in p)
    p = _problems(
        tmp_path,
        tiny_model,
        {"rank_pattern": {"k_proj": 4, "q_proj": 2}, "alpha_pattern": {"layers.9.self_attn.q_proj": 2}},
    )
    assert len(p) == 2
    assert p[0].startswith("lora.rank_pattern: 'k_proj' matches no module LoRA wraps here (targets q_proj, v_proj)")
    assert "Fix: key by a targeted module's name" in p[0] and "'model.layers.0.self_attn.q_proj'" in p[0]
    assert p[1].startswith("lora.alpha_pattern: 'layers.9.self_attn.q_proj' matches no module")
    p = _problems(tmp_path, tiny_model, {"modules_to_save": "lm_hed,q_proj"})
    assert p == [
        "lora.modules_to_save: lm_hed is not a module of this model. Fix: name modules such as lm_head or "
        "embed_tokens, or leave it empty.",
        "lora.modules_to_save: q_proj names modules that target_modules wraps (q_proj, v_proj): a module is "
        "either wrapped by LoRA or trained in full. Fix: remove it from one of the two, or name modules LoRA does "
        "not wrap, such as lm_head.",
    ]
    # PEFT matches the end of a module's path: "proj" (its TypeError) and "self_attn.q_proj" (q_proj
    # quietly trained in full) name wrapped modules too (found by the breaker).
    for name in ("proj", "self_attn.q_proj"):
        p = _problems(tmp_path, tiny_model, {"modules_to_save": [name]})
        assert p == [f"lora.modules_to_save: {name} names modules that target_modules wraps (q_proj, v_proj)" + p[0].split(")", 1)[1]], p
    # A container: PEFT's own error (NoMatchingPeftModuleError), as a message, not a traceback.
    p = _problems(tmp_path, tiny_model, {"modules_to_save": ["layers"]})
    assert len(p) == 1 and p[0].startswith(f"lora: PEFT cannot apply these LoRA settings to {tiny_model} ("), p
    assert p[0].endswith("not containers such as layers)."), p
    p = _problems(tmp_path, tiny_model, {"init_lora_weights": "pissa_niter_1000000", "alpha_pattern": {"q_proj": 1e308}})
    assert [m.split(":")[0] for m in p] == ["lora.init_lora_weights", "lora.alpha_pattern.q_proj"], p
    assert "pissa_niter_N with N from 1 to 64" in p[0] and "less than or equal to 100000" in p[1], p
    p = _problems(tmp_path, tiny_model, {"init_lora_weights": "pissa_niter_4"}, {"quantization": "8bit"})
    assert any(
        m.startswith("lora.init_lora_weights: pissa_niter_4 computes A and B from the base model's float weights")
        and "loaded 8bit. Fix: set model.quantization to none" in m
        for m in p
    )
    if models.device_kind() == "cpu":
        p = _problems(tmp_path, tiny_model, {"use_dora": True}, {"quantization": "8bit"})
        assert p == [
            "lora.use_dora: DoRA on an 8-bit base fails in bitsandbytes' CPU backend. Fix: set model.quantization "
            "to 4bit or none, or turn use_dora off."
        ]
    p = _problems(tmp_path, tiny_model, {"init_lora_weights": "olora", "use_dora": True})
    assert (
        p[0].startswith("lora.init_lora_weights: olora with use_dora cannot be saved") and "Fix: turn use_dora" in p[0]
    )


def test_a_rank_wider_than_every_layer_it_applies_to_is_refused_before_any_weights_load(tmp_path, tiny_model):
    """The tiny Llama's q_proj is 64 -> 64 and v_proj 64 -> 32: ranks above 64 (r) or above 32 (a
    rank_pattern for v_proj) cannot be used by any update they apply to. Found by a visitor's r=10**6
    that Check accepted and Start queued, to fill the training process's memory."""
    p = _problems(tmp_path, tiny_model, {"r": 10**6, "lora_alpha": 8, "rank_pattern": {"v_proj": 33, "q_proj": 64}})
    assert p == [
        "lora.r: 1,000,000 is wider than any layer it applies to (an update of a layer of shape [out, in] has rank "
        "at most min(in, out); the widest here is 64, model.layers.0.self_attn.q_proj): the rest would only cost "
        "memory and time. Fix: set it to at most 64 (8-64 is usual).",
        "lora.rank_pattern.v_proj: 33 is wider than any layer it applies to (an update of a layer of shape [out, in] "
        "has rank at most min(in, out); the widest here is 32, model.layers.0.self_attn.v_proj): the rest would only "
        "cost memory and time. Fix: set it to at most 32 (8-64 is usual).",
    ]
    from conftest import EXAMPLE_QUOTES

    raw = {
        "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 40},
        "model": {"base_model_name_or_path": str(tiny_model)},
        "lora": {"target_modules": QV, "r": 64, "lora_alpha": 8, "rank_pattern": {"v_proj": 32}},
    }
    assert preflight(raw)[1].trainable == 2 * 64 * (64 + 64) + 2 * 32 * (64 + 32)  # the widest ranks pass


def test_yaml_reads_patterns_and_true_as_the_default_init():
    cfg = RunConfig.from_yaml(
        "lora:\n  init_lora_weights: true\n  use_dora: true\n  rank_pattern:\n    q_proj: 8\n"
        "  alpha_pattern: {v_proj: 12.5}\n  modules_to_save: [lm_head]\n"
    )
    lo = cfg.lora
    assert (lo.init_lora_weights, lo.use_dora, lo.rank_pattern, lo.alpha_pattern) == (
        "default",
        True,
        {"q_proj": 8},
        {"v_proj": 12.5},
    )
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg
    pc = models.lora_config(lo, QV)
    assert (pc.init_lora_weights, pc.use_dora, pc.modules_to_save) == (True, True, ["lm_head"])


def test_the_card_lists_every_variant():
    cfg = RunConfig.build(
        {
            "lora": {
                "use_rslora": True,
                "init_lora_weights": "pissa",
                "modules_to_save": ["lm_head"],
                "rank_pattern": {"q_proj": 8},
                "alpha_pattern": {"q_proj": 4},
            },
            "training": {"warmup_ratio": 0.1, "max_steps": 60},
        }
    )
    card = render_card(cfg, "HuggingFaceTB/SmolLM2-135M-Instruct", QV, 1.0, 60)
    for row in (
        "| use_rslora | True |",
        "| use_dora | False |",
        "| init_lora_weights | pissa (converted at save to a plain LoRA of rank 2r on the unchanged base) |",
        "| modules_to_save | lm_head |",
        "| rank_pattern | q_proj: 8 |",
        "| alpha_pattern | q_proj: 4 |",
        "| warmup_steps | 6 (warmup_ratio 0.1) |",
    ):
        assert row in card, row

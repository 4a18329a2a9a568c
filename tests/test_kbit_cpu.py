"""The reference recipe's quantized paths on CPU (bitsandbytes' CPU backend): an 8-bit base and a
4-bit nf4 + double-quantization base (QLoRA), each trained with LoRA, saved, reloaded."""

import logging

import pytest
import torch
from test_train import make_run

from lora_app.config import ModelConfig
from lora_app.events import read_events
from lora_app.models import load_base_model, quantization_problem
from lora_app.train import train


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_base_trains_saves_and_reloads_on_cpu(tmp_path, tiny_model, quant):
    import bitsandbytes as bnb
    import yaml
    from peft import PeftModel

    rd = make_run(tmp_path, tiny_model, max_steps=8, save_steps=8)
    cfg = yaml.safe_load((rd / "config.yaml").read_text())
    cfg["model"]["quantization"] = quant
    # float32 compute: the exact reload check below needs it on every CPU (auto is bf16 on a CPU
    # with AVX512-BF16, float32 on an AVX2 one); test_precision.py covers bf16 runs.
    cfg["model"]["precision"] = "float32"
    (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    keep = {}
    assert train(rd, keep=keep) == 0
    events, _ = read_events(rd)
    assert [e["status"] for e in events if e["type"] == "status"][-1] == "finished"
    info = next(e for e in events if e.get("trainable_params"))
    assert info["device"] == "cpu" and f"quantization {quant}" in info["message"]
    losses = [e["loss"] for e in events if e["type"] == "log"]
    assert len(losses) == 8 and all(l == l for l in losses)  # no NaN through the int8 / nf4 matmuls

    trained = keep["model"]
    q = trained.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    if quant == "8bit":
        assert isinstance(q, bnb.nn.Linear8bitLt) and q.weight.dtype == torch.int8
    else:
        assert isinstance(q, bnb.nn.Linear4bit) and q.weight.quant_state.quant_type == "nf4"
        assert q.weight.quant_state.nested  # double quantization: the absmax values are quantized too
    lora_b = trained.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_b.abs().max().item() > 0  # LoRA really trained on top of the quantized base

    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    trained.eval()
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        base = load_base_model(
            ModelConfig(base_model_name_or_path=str(tiny_model), quantization=quant, precision="float32"),
            str(tiny_model),
            "cpu",
            for_training=True,
        )
        base.eval()
        base_logits = base(input_ids=ids).logits
        got = PeftModel.from_pretrained(base, rd / "adapter").eval()(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-4
    assert (got - base_logits).abs().max().item() > 1e-3


def test_quantization_allowed_on_cpu_refused_elsewhere_auto_stays_none():
    from lora_app.models import effective_quantization

    for q in ("8bit", "4bit"):
        assert quantization_problem(ModelConfig(quantization=q), "cpu") is None
        assert "model.quantization" in quantization_problem(ModelConfig(quantization=q), "mps")
    assert effective_quantization(ModelConfig(quantization="auto"), "cpu") == "none"
    assert effective_quantization(ModelConfig(quantization="8bit"), "cpu") == "8bit"


def test_expected_bitsandbytes_lines_are_dropped_others_kept(caplog):
    import lora_app  # noqa: F401  (installs the filter)

    caplog.set_level(logging.WARNING)
    ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    ops.warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...",
        "No module named 'kernels'",
    )
    logging.getLogger("bitsandbytes.autograd._functions").warning(
        "MatMul8bitLt: inputs will be cast from %s to float16 during quantization", torch.float32
    )
    ops.warning("something else went wrong")
    assert [r.getMessage() for r in caplog.records] == ["something else went wrong"]


def test_4bit_cpu_gradients_survive_an_eval_pass(tiny_model):
    """bitsandbytes repacks a 4-bit CPU weight for a fused AVX512-BF16 kernel the first time the
    layer runs in eval mode without grad (the packing probe, the held-out evaluation), and that
    kernel has no backward: LoRA weights below it then got wrong gradients. Loading for training
    keeps the trainable layout, so the gradients match those of a model that never ran in eval."""
    from peft import get_peft_model

    from lora_app.config import LoraSettings
    from lora_app.models import lora_config

    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 8, 9]])

    def grads(eval_first: bool):
        torch.manual_seed(0)
        m = load_base_model(
            ModelConfig(base_model_name_or_path=str(tiny_model), quantization="4bit"),
            str(tiny_model),
            "cpu",
            for_training=True,
        )
        m = get_peft_model(m, lora_config(LoraSettings(r=4, lora_dropout=0.0), ["q_proj", "v_proj"]))
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)  # lora_B = 0 would give lora_A no gradient at all
        if eval_first:
            m.eval()
            with torch.no_grad():
                m(input_ids=ids)
        m.train()
        m(input_ids=ids, labels=ids).loss.backward()
        return {n: p.grad for n, p in m.named_parameters() if p.requires_grad}

    plain, after_eval = grads(False), grads(True)
    assert plain.keys() == after_eval.keys() and plain
    assert all(g is not None for g in plain.values())
    missing = [n for n, g in after_eval.items() if g is None]
    assert not missing, f"no gradient after an eval pass: {missing}"
    worst = max((plain[n] - after_eval[n]).abs().max().item() for n in plain)
    assert worst < 1e-5, worst

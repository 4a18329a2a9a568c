"""Training on a tiny local model: loss goes down, the adapter reloads exactly, checkpointing keeps grads."""

import json

import pytest
import torch

from lora_app.config import RunConfig
from lora_app.events import read_events
from lora_app.train import train


def make_run(tmp_path, tiny_model, **training):
    from conftest import EXAMPLE_QUOTES

    rd = tmp_path / "run"
    rd.mkdir()
    t = dict(
        max_steps=16,
        warmup_steps=0,
        learning_rate=3e-2,
        max_length=48,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        save_steps=8,
    )
    t.update(training)
    # A random tiny model learns little through q/v alone: train every linear layer on a few rows.
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 32},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {
                "r": 8,
                "lora_alpha": 16,
                "lora_dropout": 0.0,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            },
            "training": t,
        }
    ).save(rd / "config.yaml")
    return rd


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_loss_goes_down_and_adapter_reloads_exactly(tmp_path, tiny_model, packing):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rd = make_run(tmp_path, tiny_model, packing=packing)
    cfg = RunConfig.load(rd / "config.yaml")
    # float32: the trained model keeps the Trainer's bf16 autocast, the reloaded one does not
    # (test_precision.py covers bf16 runs)
    cfg.model.precision = "float32"
    cfg.save(rd / "config.yaml")
    keep = {}
    assert train(rd, keep=keep) == 0
    events, _ = read_events(rd)
    losses = [e["loss"] for e in events if e["type"] == "log"]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.05, losses
    statuses = [e["status"] for e in events if e["type"] == "status"]
    # Several "loading" events (tokenizing, loading the weights) say what a long step is doing.
    assert [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]] == [
        "loading",
        "training",
        "saving",
        "finished",
    ]
    assert [e["step"] for e in events if e["type"] == "saved"] == [8, 16]

    ad = rd / "adapter"
    cfg = json.loads((ad / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["target_modules"] and len(cfg["target_modules"]) == 7
    assert cfg["base_model_name_or_path"] == str(tiny_model.resolve())
    assert (ad / "adapter_model.safetensors").stat().st_size > 0
    assert "base_model:" in (ad / "README.md").read_text()

    trained = keep["model"].eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        want = trained(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        base_logits = base(input_ids=ids).logits
        got = PeftModel.from_pretrained(base, ad).eval()(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-5
    assert (got - base_logits).abs().max().item() > 1e-3  # the adapter really changes the model


def test_gradient_checkpointing_gives_every_lora_weight_a_gradient(tiny_model, tmp_path):
    """Through the Trainer's own option (activation_checkpointing, non-reentrant, as train.py sets
    it): checkpointing is on, and after two steps every LoRA weight has moved (lora_B starts at 0,
    so lora_A's gradient is 0 until one step is taken; a checkpointed block that gave no gradient
    would leave its weights at their start)."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from lora_app.config import LoraSettings
    from lora_app.models import lora_config
    from lora_app.text import PaddingCollator, TokenizedRows

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(model, lora_config(LoraSettings(r=4, lora_dropout=0.0), ["q_proj", "v_proj", "down_proj"]))
    start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    assert len(start) == 2 * 3 * 2  # A and B x 3 modules x 2 layers
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=2,
        learning_rate=0.01,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": False},
    )
    rows = TokenizedRows([[5, 17, 42, 99, 7, 3, 8, 9], [11, 12, 13, 14, 2]])
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=PaddingCollator(0))
    trainer.train()  # (the Trainer turns checkpointing on when training starts)
    assert model.base_model.model.model.gradient_checkpointing
    still = [n for n, p in model.named_parameters() if "lora_" in n and torch.equal(p.detach(), start[n])]
    assert still == []


def test_bad_target_module_fails_the_run_with_the_list(tmp_path, tiny_model):
    rd = make_run(tmp_path, tiny_model)
    cfg = RunConfig.load(rd / "config.yaml")
    cfg.lora.target_modules = ["q_proj", "query_key_value", "c_attn"]
    cfg.save(rd / "config.yaml")
    assert train(rd) == 1
    events, _ = read_events(rd)
    msg = events[-1]["message"]
    assert events[-1]["status"] == "failed"
    assert "query_key_value, c_attn are not in this model" in msg and "q_proj, up_proj, v_proj" in msg


def test_an_opt_run_with_packing_on_pads_instead(tmp_path, tiny_opt):
    from conftest import EXAMPLE_QUOTES

    from lora_app.config import RunConfig
    from lora_app.train import train

    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
            "model": {"base_model_name_or_path": str(tiny_opt)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": {
                "max_steps": 2,
                "save_steps": 2,
                "max_length": 32,
                "per_device_train_batch_size": 4,
                "packing": True,
            },
        }
    ).save(rd / "config.yaml")
    assert train(rd) == 0
    events, _ = read_events(rd)
    off = [e for e in events if e.get("packing") is False]
    assert len(off) == 1 and "opt" in off[0]["message"]
    assert "| packing | False |" in (rd / "adapter" / "README.md").read_text(encoding="utf-8")


def test_each_logged_step_counts_the_tokens_it_trained_on(tmp_path, tiny_model):
    """tokens_per_s read 204, 51, 0, 217, ... on a small run (found by the newcomer): tokens were
    counted when a batch was collated, and accelerate collates one ahead, so step 1 was credited
    with two batches (354 tokens, more than 4 rows x 48 can hold) and the step after an epoch's
    end with none. Counted at use: every step between 1 and 4 x 48 label tokens, over 2 epochs."""
    rd = make_run(tmp_path, tiny_model, max_steps=9, save_steps=9, per_device_train_batch_size=4)
    assert train(rd) == 0
    logs = [e for e in read_events(rd)[0] if e["type"] == "log"]
    assert [e["step"] for e in logs] == list(range(1, 10))
    deltas = [b["tokens"] - a["tokens"] for a, b in zip([{"tokens": 0}, *logs], logs, strict=False)]
    assert all(0 < d <= 4 * 48 for d in deltas), deltas
    assert all(e["tokens_per_s"] > 0 for e in logs), [e["tokens_per_s"] for e in logs]

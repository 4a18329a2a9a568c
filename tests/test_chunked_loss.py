"""The chunked LM-head loss (lora_app/chunked_loss.py): the model's own loss and gradient, without the
full logits, for every architecture it is used on, and through the real training path."""

import pytest
import torch

from lora_app import chunked_loss
from lora_app.config import RunConfig
from lora_app.events import read_events
from lora_app.train import train

VOCAB = 97


def tiny(kind: str):
    """A tiny random ``kind`` causal LM wrapped in LoRA on every attention projection it has."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    dims = {
        "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
        "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32),
    }.get(
        kind,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, vocab_size=VOCAB, pad_token_id=0, **dims))
    targets = {"gpt2": ["c_attn"], "phi3": ["qkv_proj"], "gpt_neox": ["query_key_value"]}.get(kind, ["q_proj", "v_proj"])
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    for n, p in model.named_parameters():  # B = 0 at init would make every LoRA gradient but B's zero
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def batch():
    """Two rows of 12 positions, one of them two packed rows (position ids restart, -100 between)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    labels = ids.clone()
    labels[0, 5] = -100  # the first token of the second packed row predicts nothing across the seam
    labels[1, 9:] = -100  # padding
    pos = torch.tensor([list(range(5)) + list(range(7)), list(range(12))])
    return {"input_ids": ids, "labels": labels, "position_ids": pos}


def loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return float(loss), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", sorted(chunked_loss.ARCHS - {"smollm3"}))
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_the_model_s_own_loss_and_gradient_for_every_architecture(kind, chunk):
    model = tiny(kind)
    b = batch()
    n = int((b["labels"][:, 1:] != -100).sum()) + 5  # a step's count is larger than one batch's
    assert chunked_loss.why_not(model, 1, False) is None
    want, want_g = loss_and_grads(model, lambda: model(**b, num_items_in_batch=n).loss)
    got, got_g = loss_and_grads(model, lambda: chunked_loss.causal_lm_loss(model, b, n, chunk=chunk))
    assert got == pytest.approx(want, rel=1e-5)
    assert want_g.keys() == got_g.keys() and len(got_g) >= 4
    for name, g in want_g.items():
        torch.testing.assert_close(got_g[name], g, rtol=1e-4, atol=1e-7, msg=name)
    # without a step count: this batch's own mean, as the model gives it
    assert float(chunked_loss.causal_lm_loss(model, b)) == pytest.approx(float(model(**b).loss), rel=1e-5)


def test_no_tensor_of_all_positions_by_the_vocabulary_is_kept_for_the_backward_pass():
    model = tiny("llama").train()
    b = batch()
    positions = b["input_ids"].numel()

    def saved_logit_sizes(fn) -> list[int]:
        """Sizes of the tensors autograd keeps for the backward pass whose last dimension is the vocabulary."""
        shapes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.shape) or t, lambda t: t):
            fn()
        return [s.numel() for s in shapes if s and s[-1] == VOCAB]

    stock = saved_logit_sizes(lambda: model(**b).loss)
    assert max(stock) >= positions * VOCAB  # the logits (or their log-softmax) wait for the backward pass
    assert saved_logit_sizes(lambda: chunked_loss.causal_lm_loss(model, b, chunk=4)) == []  # only [24, 32] is kept


def test_where_it_is_not_used_the_log_says_why():
    model = tiny("llama")
    assert "more than one process" in chunked_loss.why_not(model, 2, False)
    assert "Liger" in chunked_loss.why_not(model, 1, True)
    model.get_base_model().get_output_embeddings().weight.requires_grad_(True)  # as modules_to_save: [lm_head]
    assert chunked_loss.why_not(model, 1, False) == "the LM head is trained (modules_to_save)"
    assert "gpt_neox is not among" in chunked_loss.why_not(tiny("gpt_neox"), 1, False)


def run_on(tmp_path, tiny_model, name: str, chunked: bool):
    from conftest import EXAMPLE_QUOTES

    rd = tmp_path / name
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 48},
            "model": {"base_model_name_or_path": str(tiny_model), "precision": "float32"},
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": dict(
                max_steps=6,
                warmup_steps=0,
                learning_rate=3e-2,
                max_length=48,
                per_device_train_batch_size=4,
                gradient_accumulation_steps=2,
                merge_accumulation=False,  # two micro-batches: the step's token count divides both
                chunked_loss=chunked,
            ),
        }
    ).save(rd / "config.yaml")
    keep: dict = {}
    assert train(rd, keep=keep) == 0
    events, _ = read_events(rd)
    losses = [e["loss"] for e in events if e["type"] == "log"]
    info = next(e for e in events if "chunked_loss" in e)
    weights = {n: p.detach().clone() for n, p in keep["model"].named_parameters() if "lora_" in n}
    return losses, info, weights


def test_a_training_run_gives_the_same_losses_and_adapter_with_it_on_and_off(tmp_path, tiny_model):
    on_losses, on_info, on_w = run_on(tmp_path, tiny_model, "on", True)
    off_losses, off_info, off_w = run_on(tmp_path, tiny_model, "off", False)
    assert on_info["chunked_loss"] is True and on_info["message"] == "chunked loss: on"
    assert off_info["chunked_loss"] is False and off_info["message"] == "chunked loss: off (training.chunked_loss)"
    assert len(on_losses) == 6 and on_losses == pytest.approx(off_losses, rel=1e-4)
    assert on_w.keys() == off_w.keys() and len(on_w) == 8
    assert min(float(w.abs().max()) for n, w in on_w.items() if "lora_B" in n) > 1e-3  # B starts at 0: it trained
    # Per tensor by relative norm (measured at most 2.4e-6), not element-wise: AdamW's sign-like
    # first steps let one weight whose gradient is rounding noise move by a noise-decided amount
    # (test_batching's merged-accumulation test failed on another CPU that way).
    rel = {n: float((on_w[n] - off_w[n]).norm() / on_w[n].norm()) for n in on_w}
    assert max(rel.values()) < 1e-4, rel

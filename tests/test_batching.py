"""When a step's accumulation micro-batches are merged into one forward, and that the merge
leaves the training result unchanged."""

from types import SimpleNamespace

import pytest

from lora_app.batching import activation_bytes_per_token, plan_step
from lora_app.config import RunConfig
from lora_app.events import read_events

GIB = 2**30
SMOLLM2 = SimpleNamespace(hidden_size=576, num_hidden_layers=30, intermediate_size=1536, vocab_size=49152)


def test_activation_estimate_for_smollm2():
    # 4 x (30 x (10 x 576 + 6 x 1536) + 3 x 49152) bytes; measured growth was ~2.4 MB per token
    assert activation_bytes_per_token(SMOLLM2) == 4 * (30 * (5760 + 9216) + 147456) == 2_386_944


def test_merges_on_cpu_when_the_worst_batch_fits():
    lengths = [30] * 100 + [128] * 3
    plan = plan_step(lengths, 4, 4, device="cpu", merge=True, bytes_per_token=2_386_944, free_bytes=20 * GIB)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps, plan.merged) == (16, 1, True)
    # worst case = the 16 longest rows: 3 x 128 + 13 x 30 = 774 tokens = 1.7 GiB
    assert "1.7 GiB" in plan.message


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(device="cuda", merge=True, free_bytes=8 * GIB), "over half of the 8.0 GiB free on the GPU"),
        (dict(device="cpu", merge=False, free_bytes=20 * GIB), "4 micro-batches of 4 rows"),
        (dict(device="cpu", merge=True, free_bytes=4 * GIB), "over a third of the 4.0 GiB free"),
    ],
)
def test_keeps_the_split_on_gpu_when_off_or_when_memory_is_short(kw, why):
    # 16 x 256 tokens x 2.4 MB = 9.1 GiB, 8 x 256 = 4.6 GiB: neither fits in half of 8 GiB or a third of 4
    lengths = [256] * 64
    plan = plan_step(lengths, 4, 4, bytes_per_token=2_386_944, **kw)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps, plan.merged) == (4, 4, False)
    assert why in plan.message


@pytest.mark.parametrize("device, free, share", [("cpu", 16, "a third"), ("cuda", 12, "half")])
def test_merges_in_two_when_one_forward_would_not_fit(device, free, share):
    """Two forwards of 8 rows before four of 4: fewer forwards read the base weights fewer times
    (session 8: 2.78 s/step for 2 x 8 vs 3.39 s for 4 x 4 on the 2-core CPU)."""
    lengths = [256] * 64  # 16 rows: 9.1 GiB; 8 rows: 4.6 GiB
    plan = plan_step(lengths, 4, 4, device=device, merge=True, bytes_per_token=2_386_944, free_bytes=free * GIB)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps, plan.merged) == (8, 2, True)
    assert plan.message.startswith("2 forwards of 8 rows per step")
    assert "at most 4.6 GiB" in plan.message and f"9.1 GiB, over {share} of the {free}.0 GiB free" in plan.message


def test_merges_into_forwards_of_equal_rows_only():
    """batch 4 x accumulation 3 = 12 rows: one forward of 12, else two of 6, else three of 4;
    batch 3 x accumulation 2 = 6 rows: one of 6, else the user's two of 3 (no forward of fewer rows)."""
    kw = dict(device="cpu", merge=True, bytes_per_token=2**20)
    lengths = [1024] * 30  # 1 GiB a row
    assert [
        (p.per_device_train_batch_size, p.gradient_accumulation_steps)
        for p in (plan_step(lengths, 4, 3, free_bytes=g * 3 * GIB, **kw) for g in (12, 6, 5, 4, 3))
    ] == [(12, 1), (6, 2), (4, 3), (4, 3), (4, 3)]
    assert [
        (p.per_device_train_batch_size, p.gradient_accumulation_steps)
        for p in (plan_step(lengths, 3, 2, free_bytes=g * 3 * GIB, **kw) for g in (6, 5))
    ] == [(6, 1), (3, 2)]


def test_merges_on_gpu_when_half_the_free_gpu_memory_holds_it():
    # 16 x 256 tokens x 2.4 MB = 9.1 GiB: within half of 20 GiB of free GPU memory (not of a third)
    lengths = [256] * 64
    plan = plan_step(lengths, 4, 4, device="cuda", merge=True, bytes_per_token=2_386_944, free_bytes=20 * GIB)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps, plan.merged) == (16, 1, True)
    assert "9.1 GiB of activations on the GPU" in plan.message
    mps = plan_step(lengths, 4, 4, device="mps", merge=True, bytes_per_token=2_386_944, free_bytes=20 * GIB)
    assert not mps.merged and "no memory estimate on mps" in mps.message


def test_activation_estimate_with_16_bit_matmuls():
    # bf16 activations: half the per-layer bytes; the float32 logits part stays
    assert activation_bytes_per_token(SMOLLM2, value_bytes=2) == 2 * 30 * (5760 + 9216) + 4 * 147456


def test_activation_estimate_follows_the_loss_and_the_attention_kernel():
    cfg = SimpleNamespace(**vars(SMOLLM2), num_attention_heads=9)
    layers_bf16 = 2 * 30 * (5760 + 9216)
    # chunked loss: no logits wait for the backward pass
    assert activation_bytes_per_token(cfg, 2, chunked_loss=True) == layers_bf16 == 898_560
    # eager at 128 tokens: 30 layers x 9 heads x 128 keys x (4 + 2) bytes of probabilities per token
    eager = activation_bytes_per_token(cfg, 2, chunked_loss=True, eager_length=128)
    assert eager - layers_bf16 == 30 * 9 * 128 * 6 == 207_360
    assert activation_bytes_per_token(cfg, 2, eager_length=0) == layers_bf16 + 4 * 147456  # sdpa, stock loss



@pytest.mark.parametrize(
    "targets,dropout", [(["q_proj", "v_proj"], 0.05), ("all-linear", 0.05), ("all-linear", 0.0)], ids=str
)
def test_lora_dropout_copies_count_in_the_estimate(tiny_model, targets, dropout):
    """Each LoRA-wrapped module with dropout on keeps a dropped-out copy of its input and a mask:
    the tiny Llama (2 layers, hidden 64, intermediate 128) has 64 input features for q/k/v/o/gate/up
    and 128 for down_proj."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lora_app.batching import lora_dropout_features

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=targets, lora_dropout=dropout)
    )
    want = {(True, 0.05): 2 * 2 * 64, (False, 0.05): 2 * (6 * 64 + 128), (False, 0.0): 0}[(isinstance(targets, list), dropout)]
    assert lora_dropout_features(model) == want
    base = activation_bytes_per_token(model.config, 2, chunked_loss=True)
    assert activation_bytes_per_token(model.config, 2, chunked_loss=True, dropout_features=want) - base == want * 3


def test_merged_accumulation_trains_the_same_adapter(tmp_path, tiny_model):
    """batch 4 x accumulation 2, merged (one forward of 8 rows) and not: the same rows per step
    and the same gradient, so the same LoRA weights after 3 steps (dropout 0)."""
    from test_train import make_run

    from lora_app.train import train

    weights, plans = {}, {}
    for merge in (True, False):
        (tmp_path / str(merge)).mkdir()
        rd = make_run(
            tmp_path / str(merge),
            tiny_model,
            max_steps=3,
            save_steps=3,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            merge_accumulation=merge,
        )
        cfg = RunConfig.load(rd / "config.yaml")
        cfg.model.precision = "float32"  # equal to rounding in float32; bf16 rounds the two sums differently
        cfg.save(rd / "config.yaml")
        keep = {}
        assert train(rd, keep=keep) == 0
        weights[merge] = {n: p.detach().clone() for n, p in keep["model"].named_parameters() if p.requires_grad}
        events, _ = read_events(rd)
        plans[merge] = next(e for e in events if e.get("message", "").startswith("batching:"))
    assert plans[True]["merged"] and plans[True]["per_device_train_batch_size"] == 8
    assert not plans[False]["merged"] and plans[False]["gradient_accumulation_steps"] == 2
    assert weights[True].keys() == weights[False].keys() and len(weights[True]) > 0
    # Per tensor, |merged - not merged| / |merged| (Frobenius): float32 summing the same rows in
    # another order leaves 7e-6 (an AVX512 EPYC). Not the largest single element:
    # AdamW's first steps move each weight by about lr * sign(gradient), so an element whose
    # gradient is rounding noise moves by a noise-decided amount (9e-6 and 1.3e-5 at lr 3e-2 on two
    # machines of the same kind). Other rows (31 of the 32 kept) differ by 1.3.
    rel = {n: ((weights[True][n] - weights[False][n]).norm() / weights[True][n].norm()).item() for n in weights[True]}
    assert max(rel.values()) < 1e-4, sorted(rel.items(), key=lambda kv: -kv[1])[:3]
    start = {n: p for n, p in weights[True].items() if "lora_B" in n}
    assert max(p.abs().max().item() for p in start.values()) > 1e-3  # lora_B left zero: training happened


def test_a_resumed_run_keeps_its_micro_batch_split(tmp_path, tiny_model):
    """The Trainer skips the micro-batches already seen by count, so a resume must not switch
    between merged and split even if free memory changed: the earlier plan is reused."""
    import json

    from test_train import make_run

    from lora_app.train import train

    rd = make_run(
        tmp_path,
        tiny_model,
        max_steps=2,
        save_steps=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        merge_accumulation=True,
    )
    earlier = {
        "type": "info",
        "time": 0.0,
        "message": "batching: 2 micro-batches of 4 rows per step (kept: ...)",
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "merged": False,
    }
    (rd / "events.jsonl").write_text(json.dumps(earlier) + "\n", encoding="utf-8")
    assert train(rd, resume=True) == 0
    events, _ = read_events(rd)
    plans = [e for e in events if e.get("message", "").startswith("batching:")]
    assert len(plans) == 2 and plans[-1]["merged"] is False
    assert (plans[-1]["per_device_train_batch_size"], plans[-1]["gradient_accumulation_steps"]) == (4, 2)
    assert plans[-1]["message"].endswith("(as before the resume)")


def test_padded_merge_estimate_counts_the_padding():
    # one long row and many short ones: a padded forward of 16 rows is 16 x 512 tokens, not 512 + 15 x 10
    lengths = [512] + [10] * 200
    kw = dict(device="cpu", merge=True, bytes_per_token=2_386_944, free_bytes=30 * GIB)
    packed = plan_step(lengths, 4, 4, packed=True, **kw)
    padded = plan_step(lengths, 4, 4, packed=False, **kw)
    assert packed.merged and "1.5 GiB" in packed.message  # 662 tokens x 2.39 MB
    # 16 x 512 tokens x 2.39 MB = 18.2 GiB, over a third of 30 GiB; 8 x 512 = 9.1 GiB is not: two forwards
    assert (padded.per_device_train_batch_size, padded.gradient_accumulation_steps) == (8, 2)
    assert "at most 9.1 GiB" in padded.message and "18.2 GiB, over a third" in padded.message


def test_activation_estimate_reads_the_text_config_of_a_multimodal_config():
    # Gemma3Config (model_type gemma3, a causal-LM type) has no hidden_size at the top: every run
    # of such a model crashed in the estimate, even on a GPU or with merge_accumulation off.
    from transformers import Gemma3Config

    from lora_app.batching import activation_bytes_per_token

    cfg = Gemma3Config()
    assert not hasattr(cfg, "hidden_size")
    text = cfg.text_config
    assert (
        activation_bytes_per_token(cfg)
        == activation_bytes_per_token(text)
        == 4 * (text.num_hidden_layers * (10 * text.hidden_size + 6 * text.intermediate_size) + 3 * text.vocab_size)
    )


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear", ["o_proj", "down_proj"]], ids=str)
def test_the_inputs_lora_keeps_count_in_the_estimate(tiny_model, targets):
    """A frozen base layer keeps no input for the backward pass, but lora_A keeps its own: LoRA on
    every linear layer keeps o_proj's, gate/up's (shared) and down_proj's inputs beyond q/v's shared
    one. The count is checked against what autograd really saves (torch's saved-tensor hooks, one
    float32 forward): the saved bytes beyond q/v's are the term's, within 10% (here 187,392 bytes
    saved vs 196,608 counted: LoRA's own small r-wide tensors and shared storages differ a little)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lora_app.batching import lora_input_features

    def saved_bytes(t):
        torch.manual_seed(0)
        m = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=t))
        feats = lora_input_features(m)
        seen: dict[int, int] = {}

        def pack(x):
            seen.setdefault(x.untyped_storage().data_ptr(), x.untyped_storage().nbytes())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            out = m(input_ids=torch.arange(3 * 32).reshape(3, 32) % 200)
        del out
        return feats, sum(seen.values())

    # tiny Llama: 2 layers, hidden 64, intermediate 128
    want = {"['q_proj', 'v_proj']": 0, "all-linear": 2 * (2 * 64 + 128), "['o_proj', 'down_proj']": 2 * 128}[str(targets)]
    feats, saved = saved_bytes(targets)
    assert feats == want
    base_feats, base_saved = saved_bytes(["q_proj", "v_proj"])
    if targets == "all-linear":
        assert saved - base_saved == pytest.approx(want * 4 * 3 * 32, rel=0.1)  # float32 bytes x tokens

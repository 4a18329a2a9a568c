"""The memory and time estimate before Start: PEFT's counts from a config alone, the per-tier
table, and (slow) the CPU estimate against the measured peak memory of a real run."""

import json
import os
import subprocess
import sys

import pytest

from lora_app import allocator, estimate, memory, models
from lora_app.config import LoraSettings, RunConfig
from lora_app.precision import choose


def opt_6_7b_config():
    """facebook/opt-6.7b's config.json, written by hand (no download)."""
    from transformers import OPTConfig

    return OPTConfig(
        hidden_size=4096,
        num_hidden_layers=32,
        ffn_dim=16384,
        vocab_size=50272,
        max_position_embeddings=2048,
        word_embed_proj_dim=4096,
        num_attention_heads=32,
        do_layer_norm_before=True,
        enable_bias=True,
    )


#: SmolLM2-135M's shape (its config.json), without the weights
SMOLLM2_SHAPE = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, vocab_size=49152
)


def smollm2_config(**kw):
    """A LlamaConfig of SmolLM2-135M's shape (3 key/value heads, tied embeddings); ``kw`` overrides."""
    from transformers import LlamaConfig

    return LlamaConfig(**{**SMOLLM2_SHAPE, "num_key_value_heads": 3, "tie_word_embeddings": True, **kw})


def test_opt_6_7b_trainable_line_from_the_config_alone():
    trainable, total, _, inputs = models.count_parameters(opt_6_7b_config(), LoraSettings(r=16), ["q_proj", "v_proj"])
    assert inputs == 0  # q_proj and v_proj read one input a layer: the calibrated constant has it
    # The reference post (PEFT int8 example, print_trainable_parameters) prints exactly this.
    assert (
        f"trainable params: {trainable} || all params: {total}" == "trainable params: 8388608 || all params: 6666862592"
    )


def test_opt_6_7b_table_per_tier():
    mc = opt_6_7b_config()
    cfg = RunConfig.build({"model": {"base_model_name_or_path": "facebook/opt-6.7b"}})  # the recipe: auto = 8bit on GPU
    est = estimate.estimate(mc, cfg, 8388608, 6666862592)
    rows = {r["hardware"]: r for r in est.rows}
    assert list(rows) == [
        "CPU (this machine)",
        "T4 16 GB",
        "L4 / A10G 24 GB",
        "A100 40 GB",
        "A100 80 GB",
        "H100 80 GB",
        "H200 141 GB",
    ]
    linear, other, f32 = memory.parameter_split(mc)
    assert linear + other == 6666862592 - 8388608 and f32 == 4 * (linear + other)  # accelerate agrees
    # 8-bit base on a GPU: Linear weights 1 byte, the rest (embeddings, norms) bf16.
    assert rows["T4 16 GB"]["quantization"] == "8bit"
    assert rows["T4 16 GB"]["weights GB"] == round((linear + 2 * other) / 1e9, 2)
    assert rows["CPU (this machine)"]["quantization"] == "none"
    cpu_bytes = 2 if choose("auto", "cpu").dtype == "bfloat16" else 4  # auto: what a run here loads
    assert rows["CPU (this machine)"]["weights GB"] == round(cpu_bytes * (linear + other) / 1e9, 2)
    # LoRA params fp32 + bf16-mixed grads (6 B) + AdamW (8 B) = 18 bytes per trainable parameter on a GPU.
    assert rows["A100 40 GB"]["LoRA + grads + optimizer GB"] == round(18 * 8388608 / 1e9, 3)
    # The recipe ran on a 16 GB T4 with gradient checkpointing (prepare_model_for_kbit_training's default).
    assert rows["T4 16 GB"]["fits"] == "only with gradient_checkpointing"
    assert rows["A100 40 GB"]["fits"] == rows["H200 141 GB"]["fits"] == "yes"
    # Time scales with the published throughput: H100 989 vs A100 312 TFLOPS.
    assert any("NVIDIA A100 datasheet: 312 TFLOPS" in b for b in est.basis)
    # Rows per forward as the run would merge 4 x 4 in half the free GPU memory: 256 tokens a row
    # (max_length, no data) at 8.9 MB a token in bf16 = 9.1 GB per 4 rows. A100 80 GB: ~72 GB free
    # after the 8-bit weights and the runtime, half 36 < 36.5 for 16 rows: two forwards of 8.
    per_forward = {name: rows[name]["rows per forward"] for name in ("T4 16 GB", "A100 80 GB", "H200 141 GB")}
    assert per_forward == {"T4 16 GB": 4, "A100 80 GB": 8, "H200 141 GB": 16}
    cfg4 = RunConfig.build({"model": {"quantization": "4bit"}})
    four = {r["hardware"]: r for r in estimate.estimate(mc, cfg4, 8388608, 6666862592).rows}
    assert four["T4 16 GB"]["weights GB"] == round((linear * (0.5 + 0.127 / 8) + 2 * other) / 1e9, 2)


def test_checkpointing_shrinks_activations_and_time_grows():
    mc = opt_6_7b_config()
    a, b = memory.activation_bytes(mc, 1024, "bfloat16")
    assert b < a / 5
    on = RunConfig.build({"training": {"gradient_checkpointing": True}})
    off = RunConfig.build({})
    t_on = estimate.estimate(mc, on, 8388608, 6666862592).rows[1]
    t_off = estimate.estimate(mc, off, 8388608, 6666862592).rows[1]
    assert t_on["fits"] == "yes" and t_on["total GB"] < t_off["total GB"]


@pytest.mark.slow
def test_cpu_estimate_within_25_percent_of_a_real_runs_peak_memory(tmp_path, bundled_model):
    """The bundled model on CPU, a real 3-step run in its own process: its peak RSS (the
    training process alone, measured by a wrapper through RUSAGE_CHILDREN) against the estimate."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.validate import preflight

    raw = {
        "data": {"path": str(EXAMPLE_QUOTES)},
        "model": {"quantization": "none"},
        "training": {
            "max_steps": 3,
            "per_device_train_batch_size": 8,
            "gradient_accumulation_steps": 1,
            "max_length": 128,
            "warmup_steps": 0,
            "eval_fraction": 0,
            "save_steps": 100,
        },
    }
    cfg, pre = preflight(raw)
    est = estimate.for_preflight(cfg, pre)
    cpu = est.rows[0]
    rd = tmp_path / "run"
    rd.mkdir()
    cfg.save(rd / "config.yaml")
    wrapper = (
        "import resource, subprocess, sys; "
        "rc = subprocess.run([sys.executable, '-m', 'lora_app', 'train', sys.argv[1]]).returncode; "
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    # the training process's environment as the job manager gives it (its allocator: allocator.py)
    env, _ = allocator.child_env(dict(os.environ))
    out = subprocess.run([sys.executable, "-c", wrapper, str(rd)], capture_output=True, text=True, timeout=900, env=env)
    rc, kb = out.stdout.split()[-2:]
    assert rc == "0", out.stderr[-2000:]
    peak = int(kb) * 1024 / 1e9
    status = [json.loads(x) for x in (rd / "events.jsonl").read_text().splitlines()][-1]
    assert status["status"] == "finished"
    print(
        f"\nESTIMATE CPU: {cpu['total GB']} GB (weights {cpu['weights GB']}, activations "
        f"{cpu['activations GB (no ckpt / ckpt)']}); measured peak RSS {peak:.2f} GB"
    )
    assert abs(cpu["total GB"] - peak) <= 0.25 * peak, (cpu, peak)


def test_the_estimate_counts_the_inputs_lora_keeps():
    """SmolLM2-135M's shape: LoRA on every linear layer keeps o_proj's, gate/up's and down_proj's
    inputs (30 x (2 x 576 + 1,536) values a token) where q/v keep none beyond the calibrated
    constant; with dropout each wrapped layer keeps a dropped-out copy instead (30 x (6 x 576 + 1,536))."""
    mc = smollm2_config()
    every = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    no_dropout = LoraSettings(r=16, lora_dropout=0.0)
    assert models.count_parameters(mc, no_dropout, every)[2:] == (0, 30 * (2 * 576 + 1536))
    assert models.count_parameters(mc, no_dropout, ["q_proj", "v_proj"])[2:] == (0, 0)
    assert models.count_parameters(mc, LoraSettings(r=16, lora_dropout=0.05), every)[2:] == (30 * (6 * 576 + 1536), 0)
    with_inputs, _ = memory.activation_bytes(mc, 1000, "float32", chunked_loss=True, input_features=80_640)
    without, _ = memory.activation_bytes(mc, 1000, "float32", chunked_loss=True)
    assert with_inputs - without == 1000 * 80_640 * 4
    # the logits: 3 float32 values per vocabulary entry a token, unless the loss is chunked
    stock, _ = memory.activation_bytes(mc, 1000, "bfloat16")
    chunked, _ = memory.activation_bytes(mc, 1000, "bfloat16", chunked_loss=True)
    assert stock - chunked == 1000 * 3 * 4 * 49152


def test_the_cpu_total_counts_loading_a_checkpoint_saved_at_another_precision():
    """A checkpoint saved in bf16 and trained in float32 is read whole beside its float32 copy
    while it loads: on a small run that, not training, is the peak (measured the other way round on
    SmolLM2: saved float32, loaded bf16, peak RSS +0.80 GB over the imports for 0.27 GB of weights)."""
    small = {"model": {"precision": "float32"}, "training": {"per_device_train_batch_size": 1, "max_length": 16}}
    cfg = RunConfig.build(small)
    saved_bf16, saved_f32 = smollm2_config(dtype="bfloat16"), smollm2_config(dtype="float32")
    _, _, f32 = memory.parameter_split(saved_bf16)
    assert memory.stored_bytes(saved_bf16, f32) == (f32 / 2, "bfloat16")
    converted = estimate.estimate(saved_bf16, cfg, 10**6, 135 * 10**6).rows[0]
    as_saved = estimate.estimate(saved_f32, cfg, 10**6, 135 * 10**6).rows[0]
    assert converted["total GB"] == round((estimate.RUNTIME_CPU + f32 / 2 + f32) / 1e9, 2)
    # loaded as saved, training is the peak: weights + LoRA states + activations + runtime
    act = float(as_saved["activations GB (no ckpt / ckpt)"].split(" / ")[0])
    training = as_saved["weights GB"] + as_saved["LoRA + grads + optimizer GB"] + act + estimate.RUNTIME_CPU / 1e9
    assert as_saved["total GB"] == pytest.approx(training, abs=0.011) and as_saved["total GB"] < converted["total GB"]
    assert memory.loading_bytes(f32 / 2, "bfloat16", f32, "8bit", "bfloat16") == f32 / 2 + f32  # quantized: converted


def test_the_estimate_follows_the_runs_loss_and_attention_rules():
    """The run computes the loss a chunk at a time only for tested architectures in one process
    (chunked_loss.why_not), and eager attention keeps every layer's attention probabilities
    (batching.activation_bytes_per_token): the table must count what the run will hold."""
    from transformers import GPTNeoXConfig

    llama, neox = smollm2_config(tie_word_embeddings=False), GPTNeoXConfig(**SMOLLM2_SHAPE)

    def cpu(mc, attention="sdpa", processes=1):
        raw = {
            "model": {"precision": "float32", "attn_implementation": attention},
            "training": {"max_length": 1024, "merge_accumulation": False},
            "distributed": {"num_processes": processes},
        }
        est = estimate.estimate(mc, RunConfig.build(raw), 10**6, 135 * 10**6)
        return est.rows[0], est.basis[-1]

    sdpa, basis = cpu(llama)
    assert "on CPU logits a chunk at a time and SDPA" in basis and sdpa["rows per forward"] == 4
    assert "on CPU logits of every token" in cpu(neox)[1]  # gpt_neox: not among the chunked loss's tested ones
    assert "on CPU logits of every token" in cpu(llama, processes=2)[1]  # DDP: the model goes through its wrapper
    eager, basis = cpu(llama, "eager")
    assert "eager attention" in basis

    def act(row):
        return float(row["activations GB (no ckpt / ckpt)"].split(" / ")[0])

    # 4 rows x 1,024 tokens, each keeping 30 layers x 9 heads x 1,024 keys x (4 + 4) bytes of probabilities
    assert act(eager) - act(sdpa) == pytest.approx(4 * 1024 * 30 * 9 * 1024 * 8 / 1e9, abs=0.011)


def test_a_huge_batch_or_accumulation_is_estimated_without_listing_its_rows():
    """Check's estimate ran plan_step on a list of every row of a step: a visitor's
    batch 10**6 x accumulation 10**9 gave "No estimate (MemoryError)" after trying to allocate
    8 PB, and smaller absurd values took the server's memory and minutes of CPU. Above
    PLANNED_ROWS the step is estimated as given; below it, merged as before. (Each is now at most
    65,536 in the config, so the largest step is 65,536 x 65,536 rows.)"""
    import time

    mc = smollm2_config()
    for batch, accumulation in ((65_536, 65_536), (2, 65_536), (65_536, 4)):
        cfg = RunConfig.build(
            {"training": {"per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation}}
        )
        start = time.perf_counter()
        rows = estimate.estimate(mc, cfg, 230_400, 134_745_408).rows
        assert time.perf_counter() - start < 5
        assert {r["rows per forward"] for r in rows} == {batch}
        assert {r["fits"] for r in rows} == ({"yes"} if batch == 2 else {"no"})  # two rows at a time fit
    small = RunConfig.build({"training": {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}})
    rows = {r["hardware"]: r for r in estimate.estimate(mc, small, 230_400, 134_745_408).rows}
    assert rows["H200 141 GB"]["rows per forward"] == 16  # merged, as the run would


def _llama_on_the_hub(hub_server, repo: str, training: dict, **shape) -> dict:
    """A Llama config.json of ``shape`` (bf16, 8 KV heads) on the fake Hub as ``repo``, and the raw run
    config that trains it on the example quotes (LoRA on q/v, no quantization) with ``training``."""
    from conftest import EXAMPLE_QUOTES

    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_key_value_heads": 8}
    hub_server.add_file("model", repo, "config.json", json.dumps({**config, **shape, "torch_dtype": "bfloat16"}))
    return {
        "data": {"path": str(EXAMPLE_QUOTES)},
        "model": {"base_model_name_or_path": repo, "quantization": "none"},
        "lora": {"target_modules": ["q_proj", "v_proj"]},
        "training": training,
    }


def test_a_run_that_cannot_fit_this_machines_ram_is_refused_before_anything_loads(hub_server, tiny_model):
    """The reference recipe's OPT-6.7B on a 16 GB CPU Space downloaded 13 GB and was then killed for
    lack of memory. A base whose estimated peak is over 1.25 x this machine's RAM (the estimate's
    error) is refused at preflight, from its config alone, naming the numbers and the fixes; the
    model is sized from this machine's RAM so the test holds on any machine."""
    import math

    from lora_app.config import ConfigError
    from lora_app.container import ram
    from lora_app.validate import preflight

    total = ram()[0]
    per_layer = (4 * 8192 * 8192 + 3 * 8192 * 28672) * 2  # bytes in bf16, the least any CPU run keeps
    layers = math.ceil(1.6 * total / per_layer)
    raw = _llama_on_the_hub(
        hub_server,
        "big-lab/huge-llama",
        {"max_steps": 2, "max_length": 64},
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=layers,
        num_attention_heads=64,
        vocab_size=32000,
        max_position_embeddings=4096,
    )
    with pytest.raises(ConfigError) as err:
        preflight(raw, check_data=False)
    (msg,) = err.value.problems
    print("\n" + msg)
    assert msg.startswith("model.base_model_name_or_path: training 'big-lab/huge-llama' here needs about ")
    assert f"and this machine has {total / 1e9:.1f} GB (a container's limit counts)" in msg
    assert msg.endswith("choose a smaller base model, or train on a GPU (the LoRA tab's estimate lists them).")
    need = float(msg.split("needs about ", 1)[1].split(" GB", 1)[0])
    assert need > 1.25 * total / 1e9
    if total >= 8e9:  # 4-bit weights (a quarter of bf16's, the embeddings aside) + 3 GB of the rest fit
        four = float(msg.split("set model.quantization: 4bit (about ", 1)[1].split(" GB", 1)[0])
        assert four <= total / 1e9
    # the same settings on a model that fits pass
    raw["model"]["base_model_name_or_path"] = str(tiny_model)
    assert preflight(raw, check_data=False)[0].model.base_model_name_or_path == str(tiny_model)


def test_padded_rows_are_estimated_at_the_datas_longest_row_not_max_length(hub_server):
    """Padding fills a batch up to its longest row (text.PaddingCollator), not to max_length: a 1B
    model on short quotes with max_length 8192 and packing off was refused as needing 75.5 GB (found
    by the breaker). With the data known, a forward's rows are the longest row's length."""

    from lora_app.validate import preflight

    raw = _llama_on_the_hub(
        hub_server,
        "meta-like/llama-1b",
        {"max_length": 8192, "per_device_train_batch_size": 4, "packing": False},
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        vocab_size=128256,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
    )
    cfg, pre = preflight(raw)
    longest = max(len(t) for t in pre.data.texts) / 4 + 1
    est = estimate.for_preflight(cfg, pre)
    assert f"{longest:.0f} tokens per row padded to the longest row" in est.basis[3]
    cpu = est.parts[0][1]  # the CPU row comes first
    at_max_length, _ = memory.activation_bytes(
        models.load_model_config(cfg.model), 16 * 8192, estimate.cpu_tier("auto").dtype
    )
    assert cpu.activations < at_max_length / 10  # far below 16 rows padded to max_length (preflight passed)


def test_short_times_and_the_token_product_read_right():
    """A GPU row of a tiny run said "0 s"; "30 steps x 4 x 4 rows x 28 tokens = 13,321 tokens" did not
    multiply out (27.8 rounded) (found by the newcomer)."""
    assert estimate._duration(0.3) == "< 1 s" and estimate._duration(1.4) == "1 s"
    cfg = RunConfig.build(
        {"training": {"max_steps": 30, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}}
    )
    mc = smollm2_config()
    est = estimate.estimate(mc, cfg, 1_000_000, 135_000_000, mean_tokens=27.756)
    assert "30 steps x 4 x 4 rows x 27.8 tokens (the data) = 13,323 tokens" in est.basis[1], est.basis[1]


def test_the_time_counts_the_padding_of_a_forward_of_random_rows():
    """A forward pads its rows to its longest (no length grouping): on the example quotes, 16 rows a
    forward compute 70 tokens a row for a mean of 27.8, and the estimate's CPU time had counted 27.8
    (the reference recipe's packing off). Packed rows, the fast default's, have no padding."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.batching import padded_row_tokens
    from lora_app.data import frame_to_text, read_table

    td = frame_to_text(read_table(str(EXAMPLE_QUOTES)), None, "quotes.jsonl")
    lengths = estimate.token_lengths(td)
    assert len(lengths) == 1000 and round(sum(lengths) / len(lengths), 1) == 27.8
    assert round(padded_row_tokens(lengths, 16, 256), 1) == 70.0
    assert round(padded_row_tokens(lengths, 1, 256), 1) == 27.8  # one row: no padding
    assert padded_row_tokens(lengths, 16, 40) <= 40  # max_length cuts the rows first
    assert padded_row_tokens([5.0, 9.0], 16, 256) == 9.0  # fewer rows than a forward: all of them

    mc, cfg = smollm2_config(), RunConfig.build({"training": {"packing": False}})  # 16 rows a forward on CPU
    # a CPU of 700 GFLOPS in float32, 16 GB: the run's time in whole seconds, under a minute
    cpu = estimate.Tier("CPU (this machine)", 16 * estimate.GB, None, "float32", "a test CPU", gflops=700.0)
    args = (mc, cfg, 4_884_480, 139_399_488, estimate.mean_tokens(td))
    kw = dict(longest_tokens=estimate.longest_tokens(td), tiers=(cpu,))

    def seconds(est) -> int:
        return int(est.rows[0]["time"].removesuffix(" s"))

    plain = estimate.estimate(*args, **kw)
    padded = estimate.estimate(*args, lengths=lengths, **kw)
    assert padded.rows[0]["rows per forward"] == 16
    assert 10 < seconds(plain) < 30 and seconds(padded) / seconds(plain) == pytest.approx(70.0 / 27.8, rel=0.05)
    assert "a CPU forward of 16 random rows pads each to its longest, 70.0 tokens a row" in padded.basis[1]
    packed = RunConfig.build({})  # the fast default packs a step's rows: no padding
    assert packed.training.packing
    assert estimate.estimate(mc, packed, *args[2:], lengths=lengths, **kw).rows[0]["time"] == plain.rows[0]["time"]


def test_a_conversations_tokens_are_its_turns_text_not_its_count_of_turns():
    """Chat rows are lists of turns: the estimate counted len(row), 2 turns = 1.5 tokens a row, for rows
    of ~1,700 characters (the breaker); time and memory were far too low."""
    from lora_app.data import TextData

    turns = [{"role": "user", "content": "q" * 799}, {"role": "assistant", "content": "a" * 800}]
    td = TextData([turns, turns[:1] + [{"role": "assistant", "content": "b" * 2}]], "messages", ["messages"], [], 0, "c")
    assert estimate.token_lengths(td) == [1600 / 4 + 1, 802 / 4 + 1]  # the turns joined by a newline
    assert estimate.mean_tokens(td) == (401 + 201.5) / 2 and estimate.longest_tokens(td) == 401
    assert estimate.token_lengths(None) is None and estimate.mean_tokens(None) is None

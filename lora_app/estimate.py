"""Memory and time before Start, from the model's config alone (the meta-device skeleton the
Check button builds: no weights) and the form's settings, for the usual hardware.

What each number is based on (also returned as ``Estimate.basis`` for the page):

- **weights**: parameters of the skeleton (tied weights once; accelerate's
  ``calculate_maximum_sizes`` gives the float32 size) at the precision each tier loads them:
  float32 on CPU, bf16 on a GPU (fp16 on the T4, which has no bf16); with 8bit the decoder's
  Linear weights take 1 byte (+ one float32 scale per row), with 4bit nf4 + double quantization
  0.5 byte + 0.127 bit of constants per weight (Dettmers et al. 2023, QLoRA, sec. 3); the
  rest (embeddings, norms, the LM head) stays at the load precision.
- **LoRA**: trainable parameters counted by PEFT (``get_nb_trainable_parameters``), kept in
  float32; their gradients and AdamW's two moments from accelerate's ``estimate_training_usage``
  (float32: 4 + 8 bytes per parameter; bf16 mixed precision: 6 + 8).
- **activations**: per token, :func:`lora_app.batching.activation_bytes_per_token` (calibrated on
  SmolLM2-135M on CPU: 2.4 MB/token, float32) at the tier's precision, with the inputs the LoRA
  branches keep (PEFT's wrap of the meta skeleton, run on 4 meta tokens) and the logits left out
  when the loss is chunked; with gradient checkpointing only each layer's input is kept, plus one
  layer and the logits. Tokens per forward: the rows :func:`lora_app.batching.plan_step` would put
  in one forward (the accumulation micro-batches merged as far as the tier's free memory allows)
  x the data's mean tokens per row with packing (characters / 4 when the data is known, else
  ``max_length``), x ``max_length`` without packing (padding).
- **runtime**: 0.5 GB for Python + torch + transformers on CPU (measured: peak RSS after the
  imports), 1 GB of CUDA context and allocator slack on a GPU.
- **loading** (CPU): a checkpoint loaded at another precision than it was saved in (the config's
  ``dtype``) is read whole beside its converted copy; the CPU total is the larger of that and
  training (:func:`lora_app.memory.loading_bytes`).
- **time**: training FLOPs per token ~ 4 x parameters (forward 2N, backward through the frozen
  weights 2N: no weight gradients for the base; Kaplan et al. 2020 count 6N for full training)
  + 2N more with gradient checkpointing (the recomputed forward), divided by the tier's
  published dense bf16 tensor throughput (fp16 on the T4) at :data:`UTILISATION`; CPU: a float32
  matrix product timed on this machine.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .memory import (
    GB,
    Parts,
    activation_bytes,
    chunked_here,
    eager_here,
    loading_bytes,
    lora_bytes,
    parameter_split,
    stored_bytes,
    weight_bytes,
)

#: Share of the published peak a LoRA fine-tune reaches (small batches, short rows, kernels
#: other than matrix products): a stated assumption, not a measurement.
UTILISATION = 0.35
CPU_UTILISATION = 0.5
RUNTIME_CPU = 0.5 * GB
RUNTIME_GPU = 1.0 * GB
#: The most rows per optimizer step whose merged forwards the estimate plans (lora_app.batching.plan_step
#: lists each row and tries each forward count): above it the step is estimated as given, one
#: forward per micro-batch, as plan_step keeps it when no merge fits.
PLANNED_ROWS = 65_536


@dataclass(frozen=True)
class Tier:
    """A hardware tier: ``memory`` bytes, published dense ``tflops`` (None: measured here),
    the precision it trains in and the datasheet the number comes from."""

    name: str
    memory: float
    tflops: float | None
    dtype: str
    source: str
    gflops: float | None = None  # CPU: the measured speed at ``dtype``


GPU_TIERS = (
    Tier("T4 16 GB", 16 * GB, 65, "float16", "NVIDIA T4 datasheet: 65 TFLOPS FP16 tensor (no BF16 on Turing)"),
    Tier(
        "L4 / A10G 24 GB",
        24 * GB,
        121,
        "bfloat16",
        "NVIDIA L4 datasheet: 242 TFLOPS BF16 with sparsity = 121 dense (A10: 125 dense)",
    ),
    Tier("A100 40 GB", 40 * GB, 312, "bfloat16", "NVIDIA A100 datasheet: 312 TFLOPS BF16 tensor, dense"),
    Tier("A100 80 GB", 80 * GB, 312, "bfloat16", "NVIDIA A100 datasheet: 312 TFLOPS BF16 tensor, dense"),
    Tier(
        "H100 80 GB", 80 * GB, 989, "bfloat16", "NVIDIA H100 SXM datasheet: 1,979 TFLOPS BF16 with sparsity = 989 dense"
    ),
    Tier(
        "H200 141 GB", 141 * GB, 989, "bfloat16", "NVIDIA H200 datasheet: 1,979 TFLOPS BF16 with sparsity = 989 dense"
    ),
)


@functools.lru_cache(maxsize=1)
def cpu_gflops() -> float:
    """float32 GEMM speed of this machine in GFLOPS (2 x 512^3 FLOPs per product, best of 5).
    Leaves torch's global random state alone (a generator of its own), as every measurement here."""
    import torch

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 512**3 / best / 1e9


def cpu_tier(requested: str = "auto") -> Tier:
    """This machine's CPU at the precision a run on it would train in (``model.precision``
    resolved by :func:`lora_app.precision.choose`); bf16 speed = float32 GFLOPS x the measured
    bf16/float32 matmul ratio (1 where it was not measured)."""
    from . import app_home, container, precision

    choice = precision.choose(requested, "cpu")
    gflops, ratio = cpu_gflops(), 1.0
    if choice.dtype != "float32":
        model, flags = precision.cpu_info()
        if set(flags) & set(precision.CPU_BF16_FLAGS):
            m = precision.cached_check(app_home(), model, flags)
            ratio = m["bfloat16_gflops"] / m["float32_gflops"] if m.get("float32_gflops") else 1.0
    return Tier(
        "CPU (this machine)",
        float(container.ram()[0]),
        None,
        choice.dtype,
        f"{choice.dtype} matrix product: {gflops * ratio:.0f} GFLOPS ({choice.reason})",
        gflops * ratio,
    )


@dataclass
class Estimate:
    """``rows``: one dict per tier (the table); ``basis``: what the numbers rest on."""

    rows: list[dict]
    basis: list[str] = field(default_factory=list)
    trainable: int = 0
    total_params: int = 0
    #: per row: the tier's memory and the run's :class:`~lora_app.memory.Parts` there (bytes)
    parts: list[tuple[float, Parts]] = field(default_factory=list)

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def estimate(
    model_config,
    cfg,
    trainable: int,
    total_params: int,
    mean_tokens: float | None = None,
    *,
    longest_tokens: float | None = None,
    dropout_features: int = 0,
    input_features: int = 0,
    tiers: tuple[Tier, ...] | None = None,
    lengths: list[float] | None = None,
) -> Estimate:
    """The table for ``cfg`` (a RunConfig) on every tier. ``trainable``/``total_params``: PEFT's
    counts (``models.count_parameters``); ``mean_tokens``: average tokens per training row if the
    data is known (else ``max_length``, an upper bound); ``dropout_features``/``input_features``: what
    the LoRA branches keep per token (``models.LoraCount``). The rows per forward are the ones the run
    would choose (:func:`lora_app.batching.plan_step`, with every row at the mean length): on CPU with
    the RAM free now, on a GPU with the tier's memory less the weights, the LoRA states and the runtime.
    ``lengths``: each row's tokens (:func:`token_lengths`; their mean and longest when those are not given):
    the time counts the padding of a forward of random rows (:func:`lora_app.batching.padded_row_tokens`)."""
    from . import container
    from .batching import StepPlan, padded_row_tokens, plan_step
    from .models import effective_quantization
    from .precision import decide

    t = cfg.training
    if lengths:
        mean_tokens, longest_tokens = mean_tokens or sum(lengths) / len(lengths), longest_tokens or max(lengths)
    linear, other, f32_bytes = parameter_split(model_config)
    stored, stored_dtype = stored_bytes(model_config, f32_bytes)
    base_params = linear + other
    row_tokens = min(mean_tokens or t.max_length, t.max_length)
    # Packed rows fill a forward with their real tokens; padded ones with up to max_length each.
    # Padded ones to the longest row of their forward (text.PaddingCollator): at most the data's longest
    # row, else max_length. (Taking max_length with short data refused runs that fit: the breaker.)
    forward_row_tokens = row_tokens if t.packing else min(longest_tokens or t.max_length, t.max_length)
    run_tokens = t.max_steps * t.per_device_train_batch_size * t.gradient_accumulation_steps * row_tokens
    flops_per_token = (6 if t.gradient_checkpointing else 4) * base_params
    world = cfg.distributed.num_processes
    cpu_rules = (False, False)  # (chunked loss, eager attention) on the CPU tier, for the basis
    cpu_padding: tuple[int, float] | None = None  # (rows per forward, tokens a padded row computes) there
    kind = getattr(model_config, "model_type", None)
    rows, tier_parts = [], []
    cpu_free = container.ram()[1]  # read once: cgroup files and psutil
    for tier in tiers or (cpu_tier(cfg.model.precision), *GPU_TIERS):
        device = "cpu" if tier.tflops is None else "cuda"
        if device == "cuda":  # model.precision float32 on a GPU: float32 weights (decide: the run's own rule)
            tier = replace(tier, dtype=decide(cfg.model.precision, "cuda", cuda_bf16=tier.dtype == "bfloat16").dtype)
        quant = effective_quantization(cfg.model, device)
        weights, lora = weight_bytes(linear, other, quant, tier.dtype), lora_bytes(trainable, tier.dtype)
        runtime = RUNTIME_CPU if device == "cpu" else RUNTIME_GPU
        # the run's rules (train.py): the chunked loss (any modules_to_save counts as a trained LM
        # head: which modules they name is known only once the model is wrapped), eager attention
        chunked = t.chunked_loss and chunked_here(kind, world, cfg, device)
        eager = eager_here(model_config, cfg, device, tier.dtype)
        if device == "cpu":
            cpu_rules = (chunked, eager)
        kept: dict[str, Any] = dict(
            chunked_loss=chunked,
            eager_length=t.max_length if eager else 0,
            dropout_features=dropout_features,
            input_features=input_features,
        )
        per_token, _ = activation_bytes(model_config, 1, tier.dtype, **kept)
        rows_per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
        # plan_step lists every row of a step and tries each forward count up to the accumulation: a
        # visitor's batch 10**6 x accumulation 10**9 took the server's memory (MemoryError at best).
        # A step of more rows than PLANNED_ROWS is estimated as given (one micro-batch per forward).
        plan = (
            StepPlan(t.per_device_train_batch_size, t.gradient_accumulation_steps, False, "")
            if rows_per_step > PLANNED_ROWS
            else plan_step(
                [round(forward_row_tokens)] * rows_per_step,
                t.per_device_train_batch_size,
                t.gradient_accumulation_steps,
                device=device,
                merge=t.merge_accumulation,
                bytes_per_token=round(per_token),
                # the ranks of one machine share its RAM (each has its own GPU), as the run divides it
                free_bytes=max(
                    0,
                    int((cpu_free / world if device == "cpu" else tier.memory) - weights - lora - runtime),
                ),
                packed=t.packing,
            )
        )
        act, act_ckpt = activation_bytes(
            model_config, plan.per_device_train_batch_size * forward_row_tokens, tier.dtype, **kept
        )
        # a GPU's load transient is in RAM, not in the GPU's memory
        loading = runtime + loading_bytes(stored, stored_dtype, weights, quant, tier.dtype) if device == "cpu" else 0.0
        parts = Parts(weights, lora, act, act_ckpt, runtime, loading)
        tier_parts.append((tier.memory, parts))
        total = parts.total(t.gradient_checkpointing)
        if total <= tier.memory:
            fits = "yes"
        elif not t.gradient_checkpointing and parts.total(True) <= tier.memory:
            fits = "only with gradient_checkpointing"
        else:
            fits = "no"
        rate = (
            ((tier.gflops or cpu_gflops()) * 1e9 * CPU_UTILISATION)
            if tier.tflops is None
            else tier.tflops * 1e12 * UTILISATION
        )
        computed = (
            padded_row_tokens(lengths, plan.per_device_train_batch_size, t.max_length)
            if lengths and not t.packing
            else row_tokens
        )
        seconds = run_tokens * max(1.0, computed / row_tokens) * flops_per_token / rate
        if device == "cpu":
            cpu_padding = (plan.per_device_train_batch_size, computed)
        rows.append(
            {
                "hardware": tier.name,
                "memory GB": round(tier.memory / GB, 1),
                "quantization": quant,
                "weights GB": round(parts.weights / GB, 2),
                "LoRA + grads + optimizer GB": round(parts.lora / GB, 3),
                "activations GB (no ckpt / ckpt)": f"{act / GB:.2f} / {act_ckpt / GB:.2f}",
                "rows per forward": plan.per_device_train_batch_size,
                "total GB": round(total / GB, 2),
                "fits": fits,
                "time": _duration(seconds),
            }
        )
    basis = [
        f"Parameters: {base_params:,} in the base ({linear:,} in Linear layers; accelerate: {f32_bytes / GB:.2f} GB "
        f"in float32), {trainable:,} trainable LoRA parameters (PEFT).",
        f"Run: {t.max_steps} steps x {t.per_device_train_batch_size} x {t.gradient_accumulation_steps} rows x "
        f"{row_tokens:.1f} tokens ({'the data' if mean_tokens else 'max_length, an upper bound'}) = "
        f"{run_tokens:,.0f} tokens; {flops_per_token / 1e9:.2f} GFLOP per token "
        f"({'6' if t.gradient_checkpointing else '4'} x parameters)"
        + (
            f"; the time counts the padding: a CPU forward of {cpu_padding[0]} random rows pads each to its longest, "
            f"{cpu_padding[1]:.1f} tokens a row."
            if cpu_padding and lengths and not t.packing
            else "."
        ),
        f"Time at {UTILISATION:.0%} of each GPU's published dense throughput ({'; '.join(x.source for x in GPU_TIERS[:3])}; "
        f"H100/H200 989) and {CPU_UTILISATION:.0%} of the CPU's measured {cpu_gflops():.0f} GFLOPS. Rough: within 2x; "
        "8-bit/4-bit bitsandbytes matmuls run slower than plain bf16 ones (they dequantize), so expect more there.",
        "Memory: weights at the tier's precision and quantization (auto = 8bit on a GPU, none on CPU), LoRA "
        "parameters + gradients + AdamW states (accelerate's estimate_training_usage), activations for one forward "
        f"(calibrated on SmolLM2 on CPU; {forward_row_tokens:.0f} tokens per row "
        f"{'packed' if t.packing else 'padded to the longest row' if longest_tokens else 'padded to max_length'}; the inputs LoRA keeps: {input_features:,} values a "
        f"token beyond q/v's{f', {dropout_features:,} dropped-out copies' if dropout_features else ''}; "
        f"on CPU logits {'a chunk at a time' if cpu_rules[0] else 'of every token'} and "
        f"{'eager attention (each layer keeps its attention probabilities)' if cpu_rules[1] else 'SDPA'}, "
        "as the run would choose here; rows per forward as the run would merge "
        "the accumulation micro-batches, in the memory the tier has free), runtime 0.5 GB (CPU) / 1 GB (GPU). "
        + (
            f"On CPU the total is the larger of training and loading: the checkpoint as saved ({stored_dtype}, "
            f"{stored / GB:.2f} GB) is read beside the copy it is converted into. "
            if stored_dtype
            else ""
        )
        + f"Total uses the form's gradient_checkpointing ({'on' if t.gradient_checkpointing else 'off'}).",
    ]
    return Estimate(rows, basis, trainable, total_params, tier_parts)


def _duration(s: float) -> str:
    if s < 1:
        return "< 1 s"  # ("0 s" read as "no time at all": the newcomer)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def token_lengths(data) -> list[float] | None:
    """Each training row's tokens of a :class:`~lora_app.data.TextData`: characters / 4 (a common English
    average; a conversation's turns as one text, not its count of turns: the breaker) + EOS; None
    without data."""
    from .layouts import flat_text

    return [len(flat_text(x)) / 4 + 1 for x in data.texts] if data is not None and data.texts else None


def mean_tokens(data) -> float | None:
    """Tokens per training row, counted as :func:`token_lengths` counts; None without data."""
    n = token_lengths(data)
    return sum(n) / len(n) if n else None


def longest_tokens(data) -> float | None:
    """The longest training row's tokens, counted as :func:`token_lengths` counts; None without data."""
    n = token_lengths(data)
    return max(n) if n else None


def for_preflight(cfg, pre, token: str | None = None) -> Estimate:
    """The estimate for what :func:`lora_app.validate.preflight` found (config only: no weights)."""
    from .models import load_model_config

    mc = load_model_config(cfg.model, token=token)
    return estimate(
        mc,
        cfg,
        pre.trainable,
        pre.total,
        lengths=token_lengths(pre.data),
        dropout_features=pre.dropout_features,
        input_features=pre.input_features,
    )


#: The estimate's error against real runs' peak memory (tests/test_estimate.py: within 25%). A run on
#: this CPU is refused only when even that much less than the estimate would not fit.
REFUSE_OVER = 1.25


def cpu_memory_problem(model_config, cfg, counted, data=None) -> str | None:
    """One problem line when a run on this machine's CPU (no GPU) would surely not fit its RAM (the
    container's limit where there is one): the estimated training peak (:func:`estimate`, times
    ``distributed.num_processes``: each rank holds its own copy) over :data:`REFUSE_OVER` x the RAM.
    Names the estimate's parts and the fixes that would fit, each estimated the same way:
    gradient_checkpointing, 4-bit quantization (bitsandbytes runs on CPU). None when it fits.
    ``counted``: :class:`lora_app.models.LoraCount`; ``data``: the TextData, if read."""
    import importlib.util

    lengths = token_lengths(data)  # once: each estimate below counts the same rows

    def cpu_parts(c) -> tuple[float, Parts]:  # (this machine's RAM, the run's parts on its CPU)
        est = estimate(
            model_config,
            c,
            counted.trainable,
            counted.total,
            lengths=lengths,
            dropout_features=counted.dropout_features,
            input_features=counted.input_features,
            tiers=(cpu_tier(c.model.precision),),
        )
        return est.parts[0]

    def need(parts: Parts, checkpointing: bool) -> float:
        # training's peak only: the load transient the table shows is mostly the checkpoint's file, read
        # through a memory map whose pages the kernel can drop, so it is no proof that a run dies
        return replace(parts, loading=0.0).total(checkpointing) * cfg.distributed.num_processes

    t = cfg.training
    memory, parts = cpu_parts(cfg)
    if need(parts, t.gradient_checkpointing) <= REFUSE_OVER * memory:
        return None
    tries: list[tuple[str, float]] = []  # (what, bytes): each fix alone; both only when neither alone fits
    if not t.gradient_checkpointing:
        tries.append(("turn on training.gradient_checkpointing", need(parts, True)))
    if cfg.model.quantization != "4bit" and importlib.util.find_spec("bitsandbytes"):
        q4 = cfg.model_copy(deep=True)
        q4.model.quantization = "4bit"
        parts4 = cpu_parts(q4)[1]
        tries.append(("set model.quantization: 4bit", need(parts4, t.gradient_checkpointing)))
        if not t.gradient_checkpointing and all(b > memory for _, b in tries):
            tries.append(
                ("set model.quantization: 4bit and turn on training.gradient_checkpointing", need(parts4, True))
            )
    fixes = [f"{what} (about {b / GB:.1f} GB)" for what, b in tries if b <= memory]
    act = parts.activations_ckpt if t.gradient_checkpointing else parts.activations
    if act > parts.weights:
        fixes.append("lower training.max_length or per_device_train_batch_size (the activations are most of it)")
    fixes.append("choose a smaller base model, or train on a GPU (the LoRA tab's estimate lists them)")
    procs = f" x {cfg.distributed.num_processes} processes" if cfg.distributed.num_processes > 1 else ""
    return (
        f"model.base_model_name_or_path: training '{cfg.model.base_model_name_or_path}' here needs about "
        f"{need(parts, t.gradient_checkpointing) / GB:.1f} GB of RAM{procs} (weights {parts.weights / GB:.1f}, activations {act / GB:.1f}, LoRA "
        f"with its optimizer {parts.lora / GB:.1f}, runtime {parts.runtime / GB:.1f}), and this machine has "
        f"{memory / GB:.1f} GB (a container's limit counts): it would be killed for lack of memory. "
        f"Fix: {'; or '.join(fixes)}."
    )

"""Which attention kernel the training step uses (``model.attn_implementation``): measured on this
machine for the run's shape, not assumed.

Why: on a CPU, torch's SDPA runs a flash-attention kernel whose backward pass is slow for short
rows in bfloat16; transformers' eager attention (two matmuls and a softmax) is faster there.
Measured on a 2-core AMD EPYC with AVX512-BF16 (forward + backward, 9 query / 3 key-value heads of
64, SmolLM2-135M's shape): bf16 at 4 rows x 128 tokens eager 4.3 ms vs SDPA 6.5 ms (1.5x), 1 x 512
1.13x, 1 x 2048 0.42x; float32 0.94x, 0.80x, 0.44x. SDPA was 22% of a whole bf16 training step
there. Which is faster depends on the CPU, the precision and the length, so ``auto`` times both
once per machine and shape (cached in ``LORA_APP_HOME/attention_check.json``, ~0.1-0.5 s) and
takes eager only when it is clearly faster. Eager holds rows x heads x length^2 attention scores
for the backward pass, so lengths above :data:`EAGER_MAX_LENGTH` always use SDPA.
"""

from __future__ import annotations

import time
from pathlib import Path

EAGER_MAX_LENGTH = 1024
#: eager must beat SDPA by this factor: a near tie is noise, and SDPA's memory is linear in length
MARGIN = 1.1


def shape_of(model_config) -> tuple[int, int, int]:
    """(query heads, key-value heads, head size) of a transformers model config."""
    heads = model_config.num_attention_heads
    kv = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    return heads, kv, head_dim


def measure(heads: int, kv: int, head_dim: int, length: int, dtype: str, rows: int = 4, reps: int = 5) -> dict:
    """Best-of-``reps`` milliseconds of one forward + backward of transformers' own ``eager`` and
    ``sdpa`` attention functions on random ``rows x heads x length x head_dim`` tensors of ``dtype``
    ("float32"/"bfloat16") with a causal mask, as one packed bin of the run gives them."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    dt = getattr(torch, dtype)

    class Module(torch.nn.Module):  # what the attention functions read from the attention layer
        num_key_value_groups = heads // kv
        is_causal = True

    m = Module()
    mask = torch.ones(length, length, dtype=torch.bool).tril()[None, None].expand(rows, 1, length, length)
    additive = torch.zeros(mask.shape, dtype=dt).masked_fill_(~mask, torch.finfo(dt).min)
    g = torch.Generator().manual_seed(0)
    res = {}
    for name, fn, am in (("eager", eager_attention_forward, additive), ("sdpa", sdpa_attention_forward, mask)):
        q = torch.randn(rows, heads, length, head_dim, generator=g).to(dt).requires_grad_()
        k = torch.randn(rows, kv, length, head_dim, generator=g).to(dt).requires_grad_()
        v = torch.randn(rows, kv, length, head_dim, generator=g).to(dt).requires_grad_()
        best = float("inf")
        for _ in range(reps + 1):  # the first call builds the kernels
            t = time.perf_counter()
            out, _ = fn(m, q, k, v, am, dropout=0.0, scaling=head_dim**-0.5)
            out.float().sum().backward()
            best = min(best, time.perf_counter() - t)
        res[f"{name}_ms"] = round(best * 1000, 3)
    return res


def choose(
    requested: str, device: str, model_config, length: int, dtype: str, home: Path | None, sdpa_ok: bool = True
) -> tuple[str, str]:
    """(implementation, the log's line) for ``requested`` ("auto", "sdpa", "eager").

    auto: SDPA on a GPU and for lengths above :data:`EAGER_MAX_LENGTH`; on a CPU the measured
    faster one (:func:`measure`, cached in ``home`` when given). ``sdpa_ok``: the model class has an
    SDPA attention (transformers' ``_supports_sdpa``; e.g. granite_swa, deepseek_v4 have none, and
    ``set_attn_implementation("sdpa")`` raises there): auto then takes eager. Raises ConfigError
    for sdpa asked of such a model."""
    if requested == "sdpa" and not sdpa_ok:
        from .config import ConfigError

        raise ConfigError(
            [
                f"model.attn_implementation: this model ({getattr(model_config, 'model_type', '?')}) has no sdpa "
                "attention in transformers (got sdpa). Fix: set it to auto or eager."
            ]
        )
    if requested != "auto":
        return requested, f"attention: {requested} (model.attn_implementation)"
    if not sdpa_ok:
        return "eager", f"attention: eager (auto: {getattr(model_config, 'model_type', '?')} has no sdpa attention)"
    if device != "cpu":
        return "sdpa", f"attention: sdpa (auto on {device})"
    if length > EAGER_MAX_LENGTH:
        return (
            "sdpa",
            f"attention: sdpa (auto: max_length {length} > {EAGER_MAX_LENGTH}, eager's memory grows as length^2)",
        )
    from .precision import cache_key, cpu_info, read_cache, write_cache

    heads, kv, head_dim = shape_of(model_config)
    cpu, flags = cpu_info()
    key = cache_key(cpu, sorted(flags), heads, kv, head_dim, length, dtype)
    path = home / "attention_check.json" if home else None
    cache, hit = read_cache(path, key, ("eager_ms", "sdpa_ms"))  # a malformed file or entry: measured anew
    if hit is None:
        cache[key] = measure(heads, kv, head_dim, length, dtype)
        write_cache(path, cache)
    e, s = cache[key]["eager_ms"], cache[key]["sdpa_ms"]
    pick = "eager" if e * MARGIN < s else "sdpa"
    return (
        pick,
        f"attention: {pick} (auto: forward + backward at {length} tokens in {dtype} took eager {e} ms, sdpa {s} ms here)",
    )

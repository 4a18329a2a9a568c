"""Which floating-point type the base model computes in: ``model.precision`` (auto | float32 | bfloat16).

bfloat16 here means: base weights stored in bf16 (half the memory), matmuls under bf16 autocast,
LoRA weights and their AdamW state in float32 (PEFT upcasts adapter weights of a 16-bit base:
``get_peft_model(autocast_adapter_dtype=True)``, its default), adapter saved in float32.

``auto`` picks bfloat16 where it is fast:
- on a CUDA GPU that supports bf16 (Ampere or newer: ``torch.cuda.is_bf16_supported()``); a CUDA GPU
  without bf16 computes in float16, as the reference recipe does there;
- on a CPU whose flags (``/proc/cpuinfo``) include ``avx512_bf16`` or ``amx_bf16``, *and* where a
  short measured matmul check shows bf16 faster than float32. Without those instructions bf16 is
  emulated: 0.05x on an AVX2-only EPYC (bench/RESULTS.md), so no measurement is even tried. The
  check (~0.3 s) is cached per machine in ``LORA_APP_HOME/precision_check.json``, keyed by the CPU
  model, its flags and the torch version;
- float32 everywhere else (Apple MPS, other CPUs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 must beat float32 by this factor in the measured check: below it, the rounding of bf16
# buys too little (on the AVX512-BF16 EPYC: 4.2-4.8x at 1024^2).
MIN_SPEEDUP = 1.2
CHECK_N = 1024  # the matmul side of the check: small enough for ~0.3 s, big enough to reach the kernels' speed


@dataclass(frozen=True)
class Choice:
    """``dtype``: "float32", "bfloat16" or "float16"; ``reason``: one line for the training log."""

    dtype: str
    reason: str

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def decide(
    requested: str,
    device: str,
    *,
    cuda_bf16: bool = False,
    cpu_flags: frozenset[str] | set[str] = frozenset(),
    measured: dict | None = None,
) -> Choice:
    """The precision for ``requested`` ("auto", "float32", "bfloat16") on ``device`` ("cuda", "cpu", "mps").

    ``cuda_bf16``: the GPU supports bf16; ``cpu_flags``: the CPU's flags; ``measured``: the matmul
    check, ``{"bfloat16_gflops": x, "float32_gflops": y}`` (only looked at for auto on a CPU with
    bf16 instructions). A pure function: :func:`choose` gathers the facts for this machine.
    """
    if requested == "float32":
        return Choice("float32", "precision float32: as set")
    if requested == "bfloat16":
        if device == "cuda" and not cuda_bf16:
            return Choice("float16", "precision float16: bfloat16 was set, but this GPU has no bf16 (pre-Ampere)")
        slow = device == "cpu" and not (set(cpu_flags) & set(CPU_BF16_FLAGS))
        return Choice(
            "bfloat16",
            "precision bfloat16: as set"
            + (
                " (this CPU has no avx512_bf16/amx_bf16: bf16 is emulated and can be much slower than float32)"
                if slow
                else ""
            ),
        )
    if device == "cuda":
        if cuda_bf16:
            return Choice("bfloat16", "precision bfloat16 (auto): the CUDA GPU supports bf16")
        return Choice("float16", "precision float16 (auto): the CUDA GPU has no bf16 (pre-Ampere)")
    if device != "cpu":
        return Choice("float32", f"precision float32 (auto): no bf16 check for {device}")
    have = sorted(set(cpu_flags) & set(CPU_BF16_FLAGS))
    if not have:
        return Choice(
            "float32",
            "precision float32 (auto): the CPU has neither avx512_bf16 nor amx_bf16, so bf16 would be emulated (slow)",
        )
    if not measured:
        return Choice(
            "float32", f"precision float32 (auto): the CPU has {'/'.join(have)}, but the bf16 check could not run"
        )
    bf, fp = measured["bfloat16_gflops"], measured["float32_gflops"]
    ratio = bf / fp if fp > 0 else 0.0
    facts = (
        f"the CPU has {'/'.join(have)} and a {CHECK_N}^2 matmul ran at {bf:.0f} GFLOP/s in bf16 vs "
        f"{fp:.0f} in float32 ({ratio:.1f}x)"
    )
    if ratio >= MIN_SPEEDUP:
        return Choice("bfloat16", f"precision bfloat16 (auto): {facts}")
    return Choice("float32", f"precision float32 (auto): {facts}, under the {MIN_SPEEDUP}x worth switching for")


# -- facts about this machine ---------------------------------------------------------------
def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(CPU model name, its flags) from ``/proc/cpuinfo``; ("", empty) where there is none (macOS)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return "", frozenset()
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = val.strip()
        elif key == "flags" and not flags:
            flags = frozenset(val.split())
    return model, flags


def measure_matmul(n: int = CHECK_N, reps: int = 5) -> dict:
    """Best-of-``reps`` GFLOP/s of an n x n matmul in bfloat16 and in float32 on the CPU (after
    a warm-up call each). Best-of: other processes only ever slow a call down.

    Its random inputs come from a generator of its own: drawn from torch's global one, they would
    move the LoRA initialisation of a run that measures after ``set_seed`` (a cold cache), so one
    seed would give two different runs."""
    import torch

    out = {}
    g = torch.Generator().manual_seed(0)
    for dt in ("bfloat16", "float32"):
        a = torch.randn(n, n, generator=g).to(getattr(torch, dt))
        b = torch.randn(n, n, generator=g).to(getattr(torch, dt))
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[f"{dt}_gflops"] = round(2 * n**3 / best / 1e9, 1)
    return out


def cache_key(*facts) -> str:
    """A 16-hex-digit key for a measurement cached per machine: ``facts`` (what the caller's
    measurement depends on) with the torch version (a new torch may have new kernels) and the kernel
    level torch and oneDNN may use (ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA can cap a CPU below
    its flags)."""
    import torch

    level = [torch.__version__, torch.backends.cpu.get_cpu_capability(), os.environ.get("ONEDNN_MAX_CPU_ISA")]
    return hashlib.sha256(json.dumps([*facts, *level]).encode()).hexdigest()[:16]


def write_cache(path: Path | None, cache: dict) -> None:
    """Write ``cache`` to ``path`` atomically (two runs starting together never see half a file);
    a read-only home is left as it is (the next run measures again)."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def read_cache(path: Path | None, key: str, fields: tuple[str, ...]) -> tuple[dict, dict | None]:
    """(the cache file at ``path`` as a dict, its entry under ``key`` or None).

    A missing, unreadable or malformed file (not JSON, not an object) is an empty cache, and an
    entry without a positive number in each of ``fields`` is no entry: these files live in the
    user's LORA_APP_HOME and are re-measured, never a crash of the run that reads them."""
    try:
        cache = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    hit = cache.get(key)
    ok = isinstance(hit, dict) and all(
        type(hit.get(f)) in (int, float) and math.isfinite(hit[f]) and hit[f] > 0 for f in fields
    )
    return cache, hit if ok else None


def cached_check(home: Path, model: str, flags: frozenset[str]) -> dict:
    """:func:`measure_matmul`, cached in ``home/precision_check.json`` under a key made of the CPU
    model, its bf16-relevant flags, the torch version (a new torch may have new kernels) and the kernel
    level torch and oneDNN are allowed to use."""
    import torch

    relevant = sorted(f for f in flags if f in CPU_BF16_FLAGS or f.startswith(("avx512", "amx")))
    key = cache_key(model, relevant)
    path = home / "precision_check.json"
    cache, hit = read_cache(path, key, ("bfloat16_gflops", "float32_gflops"))
    if hit is not None:
        return hit
    res = {**measure_matmul(), "cpu": model, "torch": torch.__version__, "measured_at": time.time()}
    cache[key] = res
    write_cache(path, cache)
    return res


@functools.lru_cache(maxsize=8)
def choose(requested: str, device: str) -> Choice:
    """:func:`decide` with this machine's facts (the CPU check measured or read from the cache)."""
    cuda_bf16, flags, measured = False, frozenset[str](), None
    if device == "cuda":
        import torch

        cuda_bf16 = bool(torch.cuda.is_bf16_supported())
    elif device == "cpu" and requested == "auto":
        model, flags = cpu_info()
        if set(flags) & set(CPU_BF16_FLAGS):
            from . import app_home

            measured = cached_check(app_home(), model, flags)
    elif device == "cpu":
        flags = cpu_info()[1]
    return decide(requested, device, cuda_bf16=cuda_bf16, cpu_flags=flags, measured=measured)

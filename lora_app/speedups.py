"""Optional GPU speed-ups of the training step: Liger kernels and ``torch.compile`` of the decoder layers.

Both change how the step is computed, never what: the same rows, loss and gradient (up to float
rounding). Both are CUDA-only here and off on CPU:

- **Liger kernels** (``liger-kernel``, Triton; https://github.com/linkedin/Liger-Kernel): fused RMSNorm,
  SwiGLU and RoPE, and a fused linear cross-entropy that computes the LM head and the loss in chunks,
  so the ``tokens x vocabulary`` logits (49,152 wide for SmolLM2, upcast to float32 by the loss) are
  never materialised. Applied by ``transformers.Trainer`` itself (``TrainingArguments.use_liger_kernel``,
  transformers/integrations/liger.py, which unwraps the PEFT model); architectures Liger does not know
  are left as they are (Liger logs it).
- **torch.compile of each decoder layer** ("regional compilation", the PyTorch recipe for a stack of
  identical blocks): one layer's graph is compiled once and reused by every layer, so the compile takes
  seconds instead of the minutes a whole-model compile takes, and the per-step Python and kernel-launch
  overhead of the layers shrinks. ``dynamic=True``: packed batches change shape every step (bins x
  longest bin), which would otherwise recompile.
"""

from __future__ import annotations

import importlib.util

LIGER_CHOICES = ("auto", "on", "off")


def liger_import_problem() -> str | None:
    """None when ``liger_kernel.transformers`` imports here; else why not ("not installed", or the
    import's error: it needs Triton, which CPU-only torch installs lack, and transformers >= 5)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return "not installed"
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception as err:  # ImportError (no Triton), or a version clash raised at import
        return f"does not import ({type(err).__name__}: {str(err)[:200]})"
    return None


def liger_available() -> bool:
    """Whether ``liger_kernel`` can be imported here (see :func:`liger_import_problem`)."""
    return liger_import_problem() is None


def resolve_liger(setting: str, device: str) -> tuple[bool, str]:
    """``training.use_liger_kernel`` (auto | on | off) on ``device`` -> (use it?, the reason for the log).

    auto: on when training on CUDA and liger_kernel imports, else off; on: the same, but a missing
    liger_kernel or a non-CUDA device raises ValueError naming the field and the fix; off: off.
    """
    if setting not in LIGER_CHOICES:
        raise ValueError(f"training.use_liger_kernel: expected one of {LIGER_CHOICES} (got {setting!r})")
    if setting == "off":
        return False, "Liger kernels off (training.use_liger_kernel: off)"
    if device != "cuda":
        if setting == "on":
            raise ValueError(
                f"training.use_liger_kernel: on needs a CUDA GPU (this run is on {device}). Fix: set it to auto or off"
            )
        return False, f"Liger kernels off: they need a CUDA GPU (device {device})"
    problem = liger_import_problem()
    if problem:
        if setting == "on":
            raise ValueError(
                f"training.use_liger_kernel: on, but liger_kernel {problem}. "
                "Fix: pip install liger-kernel, or set it to auto or off"
            )
        return False, (
            f"Liger kernels off: liger_kernel {problem} (pip install liger-kernel to use them); "
            "training goes on without them"
        )
    return True, "Liger kernels on (fused RMSNorm, SwiGLU, RoPE and linear cross-entropy)"


def compile_decoder_layers(model) -> int:
    """``torch.compile`` every decoder layer of ``model`` (a PEFT or plain transformers model) in place,
    with ``dynamic=True``. Returns the number of layers compiled (0 when no layer stack is found: the
    model then runs uncompiled). The compile itself happens at the first forward (seconds)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(base, getattr(base, "base_model_prefix", "model"), None)
    layers = getattr(inner, "layers", None) if inner is not None else None
    if layers is None:
        return 0
    for layer in layers:
        layer.compile(dynamic=True)
    return len(layers)

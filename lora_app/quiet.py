"""Expected library log lines kept out of the user's run log (they read like faults; they are not).

Installed when the package is imported, because ``import peft`` already imports bitsandbytes,
which logs the first line below at import time.
"""

from __future__ import annotations

import logging

# Log lines bitsandbytes emits that read like faults but are not ones:
# - at import on a CPU with AVX512-BF16 it tries the optional Hub package `kernels` for a faster
#   4-bit CPU matmul and logs "Failed to load CPU gemm_4bit_forward from kernels-community: No module
#   named 'kernels'" as a warning; its own CPU kernel is used instead (bitsandbytes/backends/cpu/ops.py);
# - every 8-bit matmul with float32 inputs (our CPU compute dtype) logs "MatMul8bitLt: inputs will be
#   cast from torch.float32 to float16", once per layer per step: LLM.int8() quantizes its inputs
#   from fp16 by design (bitsandbytes/autograd/_functions.py), so it is expected, and it flooded the log.
_BNB_NOISE = {
    "bitsandbytes.backends.cpu.ops": "Failed to load CPU gemm_4bit_forward from kernels-community",
    "bitsandbytes.autograd._functions": "MatMul8bitLt: inputs will be cast from",
}


class _DropPrefix:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_bitsandbytes() -> None:
    """Drop exactly the two expected bitsandbytes log lines above (other warnings still show).
    Idempotent; works before bitsandbytes is imported (the loggers are looked up by name)."""
    for name, prefix in _BNB_NOISE.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) for f in log.filters):
            log.addFilter(_DropPrefix(prefix))


def quiet_library_warnings() -> None:
    """Drop two library warnings that read like faults in a run log but are not ours to fix:
    transformers' own Trainer calls the deprecated ``is_gradient_checkpointing`` (FutureWarning
    from modeling_utils, every run); PEFT's save looks the base model up on the Hub to see
    whether its vocabulary was resized (we never resize it) and warns "Unable to fetch remote
    file" when offline (peft.utils.other.check_file_exists_on_hf_hub)."""
    import warnings

    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Unable to fetch remote file due to the following error")

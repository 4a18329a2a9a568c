"""lora_app: a web app (and its command-line twin) for LoRA fine-tuning of causal language models."""

import os
from pathlib import Path

from .quiet import quiet_bitsandbytes, quiet_library_warnings

quiet_bitsandbytes()
quiet_library_warnings()


def app_home() -> Path:
    """Root for the app's own files (runs, converted models, the CPU precision check's cache):
    ``LORA_APP_HOME``, default ``./.lora_app``, as an absolute path."""
    return Path(os.environ.get("LORA_APP_HOME", ".lora_app")).resolve()


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "row") == "1 row"``, ``count(2467, "row") == "2,467 rows"``."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"

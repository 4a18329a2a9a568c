"""lora_app: a web app (and its command-line twin) for LoRA fine-tuning of causal language models."""

from .quiet import quiet_bitsandbytes, quiet_library_warnings

quiet_bitsandbytes()
quiet_library_warnings()


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "row") == "1 row"``, ``count(2467, "row") == "2,467 rows"``."""
    return f"{n:,} {noun if n == 1 else (plural or noun + 's')}"

"""Generation settings: which ``generate()`` keywords a temperature means, and the check of
max_new_tokens, temperature, top_p and seed before any model loads."""

from __future__ import annotations

import math
import numbers
from typing import Any

from .config import ConfigError


def sampling_args(temperature: float, top_p: float) -> dict[str, Any]:
    """``generate()`` keywords: sampling at ``temperature`` > 0 with nucleus ``top_p``, else greedy.
    Greedy sets temperature/top_p/top_k to None so that a model's generation_config defaults
    (e.g. SmolLM2's temperature 0.2) do not make transformers warn that they are ignored."""
    if temperature > 0:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def _whole(x) -> bool:  # numpy's integers too (numbers.Integral), not True/False
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def out_of_range(field: str, value: Any, lo: float, hi: float, whole: bool) -> str | None:
    """One line naming ``field``, its range ``lo`` to ``hi`` and the fix when ``value`` is not a
    number (a whole one if ``whole``) in that range; None when it is."""
    if (_whole(value) or (isinstance(value, float) and value.is_integer())) if whole else _real(value):
        if lo <= value <= hi:
            return None
    kind = "a whole number" if whole else "a number"
    fix = f"Fix: {kind} from {lo:g} to {hi:g}."
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{field}: no value. {fix}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # "12" from an API call: not read as 12
        return f"{field}: {str(value)[:40]!r} is not {kind}. {fix}"
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{field}: {shown} is outside its range, {lo:g} to {hi:g}. {fix}"


def check_sampling(max_new_tokens: int, temperature: float, top_p: float, seed: int) -> None:
    """ConfigError naming every setting transformers' ``generate`` or torch cannot take, together:
    ``max_new_tokens`` < 1 (generate raises ValueError), a ``temperature`` that is negative, NaN
    (generate fell back to greedy without a word) or infinite (uniform sampling: noise), ``top_p``
    outside (0, 1], a ``seed`` torch.manual_seed overflows on (outside 0 .. 2**64 - 1)."""

    whole, real = _whole, _real
    bad = []
    if not (whole(max_new_tokens) and max_new_tokens >= 1):
        bad.append(f"max_new_tokens: {max_new_tokens} is not a whole number >= 1. Fix: e.g. 40.")
    if not (real(temperature) and temperature >= 0):
        bad.append(f"temperature: {temperature} is not a number >= 0. Fix: 0 for greedy, or e.g. 0.7.")
    if not (real(top_p) and 0 < top_p <= 1):
        bad.append(f"top_p: {top_p} is not in (0, 1]. Fix: e.g. 0.95.")
    if not whole(seed):
        shown = seed if isinstance(seed, (int, float)) else repr(str(seed)[:40])  # "7" from an API call
        bad.append(f"seed: {shown} is not a whole number. Fix: a whole number from 0 to {2**64 - 1}.")
    elif not 0 <= seed < 2**64:
        bad.append(f"seed: {seed} is out of range. Fix: a whole number from 0 to {2**64 - 1}.")
    if bad:
        raise ConfigError(bad)

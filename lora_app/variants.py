"""The LoRA variants PEFT already has, as lora_app offers them: rsLoRA, DoRA, the initialisations
(gaussian, PiSSA, OLoRA), modules trained in full (``modules_to_save``) and per-module ``rank_pattern``
/ ``alpha_pattern``. The fields live in :class:`lora_app.config.LoraSettings`; here are what they
become in ``peft.LoraConfig`` and the checks that need the model (its module names, its
quantization), run on the meta skeleton before any weight is read.

Sources (peft 0.21.2, ``peft/tuners/lora/config.py`` and ``layer.py``): rsLoRA scales by
``lora_alpha / sqrt(r)`` (Kalajdzievski 2023); DoRA adds a magnitude vector of ``out_features``
per wrapped layer (Liu et al. 2024); PiSSA / OLoRA initialise A and B from an SVD / QR of the base
weight and *subtract* that from the base weight, so they need the float weight (PEFT raises a
TypeError on an int8 weight) and an adapter that reloads onto the unchanged base must be
converted at save time (``save_pretrained(path_initial_model_for_weight_conversion=...)``, which
PEFT does not support with rsLoRA plus rank/alpha patterns); patterns match a module when
``re.match(rf"(.*\\.)?({key})$", module_path)`` (``peft.utils.other.get_pattern_key``).
"""

from __future__ import annotations

import re
from typing import Any

from .config import LoraSettings

#: The initialisations that change the base weights (the adapter is converted when saved).
MUTATING = ("pissa", "olora")


def mutates_base(lora: LoraSettings) -> bool:
    """True for PiSSA (``pissa``, ``pissa_niter_N``) and OLoRA: their init rewrites the base weights."""
    return lora.init_lora_weights.startswith(MUTATING)


def peft_kwargs(lora: LoraSettings, count_only: bool = False) -> dict[str, Any]:
    """The variant keywords of ``peft.LoraConfig`` for ``lora``. ``count_only``: PEFT's default
    init instead of PiSSA/OLoRA (an SVD/QR cannot run on the meta skeleton, and it changes no
    parameter count)."""
    init: bool | str = True if lora.init_lora_weights == "default" or count_only else lora.init_lora_weights
    return dict(
        use_rslora=lora.use_rslora,
        use_dora=lora.use_dora,
        init_lora_weights=init,
        modules_to_save=list(lora.modules_to_save) if lora.modules_to_save else None,
        rank_pattern=dict(lora.rank_pattern),
        alpha_pattern=dict(lora.alpha_pattern),
    )


def _matches(key: str, path: str) -> bool:
    try:
        return re.match(rf"(.*\.)?({key})$", path) is not None
    except re.error:
        return False


def problems(
    lora: LoraSettings, module_paths: list[str], targets: list[str], quantization: str, device: str = "cpu"
) -> list[str]:
    """Every problem of the variant settings for a model with these module paths (``named_modules``
    of the meta skeleton), LoRA ``targets`` (leaf names), effective ``quantization`` (none | 8bit |
    4bit) and ``device``, one line each naming the field and the fix; [] if fine."""
    out: list[str] = []
    if lora.use_dora and quantization == "8bit" and device == "cpu":
        # Found by running it: PEFT's DoRA init dequantizes the Int8 weight, after which bitsandbytes
        # 0.50's CPU int8 matmul fails on the first forward (col_stats is None). 4-bit and CUDA are fine.
        out.append(
            "lora.use_dora: DoRA on an 8-bit base fails in bitsandbytes' CPU backend. Fix: set model.quantization "
            "to 4bit or none, or turn use_dora off."
        )
    targeted = [p for p in module_paths if p.rsplit(".", 1)[-1] in targets]
    for field, pattern in (("rank_pattern", lora.rank_pattern), ("alpha_pattern", lora.alpha_pattern)):
        bad = [k for k in pattern if not any(_matches(k, p) for p in targeted)]
        if bad:
            example = targeted[0] if targeted else "q_proj"
            out.append(
                f"lora.{field}: {', '.join(repr(k) for k in bad)} match{'es' if len(bad) == 1 else ''} no module "
                f"LoRA wraps here (targets {', '.join(targets)}). Fix: key by a targeted module's name or the end of "
                f"its path, e.g. {example.rsplit('.', 1)[-1]!r} or {example!r}."
            )
    if lora.modules_to_save:
        # PEFT wraps every module whose path ends with the name (peft.utils.other._set_trainable):
        # "norm" is also each layer's input_layernorm; "model.norm" only the final one.
        unknown = [m for m in lora.modules_to_save if not any(p.endswith(m) for p in module_paths)]
        if unknown:
            out.append(
                f"lora.modules_to_save: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a module of "
                "this model. Fix: name modules such as lm_head or embed_tokens, or leave it empty."
            )
        both = sorted(set(lora.modules_to_save) & set(targets))
        if both:
            out.append(
                f"lora.modules_to_save: {', '.join(both)} {'is' if len(both) == 1 else 'are'} also in target_modules "
                "(a module is either wrapped by LoRA or trained in full). Fix: remove it from one of the two."
            )
    if mutates_base(lora):
        init = lora.init_lora_weights
        if quantization in ("8bit", "4bit"):
            out.append(
                f"lora.init_lora_weights: {init} computes A and B from the base model's float weights, and the "
                f"base is loaded {quantization}. Fix: set model.quantization to none, or init_lora_weights to "
                "default or gaussian."
            )
        if lora.use_dora:
            out.append(
                f"lora.init_lora_weights: {init} with use_dora cannot be saved as an adapter of the unchanged "
                "base (PEFT converts only LoRA's A and B, not DoRA's magnitude). Fix: turn use_dora off, or set "
                "init_lora_weights to default or gaussian."
            )
        if lora.use_rslora and (lora.rank_pattern or lora.alpha_pattern):
            out.append(
                f"lora.init_lora_weights: {init} with use_rslora and rank_pattern/alpha_pattern cannot be saved as an "
                "adapter of the unchanged base (PEFT refuses that conversion). Fix: turn use_rslora off, or drop "
                "the patterns."
            )
    return out


def summary(lora: LoraSettings) -> str:
    """The variants that differ from plain LoRA, for the run log: ", rsLoRA, DoRA, init pissa" or ""."""
    parts = [name for on, name in ((lora.use_rslora, "rsLoRA"), (lora.use_dora, "DoRA")) if on]
    if lora.init_lora_weights != "default":
        parts.append(f"init {lora.init_lora_weights}")
    if lora.modules_to_save:
        parts.append(f"modules_to_save {','.join(lora.modules_to_save)}")
    if lora.rank_pattern or lora.alpha_pattern:
        parts.append(f"rank_pattern {len(lora.rank_pattern)} / alpha_pattern {len(lora.alpha_pattern)} keys")
    return "".join(", " + p for p in parts)


def card_rows(lora: LoraSettings) -> str:
    """The model card's table rows of the variant settings (every one, also when off)."""

    def pat(d: dict) -> str:
        return ", ".join(f"{k}: {v:g}" for k, v in d.items()) or "none"

    init = lora.init_lora_weights + (
        " (converted at save to a plain LoRA of rank 2r on the unchanged base)" if mutates_base(lora) else ""
    )
    return (
        f"| use_rslora | {lora.use_rslora} |\n"
        f"| use_dora | {lora.use_dora} |\n"
        f"| init_lora_weights | {init} |\n"
        f"| modules_to_save | {', '.join(lora.modules_to_save or []) or 'none'} |\n"
        f"| rank_pattern | {pat(lora.rank_pattern)} |\n"
        f"| alpha_pattern | {pat(lora.alpha_pattern)} |"
    )

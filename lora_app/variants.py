"""The LoRA variants PEFT already has, as lora_app offers them: rsLoRA, DoRA, the initialisations
(gaussian, PiSSA, OLoRA), modules trained in full (``modules_to_save``) and per-module ``rank_pattern``
/ ``alpha_pattern``: their fields (:class:`LoraVariantFields`, part of ``config.LoraSettings``), what
they become in ``peft.LoraConfig`` (:func:`lora_kwargs`) and the checks that need the model (its module names, its
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
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from .presets import default as _d

#: lora.init_lora_weights (peft.LoraConfig's names; "default" is its True), and pissa_niter_N.
INIT_LORA_WEIGHTS = ("default", "gaussian", "pissa", "olora")
#: The initialisations that change the base weights (the adapter is converted when saved).
MUTATING = ("pissa", "olora")
#: pissa_niter_N runs N subspace iterations of torch.svd_lowrank per targeted layer at init: PEFT's
#: docs use 4 to 16; N = 10**6 hung the init (over 5 s on one 64 x 64 layer and not done).
MAX_PISSA_NITER = 64
#: lora_alpha's bound (also alpha_pattern's): 1e308 overflowed PEFT's scaling to inf (NaN weights).
MAX_ALPHA = 100_000


def _fix(text: str) -> dict[str, JsonValue]:
    return {"fix": text}  # as lora_app.config._fix: the advice appended to a validation message


class LoraVariantFields(BaseModel):
    """The variant fields of :class:`lora_app.config.LoraSettings`, named as in ``peft.LoraConfig``
    (here, beside their checks, so that config.py stays one screenful per section)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    use_rslora: bool = Field(
        _d("lora", "use_rslora"),  # on in the "fast default" preset (lora_app/presets.py)
        description="rank-stabilized LoRA: scale lora_alpha/sqrt(r) instead of lora_alpha/r",
        json_schema_extra=_fix("set use_rslora to true or false"),
    )
    use_dora: bool = Field(
        False,
        description="DoRA: a trained magnitude vector per output feature beside the LoRA direction (slower steps)",
        json_schema_extra=_fix("set use_dora to true or false"),
    )
    init_lora_weights: str = Field(
        "default",
        description="default (A Kaiming-uniform, B zero), gaussian, pissa, pissa_niter_N or olora; pissa/olora "
        "need a base that is not quantized and are saved as a LoRA of the unchanged base",
        json_schema_extra=_fix("choose default, gaussian, pissa, pissa_niter_4 or olora"),
    )
    modules_to_save: list[str] | None = Field(
        None,
        description="modules trained in full beside LoRA and saved with the adapter (e.g. lm_head)",
        json_schema_extra=_fix("list module names such as lm_head, or leave it empty"),
    )
    rank_pattern: dict[str, Annotated[int, Field(ge=1, strict=True)]] = Field(
        default_factory=dict,
        description="per-module r, keyed by a module name or regex (PEFT matches the end of the module path)",
        json_schema_extra=_fix("map module names to whole numbers >= 1, e.g. {model.layers.0.self_attn.q_proj: 8}"),
    )
    alpha_pattern: dict[str, Annotated[float, Field(gt=0, le=MAX_ALPHA)]] = Field(
        default_factory=dict,
        description="per-module lora_alpha, keyed as rank_pattern",
        json_schema_extra=_fix(f"map module names to numbers in (0, {MAX_ALPHA:,}], e.g. {{q_proj: 16}}"),
    )

    @field_validator("modules_to_save", mode="before")
    @classmethod
    def _split_saved(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.replace(";", ",").split(",")
        if isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v):  # see LoraSettings._split
            v = [p for p in (str(x).strip() for x in v) if p] or None
        return v

    @field_validator("init_lora_weights", mode="before")
    @classmethod
    def _init(cls, v: Any) -> Any:
        # PEFT's True is its default init (YAML `true`); False (B random: the adapter is not a no-op
        # at step 0) is for PEFT's own tests, not for training.
        v = "default" if v is True else v
        niter = re.fullmatch(r"pissa_niter_([1-9]\d{0,5})", v) if isinstance(v, str) else None
        if isinstance(v, str) and (v in INIT_LORA_WEIGHTS or (niter and int(niter[1]) <= MAX_PISSA_NITER)):
            return v
        raise ValueError(
            "must be one of " + ", ".join(INIT_LORA_WEIGHTS) + f" or pissa_niter_N with N from 1 to {MAX_PISSA_NITER}"
        )


def mutates_base(lora: LoraVariantFields) -> bool:
    """True for PiSSA (``pissa``, ``pissa_niter_N``) and OLoRA: their init rewrites the base weights."""
    return lora.init_lora_weights.startswith(MUTATING)


def lora_kwargs(lora: Any, targets: list[str], count_only: bool = False) -> dict[str, Any]:
    """Every keyword of ``peft.LoraConfig`` for ``lora`` (a :class:`lora_app.config.LoraSettings`)
    and the LoRA ``targets``; ``count_only``: see :func:`peft_kwargs`."""
    # PEFT annotates lora_alpha as int; it only divides by r, so a float (our field's type) is exact.
    return dict(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=list(targets),
        bias=lora.bias,
        task_type="CAUSAL_LM",
        **peft_kwargs(lora, count_only),
    )


def peft_kwargs(lora: LoraVariantFields, count_only: bool = False) -> dict[str, Any]:
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


def selects(name: str, path: str) -> bool:
    """Whether ``target_modules`` entry ``name`` selects the module at ``path``: PEFT's rule for a
    list of names, the path itself or its end after a dot
    (``peft.tuners.tuners_utils.check_target_module_exists``)."""
    return path == name or path.endswith("." + name)


def _matches(key: str, path: str) -> bool:
    try:
        return re.match(rf"(.*\.)?({key})$", path) is not None
    except re.error:
        return False


def problems(
    lora: LoraVariantFields, module_paths: list[str], targets: list[str], quantization: str, device: str = "cpu"
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
    targeted = [p for p in module_paths if any(selects(t, p) for t in targets)]
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
        # By PEFT's own rule (the end of the path): "proj" or "self_attn.q_proj" also name a module LoRA
        # wraps, which PEFT then refused with a TypeError or quietly trained in full instead.
        both = [m for m in lora.modules_to_save if any(p.endswith(m) for p in targeted)]
        if both:
            out.append(
                f"lora.modules_to_save: {', '.join(both)} {'names' if len(both) == 1 else 'name'} modules that "
                f"target_modules wraps ({', '.join(targets)}): a module is either wrapped by LoRA or trained in "
                "full. Fix: remove it from one of the two, or name modules LoRA does not wrap, such as lm_head."
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


def summary(lora: LoraVariantFields) -> str:
    """The variants that differ from plain LoRA, for the run log: ", rsLoRA, DoRA, init pissa" or ""."""
    parts = [name for on, name in ((lora.use_rslora, "rsLoRA"), (lora.use_dora, "DoRA")) if on]
    if lora.init_lora_weights != "default":
        parts.append(f"init {lora.init_lora_weights}")
    if lora.modules_to_save:
        parts.append(f"modules_to_save {','.join(lora.modules_to_save)}")
    if lora.rank_pattern or lora.alpha_pattern:
        parts.append(f"rank_pattern {len(lora.rank_pattern)} / alpha_pattern {len(lora.alpha_pattern)} keys")
    return "".join(", " + p for p in parts)


def card_rows(lora: LoraVariantFields) -> str:
    """The model card's table rows of the variant settings (every one, also when off)."""

    from .md import cell

    def pat(d: dict) -> str:  # keys are regexes: a | in one would add a table column
        return cell(", ".join(f"{k}: {v:g}" for k, v in d.items()) or "none", limit=1000)

    init = lora.init_lora_weights + (
        " (converted at save to a plain LoRA of rank 2r on the unchanged base)" if mutates_base(lora) else ""
    )
    return (
        f"| use_rslora | {lora.use_rslora} |\n"
        f"| use_dora | {lora.use_dora} |\n"
        f"| init_lora_weights | {init} |\n"
        f"| modules_to_save | {cell(', '.join(lora.modules_to_save or []) or 'none', limit=1000)} |\n"
        f"| rank_pattern | {pat(lora.rank_pattern)} |\n"
        f"| alpha_pattern | {pat(lora.alpha_pattern)} |"
    )


def rank_problems(r: int, rank_pattern: dict[str, int], skeleton, targets: list[str]) -> list[str]:
    """``lora.r`` (and each ``rank_pattern`` value) wider than every layer it applies to: an update
    ``B @ A`` of a ``[out, in]`` weight has rank at most ``min(in, out)``, so a wider rank only costs
    memory and time (and a visitor's r=10**6 would fill the training process's memory).
    ``skeleton``: the meta model (shapes only); [] if fine or no layer is found."""
    widths = {
        path: min(m.weight.shape[-2:])
        for path, m in skeleton.named_modules()
        if any(selects(t, path) for t in targets) and getattr(getattr(m, "weight", None), "ndim", 0) == 2
    }
    asked = [("lora.r", r, list(widths))]
    asked += [(f"lora.rank_pattern.{k}", v, [p for p in widths if _matches(k, p)]) for k, v in rank_pattern.items()]
    out = []
    for field, value, paths in asked:
        widest = max(paths, key=widths.__getitem__, default=None)
        if widest is not None and value > widths[widest]:
            out.append(
                f"{field}: {value:,} is wider than any layer it applies to (an update of a layer of shape [out, in] "
                f"has rank at most min(in, out); the widest here is {widths[widest]:,}, {widest}): the rest would "
                f"only cost memory and time. Fix: set it to at most {widths[widest]:,} (8-64 is usual)."
            )
    return out

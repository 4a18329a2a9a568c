"""Named settings presets (issue 14, section 3): the reference recipe exactly, and a faster recipe
measured to reach the reference's held-out perplexity sooner (bench/bench_quality.py, RESULTS.md).

A preset is only a set of values: the form fills its widgets with them, ``--preset`` on the CLI
and a top-level ``preset:`` key in a YAML config put them under whatever else is given (a value
set explicitly wins), and a run's config.yaml records the resulting values, never the name.

:data:`DEFAULT` ("fast default") is also the app's default: RunConfig's field defaults for every
setting a preset names are read from it (:func:`default`), so a YAML without ``preset:``, the CLI
without ``--preset`` and the form's starting values are that preset's values, from this one place.
This module imports nothing of lora_app (lora_app.settings reads it).
"""

from __future__ import annotations

from typing import Any

REFERENCE = "reference recipe"
FAST = "fast default"

#: name -> {section: {field: value}}. The reference recipe: the PEFT int8 example's values
#: (huggingface/peft, examples/int8_training/Finetune_opt_bnb_peft.ipynb; target_modules None = q_proj,
#: v_proj where the model has them, models.default_target_modules). The fast recipe (the app's
#: default): LoRA on every linear layer (QLoRA's finding that this, not r, is what matches full
#: fine-tuning; Dettmers et al. 2023, section 4), no LoRA dropout (the run sees each row at most once,
#: so dropout only adds noise, and without it PEFT keeps no dropped-out input copies), rsLoRA's scale
#: lora_alpha / sqrt(r) (Kalajdzievski 2023), a warm-up of a tenth of a 30-step run. Measured by
#: bench/bench_quality.py on the bundled SmolLM2-135M and the quotes, 100 held out (bench/RESULTS.md,
#: 2026-12-01, 2-core EPYC, bf16, seeds 1-5): the reference ends at held-out perplexity 40.9-41.2 after
#: ~129 s of training; this recipe passes it at step 20-25 (0.10-0.16x the time) and ends at 39.1-39.7
#: after 30 steps (0.18x). lr 4e-4 and 5e-4 spiked in the first steps with 3 of 5 seeds. On q_proj/v_proj
#: alone (this preset until then, lr 5e-4, 50 steps) runs ended at 42.0-42.6 or stalled at ~51 depending on
#: the seed: gradient spikes in layer 0's v_proj.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    REFERENCE: {
        "lora": {"r": 16, "lora_alpha": 32, "use_rslora": False, "lora_dropout": 0.05, "target_modules": None},
        "training": {
            "learning_rate": 2e-4,
            "warmup_steps": 100,
            "warmup_ratio": None,
            "max_steps": 200,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 4,
        },
    },
    FAST: {
        "lora": {"r": 16, "lora_alpha": 32, "use_rslora": True, "lora_dropout": 0.0, "target_modules": ["all-linear"]},
        "training": {
            "learning_rate": 3e-4,
            "warmup_steps": 0,
            "warmup_ratio": 0.1,
            "max_steps": 30,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 4,
        },
    },
}

#: The preset whose values are RunConfig's defaults (the form's preset dropdown starts on it).
DEFAULT = FAST

#: A warm-up is given one way: a warmup_steps above 0 wins over warmup_ratio (as in transformers).
#: The one given on top is the one meant: warmup_steps given alone drops the preset's (or the
#: default's) ratio under it, and warmup_ratio given alone drops the steps under it (:func:`layered`,
#: and lora_app.settings.TrainingSettings for RunConfig's defaults).
WARMUP_PAIR = ("warmup_steps", "warmup_ratio")


def layered(under: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """One config section: ``over``'s values on top of ``under``'s. One of warmup_steps and
    warmup_ratio given in ``over`` without the other is the warm-up meant, so ``under``'s other one
    is dropped (:data:`WARMUP_PAIR`): a ratio given over the reference recipe's 100 steps is used
    (an empty ratio given alone only empties it)."""
    steps, ratio = WARMUP_PAIR
    for given, other in ((steps, ratio), (ratio, steps)):
        if over.get(given) is not None and other not in over:
            under = {k: v for k, v in under.items() if k != other}
    return {**under, **over}


def default(section: str, field: str) -> Any:
    """The app's default of ``section.field``: :data:`DEFAULT`'s value. Raises KeyError for a
    field the preset does not name (such a field keeps its own default in lora_app.settings)."""
    return PRESETS[DEFAULT][section][field]


def problem(name: Any) -> str | None:
    """Why ``name`` is not a preset (one line naming the field and the fix), or None."""
    if name in PRESETS:
        return None
    return f"preset: {name!r} is not a preset. Fix: choose one of {', '.join(repr(p) for p in PRESETS)}."


def apply(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a nested config dict) with its top-level ``preset`` key replaced by the preset's
    values, under the values ``raw`` sets itself. Returns ``raw`` unchanged when it names no preset.
    Raises ValueError (:func:`problem`'s line) for an unknown name."""
    if "preset" not in raw:
        return raw
    raw = dict(raw)
    name = raw.pop("preset")
    bad = problem(name)
    if bad:
        raise ValueError(bad)
    for section, values in PRESETS[name].items():
        given = raw.get(section)
        raw[section] = (
            layered(values, given) if isinstance(given, dict) else (given if section in raw else dict(values))
        )
    return raw

"""Named settings presets (issue 14, section 3): the reference recipe exactly, and a faster recipe
measured to reach the reference's held-out perplexity sooner (bench/bench_quality.py, RESULTS.md).

A preset is only a set of values: the form fills its widgets with them, ``--preset`` on the CLI
and a top-level ``preset:`` key in a YAML config put them under whatever else is given (a value
set explicitly wins), and a run's config.yaml records the resulting values, never the name.
"""

from __future__ import annotations

from typing import Any

REFERENCE = "reference recipe"
FAST = "fast default"

#: name -> {section: {field: value}}. The reference recipe: the PEFT int8 example's values
#: (huggingface/peft, examples/int8_training/Finetune_opt_bnb_peft.ipynb), which are also
#: RunConfig's defaults. The fast recipe: a higher learning rate with a warm-up of a tenth of a
#: shorter run, and rsLoRA's scale lora_alpha / sqrt(r) (Kalajdzievski 2023). Measured by
#: bench/bench_quality.py on the bundled SmolLM2-135M and the quotes (bench/RESULTS.md, 2026-12-01,
#: quiet 2-core EPYC, bf16): the reference reached held-out perplexity 40.92 after 187 s of
#: training; this recipe reached it at step 40 after 36 s (0.19x) and ended at 39.40 after 45 s.
#: Without rsLoRA the same schedule ended at 42.79 (not reached); with DoRA 42.77.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    REFERENCE: {
        "lora": {"r": 16, "lora_alpha": 32, "use_rslora": False},
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
        "lora": {"r": 16, "lora_alpha": 32, "use_rslora": True},
        "training": {
            "learning_rate": 1e-3,
            "warmup_steps": 0,
            "warmup_ratio": 0.1,
            "max_steps": 50,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 4,
        },
    },
}

#: The preset whose values are RunConfig's defaults (the form's preset dropdown starts on it).
DEFAULT = REFERENCE


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
        raw[section] = {**values, **given} if isinstance(given, dict) else (given if section in raw else dict(values))
    return raw

"""The one typed run configuration, shared by the UI, the CLI, the subprocess and the tests.

A run is described by :class:`RunConfig` (data + model + lora + training + distributed; the
sections and their fields are in :mod:`lora_app.settings`). It is validated once, with every
problem reported together (:class:`ConfigError`), before any model is loaded. Defaults are the
"fast default" preset's values (:data:`lora_app.presets.DEFAULT`: every linear layer, no LoRA dropout,
r=16, lora_alpha=32 with rsLoRA, batch 4 x accumulation 4, lr 3e-4, warm-up a tenth of 30 steps);
``preset: reference recipe`` gives the PEFT int8 example's values exactly (q_proj/v_proj, lora_dropout
0.05, warmup 100, 200 steps, lr 2e-4; huggingface/peft, examples/int8_training/Finetune_opt_bnb_peft.ipynb).
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from . import presets
from .settings import (
    DEFAULT_BASE_MODEL,
    DataConfig,
    DistributedConfig,
    LoraSettings,
    ModelConfig,
    TrainingSettings,
    _Section,
)

# The sections live in settings.py; the rest of the app imports them from here, with RunConfig.
__all__ = [
    "DEFAULT_BASE_MODEL",
    "ConfigError",
    "DataConfig",
    "DistributedConfig",
    "LoraSettings",
    "ModelConfig",
    "RunConfig",
    "TrainingSettings",
]


class ConfigError(ValueError):
    """Raised when a configuration (or its inputs) has problems.

    ``problems`` holds one human-readable line per problem, each naming the field and the
    fix; ``str(err)`` joins them, so a UI can show every problem at once.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RunConfig(_Section):
    """Everything one training run needs. Serialised as ``RUN_DIR/config.yaml``."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def build(cls, data: dict | None = None, **sections: Any) -> RunConfig:
        """Validate a nested dict (or keyword sections) into a RunConfig.

        Raises :class:`ConfigError` listing *every* problem, each as
        ``"section.field: what is wrong (got X). Fix: ..."``.
        """
        raw = dict(data or {})
        for k, v in sections.items():
            raw.setdefault(k, {}).update(v) if isinstance(v, dict) else raw.__setitem__(k, v)
        try:  # a top-level `preset:` (lora_app.presets) puts its values under the ones given
            raw = presets.apply(raw)
        except ValueError as err:
            raise ConfigError([str(err)]) from None
        try:
            return cls.model_validate(raw)
        except ValidationError as err:
            raise ConfigError([_describe(e) for e in err.errors()]) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> RunConfig:
        """Build from YAML text (:func:`parse_raw`). Raises ConfigError."""
        return cls.build(parse_raw(text))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """Build from a saved ``.yaml``/``.yml`` or ``.json`` file (a run's config.yaml, a Runs tab
        download). A saved dump made before a field existed meant what the app did then
        (:data:`SAVED_BEFORE`). Raises ConfigError for a malformed or invalid config, OSError for an
        unreadable file."""
        text = Path(path).read_text(encoding="utf-8")
        return cls.build(saved_before(parse_raw(text, json_text=str(path).endswith(".json"))))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")


#: Fields added after runs were first saved, whose default now differs from what a run did before
#: they existed: use_rslora (2026-12-01, with warmup_ratio; default True since the fast default).
#: A run saved before then has no use_rslora and trained with lora_alpha / r: resumed, merged or
#: copied to the form with the new default its adapter's scale would silently grow sqrt(r)-fold.
SAVED_BEFORE = {"lora": {"use_rslora": False}}


def saved_before(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with :data:`SAVED_BEFORE`'s values where it is a saved dump (its lora section has
    every field the first dumps had: r, lora_alpha, lora_dropout, target_modules, bias) that lacks
    them; other configs (hand-written, partial) are returned unchanged and get today's defaults."""
    lora = raw.get("lora")
    if not isinstance(lora, dict) or not {"r", "lora_alpha", "lora_dropout", "target_modules", "bias"} <= set(lora):
        return raw
    out = dict(raw)
    for section, values in SAVED_BEFORE.items():
        if isinstance(out.get(section), dict):
            out[section] = {**values, **out[section]}
    t = out.get("training")
    if isinstance(t, dict) and t.get("warmup_ratio") is not None and t.get("warmup_steps"):
        # Saved when warmup_ratio won over warmup_steps (until 2026-12-02): the run warmed up by the
        # ratio. A dump made since never holds both (the steps win and empty the ratio).
        out["training"] = {**t, "warmup_steps": 0}
    return out


def parse_raw(text: str, json_text: bool = False) -> dict[str, Any]:
    """The one reader of a raw config (YAML, or JSON when ``json_text``) for RunConfig.build:
    the UI's saved settings, ``--config`` of the CLI and every run's config.yaml. Empty text is
    ``{}`` (all defaults). Raises ConfigError for text that does not parse or is not a mapping."""
    try:
        raw = json.loads(text) if json_text else yaml.safe_load(text)
    except ValueError as err:  # json.JSONDecodeError
        raise ConfigError([f"config: not valid JSON ({err})"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"config: not valid YAML ({err})"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(["config: expected a mapping with data/model/lora/training/distributed"])
    return raw


_SHORT = reprlib.Repr()  # (keyword arguments only from Python 3.12)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 4, 4, 200, 200
_SHORT.maxlong = 61  # whole up to 10**60; longer ones are told by their size (_describe)


def _describe(e: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in e["loc"])
    # (section, field, ...): an item of a list or dict field (lora.rank_pattern.q_proj) gets its field's fix
    field = str(e["loc"][1] if len(e["loc"]) > 1 else e["loc"][-1]) if e["loc"] else ""
    # Integers given as strings or floats read better as "whole number" than pydantic's text.
    msg = e["msg"]
    if e["type"] in ("int_type", "int_parsing", "int_from_float"):
        msg = "must be a whole number"
    elif e["type"] == "extra_forbidden":
        msg = "is not a known setting"
    got = e.get("input")
    if got is None and e["type"] != "missing":  # an emptied form field: "(got None)" read as a word typed
        return f"{loc}: no value." + (f" Fix: {field_fix(field)}." if field_fix(field) else "")
    # (str() of an int over 4,300 digits raises in Python >= 3.11: its size is told by bit_length)
    if isinstance(got, int) and abs(got) >= 10**60:
        shown = f"a number of about {int(got.bit_length() * 0.30103) + 1} digits"
    else:  # reprlib: bounded by depth and length (repr of nested YAML aliases ran out of memory)
        shown = _SHORT.repr(got)
    if len(shown) > 200:  # a pasted file would fill the page
        shown = shown[:200] + "..."
    got_s = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {shown})"
    fix = field_fix(field)
    return f"{loc}: {msg}{got_s}." + (f" Fix: {fix}." if fix else "")


_SECTIONS: dict[str, type[_Section]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "lora": LoraSettings,
    "training": TrainingSettings,
    "distributed": DistributedConfig,
}


def field_help(name: str) -> str:
    """The one-line help of the setting ``name`` (its field's ``description``), for the form's
    ``info=`` and the CLI's ``train --settings``; "" for a field without one."""
    for section in _SECTIONS.values():
        info = section.model_fields.get(name)
        if info is not None:
            return info.description or ""
    return ""


def settings_help() -> str:
    """Every setting as ``section.field = default: help`` lines (the CLI's ``train --settings``)."""
    d = RunConfig().model_dump(mode="json")
    lines = []
    for sname, section in _SECTIONS.items():
        for name, info in section.model_fields.items():
            line = f"{sname}.{name} = {d[sname][name]!r}"
            lines.append(line + (f": {info.description}" if info.description else ""))
    return "\n".join(lines)


def field_fix(name: str) -> str | None:
    """The advice (``Fix: ...``) of the setting ``name`` (e.g. "r", "max_steps"), from its field's
    metadata in any section; None for a name without one. Field names are unique across sections."""
    for section in _SECTIONS.values():
        info = section.model_fields.get(name)
        extra = info.json_schema_extra if info is not None else None
        if isinstance(extra, dict) and isinstance(extra.get("fix"), str):
            return str(extra["fix"])
    return None

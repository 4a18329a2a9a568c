"""Preflight: every check a run needs before a model's weights are loaded, reported together.

:func:`check_and_submit` is the one way a run gets started: the Start button and
``python -m lora_app train --config`` both call it, so both report the same problems, and a
run folder is only created once everything passed. It costs about a second (the data file
is read and the model is built on the meta device; no weights).

"Together" means together: settings that do not validate (``lora.r: 0``) do not hide a bad
data file or an unknown model; each section that parses on its own is checked on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import count, models
from .config import ConfigError, DataConfig, LoraSettings, ModelConfig, RunConfig, TrainingSettings
from .data import TextData, load_text

#: Rows longer than this many characters per max_length token are surely cut.
_CHARS_PER_TOKEN = 4


@dataclass
class Preflight:
    """What the checks found: the data, the LoRA targets and the parameter counts.

    ``notes``: things worth knowing that do not stop the run (empty rows skipped, long rows cut).
    """

    data: TextData | None
    targets: list[str]
    available_modules: list[str]
    trainable: int
    total: int
    device: str
    quantization: str
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_line(self) -> str:
        return models.trainable_line(self.trainable, self.total)


def _section(cls, raw: dict, name: str):
    """One section validated alone (None if it has problems: RunConfig.build reports them)."""
    try:
        return cls.model_validate(raw.get(name) or {})
    except Exception:
        return None


def preflight(config: RunConfig | dict[str, Any], token: str | None = None,
              check_data: bool = True) -> tuple[RunConfig, Preflight]:
    """Validate the settings, read the data, check the model and the LoRA targets, together.

    ``config``: a RunConfig or the nested dict a form or a YAML file gives. Raises
    ConfigError with *all* problems found, each naming the field and the fix; returns the
    validated config and a :class:`Preflight` otherwise. Loads no weights, writes nothing.
    """
    problems: list[str] = []
    cfg: RunConfig | None = None
    if isinstance(config, RunConfig):
        cfg, raw = config, {}
    elif not isinstance(config, dict):
        raise ConfigError(["config: expected a mapping with data/model/lora/training"])
    else:
        raw = config
        try:
            cfg = RunConfig.build(raw)
        except ConfigError as err:
            problems += err.problems
    data = cfg.data if cfg else _section(DataConfig, raw, "data")
    model = cfg.model if cfg else _section(ModelConfig, raw, "model")
    lora = cfg.lora if cfg else _section(LoraSettings, raw, "lora")
    training = cfg.training if cfg else _section(TrainingSettings, raw, "training")
    if lora is None:  # r or alpha is bad: still check the target names
        lora = _section(LoraSettings, {"lora": {"target_modules": (raw.get("lora") or {}).get("target_modules")}}
                        if isinstance(raw.get("lora"), dict) else {}, "lora")

    td, notes = None, []
    if check_data and data is not None:
        try:
            td = load_text(data, token=token)
        except ConfigError as err:
            problems += err.problems
        else:
            if td.skipped_empty:
                notes.append(f"{count(td.skipped_empty, 'empty row')} {'is' if td.skipped_empty == 1 else 'are'} skipped.")
            if training is not None:
                longest = max(len(t) for t in td.texts)
                if longest > training.max_length * _CHARS_PER_TOKEN:
                    n = sum(len(t) > training.max_length * _CHARS_PER_TOKEN for t in td.texts)
                    notes.append(f"{count(n, 'row')} {'is' if n == 1 else 'are'} longer than max_length ({training.max_length} tokens; the longest "
                                 f"has {longest:,} characters): each is cut to its first {training.max_length} tokens.")
            if training is not None:
                from .heldout import split as heldout_split

                try:  # the held-out set: said on the page before Start (or why there is none)
                    notes.append(heldout_split(td.texts, data, training, td.text_column, token).note)
                except ConfigError as err:
                    problems += err.problems

    device = models.device_kind()
    targets, available, trainable, total = [], [], 0, 0
    if model is not None:
        q = models.quantization_problem(model, device)
        if q:
            problems.append(q)
        try:
            mc = models.load_model_config(model, token=token)
            _check_causal(mc, model)
            available = models.linear_module_names(models.skeleton(mc, model.trust_remote_code))
            if lora is not None:
                targets = models.expand_target_modules(
                    lora.target_modules or models.default_target_modules(mc.model_type, available), available)
                bad = models.check_target_modules(targets, available)
                problems += bad
                if not bad and not problems and cfg is not None:
                    trainable, total = models.count_parameters(mc, cfg.lora, targets)
        except ConfigError as err:
            problems += err.problems
    if problems:
        raise ConfigError(problems)
    return cfg, Preflight(td, targets, available, trainable, total, device,
                          models.effective_quantization(cfg.model, device), notes)


def _check_causal(mc, model: ModelConfig) -> None:
    """An encoder (BERT, RoBERTa ...) has a causal-LM class in transformers, but its weights
    were trained to fill in masks, not to continue text: refuse it, as a non-causal model."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    if getattr(mc, "auto_map", None):
        return
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = list(getattr(mc, "architectures", None) or [])
    encoder = mc.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(mc, "is_decoder", False)
    causal_arch = any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    if (archs and not causal_arch) or (encoder and not archs):
        what = ", ".join(archs) if archs else f"'{mc.model_type}' encoder"
        raise ConfigError([f"{models.FIELD}: '{model.base_model_name_or_path}' is a {what} model, not a causal "
                           "language model. Fix: pick a text-generation model (e.g. Llama, OPT, SmolLM2)."])


def validate(cfg: RunConfig, token: str | None = None, check_data: bool = True) -> Preflight:
    """:func:`preflight` for a RunConfig; returns only the :class:`Preflight`."""
    return preflight(cfg, token=token, check_data=check_data)[1]


def check_and_submit(jobs, config: RunConfig | dict[str, Any], owner: str = "local", token: str | None = None,
                     env: dict | None = None) -> tuple[str, Preflight]:
    """Preflight, then queue the run: what Start and the CLI do. Raises ConfigError (listing
    every problem) before anything is written; returns ``(run_id, preflight)``."""
    cfg, pre = preflight(config, token=token)
    return jobs.submit(cfg, owner=owner, env=env), pre

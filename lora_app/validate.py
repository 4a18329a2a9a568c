"""Preflight: every check a run needs before a model's weights are loaded, reported together.

Used by the Start button, the CLI and the tests alike. Costs about a second (the data file
is read and the model is built on the meta device; no weights).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import models
from .config import ConfigError, RunConfig
from .data import TextData, load_text


@dataclass
class Preflight:
    """What the checks found: the data, the LoRA targets and the parameter counts."""

    data: TextData | None
    targets: list[str]
    available_modules: list[str]
    trainable: int
    total: int
    device: str
    quantization: str

    @property
    def trainable_line(self) -> str:
        return models.trainable_line(self.trainable, self.total)


def validate(cfg: RunConfig, token: str | None = None, check_data: bool = True) -> Preflight:
    """Check data, model, LoRA targets and device together.

    Raises ConfigError with *all* problems found; returns a :class:`Preflight` otherwise.
    """
    problems: list[str] = []
    td = None
    if check_data:
        try:
            td = load_text(cfg.data, token=token)
        except ConfigError as err:
            problems += err.problems
    device = models.device_kind()
    q = models.quantization_problem(cfg.model, device)
    if q:
        problems.append(q)
    targets, available, trainable, total = [], [], 0, 0
    try:
        mc = models.load_model_config(cfg.model, token=token)
        available = models.linear_module_names(models.skeleton(mc, cfg.model.trust_remote_code))
        targets = cfg.lora.target_modules or models.default_target_modules(mc.model_type, available)
        bad = models.check_target_modules(targets, available)
        problems += bad
        if not bad:
            trainable, total = models.count_parameters(mc, cfg.lora, targets)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    return Preflight(td, targets, available, trainable, total, device, models.effective_quantization(cfg.model, device))

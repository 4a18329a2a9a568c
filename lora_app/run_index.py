"""The run index's row and schema: ``runs.sqlite`` beside the run folders, one row per run.

Written only by :class:`lora_app.jobs.JobManager` (the scheduler's view of a run:
queued/running/finished/stopped/failed); read by the UI through it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import ConfigError

ACTIVE = ("queued", "running")
_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, owner TEXT, status TEXT, created REAL, started REAL, ended REAL,
  pid INTEGER, base_model TEXT, data TEXT, final_loss REAL, message TEXT, resume INTEGER DEFAULT 0)"""


class NotYourRun(PermissionError):
    """Raised when someone acts on a run that another person started."""


class QueueFull(ConfigError):
    """Raised by :meth:`lora_app.jobs.JobManager.submit` when the owner has as many runs waiting
    as one person may (``LORA_APP_MAX_WAITING_PER_PERSON``); ``problems``: the one line to show."""


@dataclass
class RunInfo:
    """One row of the run index."""

    id: str
    owner: str
    status: str
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    base_model: str
    data: str
    final_loss: float | None
    message: str
    resume: int = 0

    @property
    def duration_s(self) -> float | None:
        if not self.started:
            return None
        return (self.ended or time.time()) - self.started

"""The append-only JSON-lines event log of a run (``RUN_DIR/events.jsonl``).

The training process appends; the UI follows. One JSON object per line, always with
``type`` and ``time`` (Unix seconds, float). Types written by the trainer:

- ``status``: ``{"status": "loading"|"evaluating"|"training"|"saving"|"finished"|"stopped"|"failed", "message"}``
- ``info``: ``{"message"}`` plus free fields (e.g. trainable parameter counts)
- ``log``: ``{"step", "max_steps", "loss", "learning_rate", "grad_norm", "tokens"}``
- ``progress``: ``{"step", "max_steps", "elapsed_s", "remaining_s"}``
- ``saved``: ``{"step", "path"}``
- ``eval``: ``{"step", "eval_loss", "perplexity", "tokens", "base"}``: held-out evaluation; ``base``
  is the base model's, measured once before the first step

The file is the only channel between the two processes, so after a page reload (or an
app restart) the UI rebuilds everything by re-reading it from offset 0.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
TERMINAL = ("finished", "stopped", "failed")


class EventWriter:
    """Appends events to ``RUN_DIR/events.jsonl``; safe to call from several threads.

    Each line is written with one ``write`` on an ``O_APPEND`` descriptor, so a reader
    never sees two events interleaved, only possibly a partial last line.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lock = threading.Lock()

    def emit(self, type: str, **fields: Any) -> dict:
        event = {"type": type, "time": round(time.time(), 3), **fields}
        line = (json.dumps(event, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
        return event

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_events(run_dir: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Read complete events from byte ``offset``; return them and the offset to resume at.

    A partial last line (being written right now) is left for the next call.
    Unparseable lines are skipped, not fatal: a killed writer can leave one behind.
    """
    path = Path(run_dir) / EVENTS_FILE
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for raw in chunk[: end + 1].splitlines():
        try:
            events.append(json.loads(raw))
        except ValueError:
            continue
    return events, offset + end + 1


@dataclass
class RunView:
    """What the UI shows of a run, folded from its events (pure data, no I/O).

    ``losses`` is a list of ``(step, loss)``; ``evals`` of ``(step, held-out loss)`` (step 0:
    the base model); ``lines`` the human-readable log.
    """

    status: str = "queued"
    message: str = ""
    step: int = 0
    max_steps: int = 0
    elapsed_s: float = 0.0
    remaining_s: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    perplexity: float | None = None
    base_perplexity: float | None = None
    lines: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    offset: int = 0

    def apply(self, ev: dict) -> None:
        t = ev.get("type")
        stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", 0)))
        if t == "status":
            self.status = ev.get("status", self.status)
            self.message = ev.get("message", "")
            self.lines.append(f"[{stamp}] {self.status}" + (f": {self.message}" if self.message else ""))
        elif t == "log":
            self.step = ev.get("step", self.step)
            self.max_steps = ev.get("max_steps", self.max_steps)
            if ev.get("loss") is not None:
                self.losses.append((int(ev["step"]), float(ev["loss"])))
            parts = [f"step {ev.get('step')}/{ev.get('max_steps')}"]
            for k in ("loss", "learning_rate", "grad_norm", "tokens_per_s"):
                if ev.get(k) is not None:
                    v = ev[k]
                    parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
            self.lines.append(f"[{stamp}] " + "  ".join(parts))
        elif t == "progress":
            self.step = ev.get("step", self.step)
            self.max_steps = ev.get("max_steps", self.max_steps)
            self.elapsed_s = ev.get("elapsed_s", self.elapsed_s)
            self.remaining_s = ev.get("remaining_s")
        elif t == "info":
            self.info.update({k: v for k, v in ev.items() if k not in ("type", "time", "message")})
            self.lines.append(f"[{stamp}] {ev.get('message', '')}")
        elif t == "eval":
            self.evals.append((int(ev.get("step", 0)), float(ev["eval_loss"])))
            ppl = float(ev["perplexity"])
            if ev.get("base"):
                self.base_perplexity = ppl
                what = "base model, before training"
            else:
                self.perplexity = ppl
                what = f"step {ev.get('step')}/{ev.get('max_steps')}"
            self.lines.append(f"[{stamp}] held-out ({what}): eval_loss {ev['eval_loss']:.4f}  perplexity {ppl:.2f}")
        elif t == "saved":
            self.lines.append(f"[{stamp}] adapter saved at step {ev.get('step')} -> {ev.get('path')}")

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def update(self, run_dir: str | Path) -> bool:
        """Apply new events from the file; return True if anything changed."""
        events, self.offset = read_events(run_dir, self.offset)
        for ev in events:
            self.apply(ev)
        return bool(events)

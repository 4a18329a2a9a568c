"""What the tabs share: the job manager, the generator, owners, formatting helpers."""

from __future__ import annotations

import html
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..generate import Generator
from ..jobs import JobManager
from ..models import app_home

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "quotes.jsonl"


def runs_root() -> Path:
    """``LORA_APP_RUNS``, else ``/data/lora_app/runs`` on a Space with persistent storage,
    else ``LORA_APP_HOME/runs``."""
    if os.environ.get("LORA_APP_RUNS"):
        return Path(os.environ["LORA_APP_RUNS"])
    if os.environ.get("SPACE_ID") and os.path.isdir("/data") and os.access("/data", os.W_OK):
        return Path("/data/lora_app/runs")
    return app_home() / "runs"


@dataclass
class AppContext:
    """Process-wide objects behind one Blocks app."""

    jobs: JobManager
    generator: Generator
    admins: frozenset[str]


def new_owner_id() -> str:
    return "browser-" + secrets.token_hex(8)


def owner_of(browser_owner: str | None, profile=None) -> str:
    """Hub user name when logged in with OAuth, else the browser's own random id."""
    name = getattr(profile, "username", None) or getattr(profile, "name", None)
    return f"hf:{name}" if name else (browser_owner or "anonymous")


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_html(step: int, max_steps: int, elapsed: float, remaining: float | None, status: str) -> str:
    pct = 100.0 * step / max_steps if max_steps else 0.0
    return (f'<div class="la-progress" data-status="{html.escape(status)}">'
            f'<div class="la-bar"><div class="la-fill" style="width:{pct:.1f}%"></div></div>'
            f'<div class="la-text">{html.escape(status)} · step {step}/{max_steps or "?"} · '
            f'elapsed {fmt_duration(elapsed)} · remaining {fmt_duration(remaining)}</div></div>')


def loss_frame(losses: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame({"step": [s for s, _ in losses], "loss": [v for _, v in losses]})


def problems_md(problems: list[str]) -> str:
    return "**Please fix:**\n" + "\n".join(f"- {html.escape(p)}" for p in problems)


CSS = """
.la-progress .la-bar {height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden;}
.la-progress .la-fill {height: 100%; background: var(--color-accent); transition: width .3s;}
.la-progress .la-text {font-size: .9em; margin-top: 4px;}
"""

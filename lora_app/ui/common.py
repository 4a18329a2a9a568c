"""What the tabs share: the job manager, the generator, owners, formatting helpers."""

from __future__ import annotations

import html
import os
import secrets
import time
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


def browser_state_secret(root: Path) -> str:
    """The key gr.BrowserState encrypts the owner id with in localStorage: ``LORA_APP_SECRET``,
    else one made once and kept in ``root/.browser_state_secret``.

    Gradio's default is a new random key per app start, so after a restart a browser could
    not read its owner id back, got a new one and lost sight of its runs (Train tab re-attach,
    Runs, Try it)."""
    if os.environ.get("LORA_APP_SECRET"):
        return os.environ["LORA_APP_SECRET"]
    path = Path(root) / ".browser_state_secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_urlsafe(24))
    return path.read_text(encoding="utf-8").strip()


def owner_of(browser_owner: str | None, profile=None) -> str:
    """Hub user name when logged in with OAuth, else the browser's own random id."""
    name = getattr(profile, "username", None) or getattr(profile, "name", None)
    return f"hf:{name}" if name else (browser_owner or "anonymous")


def request_owner(browser_owner: str | None, request=None) -> str:
    """:func:`owner_of` for a Gradio request: the Hub user of its OAuth session (Gradio keeps
    it under ``oauth_info``) when signed in, else the browser id. Works without OAuth set up."""
    # As gradio.helpers._session_from_request: the session lives in the ASGI scope, and only
    # when SessionMiddleware is installed (OAuth on); touching .session otherwise raises.
    underlying = getattr(request, "request", None) or request
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if info and info.get("expires_at") and info["expires_at"] < time.time():
        info = None
    name = ((info or {}).get("userinfo") or {}).get("preferred_username")
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


def loss_frame(losses: list[tuple[int, float]], evals: list[tuple[int, float]] = ()) -> pd.DataFrame:
    """Training loss and held-out loss (step 0: the base model) as one long frame for one plot:
    columns ``step``, ``loss``, ``series`` ("training" / "held-out")."""
    pts = [(s, v, "training") for s, v in losses] + [(s, v, "held-out") for s, v in evals]
    return pd.DataFrame({"step": [p[0] for p in pts], "loss": [p[1] for p in pts], "series": [p[2] for p in pts]})


def problems_md(problems: list[str]) -> str:
    return "**Please fix:**\n" + "\n".join(f"- {html.escape(p)}" for p in problems)


CSS = """
.la-progress .la-bar {height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden;}
.la-progress .la-fill {height: 100%; background: var(--color-accent); transition: width .3s;}
.la-progress .la-text {font-size: .9em; margin-top: 4px;}
"""

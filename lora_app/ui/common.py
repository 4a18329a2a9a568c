"""What the tabs share: the job manager, the generator, who is asking (through
:mod:`lora_app.identity`), formatting helpers."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from .. import app_home, fair_queue, identity
from ..config import RunConfig
from ..events import RunView
from ..generate import Generator
from ..identity import Identity
from ..jobs import JobManager, NotYourRun, RunInfo
from ..repo_id import on_disk
from ..run_folder import checkpoint_step

EXAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "quotes.jsonl"
# Read-only handlers (lists, details, the Hub tab's run picker) share one group of 8 workers:
# with Gradio's default (1 per event) 20 pages refreshing the Runs tab waited in one line.
READ_ONLY: dict[str, Any] = {"concurrency_limit": 8, "concurrency_id": "read-only"}


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
    """Process-wide objects behind one Blocks app. ``admins``: owners (``hf:<name>``) who see
    every run; ``key``: the identity signing key (default: :func:`lora_app.identity.signing_key`
    of the runs folder)."""

    jobs: JobManager
    generator: Generator
    admins: frozenset[str]
    key: bytes = b""

    def __post_init__(self):
        if not self.key:
            self.key = identity.signing_key(self.jobs.root)

    def who(self, session_owner: str | None, profile=None) -> Identity:
        """The caller of a request: see :func:`lora_app.identity.resolve`."""
        ident = identity.resolve(session_owner, profile, self.admins)
        if ident.owner and not ident.admin and self.jobs.is_admin(ident.owner):
            ident = Identity(ident.owner, admin=True)
        return ident

    def visible(self, ident: Identity) -> list[RunInfo]:
        """The runs ``ident`` may see, newest first (none for an unknown caller)."""
        if ident.admin or ident.local:
            return self.jobs.list()
        return self.jobs.list(owner=ident.owner) if ident.owner else []

    def run_of(self, ident: Identity, run_id: str | None) -> RunInfo:
        """The run ``run_id`` if ``ident`` may see it. Raises NotYourRun with the same words
        whether the run is someone else's or does not exist (nothing to probe)."""
        info = self.jobs.get(run_id) if isinstance(run_id, str) and run_id else None
        if info is None or not ident.may_see(info.owner):
            raise NotYourRun(
                f"No run `{html.escape(str(run_id or ''))}` of yours. Fix: pick one of your runs "
                "from the list (press Refresh)."
            )
        return info

    def adapter_ref(self, ident: Identity, ref: str | None) -> str | None:
        """What the Try tab may load for ``ident``: one of their runs (by run id, or a folder
        inside one) becomes its adapter folder; a Hub repo id stays as it is; any other folder
        only under :meth:`folder_rule`. Raises NotYourRun otherwise. None when ``ref`` is empty."""
        ref = (ref or "").strip()
        if not ref:
            return None
        if self.jobs.get(ref) is not None:
            return str(self.jobs.run_dir(self.run_of(ident, ref).id) / "adapter")
        if not (ref.startswith(("/", ".", "~")) or on_disk(ref)):
            return ref  # a Hub repo id: the Hub decides who may read it
        return str(self.folder_rule(ident, ref, "adapter"))

    def check_base_folder(self, ident: Identity, ref: str | None) -> None:
        """A base_model_name_or_path that names a folder on the server follows :meth:`folder_rule`
        (the adapter's rule). Raises NotYourRun; a Hub id passes."""
        ref = (ref or "").strip()
        if ref and (ref.startswith(("/", ".", "~")) or on_disk(ref)):
            self.folder_rule(ident, ref, "model.base_model_name_or_path")

    def folder_rule(self, ident: Identity, ref: str, field: str) -> Path:
        """The shared server's folder rule: ``ref`` (a path typed by ``ident``) resolved, when
        ``ident`` may read it: a folder inside one of their runs, or any folder for an admin, the
        CLI, or anyone on a one-person server (:func:`lora_app.public_repos.shared_server` false).
        Else NotYourRun with one message, whether the folder exists or not, is another person's
        run or is outside the runs root: '/tmp' and '/nonexistent/dir' told a visitor which server
        folders exist."""
        from ..public_repos import shared_server

        path = Path(ref).expanduser().resolve()
        if ident.sees_paths or not shared_server():
            if path.is_relative_to(self.jobs.root):  # inside the runs root: the run's owner still decides
                parts = path.relative_to(self.jobs.root).parts
                self.run_of(ident, parts[0] if parts else None)
            return path
        if path.is_relative_to(self.jobs.root) and len(parts := path.relative_to(self.jobs.root).parts) > 0:
            info = self.jobs.get(parts[0])
            if info is not None and ident.may_see(info.owner):
                return path
        raise NotYourRun(
            f"{field}: '{ref}' is not a folder of one of your runs, and other folders on this server are not "
            "open to visitors. Fix: pick one of your runs from the list (press Refresh), or type a Hub repo id "
            "(owner/name)."
        )

    def may_read_path(self, ident: Identity, ref: str) -> bool:
        """May the app read the server file ``ref`` for ``ident`` (a data file an uploaded YAML names)?
        :meth:`folder_rule`'s answer: a visitor's YAML could name another visitor's private data copy,
        or the server's ``.env``."""
        try:
            self.folder_rule(ident, ref, "data.path")
        except (NotYourRun, OSError, RuntimeError, ValueError):
            return False
        return True

    def redact(self, ident: Identity, text: str) -> str:
        """Server folder paths out of ``text`` unless ``ident`` may see them."""
        return ident.redact(text, self.jobs.root)


def fmt_duration(s: float | None) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss``; "–" for None (not known)."""
    if s is None:
        return "–"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def progress_html(step: int, max_steps: int, elapsed: float, remaining: float | None, status: str) -> str:
    """The progress bar: ``status`` · step/max_steps · elapsed (s) · remaining (s, the trainer's
    estimate); an ended run (stopped, failed, finished) has nothing remaining to show: its last
    estimate stayed on the bar ("stopped · remaining 0:34")."""
    pct = 100.0 * step / max_steps if max_steps else 0.0
    left = "" if status in ("stopped", "failed", "finished") else f" · remaining {fmt_duration(remaining)}"
    return (
        f'<div class="la-progress" data-status="{html.escape(status)}">'
        f'<div class="la-bar"><div class="la-fill" style="width:{pct:.1f}%"></div></div>'
        f'<div class="la-text">{html.escape(status)} · step {step}/{max_steps or "?"} · '
        f"elapsed {fmt_duration(elapsed)}{left}</div></div>"
    )


def loss_plot(height: int, elem_id: str) -> gr.LinePlot:
    """The loss plot of the Train and Runs tabs: training and held-out loss per step, one line
    each (``series``). It starts from :func:`loss_frame` with no points, which still names both
    series: Gradio fixes a LinePlot's colour scale on its first frame."""
    return gr.LinePlot(
        loss_frame([]),
        x="step",
        y="loss",
        color="series",
        title="Loss: training and held-out",
        # d3 formats: 3 significant digits, and no trailing zeros ("4.570766" and "0.000000" on a chart
        # of one point or none)
        x_axis_format="~g",
        y_axis_format=".3~g",
        height=height,
        elem_id=elem_id,
    )


def loss_frame(losses: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]] = ()) -> pd.DataFrame:
    """Training loss and held-out loss (step 0: the base model) as one long frame for one plot:
    columns ``step``, ``loss``, ``series`` ("training" / "held-out")."""
    pts = [(s, v, "training") for s, v in losses] + [(s, v, "held-out") for s, v in evals]
    # Gradio's LinePlot fixes the colour scale's domain to the series of the frame it is first
    # drawn with, and later updates only swap the data: started empty, no line ever gets a
    # colour. So an empty frame still names both series (one point each, loss NaN: not drawn).
    if not pts:
        pts = [(0, float("nan"), "training"), (0, float("nan"), "held-out")]
    return pd.DataFrame(
        {
            "step": pd.Series([p[0] for p in pts], dtype="int64"),
            "loss": pd.Series([p[1] for p in pts], dtype="float64"),
            "series": pd.Series([p[2] for p in pts], dtype="string"),
        }
    )


def problems_md(problems: list[str]) -> str:
    """Problem lines as a Markdown list. Only ``&`` and ``<`` are escaped (no HTML from a typed value):
    html.escape's ``&#x27;`` and ``&gt;`` reached API callers as written (the newcomer)."""
    return "**Please fix:**\n" + "\n".join(f"- {p.replace('&', '&amp;').replace('<', '&lt;')}" for p in problems)


CSS = """
.la-progress .la-bar {height: 14px; background: var(--neutral-200); border-radius: 7px; overflow: hidden;}
.la-progress .la-fill {height: 100%; background: var(--color-accent); transition: width .3s;}
.la-progress .la-text {font-size: .9em; margin-top: 4px;}
"""


def queue_note(jobs: JobManager, run_id: str) -> str:
    """For a waiting person (Markdown): their place in the fair line (:meth:`JobManager.line`),
    how far the running run is, and when their run should start (:func:`start_estimate`)."""
    line = jobs.line()
    ids = [r.id for r in line]
    text = f"Run `{run_id}` is **queued**"
    if run_id not in ids:
        return text + "."
    ahead = ids.index(run_id)
    text += f": {ahead} waiting run(s) ahead of it" if ahead > 0 else ": it is next in line"
    me = line[ahead]
    running = jobs.running()
    for r in running:
        v = jobs.view(r.id)
        left = f", about {fmt_duration(v.remaining_s)} left" if v.remaining_s is not None else ""
        if r.owner != me.owner:  # another person's run: its progress, never its id
            text += f". Another run is training (step {v.step}/{v.max_steps or '?'}{left})"
            continue
        text += f". Running now: `{r.id}` at step {v.step}/{v.max_steps or '?'}{left}"
    return text + ". " + start_estimate(jobs, line[: ahead + 1], running)


def _step_cost(jobs: JobManager, run_id: str) -> tuple[int, float] | None:
    """(optimizer steps left to train, tokens per step at most: rows x max_length) of a run,
    from its config.yaml and checkpoint; None when the folder cannot be read."""
    try:
        t = RunConfig.load(jobs.run_dir(run_id) / "config.yaml").training
    except Exception:
        return None
    done = checkpoint_step(jobs.run_dir(run_id)) or 0
    return max(t.max_steps - done, 0), float(
        t.per_device_train_batch_size * t.gradient_accumulation_steps * t.max_length
    )


def start_estimate(jobs: JobManager, upto: list[RunInfo], running: list[RunInfo]) -> str:
    """One sentence: when the last run of ``upto`` (the line up to and including it) should start.

    Basis (said in the sentence): the running run's remaining time from its own progress events
    (its measured seconds per step x steps left), and for each waiting run ahead its steps left
    x the running run's measured seconds per step, scaled by tokens per step (rows x
    max_length, an upper bound). The preflight's hardware estimate (:mod:`lora_app.estimate`)
    is not used: it needs the model's config for each run, a Hub call per page refresh, and it
    names hardware tiers, not this machine. One device: runs start one after another."""
    if not running:
        return "It starts as soon as the scheduler picks it (nothing is training now)."
    v = jobs.view(running[0].id)
    cost = _step_cost(jobs, running[0].id)
    last = bool(v.max_steps) and v.step >= v.max_steps > 0  # its last step done: evaluating, saving
    if cost is None or not v.max_steps or (last and not v.elapsed_s) or (not last and v.remaining_s is None):
        return "Estimated start: not known yet (the running run has not measured its speed)."
    # At its last step the trainer has no time left to report: it said "not known yet" there, after an
    # estimate a moment before (the newcomer). Its speed is then its elapsed time per step.
    remaining = 0.0 if last else float(v.remaining_s or 0.0)
    per_step = v.elapsed_s / v.step if last else remaining / (v.max_steps - v.step)
    per_token = per_step / cost[1]
    durations = [None if (c := _step_cost(jobs, r.id)) is None else c[0] * c[1] * per_token for r in upto]
    wait = fair_queue.start_estimates(durations, remaining)[-1]
    if wait is None:
        return "Estimated start: not known (a run ahead has no readable settings)."
    at = time.strftime("%H:%M UTC", time.gmtime(time.time() + wait))
    return (
        f"Estimated start: in about {fmt_duration(wait)} (around {at}): the running run's "
        f"{'last step done (it evaluates and saves)' if last else fmt_duration(remaining) + ' left'}, plus {len(upto) - 1} run(s) ahead at its measured {per_step:.2f} s/step (scaled by each run's rows x "
        "max_length per step)."
    )


def run_summary(jobs: JobManager, info: RunInfo) -> dict:
    """One Runs-table row: the index row plus the run's settings and progress from its folder."""
    rd = jobs.run_dir(info.id)
    try:
        cfg = RunConfig.load(rd / "config.yaml")
    except Exception:  # a hand-edited or half-deleted folder must not break the table
        cfg = None
    v = jobs.view(info.id) if rd.is_dir() else RunView()
    adapter = rd / "adapter"
    return {
        "run": info.id,
        "status": info.status,
        "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(info.started)) if info.started else "–",
        "duration": fmt_duration(info.duration_s),
        "base model": info.base_model,
        "data": info.data,
        "r": cfg.lora.r if cfg else None,
        "alpha": cfg.lora.lora_alpha if cfg else None,
        "targets": (",".join(cfg.lora.target_modules) if cfg and cfg.lora.target_modules else "default"),
        "steps": f"{v.step}/{v.max_steps or (cfg.training.max_steps if cfg else '?')}",
        "final loss": None if info.final_loss is None else round(info.final_loss, 4),
        "adapter": str(adapter) if (adapter / "adapter_config.json").exists() else "",
        "message": (info.message or "")[:200],
    }

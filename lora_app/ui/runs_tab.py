"""Runs tab: your runs (all of them for an admin), one run's log and loss curve, and what can
be done with a run: stop, resume, delete (folder too), download its settings as YAML. Also
loads a saved YAML back into the settings form.

Who is who: the owner is ``hf:<user>`` with a Hub login, else the browser's own random id
(kept in localStorage); :class:`~lora_app.jobs.JobManager` refuses to act on someone else's
run, so a crafted request cannot get around the table either.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from ..config import ConfigError, RunConfig
from ..events import RunView
from ..jobs import ACTIVE, NotYourRun, run_summary
from . import form, merge_panel
from .common import AppContext, loss_frame, problems_md, request_owner

COLUMNS = ["run", "status", "started", "duration", "base model", "data", "r", "alpha", "targets", "steps",
           "final loss", "eval loss", "perplexity", "adapter", "message"]
LOG_LINES = 400
YAML_DIR = Path(tempfile.gettempdir()) / "lora_app_configs"  # Gradio serves files from the temp dir


def who(ctx: AppContext, browser_owner: str | None, request=None) -> tuple[str, bool]:
    """(owner, is_admin) for a request: Hub user when signed in, else the browser id."""
    owner = request_owner(browser_owner, request)
    return owner, owner in ctx.admins or ctx.jobs.is_admin(owner)


def runs_frame(ctx: AppContext, owner: str, admin: bool = False) -> pd.DataFrame:
    """The table: one row per run the person may see, newest first."""
    rows = [{**run_summary(ctx.jobs, r), **_eval_cells(ctx, r.id)} for r in ctx.jobs.visible(owner, admin)]
    if admin:
        for row, r in zip(rows, ctx.jobs.visible(owner, admin)):
            row["message"] = f"[{r.owner}] " + row["message"]
    return pd.DataFrame(rows, columns=COLUMNS)


def run_choices(ctx: AppContext, owner: str, admin: bool = False) -> list[tuple[str, str]]:
    return [(f"{r.id} · {r.status} · {r.data}", r.id) for r in ctx.jobs.visible(owner, admin)]


def run_detail(ctx: AppContext, run_id: str | None, owner: str, admin: bool = False):
    """``(details_md, loss_df, log_text)`` of one run, as it is now."""
    if not run_id:
        return "Pick a run.", loss_frame([]), ""
    info = ctx.jobs.get(run_id)
    if info is None or not ctx.jobs.may_manage(run_id, owner, admin):
        return f"No run `{html.escape(run_id)}` of yours.", loss_frame([]), ""
    view = RunView()
    view.update(ctx.jobs.run_dir(run_id))
    row = run_summary(ctx.jobs, info)
    md = (f"**Run `{info.id}`: {info.status}** · started {row['started']} · duration {row['duration']} · "
          f"step {row['steps']} · final loss {row['final loss'] if row['final loss'] is not None else '–'}\n\n"
          f"base model `{info.base_model}` · data `{info.data}` · r {row['r']}, lora_alpha {_g(row['alpha'])}, "
          f"targets {row['targets']}")
    if info.status == "queued":
        md += "\n\n" + ctx.jobs.queue_note(run_id)
    if info.message:
        md += f"\n\n{html.escape(info.message)}"
    md += f"\n\nfolder `{ctx.jobs.run_dir(run_id)}`" + (f" · adapter `{row['adapter']}`" if row["adapter"] else "")
    if view.perplexity is not None or view.base_perplexity is not None:
        md += "\n\n" + _ppl_line(view)
    return md, loss_frame(view.losses, view.evals), "\n".join(view.lines[-LOG_LINES:])


def export_yaml(ctx: AppContext, run_id: str) -> Path:
    """The run's settings as a YAML file in the temp dir (``python -m lora_app train --config`` runs it)."""
    cfg = RunConfig.load(ctx.jobs.run_dir(run_id) / "config.yaml")
    YAML_DIR.mkdir(parents=True, exist_ok=True)
    out = YAML_DIR / f"lora_app-{run_id}.yaml"
    out.write_text(f"# lora_app run {run_id}; run it again with: python -m lora_app train --config {out.name}\n"
                   + cfg.to_yaml(), encoding="utf-8")
    return out


def load_yaml(path: str | None, keys: list[str], data: dict | None):
    """A saved YAML into form values: ``(values_or_updates, data_state, message)``.

    Widgets whose keys the config lacks are left alone; the data source is taken when its
    file still exists (or it is a Hub dataset), else the current choice is kept.
    """
    keep = [gr.update() for _ in keys]
    if not path:
        return keep, data, ""
    try:
        cfg = RunConfig.load(path) if str(path).endswith((".json", ".yaml", ".yml")) else \
            RunConfig.from_yaml(Path(path).read_text(encoding="utf-8"))
    except ConfigError as err:
        return keep, data, problems_md(err.problems)
    except (OSError, UnicodeDecodeError) as err:
        return keep, data, problems_md([f"config: cannot read the file ({err}). Fix: upload a config.yaml "
                                        "saved from the Runs tab."])
    dump = cfg.model_dump()
    known = [k for k in keys if k.split(".", 1)[0] in dump and k.split(".", 1)[1] in dump[k.split(".", 1)[0]]]
    values = dict(zip(known, form.from_config(cfg, known)))
    out = [values[k] if k in values else gr.update() for k in keys]
    d = cfg.data
    msg = "Settings loaded into the **2. LoRA** form."
    if d.path and Path(d.path).is_file():
        data = {"path": d.path, "source_name": d.source_name or Path(d.path).name, "text_column": d.text_column}
        msg += f" Data: `{data['source_name']}`."
    elif d.dataset_id:
        data = {"dataset_id": d.dataset_id, "dataset_config": d.dataset_config, "split": d.split,
                "text_column": d.text_column}
        msg += f" Data: Hub dataset `{d.dataset_id}`."
    elif d.path:
        msg += f" Its data file `{d.source_name or d.path}` is gone: choose the data in the **1. Data** tab."
    return out, data, msg


def build(ctx: AppContext, widgets: dict, data_state, owner_state, follow=None, follow_outputs=None,
          token_fn=None) -> dict:
    """Build the tab. ``follow``/``follow_outputs``: the Train tab's re-attach, run after a
    resume so the Train tab follows the resumed run. Returns the parts ``build_app`` wires."""
    keys = list(widgets)
    gr.Markdown("Every run you started: open one to see its log and loss curve; stop, resume or delete it; "
                "download its settings as YAML (`python -m lora_app train --config FILE` runs them).")
    refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label="Your runs", interactive=False, wrap=True,
                         elem_id="runs-table")
    pick = gr.Dropdown(label="Run", choices=[], interactive=True, elem_id="runs-pick")
    details = gr.Markdown("Pick a run.", elem_id="run-details")
    with gr.Row():
        stop_b = gr.Button("Stop run", variant="stop")
        resume_b = gr.Button("Resume run")
        delete_b = gr.Button("Delete run", variant="stop", elem_id="runs-delete")
        yaml_b = gr.DownloadButton("Download settings (YAML)", value=None, interactive=False, elem_id="runs-yaml")
    action = gr.Markdown(elem_id="runs-action")
    plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", title="Loss: training and held-out",
                       height=240, elem_id="runs-plot")
    log = gr.Textbox(label="Run log", lines=12, max_lines=12, interactive=False, elem_id="runs-log")
    merge_parts = merge_panel.build(ctx, pick, owner_state, who, token_fn)
    with gr.Accordion("Load settings from a YAML file into the form", open=False):
        yaml_up = gr.File(label="config.yaml", file_types=[".yaml", ".yml", ".json"], type="filepath",
                          elem_id="runs-yaml-upload")
        yaml_msg = gr.Markdown()
    armed = gr.State(None)  # the run a first Delete press asked about

    def do_refresh(browser_owner, selected=None, request: gr.Request = None):
        owner, admin = who(ctx, browser_owner, request)
        choices = run_choices(ctx, owner, admin)
        ids = [c[1] for c in choices]
        return runs_frame(ctx, owner, admin), gr.update(choices=choices, value=selected if selected in ids else None)

    def show(run_id, browser_owner, request: gr.Request = None):
        owner, admin = who(ctx, browser_owner, request)
        md, lf, lg = run_detail(ctx, run_id, owner, admin)
        ok = bool(run_id) and ctx.jobs.may_manage(run_id, owner, admin)
        path = str(export_yaml(ctx, run_id)) if ok else None
        return md, lf, lg, gr.update(value=path, interactive=ok)

    def do_select(run_id, browser_owner, request: gr.Request = None):
        return *show(run_id, browser_owner, request), None, ""

    def from_table(evt: gr.SelectData, df):
        try:
            return df.iloc[evt.index[0]]["run"]
        except (IndexError, KeyError, TypeError):
            return gr.update()

    def guarded(fn):
        """Run an action for the caller; a refusal becomes the message shown."""
        def wrapped(run_id, browser_owner, request: gr.Request = None):
            if not run_id:
                return "Pick a run first."
            owner, admin = who(ctx, browser_owner, request)
            try:
                return fn(run_id, owner, admin)
            except NotYourRun as err:
                return str(err)
        return wrapped

    def stop_fn(run_id, owner, admin):
        return ctx.jobs.cancel(run_id, owner, admin=admin)

    def resume_fn(run_id, owner, admin):
        return ctx.jobs.resume(run_id, owner, admin=admin)

    def delete_click(run_id, armed_id, browser_owner, request: gr.Request = None):
        if not run_id:
            return "Pick a run first.", None
        if armed_id != run_id:
            info = ctx.jobs.get(run_id)
            live = " It is still going: it will be stopped first." if info and info.status in ACTIVE else ""
            return f"Press **Delete run** again to delete run `{run_id}` and its folder for good.{live}", run_id
        owner, admin = who(ctx, browser_owner, request)
        try:
            return ctx.jobs.delete(run_id, owner, admin=admin), None
        except NotYourRun as err:
            return str(err), None

    refresh_outs = [table, pick]
    select_outs = [details, plot, log, yaml_b, armed, action]
    refresh.click(do_refresh, [owner_state, pick], refresh_outs).then(show, [pick, owner_state], select_outs[:4])
    # .input, not .change: a refresh that sets the value must not wipe the last action's message.
    table.select(from_table, [table], [pick]).then(do_select, [pick, owner_state], select_outs)
    pick.input(do_select, [pick, owner_state], select_outs)
    stop_b.click(guarded(stop_fn), [pick, owner_state], [action], concurrency_limit=None).then(
        do_refresh, [owner_state, pick], refresh_outs).then(show, [pick, owner_state], select_outs[:4])
    ev = resume_b.click(guarded(resume_fn), [pick, owner_state], [action]).then(
        do_refresh, [owner_state, pick], refresh_outs).then(show, [pick, owner_state], select_outs[:4])
    if follow is not None and follow_outputs is not None:
        ev.then(follow, [owner_state], follow_outputs, concurrency_limit=None)  # lasts the whole run
    delete_b.click(delete_click, [pick, armed, owner_state], [action, armed], concurrency_limit=None).then(
        do_refresh, [owner_state, pick], refresh_outs)
    yaml_up.upload(lambda p, d: _flat(load_yaml(p, keys, d)), [yaml_up, data_state],
                   [*widgets.values(), data_state, yaml_msg])
    return {"table": table, "pick": pick, "refresh": do_refresh, "refresh_outputs": refresh_outs,
            "details": details, "log": log, "action": action, **merge_parts}


def _eval_cells(ctx: AppContext, run_id: str) -> dict:
    """The run's last held-out loss and perplexity (base -> now), for the table."""
    rd = ctx.jobs.run_dir(run_id)
    v = ctx.jobs.view(run_id) if rd.is_dir() else RunView()
    last = v.evals[-1][1] if v.evals and v.perplexity is not None else None
    return {"eval loss": None if last is None else round(last, 4),
            "perplexity": _ppl_line(v).removeprefix("held-out perplexity ") if v.perplexity is not None else None}


def _ppl_line(v: RunView) -> str:
    if v.perplexity is None:
        return f"held-out perplexity {v.base_perplexity:.1f} (base model)"
    return (f"held-out perplexity {v.base_perplexity:.1f} -> {v.perplexity:.1f}" if v.base_perplexity is not None
            else f"held-out perplexity {v.perplexity:.1f}")


def _g(x) -> str:
    return "?" if x is None else f"{x:g}"


def _flat(result):
    values, data, msg = result
    return (*values, data, msg)


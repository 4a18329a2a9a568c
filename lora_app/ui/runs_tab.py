"""Runs tab: your runs (all of them for an admin), one run's log and loss curve, and what can
be done with a run: stop, resume, delete (folder too), download its settings as YAML. Also
loads a saved YAML back into the settings form.

Who is who is decided on the server (:mod:`lora_app.identity`): every handler takes the page's
server-side owner (``gr.State``) and the injected ``gr.OAuthProfile``, never an owner from the
request body, and acts on a run only after :meth:`AppContext.run_of` said it is the caller's.
"""

from __future__ import annotations

import html
import time

import gradio as gr
import pandas as pd

from .. import launch
from ..config import ConfigError, RunConfig
from ..events import RunView
from ..hub_resume import resume_from_hub
from ..identity import Identity
from ..jobs import ACTIVE, NotYourRun
from ..variants import summary
from . import merge_panel
from .common import READ_ONLY, AppContext, loss_frame, loss_plot, problems_md, queue_note, run_summary
from .run_yaml import export_yaml, form_outputs, load_yaml, yaml_name

COLUMNS = [
    "run",
    "status",
    "started",
    "duration",
    "base model",
    "data",
    "r",
    "alpha",
    "targets",
    "steps",
    "final loss",
    "eval loss",
    "perplexity",
    "adapter",
    "message",
]
LOG_LINES = 400


def runs_frame(ctx: AppContext, ident: Identity) -> pd.DataFrame:
    """The table: one row per run the caller may see, newest first (an admin's rows name the owner)."""
    runs = ctx.visible(ident)
    rows = [{**run_summary(ctx.jobs, r), **_eval_cells(ctx, r.id)} for r in runs]
    for row, r in zip(rows, runs, strict=True):
        if not ident.sees_paths:  # the server's folders are not the visitor's business
            row["adapter"] = "saved" if row["adapter"] else ""
        row["message"] = ctx.redact(ident, (f"[{r.owner}] " if ident.admin else "") + row["message"])
    return pd.DataFrame(rows, columns=COLUMNS)


def run_choices(ctx: AppContext, ident: Identity) -> list[tuple[str, str]]:
    return [(f"{r.id} · {r.status} · {r.data}", r.id) for r in ctx.visible(ident)]


def run_detail(ctx: AppContext, run_id: str | None, ident: Identity):
    """``(details_md, loss_df, log_text)`` of one run, as it is now."""
    if not run_id:
        return "Pick a run.", loss_frame([]), ""
    try:
        info = ctx.run_of(ident, run_id)
    except NotYourRun as err:
        return str(err), loss_frame([]), ""
    view = RunView()
    view.update(ctx.jobs.run_dir(run_id))
    row = run_summary(ctx.jobs, info)
    try:
        cfg: RunConfig | None = RunConfig.load(ctx.jobs.run_dir(run_id) / "config.yaml")
    except (ConfigError, OSError):
        cfg = None
    md = (
        f"**Run `{info.id}`: {info.status}** · started {row['started']} · duration {row['duration']} · "
        f"step {row['steps']} · final loss {row['final loss'] if row['final loss'] is not None else '–'}\n\n"
        f"base model `{info.base_model}` · data `{info.data}` · r {row['r']}, lora_alpha {_g(row['alpha'])}, "
        f"targets {row['targets']}" + (f" · {_schedule(cfg)}" if cfg else "")
    )
    if info.status == "queued":
        md += "\n\n" + queue_note(ctx.jobs, run_id)
    if info.status in ACTIVE:  # a snapshot: it stood at "step 1/3" after a Resume, as if stuck (the newcomer)
        md += (
            f"\n\n*As of {time.strftime('%H:%M:%S')}: this view does not follow the run. Press **Refresh**, or "
            "watch it live in **3. Train**.*"
        )
    if info.message:
        md += f"\n\n{html.escape(info.message)}"
    if ident.sees_paths:
        md += f"\n\nfolder `{ctx.jobs.run_dir(run_id)}`" + (f" · adapter `{row['adapter']}`" if row["adapter"] else "")
    elif row["adapter"]:
        md += f"\n\nadapter saved: try it in **5. Try it** (run `{info.id}`) or push it in **6. Hub**."
    if (view.perplexity is not None or view.base_perplexity is not None) and _ppl_line(view) not in info.message:
        md += "\n\n" + _ppl_line(view)  # (a finished run's message already ends with it: said twice)
    if cfg is not None:  # the same settings on one's own GPUs or cluster (the YAML below downloads under this name)
        md += "\n\n" + launch.commands_markdown(cfg, yaml_name(run_id))
    return (
        ctx.redact(ident, md),
        loss_frame(view.losses, view.evals),
        ctx.redact(ident, "\n".join(view.lines[-LOG_LINES:])),
    )


def build(
    ctx: AppContext, widgets: dict, data_state, owner_state, follow=None, follow_outputs=None, token_fn=None
) -> dict:
    """Build the tab. ``follow``/``follow_outputs``: the Train tab's re-attach, run after a
    resume so the Train tab follows the resumed run. Returns the parts ``build_app`` wires."""
    keys = list(widgets)
    gr.Markdown(
        "Every run you started: open one to see its log and loss curve; stop, resume or delete it; "
        "download its settings as YAML (`python -m lora_app train --config FILE` runs them)."
    )
    refresh = gr.Button("Refresh", elem_id="runs-refresh")
    table = gr.Dataframe(
        pd.DataFrame(columns=COLUMNS), label="Your runs", interactive=False, wrap=True, elem_id="runs-table"
    )
    # allow_custom_value: a script names a run by its id; run_of decides, not the choices the page was sent
    pick = gr.Dropdown(label="Run", choices=[], interactive=True, allow_custom_value=True, elem_id="runs-pick")
    details = gr.Markdown("Pick a run.", elem_id="run-details")
    with gr.Row():
        stop_b = gr.Button("Stop run", variant="stop")
        resume_b = gr.Button("Resume run")
        delete_b = gr.Button("Delete run", variant="stop", elem_id="runs-delete")
        use_b = gr.Button("Use these settings", elem_id="runs-use")
        yaml_b = gr.DownloadButton("Download settings (YAML)", value=None, interactive=False, elem_id="runs-yaml")
    action = gr.Markdown(elem_id="runs-action")
    plot = loss_plot(height=240, elem_id="runs-plot")
    log = gr.Textbox(label="Run log", lines=12, max_lines=12, interactive=False, elem_id="runs-log")
    merge_parts = merge_panel.build(ctx, pick, owner_state, token_fn)
    with gr.Accordion("Resume from the Hub (a run whose folder is gone, e.g. after a Space restart)", open=False):
        hub_repo = gr.Textbox(
            label="Checkpoint repo (owner/name)",
            placeholder="the hub_model_id of a run with hub_checkpoints",
            elem_id="runs-hub-repo",
        )
        hub_resume_b = gr.Button("Resume from the Hub", elem_id="runs-hub-resume")
    with gr.Accordion("Load settings from a YAML file into the form", open=False):
        yaml_up = gr.File(
            label="config.yaml", file_types=[".yaml", ".yml", ".json"], type="filepath", elem_id="runs-yaml-upload"
        )
        yaml_msg = gr.Markdown()
    armed = gr.State(None)  # the run a first Delete press asked about

    def do_refresh(owner, selected=None, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """Your runs: the table and the run picker (keeping ``selected`` when it is still there)."""
        ident = ctx.who(owner, profile)
        choices = run_choices(ctx, ident)
        ids = [c[1] for c in choices]
        return runs_frame(ctx, ident), gr.update(choices=choices, value=selected if selected in ids else None)

    def show(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """One of your runs: details, loss curve, log and its settings as a YAML file."""
        ident = ctx.who(owner, profile)
        md, lf, lg = run_detail(ctx, run_id, ident)
        try:
            path = str(export_yaml(ctx, ctx.run_of(ident, run_id).id, ident)) if run_id else None
        except NotYourRun:
            path = None
        return md, lf, lg, gr.update(value=path, interactive=path is not None)

    def do_select(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        return *show(run_id, owner, request, profile), None, ""

    def from_table(evt: gr.SelectData, df):
        try:
            return df.iloc[evt.index[0]]["run"]
        except (IndexError, KeyError, TypeError):
            return gr.update()

    def act(fn, run_id, owner, profile):
        """Run an action on one of the caller's runs; a refusal becomes the message shown."""
        if not run_id:
            return "Pick a run first."
        ident = ctx.who(owner, profile)
        try:
            ctx.run_of(ident, run_id)
            return ctx.redact(ident, fn(run_id, ident.owner, admin=ident.admin or ident.local))
        except NotYourRun as err:
            return str(err)

    def stop_run(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """Stop one of your runs (it keeps the adapter saved so far). ``run_id``: as in the Runs table."""
        return act(ctx.jobs.cancel, run_id, owner, profile)

    def resume_run(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """Queue a stopped or failed run of yours again, from its last checkpoint."""
        said = act(ctx.jobs.resume, run_id, owner, profile)
        if said.startswith(f"Run {run_id} is queued again"):
            # The details below are a snapshot: they looked stuck at the old step (found by the newcomer).
            said += " **Refresh** brings this page up to date; the **3. Train** tab shows your active run live."
        return said

    def resume_hub(repo, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """A new run of yours that continues the last checkpoint in the Hub repo ``repo``."""
        ident = ctx.who(owner, profile)
        if ident.owner is None:
            return "Reload the page first: this browser has no id yet."
        token = token_fn(request) if token_fn else None
        try:
            run_id, step = resume_from_hub(ctx.jobs, repo, ident.owner, token)
        except ConfigError as err:  # HubError, QueueFull: each names the fix
            return problems_md(err.problems)
        return f"Run `{run_id}` is queued: it continues `{html.escape(repo.strip())}` at step {step + 1}."

    def delete_click(
        run_id, armed_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None
    ):
        if not run_id:
            return "Pick a run first.", None
        ident = ctx.who(owner, profile)
        try:
            info = ctx.run_of(ident, run_id)
        except NotYourRun as err:
            return str(err), None
        if armed_id != run_id:
            live = " It is still going: it will be stopped first." if info.status in ACTIVE else ""
            return f"Press **Delete run** again to delete run `{run_id}` and its folder for good.{live}", run_id
        try:
            return ctx.redact(ident, ctx.jobs.delete(run_id, ident.owner, admin=ident.admin or ident.local)), None
        except NotYourRun as err:
            return str(err), None

    refresh_outs = [table, pick]
    select_outs = [details, plot, log, yaml_b, armed, action]
    refresh.click(do_refresh, [owner_state, pick], refresh_outs, api_name="runs", **READ_ONLY).then(
        show, [pick, owner_state], select_outs[:4], **READ_ONLY
    )
    # .input, not .change: a refresh that sets the value must not wipe the last action's message.
    table.select(from_table, [table], [pick]).then(do_select, [pick, owner_state], select_outs, **READ_ONLY)
    pick.input(do_select, [pick, owner_state], select_outs, api_name="run", **READ_ONLY)
    stop_b.click(stop_run, [pick, owner_state], [action], concurrency_limit=None, api_name="stop").then(
        do_refresh, [owner_state, pick], refresh_outs
    ).then(show, [pick, owner_state], select_outs[:4])
    ev = (
        resume_b.click(resume_run, [pick, owner_state], [action], api_name="resume")
        .then(do_refresh, [owner_state, pick], refresh_outs)
        .then(show, [pick, owner_state], select_outs[:4])
    )
    if follow is not None and follow_outputs is not None:
        ev.then(follow, [owner_state], follow_outputs, concurrency_limit=None)  # lasts the whole run
    ev = hub_resume_b.click(resume_hub, [hub_repo, owner_state], [action]).then(
        do_refresh, [owner_state, pick], refresh_outs
    )
    if follow is not None and follow_outputs is not None:
        ev.then(follow, [owner_state], follow_outputs, concurrency_limit=None)
    delete_b.click(delete_click, [pick, armed, owner_state], [action, armed], concurrency_limit=None).then(
        do_refresh, [owner_state, pick], refresh_outs
    )

    def on_yaml(path, data, owner, profile: gr.OAuthProfile | None = None):
        ident = ctx.who(owner, profile)
        return form_outputs(load_yaml(path, keys, data, may_read=lambda p: ctx.may_read_path(ident, p)))

    yaml_up.upload(on_yaml, [yaml_up, data_state, owner_state], [*widgets.values(), data_state, yaml_msg])

    def on_use(run_id, data, owner, profile: gr.OAuthProfile | None = None):
        """The picked run's settings and data into the form, as its YAML would load: after a reload the
        form was back at the defaults and Start said "no data chosen" (the newcomer)."""
        ident = ctx.who(owner, profile)
        try:
            run_id = ctx.run_of(ident, run_id).id
        except NotYourRun as err:
            return (*[gr.update() for _ in keys], data, str(err))
        values, data, msg = load_yaml(
            str(ctx.jobs.run_dir(run_id) / "config.yaml"), keys, data, may_read=lambda p: ctx.may_read_path(ident, p)
        )
        return (
            *values,
            data,
            ctx.redact(ident, msg.replace("Settings loaded", f"Run `{run_id}`'s settings loaded", 1)),
        )

    use_b.click(on_use, [pick, data_state, owner_state], [*widgets.values(), data_state, action], **READ_ONLY)
    return {
        "table": table,
        "pick": pick,
        "refresh": do_refresh,
        "refresh_outputs": refresh_outs,
        "details": details,
        "log": log,
        "action": action,
        **merge_parts,
    }


def _eval_cells(ctx: AppContext, run_id: str) -> dict:
    """The run's last held-out loss and perplexity (base -> now), for the table."""
    rd = ctx.jobs.run_dir(run_id)
    v = ctx.jobs.view(run_id) if rd.is_dir() else RunView()
    last = v.evals[-1][1] if v.evals and v.perplexity is not None else None
    return {
        "eval loss": None if last is None else round(last, 4),
        "perplexity": _ppl_line(v).removeprefix("held-out perplexity ") if v.perplexity is not None else None,
    }


def _ppl_line(v: RunView) -> str:
    if v.perplexity is None:
        return f"held-out perplexity {v.base_perplexity:.1f} (base model)"
    return (
        f"held-out perplexity {v.base_perplexity:.1f} -> {v.perplexity:.1f}"
        if v.base_perplexity is not None
        else f"held-out perplexity {v.perplexity:.1f}"
    )


def _schedule(cfg: RunConfig) -> str:
    """The run's recipe beyond r and alpha: "learning_rate 0.001, warm-up 5 of 50 steps (warmup_ratio
    0.1), rsLoRA" (the warm-up in steps as the Trainer runs it, and the ratio it came from)."""
    t = cfg.training
    ratio = f" (warmup_ratio {t.warmup_ratio:g})" if t.warmup_ratio is not None else ""
    return f"learning_rate {t.learning_rate:g}, warm-up {t.warmup()} of {t.max_steps} steps{ratio}" + summary(cfg.lora)


def _g(x) -> str:
    return "?" if x is None else f"{x:g}"

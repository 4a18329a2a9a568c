"""Train tab: Start (preflight, then queue a run), follow it live, Stop it.

The live view is a generator that re-reads the run's ``events.jsonl`` every half second;
after a page reload the same generator, started by ``demo.load``, replays the file from
the start, so nothing lives only in the browser connection.
"""

from __future__ import annotations

import time

import gradio as gr

from ..config import ConfigError
from ..events import RunView
from ..validate import validate
from . import form
from .common import AppContext, loss_frame, owner_of, problems_md, progress_html

POLL_S = 0.5
LOG_LINES = 400


def follow(ctx: AppContext, run_id: str | None):
    """Yield ``(status_md, progress_html, loss_df, log_text)`` until the run ends."""
    if not run_id:
        yield "No run yet: press **Start training**.", progress_html(0, 0, 0, None, "idle"), loss_frame([]), ""
        return
    view = RunView()
    rd = ctx.jobs.run_dir(run_id)
    last = None
    while True:
        view.update(rd)
        info = ctx.jobs.get(run_id)
        status = info.status if info else view.status
        if status == "queued":
            pos = ctx.jobs.queue_position(run_id)
            head = f"Run `{run_id}` is **queued**" + (f": {pos} run(s) ahead of it." if pos else ".")
        else:
            head = f"Run `{run_id}`: **{status}**" + (f" · {view.message}" if view.message and status != "training" else "")
        if view.info.get("trainable_params"):
            head += f"\n\ntrainable params: {view.info['trainable_params']:,} || all params: {view.info['all_params']:,}"
        out = (head, progress_html(view.step, view.max_steps, view.elapsed_s, view.remaining_s, status),
               loss_frame(view.losses), "\n".join(view.lines[-LOG_LINES:]))
        if out != last:
            yield out
            last = out
        if status not in ("queued", "running") and (view.done or info is None or status != "running"):
            view.update(rd)
            yield (head, progress_html(view.step, view.max_steps, view.elapsed_s, view.remaining_s, status),
                   loss_frame(view.losses), "\n".join(view.lines[-LOG_LINES:]))
            return
        time.sleep(POLL_S)


def build(ctx: AppContext, widgets: dict, data_state, owner_state, token_fn):
    keys = list(widgets)
    run_state = gr.State(None)
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    status = gr.Markdown("No run yet: press **Start training**.", elem_id="train-status")
    progress = gr.HTML(progress_html(0, 0, 0, None, "idle"), elem_id="train-progress")
    plot = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Training loss", height=260, elem_id="loss-plot")
    log = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, interactive=False, elem_id="train-log")

    def on_start(data, owner, *vals, request: gr.Request = None):
        try:
            cfg = form.to_config(dict(zip(keys, vals)), data)
            token = token_fn(request) if token_fn else None
            pre = validate(cfg, token=token)
        except ConfigError as err:
            yield None, problems_md(err.problems), gr.update(), gr.update(), gr.update()
            return
        env = {"HF_TOKEN": token} if token else None
        run_id = ctx.jobs.submit(cfg, owner=owner_of(owner), env=env)
        yield run_id, f"Run `{run_id}` submitted. {pre.trainable_line}", gr.update(), gr.update(), gr.update()
        for st, pr, lf, lg in follow(ctx, run_id):
            yield run_id, st, pr, lf, lg

    def on_stop(run_id):
        if not run_id:
            return "Nothing to stop."
        return ctx.jobs.cancel(run_id)

    def reattach(owner):
        runs = ctx.jobs.list(owner=owner_of(owner)) if owner else []
        if not runs:
            yield None, *next(follow(ctx, None))
            return
        run_id = runs[0].id
        for out in follow(ctx, run_id):
            yield run_id, *out

    start.click(on_start, [data_state, owner_state, *widgets.values()], [run_state, status, progress, plot, log],
                concurrency_limit=None)
    stop.click(on_stop, [run_state], [status], concurrency_limit=None)
    return run_state, reattach, [run_state, status, progress, plot, log]

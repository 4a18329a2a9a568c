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
from ..jobs import ACTIVE, NotYourRun
from ..validate import check_and_submit
from . import form
from .common import AppContext, loss_frame, problems_md, progress_html, request_owner

POLL_S = 0.5
LOG_LINES = 400
# Keep #train-log at its last line on each update, unless the person scrolled up to read.
FOLLOW_LOG_JS = """() => {
  const t = document.querySelector('#train-log textarea');
  if (!t) return;
  if (!t.dataset.follow) {
    t.dataset.follow = '1';
    t.addEventListener('scroll', () => {
      t.dataset.follow = t.scrollTop + t.clientHeight >= t.scrollHeight - 30 ? '1' : '0';
    });
  }
  if (t.dataset.follow === '1') requestAnimationFrame(() => { t.scrollTop = t.scrollHeight; });
}"""


def follow(ctx: AppContext, run_id: str | None, wanted=None):
    """Yield ``(status_md, progress_html, loss_df, log_text)`` until the run ends, or until
    ``wanted()`` turns false (this page has moved on to another run): then it yields ``None``
    once and stops. The caller turns that into no-op updates, because Gradio re-sends a
    generator's last output when it completes, which would put this run back on the page."""
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
        ended = status not in ("queued", "running")
        if ended:
            view.update(rd)  # the trainer's last events were written before the scheduler saw it end
        if status == "queued":
            head = ctx.jobs.queue_note(run_id)  # place in line + the running run's progress
        else:
            # While the scheduler says "running", show the trainer's own phase (loading/training/saving).
            phase = f" ({view.status})" if status == "running" and view.status not in ("queued", "running") else ""
            if status == "running" and view.done:  # the trainer is done; its process is still exiting
                phase = f" ({view.status}; the process is exiting)"
            head = f"Run `{run_id}`: **{status}**{phase}" + (
                f" · {view.message}" if view.message and view.status != "training" else "")
        if view.info.get("trainable_params"):
            head += f"\n\ntrainable params: {view.info['trainable_params']:,} || all params: {view.info['all_params']:,}"
        prog = progress_html(view.step, view.max_steps, view.elapsed_s, view.remaining_s, status)
        log_text = "\n".join(view.lines[-LOG_LINES:])
        # Compare plain values: a tuple holding a DataFrame cannot be compared with != (ValueError).
        key = (head, prog, tuple(view.losses), tuple(view.evals), log_text)
        if wanted is not None and not wanted():
            yield None
            return
        if key != last:
            yield head, prog, loss_frame(view.losses, view.evals), log_text
            last = key
        if ended:
            return
        time.sleep(POLL_S)


def build(ctx: AppContext, widgets: dict, data_state, owner_state, token_fn):
    keys = list(widgets)
    run_state = gr.State(None)
    # The run each page (Gradio session) shows. A follower that is no longer its page's run
    # stops by itself at its next poll (<= POLL_S), so a Start in a tab that followed another
    # run does not end up showing (or stopping) that run.
    showing: dict[str, str] = {}

    def wanted_fn(request, run_id):
        key = getattr(request, "session_hash", None)
        if key is None:
            return None
        showing[key] = run_id
        return lambda: showing.get(key) == run_id
    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    stop_msg = gr.Markdown(elem_id="train-stop")
    status = gr.Markdown("No run yet: press **Start training**.", elem_id="train-status")
    progress = gr.HTML(progress_html(0, 0, 0, None, "idle"), elem_id="train-progress")
    plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", title="Loss: training and held-out",
                       height=260, elem_id="loss-plot")
    log = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, interactive=False, elem_id="train-log")

    # Inputs as a set: the handler gets one {component: value} dict. With ``*vals`` in the
    # signature Gradio did not inject the keyword-only ``request`` (it was always None: no
    # OAuth/typed token for the run, no Hub user as owner, no page identity).
    inputs = {data_state, owner_state, *widgets.values()}

    def on_start(values: dict, request: gr.Request = None):
        data, owner, vals = values[data_state], values[owner_state], [values[w] for w in widgets.values()]
        try:
            token = token_fn(request) if token_fn else None
            # The one preflight (as the CLI's): every problem together; no run folder unless all pass.
            run_id, pre = check_and_submit(ctx.jobs, form.to_raw(dict(zip(keys, vals)), data),
                                           owner=request_owner(owner, request), token=token,
                                           env={"HF_TOKEN": token} if token else None)
        except ConfigError as err:
            yield None, problems_md(err.problems), gr.update(), gr.update(), gr.update()
            return
        notes = "".join(f"\n\n{n}" for n in pre.notes)
        wanted = wanted_fn(request, run_id)
        yield run_id, f"Run `{run_id}` submitted. {pre.trainable_line}{notes}", gr.update(), gr.update(), gr.update()
        for out in follow(ctx, run_id, wanted):
            yield (gr.update(),) * 5 if out is None else (run_id, *out)

    def on_stop(run_id, owner, request: gr.Request = None):
        if not run_id:
            return "Nothing to stop."
        try:  # returns once the run's process group is gone
            return ctx.jobs.cancel(run_id, request_owner(owner, request))
        except NotYourRun as err:
            return str(err)

    def reattach(owner, request: gr.Request = None):
        runs = ctx.jobs.list(owner=request_owner(owner, request)) if owner else []
        if not runs:
            yield None, *next(follow(ctx, None))
            return
        # The person's running (or queued) run, else their last one.
        run_id = next((r.id for r in runs if r.status in ACTIVE), runs[0].id)
        for out in follow(ctx, run_id, wanted_fn(request, run_id)):
            yield (gr.update(),) * 5 if out is None else (run_id, *out)

    start.click(on_start, inputs, [run_state, status, progress, plot, log],
                concurrency_limit=None)
    stop.click(on_stop, [run_state, owner_state], [stop_msg], concurrency_limit=None)
    # Gradio 6.31's Textbox autoscroll scrolls only once (its effect does not re-run on new
    # values), so a streamed log stayed at its first lines: keep it at the end in the browser.
    log.change(None, None, None, js=FOLLOW_LOG_JS)
    return run_state, reattach, [run_state, status, progress, plot, log], start

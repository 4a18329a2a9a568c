"""Train tab: Start (preflight, then queue a run), follow it live, Stop it.

The live view is a generator that re-reads the run's ``events.jsonl`` every half second;
after a page reload the same generator, started by ``demo.load``, replays the file from
the start, so nothing lives only in the browser connection.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import gradio as gr

from .. import bundled, identity, models
from ..config import DEFAULT_BASE_MODEL, ConfigError
from ..events import RunView
from ..jobs import ACTIVE, NotYourRun, QueueFull
from ..validate import Preflight, check_and_submit
from . import form
from .common import AppContext, loss_frame, loss_plot, problems_md, progress_html, queue_note

POLL_S = 0.5
LOG_LINES = 400
PREPARE_TTL_S = 15 * 60  # a preparation older than this is forgotten (its page is long gone)


@dataclass
class Preparation:
    """What Start is doing for one owner before the run exists (model conversion, Hub
    download, preflight): a reloaded page finds it here and waits for its run."""

    step: str
    started: float = field(default_factory=time.time)
    run_id: str | None = None
    problems: list[str] | None = None
    pre: Preflight | None = None  # once queued
    done: threading.Event = field(default_factory=threading.Event)
    session: str | None = None  # the page (Gradio session) that pressed Start


_PREPARING: dict[str, Preparation] = {}
_PREP_LOCK = threading.Lock()


def preparing(owner: str | None) -> Preparation | None:
    """The owner's Start still in preparation (or just done), if any."""
    with _PREP_LOCK:
        prep = _PREPARING.get(owner) if owner else None
        if prep is not None and owner and time.time() - prep.started > PREPARE_TTL_S:
            _PREPARING.pop(owner, None)
            prep = None
        return prep


def prepare_and_submit(
    ctx: AppContext, raw: dict, owner: str, token: str | None, session: str | None = None
) -> Preparation | None:
    """Start's slow part, in a thread of its own so that a reload cannot lose it: convert the
    bundled model on first use, read the data (a Hub dataset is downloaded), preflight,
    queue the run. ``Preparation.step`` says which of these it is doing. None while the
    previous Start of the same page (``session``) is still being prepared: a double click
    queued two runs. Other pages and API clients of the same owner may queue runs together."""
    prep = Preparation("checking the settings", session=session)
    with _PREP_LOCK:
        cur = _PREPARING.get(owner)
        if (
            session is not None
            and cur is not None
            and cur.session == session
            and not cur.done.is_set()
            and time.time() - cur.started <= PREPARE_TTL_S
        ):
            return None
        _PREPARING[owner] = prep

    def work():
        try:
            base = (raw.get("model") or {}).get("base_model_name_or_path") or DEFAULT_BASE_MODEL
            if base == DEFAULT_BASE_MODEL and not bundled.bundled_model_ready():
                prep.step = (
                    "preparing the base model SmolLM2-135M-Instruct (first use: converting the "
                    "bundled copy, about 20-45 s)"
                )
                models.resolve_model(base)  # converts it when the Hub does not have it
            ds = (raw.get("data") or {}).get("dataset_id")
            prep.step = (
                f"reading Hub dataset `{ds}` (downloading it) and checking the model"
                if ds
                else "reading the data and checking the model"
            )
            run_id, pre = check_and_submit(
                ctx.jobs, raw, owner=owner, token=token, env={"HF_TOKEN": token} if token else None
            )
            prep.pre, prep.run_id = pre, run_id
        except ConfigError as err:
            prep.problems = err.problems
        except Exception as err:
            prep.problems = [f"start: {type(err).__name__}: {err}"]
        finally:
            prep.done.set()

    threading.Thread(target=work, name="lora_app-prepare", daemon=True).start()
    return prep


def wait_preparation(prep: Preparation):
    """Yield a status line every POLL_S while ``prep`` runs."""
    while not prep.done.wait(POLL_S):
        yield f"Preparing the run: **{prep.step}** ({time.time() - prep.started:.0f} s)…"


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
            head = queue_note(ctx.jobs, run_id)  # place in line + the running run's progress
        else:
            # While the scheduler says "running", show the trainer's own phase (loading/training/saving).
            phase = f" ({view.status})" if status == "running" and view.status not in ("queued", "running") else ""
            if status == "running" and view.done:  # the trainer is done; its process is still exiting
                phase = f" ({view.status}; the process is exiting)"
            head = f"Run `{run_id}`: **{status}**{phase}" + (
                f" · {view.message}" if view.message and view.status != "training" else ""
            )
        if view.info.get("trainable_params"):
            head += (
                f"\n\ntrainable params: {view.info['trainable_params']:,} || all params: {view.info['all_params']:,}"
            )
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
    run_state = gr.State(None)
    # The run each page (Gradio session) shows. A follower that is no longer its page's run
    # stops by itself at its next poll (<= POLL_S), so a Start in a tab that followed another
    # run does not end up showing (or stopping) that run.
    # Each follower holds a token of its own, not the run id: a refused Start follows the same
    # run again, and the follower it replaced must still stop (by run id both went on, and the
    # old one overwrote the Start's message).
    showing: dict[str, object] = {}

    def wanted_fn(request, run_id):
        """A new follower of ``run_id`` (None: none, a Start being prepared) for this page: the
        returned check stays true until the page's next follower is made."""
        key = getattr(request, "session_hash", None)
        if key is None:
            return None
        me = object()
        showing[key] = me
        return lambda: showing.get(key) is me

    with gr.Row():
        start = gr.Button("Start training", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    stop_msg = gr.Markdown(elem_id="train-stop")
    status = gr.Markdown("No run yet: press **Start training**.", elem_id="train-status")
    progress = gr.HTML(progress_html(0, 0, 0, None, "idle"), elem_id="train-progress")
    plot = loss_plot(height=260, elem_id="loss-plot")
    log = gr.Textbox(label="Log", lines=14, max_lines=14, autoscroll=True, interactive=False, elem_id="train-log")

    keep = (gr.update(),) * 4

    def following(run_id, request, ident):
        for out in follow(ctx, run_id, wanted_fn(request, run_id)):
            yield keep + (gr.update(),) if out is None else (run_id, *_redacted(ctx, ident, out))

    # The settings come as keyword inputs (named as the config's fields: the API's parameter
    # names); Gradio injects ``request``/``profile`` only into positional parameters before **kw.
    def on_start(
        data, owner, shown, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None, **settings
    ):
        """Check the settings (every problem at once) and queue a training run on the chosen data
        (first call use_example, load_file or load_hub_dataset in the same session); then stream
        its status, progress, loss curve and log until it ends. Settings are keywords named as
        in PEFT / transformers (r, lora_alpha, target_modules, max_steps, learning_rate, ...)."""
        ident = ctx.who(owner, profile)
        if ident.owner is None:  # a caller that never loaded the page (a script): issue it an id now
            owner, _ = identity.issue(ctx.key)
            ident = ctx.who(owner)
        token = token_fn(request) if token_fn else None
        if settings.get("hub_checkpoints"):  # a push: the caller's own write token (never the Space's)
            from .hub_tab import request_token

            token = request_token(request, write=True)
        assert ident.owner is not None  # (issued just above when missing)
        # This page moves on to this Start: the run it followed stops streaming here at its next
        # poll, so what Start says is not overwritten by that run's next update. A refused Start
        # then follows that run again, under what was wrong (said_then_follow).
        wanted_fn(request, None)

        def said_then_follow(text: str):
            yield gr.update(), text, gr.update(), gr.update(), gr.update(), owner
            try:
                info = ctx.run_of(ident, shown) if shown else None
            except NotYourRun:
                info = None
            if info is None or info.status not in ACTIVE:
                return
            for out in follow(ctx, shown, wanted_fn(request, shown)):
                if out is None:
                    yield (gr.update(),) * 6
                    return
                head, *rest = _redacted(ctx, ident, out)
                yield gr.update(), f"{text}\n\n---\n\n{head}", *rest, owner

        try:
            ctx.check_base_folder(ident, settings.get("base_model_name_or_path"))
            ctx.jobs.check_room(ident.owner)  # the per-person limit of waiting runs, before any work
        except (NotYourRun, QueueFull) as err:
            yield from said_then_follow(problems_md(getattr(err, "problems", None) or [str(err)]))
            return
        raw = form.to_raw(form.by_key(settings), data)
        prep = prepare_and_submit(ctx, raw, ident.owner, token, getattr(request, "session_hash", None))
        if prep is None:  # (the first Start's own stream shows its run here once queued)
            yield gr.update(), "Your previous **Start** is still being prepared.", *(gr.update(),) * 3, owner
            return
        for line in wait_preparation(prep):
            yield gr.update(), line, gr.update(), gr.update(), gr.update(), owner
        if prep.problems:
            yield from said_then_follow(problems_md(prep.problems))
            return
        run_id, pre = prep.run_id, prep.pre
        assert pre is not None  # (set together with run_id when no problems)
        notes = "".join(f"\n\n{n}" for n in pre.notes)
        wanted = wanted_fn(request, run_id)
        yield (
            run_id,
            f"Run `{run_id}` submitted. {pre.trainable_line}{notes}",
            gr.update(),
            gr.update(),
            gr.update(),
            owner,
        )
        for out in follow(ctx, run_id, wanted):
            yield (gr.update(),) * 6 if out is None else (run_id, *_redacted(ctx, ident, out), gr.update())

    def on_stop(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        ident = ctx.who(owner, profile)
        prep = preparing(ident.owner)
        if prep is not None and not prep.done.is_set() and prep.session == getattr(request, "session_hash", None):
            # What the page shows is this Start's preparation: a Stop now meant that, not the run before
            return (
                f"Your **Start** is being prepared ({prep.step}): there is no run to stop yet. Press **Stop** "
                "again once its run shows here (a run started before goes on: the Runs tab stops it)."
            )
        if not run_id:
            return "Nothing to stop."
        try:  # returns once the run's process group is gone
            ctx.run_of(ident, run_id)
            return ctx.redact(ident, ctx.jobs.cancel(run_id, ident.owner, admin=ident.admin))
        except NotYourRun as err:
            return str(err)

    def reattach(owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """After a (re)load: the caller's Start still preparing, else their running (or queued)
        run, else their last one."""
        ident = ctx.who(owner, profile)
        prep = preparing(ident.owner)
        if prep is not None and not prep.done.is_set():  # a finished one is shown by its run, if any
            for line in wait_preparation(prep):
                yield None, line, gr.update(), gr.update(), gr.update()
            if prep.problems:
                yield None, problems_md(prep.problems), gr.update(), gr.update(), gr.update()
                return
        runs = ctx.visible(ident) if ident.owner else []
        runs = [r for r in runs if r.owner == ident.owner]  # an admin re-attaches to their own runs only
        if not runs:
            yield None, *next(follow(ctx, None))
            return
        run_id = next((r.id for r in runs if r.status in ACTIVE), runs[0].id)
        yield from following(run_id, request, ident)

    start.click(
        on_start,
        [data_state, owner_state, run_state],
        [run_state, status, progress, plot, log, owner_state],
        inputs_kwargs=form.by_name(widgets),
        concurrency_limit=None,
        # Gradio's default ("once") ignores a click while this event is pending, and a Start
        # streams its run to the end: a second Start during a run did nothing, without a word.
        # A double click is refused by prepare_and_submit instead.
        trigger_mode="multiple",
        api_name="train",
    )
    stop.click(on_stop, [run_state, owner_state], [stop_msg], concurrency_limit=None)
    # Gradio 6.31's Textbox autoscroll scrolls only once (its effect does not re-run on new
    # values), so a streamed log stayed at its first lines: keep it at the end in the browser.
    log.change(None, None, None, js=FOLLOW_LOG_JS)
    return run_state, reattach, [run_state, status, progress, plot, log], start


def _redacted(ctx: AppContext, ident, out):
    head, prog, losses, log_text = out
    return ctx.redact(ident, head), prog, losses, ctx.redact(ident, log_text)

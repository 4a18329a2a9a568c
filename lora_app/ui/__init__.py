"""The Gradio Blocks app: Data, LoRA, Train, Runs, Try it.

``build_app()`` wires the tabs to one :class:`~lora_app.jobs.JobManager` (training happens in
child processes, never here) and one :class:`~lora_app.generate.Generator`.
"""

from __future__ import annotations

import html

import gradio as gr

from .. import estimate, identity
from ..config import ConfigError
from ..generate import Generator
from ..jobs import JobManager, NotYourRun
from ..validate import preflight
from . import data_tab, form, hub_tab, runs_tab, train_tab, try_tab
from .common import CSS, READ_ONLY, AppContext, problems_md, runs_root  # noqa: F401  (CSS: app.py and the tests import it here)

# The public API ("Use via API", gradio_client): these endpoints and no others. Every other
# event of the app is made private (api_visibility="private", not listed, not callable by the
# client libraries); the browser still calls them. Whatever an endpoint is, who is asking is
# decided on the server (lora_app.identity), so hiding one is tidiness, not security.
PUBLIC_API = (
    "check",
    "train",
    "stop",
    "resume",
    "runs",
    "run",
    "generate",
    "compare",
    "chat",
    "push",
    "use_example",
    "load_file",
    "load_hub_dataset",
)


def env_token(request: gr.Request | None = None) -> str | None:
    """The Hub token for this request: one typed in the Hub tab (this browser session only),
    else a Sign in with Hugging Face login, else ``HF_TOKEN`` from the environment / .env.
    Never shown, logged or stored (see :mod:`lora_app.ui.hub_tab`)."""
    return hub_tab.request_token(request)


def build_app(ctx: AppContext | None = None, token_fn=env_token) -> gr.Blocks:
    """Build the UI. ``ctx`` defaults to a JobManager on :func:`~lora_app.ui.common.runs_root`."""
    if ctx is None:
        ctx = AppContext(JobManager(runs_root()), Generator(), identity.admin_owners())
    with gr.Blocks(title="lora_app: LoRA fine-tuning") as demo:
        # The signed anonymous id, kept in this browser's localStorage (verified on each load),
        # and the page's owner as the server holds it: handlers read only the latter.
        browser_id = gr.BrowserState(None, storage_key="lora_app_id", secret=identity.browser_state_key(ctx.key))
        owner_state = gr.State(None)
        gr.Markdown(
            "# lora_app\nLoRA fine-tuning of causal language models: pick data, set LoRA, train, "
            "watch it live, try the result."
        )
        with gr.Tabs():
            with gr.Tab("1. Data", id="data"):
                data_state, data_parts = data_tab.build(token_fn)
            with gr.Tab("2. LoRA", id="lora"):
                gr.Markdown(form.device_note())
                preset = form.build_preset_widget()
                widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
                widgets |= form.build_distributed_widgets()  # only with more than one GPU
                form.add_global_batch_line(widgets)
                form.wire_preset(preset, widgets)
                check = gr.Button("Check settings and count trainable parameters")
                check_out = gr.Markdown()
                estimate_df = gr.Dataframe(
                    label="Memory and time estimate per hardware (from the config alone)",
                    interactive=False,
                    wrap=True,
                    visible=False,
                    elem_id="estimate-table",
                )
                estimate_md = gr.Markdown(elem_id="estimate-basis")

            def lint(
                state,
                base,
                max_length,
                owner,
                request: gr.Request | None = None,
                profile: gr.OAuthProfile | None = None,
            ):
                """The Data tab's training tokens, with the form's base model (its tokenizer only). A server
                folder as the base follows the folder rule (it read any folder's tokenizer: the breaker)."""
                try:
                    ctx.check_base_folder(ctx.who(owner, profile), base)
                except NotYourRun as err:
                    return problems_md([str(err)]), None
                return data_tab.show_lint(state, base, max_length, token_fn(request) if token_fn else None)

            data_parts["lint_button"].click(
                lint,
                [data_state, widgets["model.base_model_name_or_path"], widgets["training.max_length"], owner_state],
                [data_parts["lint_md"], data_parts["lint_view"]],
            )
            with gr.Tab("3. Train", id="train"):
                _, reattach, train_outs, start_btn = train_tab.build(ctx, widgets, data_state, owner_state, token_fn)
            with gr.Tab("4. Runs", id="runs") as runs_tab_obj:
                # A merged model is pushed with a write token, found as the Hub tab's push finds it.
                runs_parts = runs_tab.build(
                    ctx,
                    widgets,
                    data_state,
                    owner_state,
                    reattach,
                    train_outs,
                    token_fn=(lambda request=None: hub_tab.request_token(request, write=True))
                    if token_fn is env_token
                    else token_fn,
                )
            with gr.Tab("5. Try it", id="try") as try_tab_obj:
                try_parts = try_tab.build(ctx, owner_state, token_fn)
            with gr.Tab("6. Hub", id="hub") as hub_tab_obj:
                hub_parts = hub_tab.build(ctx, owner_state, None if token_fn is env_token else token_fn)

        def on_check(
            data, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None, **settings
        ):
            """Check the settings (and the chosen data, if any) without training: every problem at
            once, else the trainable-parameter count, the LoRA targets, the device. Each setting is
            a keyword named as in PEFT / transformers (r, lora_alpha, max_steps, ...)."""
            hidden = gr.update(visible=False)
            token = token_fn(request)
            # Start refuses a run without data: Check says so too, next to the parameter count.
            no_data = (
                []
                if (data or {}).get("path") or (data or {}).get("dataset_id")
                else [
                    "data: no data chosen. Fix: upload a file, use the example, or load a Hub dataset in the Data tab."
                ]
            )
            try:
                ctx.check_base_folder(ctx.who(owner, profile), settings.get("base_model_name_or_path"))
                # The same preflight as Start (every problem at once); the data only once chosen.
                cfg, pre = preflight(form.to_raw(form.by_key(settings), data), token=token, check_data=bool(data))
            except ConfigError as err:
                return problems_md(no_data + err.problems), hidden, ""
            except NotYourRun as err:
                return problems_md([str(err)]), hidden, ""
            md = (problems_md(no_data) + "\n\n" if no_data else "") + (
                f"`{pre.trainable_line}`\n\ntarget_modules: **{', '.join(pre.targets)}** "
                f"(this model has: {', '.join(pre.available_modules)}) · device **{pre.device}** · "
                f"quantization **{pre.quantization}**" + "".join(f"\n\n{n}" for n in pre.notes)
            )
            try:
                est = estimate.for_preflight(cfg, pre, token)
            except Exception as err:  # an estimate must never hide the check's result
                return md, hidden, f"No estimate for this model ({type(err).__name__}: {html.escape(str(err))[:200]})."
            return md, gr.update(value=est.frame(), visible=True), "\n".join(f"- {b}" for b in est.basis)

        check.click(
            on_check,
            [data_state, owner_state],
            [check_out, estimate_df, estimate_md],
            inputs_kwargs=form.by_name(widgets),
            api_name="check",
        )
        runs_tab_obj.select(
            runs_parts["refresh"], [owner_state, runs_parts["pick"]], runs_parts["refresh_outputs"], **READ_ONLY
        )
        # runs that finished since the page loaded are offered without pressing Refresh (the newcomer)
        try_tab_obj.select(try_parts["refresh"], [owner_state], [try_parts["run_pick"]], **READ_ONLY)
        hub_tab_obj.select(hub_parts["refresh"], [owner_state], [hub_parts["run_pick"]], **READ_ONLY).then(
            hub_parts["on_load"], None, [hub_parts["who"]]
        )
        demo.load(hub_parts["on_load"], None, [hub_parts["who"]])
        demo.unload(hub_parts["forget"])  # drop a typed token when the page goes away

        def on_load(token):
            """The owner of this page: the id this browser holds, when this server signed it,
            else a new one (stored back into the browser). Never an id the browser made up."""
            owner = identity.verify(ctx.key, token)
            if owner is None:
                owner, token = identity.issue(ctx.key)
            return token, owner

        # First the page's owner, then re-attach to its runs (or to its Start still preparing).
        demo.load(on_load, [browser_id], [browser_id, owner_state], concurrency_limit=None).then(
            runs_parts["refresh"], [owner_state], runs_parts["refresh_outputs"], **READ_ONLY
        ).then(try_parts["refresh"], [owner_state], [try_parts["run_pick"]], **READ_ONLY).then(
            # It follows the run until it ends: with Gradio's default concurrency limit (1 per
            # event) a second open tab or browser waited here, showing "No run yet", until then.
            reattach,
            [owner_state],
            train_outs,
            concurrency_limit=None,
        )
        # Start in a tab that is still following an earlier run: that follower stops by itself
        # (train_tab.follow's ``wanted``), ending on no-op updates. Not with ``cancels=``: Gradio
        # re-sends a cancelled generator's last output, which put the old run back on the page.
    # After the block closes: Gradio adds components' own load events (the LoginButton's) on exit.
    _name_data_endpoints(demo, data_parts)
    _public_api_only(demo)
    demo.lora_ctx = ctx
    return demo


def _name_data_endpoints(demo: gr.Blocks, parts: dict) -> None:
    """The Data tab's events by what they do (their functions are named by how they do it)."""
    names = {(parts["example"]._id, "click"): "use_example", (parts["upload"]._id, "change"): "load_file"}
    hub_btn = parts.get("hub_button")
    for fn in demo.fns.values():
        for block_id, event in fn.targets:
            name = names.get((block_id, event))
            if (
                name is None
                and fn.fn is not None
                and getattr(fn.fn, "__name__", "") == "from_hub"
                and (hub_btn is None or block_id == hub_btn._id)
            ):
                name = "load_hub_dataset"
            if name is not None:
                fn.api_name = name


def _public_api_only(demo: gr.Blocks) -> None:
    """Every endpoint not in :data:`PUBLIC_API` becomes private (see there)."""
    for fn in demo.fns.values():
        if fn.api_name not in PUBLIC_API:
            fn.api_visibility = "private"

"""The Gradio Blocks app: Data, LoRA, Train, Runs, Try it.

``build_app()`` wires the tabs to one :class:`~lora_app.jobs.JobManager` (training happens in
child processes, never here) and one :class:`~lora_app.generate.Generator`.
"""

from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from ..config import ConfigError
from ..generate import Generator
from ..jobs import JobManager
from ..validate import preflight
from . import data_tab, form, hub_tab, runs_tab, train_tab, try_tab
from .common import (CSS, AppContext, browser_state_secret, fmt_duration, new_owner_id, owner_of, problems_md,
                     runs_root)


def env_token(request: gr.Request | None = None) -> str | None:
    """The Hub token for this request: one typed in the Hub tab (this browser session only),
    else a Sign in with Hugging Face login, else ``HF_TOKEN`` from the environment / .env.
    Never shown, logged or stored (see :mod:`lora_app.ui.hub_tab`)."""
    return hub_tab.request_token(request)


def build_app(ctx: AppContext | None = None, token_fn=env_token) -> gr.Blocks:
    """Build the UI. ``ctx`` defaults to a JobManager on :func:`~lora_app.ui.common.runs_root`."""
    if ctx is None:
        admins = frozenset(f"hf:{u.strip()}" for u in os.environ.get("ADMIN_USERS", "").split(",") if u.strip())
        ctx = AppContext(JobManager(runs_root()), Generator(), admins)
    with gr.Blocks(title="lora_app: LoRA fine-tuning") as demo:
        owner_state = gr.BrowserState(None, storage_key="lora_app_owner", secret=browser_state_secret(ctx.jobs.root))
        gr.Markdown("# lora_app\nLoRA fine-tuning of causal language models: pick data, set LoRA, train, "
                    "watch it live, try the result.")
        with gr.Tabs():
            with gr.Tab("1. Data", id="data"):
                data_state, _ = data_tab.build(token_fn)
            with gr.Tab("2. LoRA", id="lora"):
                gr.Markdown(form.device_note())
                widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
                check = gr.Button("Check settings and count trainable parameters")
                check_out = gr.Markdown()
            with gr.Tab("3. Train", id="train"):
                _, reattach, train_outs, start_btn = train_tab.build(ctx, widgets, data_state, owner_state, token_fn)
            with gr.Tab("4. Runs", id="runs") as runs_tab_obj:
                runs_parts = runs_tab.build(ctx, widgets, data_state, owner_state, reattach, train_outs)
            with gr.Tab("5. Try it", id="try"):
                try_parts = try_tab.build(ctx, owner_state, token_fn)
            with gr.Tab("6. Hub", id="hub") as hub_tab_obj:
                hub_parts = hub_tab.build(ctx, owner_state, None if token_fn is env_token else token_fn)

        def on_check(values: dict, request: gr.Request = None):  # a dict: see train_tab.on_start
            data, vals = values[data_state], [values[w] for w in widgets.values()]
            try:
                # The same preflight as Start (every problem at once); the data only once chosen.
                _, pre = preflight(form.to_raw(dict(zip(widgets, vals)), data), token=token_fn(request),
                                   check_data=bool(data))
            except ConfigError as err:
                return problems_md(err.problems)
            return (f"`{pre.trainable_line}`\n\ntarget_modules: **{', '.join(pre.targets)}** "
                    f"(this model has: {', '.join(pre.available_modules)}) · device **{pre.device}** · "
                    f"quantization **{pre.quantization}**" + "".join(f"\n\n{n}" for n in pre.notes))

        check.click(on_check, {data_state, *widgets.values()}, [check_out])
        runs_tab_obj.select(runs_parts["refresh"], [owner_state, runs_parts["pick"]], runs_parts["refresh_outputs"])
        hub_tab_obj.select(hub_parts["refresh"], [owner_state], [hub_parts["run_pick"]]).then(
            hub_parts["on_load"], None, [hub_parts["who"]])
        demo.load(hub_parts["on_load"], None, [hub_parts["who"]])
        demo.unload(hub_parts["forget"])  # drop a typed token when the page goes away

        def on_load(owner):
            return owner or new_owner_id()

        # First give this browser an owner id (kept in localStorage), then re-attach to its runs.
        demo.load(on_load, [owner_state], [owner_state]).then(
            runs_parts["refresh"], [owner_state], runs_parts["refresh_outputs"]
        ).then(try_parts["refresh"], [owner_state], [try_parts["run_pick"]]).then(
            # It follows the run until it ends: with Gradio's default concurrency limit (1 per
            # event) a second open tab or browser waited here, showing "No run yet", until then.
            reattach, [owner_state], train_outs, concurrency_limit=None)
        # Start in a tab that is still following an earlier run: that follower stops by itself
        # (train_tab.follow's ``wanted``), ending on no-op updates. Not with ``cancels=``: Gradio
        # re-sends a cancelled generator's last output, which put the old run back on the page.
    demo.lora_ctx = ctx
    return demo

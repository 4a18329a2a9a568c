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
from ..validate import validate
from . import data_tab, form, train_tab, try_tab
from .common import CSS, AppContext, fmt_duration, new_owner_id, owner_of, problems_md, runs_root


def env_token(request: gr.Request | None = None) -> str | None:
    """The Hub token for this request: ``HF_TOKEN`` from the environment / .env. Never shown."""
    return os.environ.get("HF_TOKEN") or None


def _runs_table(ctx: AppContext, owner: str | None) -> pd.DataFrame:
    admin = owner_of(owner) in ctx.admins
    rows = []
    for r in ctx.jobs.list(owner=None if admin else owner_of(owner)):
        rows.append({"run": r.id, "status": r.status, "base model": r.base_model, "data": r.data,
                     "duration": fmt_duration(r.duration_s),
                     "final loss": None if r.final_loss is None else round(r.final_loss, 4),
                     "message": (r.message or "")[:120]})
    return pd.DataFrame(rows, columns=["run", "status", "base model", "data", "duration", "final loss", "message"])


def build_app(ctx: AppContext | None = None, token_fn=env_token) -> gr.Blocks:
    """Build the UI. ``ctx`` defaults to a JobManager on :func:`~lora_app.ui.common.runs_root`."""
    if ctx is None:
        admins = frozenset(f"hf:{u.strip()}" for u in os.environ.get("ADMIN_USERS", "").split(",") if u.strip())
        ctx = AppContext(JobManager(runs_root()), Generator(), admins)
    with gr.Blocks(title="lora_app: LoRA fine-tuning") as demo:
        owner_state = gr.BrowserState(None, storage_key="lora_app_owner")
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
                _, reattach, train_outs = train_tab.build(ctx, widgets, data_state, owner_state, token_fn)
            with gr.Tab("4. Runs", id="runs"):
                runs_df = gr.Dataframe(label="Your runs", interactive=False, wrap=True)
                runs_refresh = gr.Button("Refresh")
            with gr.Tab("5. Try it", id="try"):
                try_parts = try_tab.build(ctx, owner_state, token_fn)

        def on_check(data, *vals, request: gr.Request = None):
            try:
                cfg = form.to_config(dict(zip(widgets, vals)), data or {"path": "(not chosen)"})
                pre = validate(cfg, token=token_fn(request), check_data=bool(data))
            except ConfigError as err:
                return problems_md(err.problems)
            return (f"`{pre.trainable_line}`\n\ntarget_modules: **{', '.join(pre.targets)}** "
                    f"(this model has: {', '.join(pre.available_modules)}) · device **{pre.device}** · "
                    f"quantization **{pre.quantization}**")

        check.click(on_check, [data_state, *widgets.values()], [check_out])
        runs_refresh.click(lambda o: _runs_table(ctx, o), [owner_state], [runs_df])

        def on_load(owner):
            return owner or new_owner_id()

        # First give this browser an owner id (kept in localStorage), then re-attach to its runs.
        demo.load(on_load, [owner_state], [owner_state]).then(
            lambda o: (_runs_table(ctx, o), try_parts["refresh"](o)), [owner_state], [runs_df, try_parts["run_pick"]]
        ).then(reattach, [owner_state], train_outs)
    demo.lora_ctx = ctx
    return demo

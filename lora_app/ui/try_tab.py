"""Try tab: complete a prompt with a finished run's adapter, a folder or a Hub adapter repo."""

from __future__ import annotations

import gradio as gr

from ..config import ConfigError
from . import compare
from .common import AppContext, owner_of, problems_md

DEFAULT_PROMPT = "Two things are infinite: "


def finished_runs(ctx: AppContext, owner: str | None) -> list[tuple[str, str]]:
    out = []
    for r in ctx.jobs.list(owner=None if owner is None else owner_of(owner)):
        ad = ctx.jobs.run_dir(r.id) / "adapter"
        if (ad / "adapter_config.json").exists():
            out.append((f"{r.id} · {r.status} · {r.data}", str(ad)))
    return out


def build(ctx: AppContext, owner_state, token_fn):
    with gr.Row():
        run_pick = gr.Dropdown(label="Finished run", choices=[], interactive=True, scale=3)
        refresh = gr.Button("Refresh runs", scale=1)
    adapter = gr.Textbox(label="Adapter: folder or Hub repo id (owner/name)",
                         placeholder="filled in when you pick a run")
    prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2)
    with gr.Row():
        max_new = gr.Slider(1, 256, value=48, step=1, label="max_new_tokens")
        temp = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
    go = gr.Button("Generate", variant="primary")
    where = gr.Markdown()
    output = gr.Textbox(label="Completion", lines=6, interactive=False)
    side = compare.build(ctx, adapter, prompt, max_new, temp, where, token_fn)

    def do_refresh(owner):
        return gr.update(choices=finished_runs(ctx, owner))

    def generate(adapter_ref, text, n, t, request: gr.Request = None):
        token = token_fn(request) if token_fn else None
        try:
            loaded = ctx.generator.load(adapter_ref or None, None if adapter_ref else None, token=token) \
                if adapter_ref else ctx.generator.load(None, _default_base(), token=token)
            yield loaded.description, ""
            for partial in ctx.generator.stream(text, adapter=loaded.adapter, base=loaded.base_id,
                                                max_new_tokens=int(n), temperature=float(t), token=token):
                yield loaded.description, partial
        except ConfigError as err:
            yield problems_md(err.problems), ""

    refresh.click(do_refresh, [owner_state], [run_pick])
    run_pick.change(lambda v: v or gr.update(), [run_pick], [adapter])
    go.click(generate, [adapter, prompt, max_new, temp], [where, output])
    return {"run_pick": run_pick, "refresh": do_refresh, "adapter": adapter, "output": output, **side}


def _default_base() -> str:
    from ..config import DEFAULT_BASE_MODEL

    return DEFAULT_BASE_MODEL

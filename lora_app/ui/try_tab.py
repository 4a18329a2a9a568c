"""Try tab: complete a prompt with a finished run's adapter, a folder or a Hub adapter repo."""

from __future__ import annotations

import gradio as gr

from ..config import ConfigError
from ..identity import Identity
from ..jobs import NotYourRun
from . import compare
from .common import READ_ONLY, AppContext, problems_md

DEFAULT_PROMPT = "Two things are infinite: "


def finished_runs(ctx: AppContext, ident: Identity) -> list[tuple[str, str]]:
    """(label, run id) of the caller's runs with a saved adapter (every run's for an admin)."""
    out = []
    for r in ctx.visible(ident):
        if (ctx.jobs.run_dir(r.id) / "adapter" / "adapter_config.json").exists():
            out.append((f"{r.id} · {r.status} · {r.data}", r.id))
    return out


def build(ctx: AppContext, owner_state, token_fn):
    with gr.Row():
        run_pick = gr.Dropdown(label="Finished run", choices=[], interactive=True, scale=3)
        refresh = gr.Button("Refresh runs", scale=1)
    adapter = gr.Textbox(
        label="Adapter: one of your runs, a Hub adapter (owner/name) or a local folder",
        placeholder="filled in when you pick a run",
    )
    prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2)
    with gr.Row():
        max_new = gr.Slider(1, 256, value=48, step=1, label="max_new_tokens")
        temp = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)")
    go = gr.Button("Generate", variant="primary")
    where = gr.Markdown()
    output = gr.Textbox(label="Completion", lines=6, interactive=False)
    side = compare.build(ctx, adapter, prompt, max_new, temp, where, owner_state, token_fn)

    def do_refresh(owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        return gr.update(choices=finished_runs(ctx, ctx.who(owner, profile)))

    def generate(
        adapter,
        prompt,
        max_new_tokens,
        temperature,
        owner,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """Complete ``prompt`` with the base model plus an adapter (a run id of yours or a Hub repo id;
        empty: the base model alone). Streams ``(what was loaded, completion so far)``."""
        token = token_fn(request) if token_fn else None
        ident = ctx.who(owner, profile)
        try:
            ref = ctx.adapter_ref(ident, adapter)
            loaded = (
                ctx.generator.load(ref, None, token=token)
                if ref
                else ctx.generator.load(None, _default_base(), token=token)
            )
            what = ctx.redact(ident, loaded.description)
            yield what, ""
            for partial in ctx.generator.stream(
                prompt,
                adapter=loaded.adapter,
                base=loaded.base_id,
                max_new_tokens=int(max_new_tokens),
                temperature=float(temperature),
                token=token,
            ):
                yield what, partial
        except NotYourRun as err:
            yield problems_md([str(err)]), ""
        except ConfigError as err:
            yield problems_md([ctx.redact(ident, p) for p in err.problems]), ""

    refresh.click(do_refresh, [owner_state], [run_pick], **READ_ONLY)
    run_pick.change(lambda v: v or gr.update(), [run_pick], [adapter])
    go.click(generate, [adapter, prompt, max_new, temp, owner_state], [where, output], api_name="generate")
    return {"run_pick": run_pick, "refresh": do_refresh, "adapter": adapter, "output": output, **side}


def _default_base() -> str:
    from ..config import DEFAULT_BASE_MODEL

    return DEFAULT_BASE_MODEL

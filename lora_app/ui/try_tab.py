"""Try tab: complete a prompt with a finished run's adapter, a folder or a Hub adapter repo; an
adapter trained on conversations is tried in a chat box instead (:mod:`.chat_panel`)."""

from __future__ import annotations

import gradio as gr

from ..config import ConfigError
from ..identity import Identity
from ..jobs import NotYourRun
from . import chat_panel, compare, try_settings
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
    with gr.Row():
        mode = gr.Radio(
            [("Complete a prompt", "Completion"), ("Chat", "Chat")],
            value="Completion",
            label="Mode",
            scale=1,
            elem_id="try-mode",
            info="Chat for an adapter trained on conversations (chosen from its model card)",
        )
        layout_note = gr.Markdown(elem_id="try-layout")
    with gr.Row():
        max_new, temp = try_settings.sliders()
    where = gr.Markdown()
    typed = try_settings.remember_typed(max_new, temp, where)
    with gr.Column(visible=True) as completion_col:
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt", lines=2)
        go = gr.Button("Generate", variant="primary")
        output = gr.Textbox(label="Completion", lines=6, interactive=False)
        side = compare.build(ctx, adapter, prompt, max_new, temp, where, owner_state, token_fn, typed)
    with gr.Column(visible=False) as chat_col:
        chat_parts = chat_panel.build(ctx, adapter, max_new, temp, where, owner_state, token_fn, typed)

    def detect_layout(adapter, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        """Chat mode for an adapter whose model card says it was trained on conversations, else
        Completion; nothing changes for a reference the caller may not read."""
        token = token_fn(request) if token_fn else None
        try:
            ref = ctx.adapter_ref(ctx.who(owner, profile), adapter)
        except NotYourRun:
            return gr.update(), ""
        if not ref:
            return gr.update(), ""
        from ..chat import adapter_layout

        layout = adapter_layout(ref, token)
        if layout == "conversation":
            return "Chat", "Trained on **conversations**: tried as a chat, in the template it was trained with."
        return "Completion", f"Trained on **{layout.replace('_', '/')}** data: tried as a completion."

    def show_mode(m):
        return gr.update(visible=m != "Chat"), gr.update(visible=m == "Chat")

    def do_refresh(owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        return gr.update(choices=finished_runs(ctx, ctx.who(owner, profile)))

    def generate(
        adapter,
        prompt,
        max_new_tokens,
        temperature,
        owner,
        typed=None,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """Complete ``prompt`` with the base model plus an adapter (a run id of yours or a Hub repo id;
        empty: the base model alone). Streams ``(what was loaded, completion so far)``."""
        token = token_fn(request) if token_fn else None
        ident = ctx.who(owner, profile)
        bad = try_settings.problems(max_new, temp, max_new_tokens, temperature, typed)
        if bad:  # before any model loads
            yield problems_md(bad), ""
            return
        try:
            loaded = chat_panel.load_for(ctx, ident, adapter, token)
            what = ctx.redact(ident, loaded.description)
            if not loaded.adapter:  # said plainly: a newcomer took the base's text for their run's
                what += " · **the base model alone** (no adapter: pick a finished run to try what it learned)"
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
    run_pick.change(lambda v: v or gr.update(), [run_pick], [adapter]).then(
        detect_layout, [adapter, owner_state], [mode, layout_note]
    )
    for ev in (adapter.blur, adapter.submit):  # not .change: a typed Hub id would be looked up per keystroke
        ev(detect_layout, [adapter, owner_state], [mode, layout_note])
    mode.change(show_mode, [mode], [completion_col, chat_col])
    go.click(generate, [adapter, prompt, max_new, temp, owner_state, typed], [where, output], api_name="generate")
    return {
        "run_pick": run_pick,
        "refresh": do_refresh,
        "adapter": adapter,
        "output": output,
        "mode": mode,
        "detect_layout": detect_layout,
        **side,
        **chat_parts,
    }

"""Side by side (Try tab): the base model and base + adapter complete the same prompt with the
same seed and settings, shown next to each other."""

from __future__ import annotations

import gradio as gr

from ..config import ConfigError
from ..generate import NO_ADAPTER
from ..jobs import NotYourRun
from . import chat_panel, try_settings
from .common import AppContext, problems_md


def build(ctx: AppContext, adapter, prompt, max_new, temp, where, owner_state, token_fn, typed=None):
    """Add the Side by side button and its two outputs under the Try tab's widgets."""
    with gr.Row():
        compare_btn = gr.Button("Side by side: base model vs. with the adapter", elem_id="try-compare", scale=3)
        seed = try_settings.seed_box("try-seed")
    with gr.Row():
        base_out = gr.Textbox(label="Base model alone", lines=6, interactive=False, elem_id="try-base-out")
        adapter_out = gr.Textbox(label="With the adapter", lines=6, interactive=False, elem_id="try-adapter-out")

    def side_by_side(
        adapter,
        prompt,
        max_new_tokens,
        temperature,
        seed,
        owner,
        typed_values=None,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """The base model and base + adapter (a run id of yours or a Hub repo id) complete ``prompt``
        with the same seed and settings. Streams ``(header, base text, adapter text)``."""
        token = token_fn(request) if token_fn else None
        ident = ctx.who(owner, profile)
        bad = try_settings.problems(max_new, temp, max_new_tokens, temperature, typed_values, seed)
        if bad:  # before any model loads
            yield problems_md(bad), "", ""
            return
        if not (adapter or "").strip():
            yield (
                problems_md([NO_ADAPTER]),
                "",
                "",
            )
            return
        try:
            loaded = chat_panel.load_for(ctx, ident, adapter, token)  # ownership checked before any load
            s, n, t = int(seed or 0), int(max_new_tokens), float(temperature)
            head = (
                f"{ctx.redact(ident, loaded.description)} · same prompt, seed {s}, max_new_tokens {n}, "
                f"temperature {t:g}{' (greedy)' if t == 0 else ''}"
            )
            yield head, "", ""
            for base_text, adapter_text in ctx.generator.compare(
                prompt, loaded.adapter, loaded.base_id, max_new_tokens=n, temperature=t, seed=s, token=token
            ):
                yield head, base_text, adapter_text
        except NotYourRun as err:
            yield problems_md([str(err)]), "", ""
        except ConfigError as err:
            yield problems_md([ctx.redact(ident, p) for p in err.problems]), "", ""

    compare_btn.click(
        side_by_side,
        [adapter, prompt, max_new, temp, seed, owner_state] + ([typed] if typed is not None else []),
        [where, base_out, adapter_out],
        api_name="compare",
    )
    return {"compare": compare_btn, "base_out": base_out, "adapter_out": adapter_out, "seed": seed}

"""Try tab, chat mode: a conversation with base + adapter in a Chatbot (the template the adapter
was trained with, streamed, ended at the end-of-turn token), and the same conversation answered
side by side by the base model alone and with the adapter."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .. import chat
from ..config import ConfigError
from ..generate import NO_ADAPTER
from ..jobs import NotYourRun
from . import try_settings
from .common import AppContext, problems_md


def load_for(ctx: AppContext, ident, adapter: str | None, token: str | None):
    """Load what the Try tab answers with: the caller's adapter (ownership checked by
    ``ctx.adapter_ref``, raising NotYourRun) on its base, else the default base model alone. The
    base an adapter names follows the Train tab's folder rule (``ctx.check_base_folder``): an
    adapter of one's own must not bring another visitor's run folder in as its base."""
    from ..config import DEFAULT_BASE_MODEL

    ref = ctx.adapter_ref(ident, adapter)
    if not ref:
        return ctx.generator.load(None, DEFAULT_BASE_MODEL, token=token)
    return ctx.generator.load(ref, None, token=token, check_base=lambda base: ctx.check_base_folder(ident, base))


def conversation(history: Any, message: str | None, system_prompt: str | None) -> tuple[list[dict], list[dict]]:
    """``(shown, messages)``: the Chatbot's turns plus the new user message (for the screen) and
    the whole conversation as the model is given it (system prompt first). Raises ConfigError
    for an empty message, before any model is loaded."""
    shown = chat.messages_from_history(history)
    msgs = chat.check_messages(
        chat.messages_from_history(history, system_prompt) + [{"role": "user", "content": (message or "").strip()}]
    )
    return shown + [msgs[-1]], msgs


def build(ctx: AppContext, adapter, max_new, temp, where, owner_state, token_fn, typed=None) -> dict:
    """The chat widgets (inside the caller's hidden-until-chat column) and their events."""
    system = gr.Textbox(label="System prompt (optional)", lines=1, elem_id="chat-system")
    box = gr.Chatbot(label="Chat", height=320, elem_id="chat-box", buttons=["copy"])
    with gr.Row():
        message = gr.Textbox(label="Message", placeholder="Type a message, Enter sends", scale=4, elem_id="chat-msg")
        send = gr.Button("Send", variant="primary", scale=1)
        clear = gr.Button("Clear conversation", scale=1)
    with gr.Row():
        both_btn = gr.Button(
            "Side by side on this conversation: base model vs. with the adapter", elem_id="chat-compare", scale=3
        )
        seed = try_settings.seed_box("chat-seed")
    with gr.Row():
        base_box = gr.Chatbot(label="Base model alone (chat)", height=280, elem_id="chat-base-out")
        adapter_box = gr.Chatbot(label="With the adapter (chat)", height=280, elem_id="chat-adapter-out")

    def chat_reply(
        adapter,
        message,
        history,
        system_prompt,
        max_new_tokens,
        temperature,
        owner,
        typed_values=None,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """Answer ``message`` after the conversation ``history`` (the Chatbot's messages) with the
        base model plus an adapter (a run id of yours or a Hub repo id; empty: the base model
        alone), in the chat template the adapter was trained with. Streams ``(what was loaded,
        conversation with the reply so far, message box)``."""
        token = token_fn(request) if token_fn else None
        ident = ctx.who(owner, profile)
        history = list(history or [])
        try:
            bad = try_settings.problems(max_new, temp, max_new_tokens, temperature, typed_values)
            if bad:  # before any model loads
                raise ConfigError(bad)
            shown, msgs = conversation(history, message, system_prompt)
            loaded = load_for(ctx, ident, adapter, token)
            _, source = chat.chat_template_for(loaded, token)
            what = f"{ctx.redact(ident, loaded.description)} · chat template: {source}"
            yield what, shown, ""  # the message box emptied once: what is typed meanwhile stays
            for reply in chat.stream_chat(
                ctx.generator, msgs, loaded, int(max_new_tokens), float(temperature), token=token
            ):
                yield what, shown + [{"role": "assistant", "content": reply}], gr.skip()
        except NotYourRun as err:
            yield problems_md([str(err)]), history, message
        except ConfigError as err:
            yield problems_md([ctx.redact(ident, p) for p in err.problems]), history, message

    def chat_side_by_side(
        adapter,
        message,
        history,
        system_prompt,
        max_new_tokens,
        temperature,
        seed,
        owner,
        typed_values=None,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """The conversation so far plus ``message`` answered by the base model alone and with the
        adapter (same template, seed and settings). Streams ``(header, base turns, adapter turns)``."""
        token = token_fn(request) if token_fn else None
        ident = ctx.who(owner, profile)
        try:
            bad = try_settings.problems(max_new, temp, max_new_tokens, temperature, typed_values, seed)
            if bad:  # before any model loads
                raise ConfigError(bad)
            if not (adapter or "").strip():
                raise ConfigError([NO_ADAPTER])
            shown, msgs = conversation(history, message, system_prompt)
            loaded = load_for(ctx, ident, adapter, token)
            s, n, t = int(seed or 0), int(max_new_tokens), float(temperature)
            _, source = chat.chat_template_for(loaded, token)
            head = (
                f"{ctx.redact(ident, loaded.description)} · same conversation, chat template: {source}, "
                f"seed {s}, max_new_tokens {n}, temperature {t:g}{' (greedy)' if t == 0 else ''}"
            )
            yield head, shown, shown
            for b, a in chat.compare_chat(ctx.generator, msgs, loaded, n, t, seed=s, token=token):
                turn = [{"role": "assistant", "content": b}]
                yield head, shown + turn, shown + ([{"role": "assistant", "content": a}] if a else [])
        except NotYourRun as err:
            yield problems_md([str(err)]), [], []
        except ConfigError as err:
            yield problems_md([ctx.redact(ident, p) for p in err.problems]), [], []

    ins = [adapter, message, box, system, max_new, temp, owner_state]
    extra = [typed] if typed is not None else []
    send.click(chat_reply, ins + extra, [where, box, message], api_name="chat")
    message.submit(chat_reply, ins + extra, [where, box, message])
    clear.click(lambda: ([], [], [], ""), None, [box, base_box, adapter_box, where])
    both_btn.click(chat_side_by_side, ins[:-1] + [seed, owner_state] + extra, [where, base_box, adapter_box])
    return {
        "chatbot": box,
        "message": message,
        "send": send,
        "system": system,
        "chat_compare": both_btn,
        "chat_base_out": base_box,
        "chat_adapter_out": adapter_box,
        "chat_reply": chat_reply,
        "chat_side_by_side": chat_side_by_side,
    }

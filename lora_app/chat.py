"""Trying an adapter as a conversation: its data layout, the chat template it was trained with,
the prompt ids of a conversation, and the streamed reply that stops at the end of the turn.

What an adapter was trained on is read from its model card (``data_layout`` in the card's YAML
metadata: ``text``, ``prompt_completion``, ``instruction`` or ``conversation``; a card without it,
or no card, is an older text adapter). The chat template is the one saved with the adapter
(its tokenizer files), else the base tokenizer's own, else
:data:`lora_app.chat_template.FALLBACK_CHAT_TEMPLATE`: the order training renders with.

Generation, loading and sampling are :class:`lora_app.generate.Generator`'s; this module only
turns messages into ids and decides where a reply ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import ConfigError
from .generate import Generator, Loaded, side_by_side
from .repo_id import on_disk
from .template_process import RENDER_LIMIT_S as RENDER_LIMIT_S  # the deadline each render runs under
from .template_process import apply_chat_template
from .template_sandbox import TemplateRefused

LAYOUTS = ("text", "prompt_completion", "instruction", "conversation")
ROLES = ("system", "user", "assistant")
# A template's markers around an assistant turn are found by rendering this text and looking at
# what the template writes right after it (no model, no network).
_MARK = "\u2063lora-app-turn-end\u2063"


def _adapter_file(ref: str, name: str, token: str | None) -> Path | None:
    """``name`` from the adapter folder, or from the Hub repo ``ref`` (huggingface_hub's cache,
    the user's token); None when it has no such file. Hub errors other than a missing file
    propagate (``Generator.load`` has already explained them when the adapter loaded)."""
    folder = Path(ref).expanduser()
    if on_disk(folder, "dir"):
        path = folder / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from .hub_client import check_readable

    check_readable(ref, token)  # the cache would answer a refused request (hub_client.check_readable)
    try:
        return Path(hf_hub_download(ref, name, token=token))
    except EntryNotFoundError:
        return None


def adapter_layout(ref: str | None, token: str | None = None) -> str:
    """The data layout the adapter ``ref`` (a folder or a Hub repo id) was trained on: the
    ``data_layout`` of its model card's metadata, one of :data:`LAYOUTS`; "text" for no adapter,
    no card, a card without the key (adapters from before layouts existed) or an unknown value.
    A Hub repo that cannot be read (network, private) also gives "text": the completion box."""
    ref = (ref or "").strip()
    if not ref:
        return "text"
    from huggingface_hub import ModelCard

    try:
        card = _adapter_file(ref, "README.md", token)
        if card is None:
            return "text"
        layout = ModelCard(card.read_text(encoding="utf-8")).data.to_dict().get("data_layout")
    except Exception:  # an unreadable card must not break Try it: the completion box stays
        return "text"
    return layout if layout in LAYOUTS else "text"


def saved_chat_template(ref: str | None, token: str | None = None) -> str | None:
    """The chat template saved with the adapter ``ref`` (the one it was trained with), or None.

    transformers 5 saves it as ``chat_template.jinja``; older versions put it in
    ``tokenizer_config.json`` (``chat_template``: a string, or a list of named templates whose
    "default" is the one used) or ``chat_template.json``. Read in that order.
    """
    ref = (ref or "").strip()
    if not ref:
        return None
    try:
        jinja = _adapter_file(ref, "chat_template.jinja", token)
        if jinja is not None:
            return jinja.read_text(encoding="utf-8") or None
        for name in ("tokenizer_config.json", "chat_template.json"):
            path = _adapter_file(ref, name, token)
            if path is None:
                continue
            tmpl = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
                named = {t.get("name"): t.get("template") for t in tmpl if isinstance(t, dict)}
                tmpl = named.get("default")
            if isinstance(tmpl, str) and tmpl.strip():
                return tmpl
    except (OSError, ValueError):
        return None
    return None


def chat_template_for(loaded: Loaded, token: str | None = None) -> tuple[str, str]:
    """``(template, where it came from)`` for the loaded model: the adapter's saved template,
    else the base tokenizer's own, else the fallback ChatML (``"fallback (ChatML)"``)."""
    from .chat_template import chat_template_of

    saved = saved_chat_template(loaded.adapter, token)
    if saved:
        return saved, "the adapter's"
    tmpl, fallback = chat_template_of(loaded.tokenizer)
    return tmpl, "fallback (ChatML)" if fallback else "the base model's"


def check_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation as ``[{"role", "content"}]`` with roles in :data:`ROLES` and string content,
    ending on a user turn. Raises ConfigError naming the turn and the fix."""
    out, problems = [], []
    for i, m in enumerate(messages or []):
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in ROLES:
            problems.append(f"message {i + 1}: role {role!r} is not one of {', '.join(ROLES)}. Fix: use those roles.")
            continue
        if not isinstance(content, str):
            problems.append(f"message {i + 1}: its content is not text. Fix: send text only.")
            continue
        out.append({"role": role, "content": content})
    if not problems and (not out or out[-1]["role"] != "user" or not out[-1]["content"].strip()):
        problems.append("message: nothing typed. Fix: type a message for the model to answer.")
    if problems:
        raise ConfigError(problems)
    return out


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]], template: str, source: str = "given") -> list[int]:
    """The token ids the model is given: ``apply_chat_template(messages, chat_template=template,
    add_generation_prompt=True)`` (the template adds any BOS itself, as in training).

    A template is code from the adapter's (or base model's) author, rendered in the capped
    sandbox process (:mod:`lora_app.template_process`): one that does not parse, raises
    (``raise_exception``), fails on these messages, renders no text, or would take more memory
    or time than allowed raises ConfigError naming ``source`` ("the adapter's", ...) and the fix."""
    try:
        enc = apply_chat_template(
            tokenizer,
            messages,
            chat_template=template,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )
        ids = list(enc["input_ids"])
        why = "" if ids else "it renders no text for this conversation"
    except TemplateRefused as err:  # a bomb: too big or too slow
        why = str(err)
    except Exception as err:  # jinja2's TemplateError kinds, or a TypeError inside the template
        why = f"{type(err).__name__}: {err}"
    if why:
        raise ConfigError(
            [
                f"chat template ({source}): {why}. Fix: correct chat_template.jinja (or the tokenizer's "
                "chat_template) saved with the model, or try it as a completion."
            ]
        )
    return ids


def end_of_turn(tokenizer: Any, template: str) -> tuple[list[int], list[str]]:
    """``(stop_ids, stop_strings)``: where the template ends an assistant turn.

    Found by rendering an assistant turn and reading what the template writes after its text
    (``<|im_end|>`` for ChatML and SmolLM2, ``<|eot_id|>`` for Llama 3, ``<end_of_turn>`` for
    Gemma, ``</s>`` for Mistral). One token of the vocabulary becomes a stop id; a marker that is
    plain text to this tokenizer (the fallback template on a model without ChatML tokens)
    becomes a stop string. Neither when the template writes nothing there: EOS ends the turn.
    """
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARK}]
    try:
        text = apply_chat_template(tokenizer, msgs, chat_template=template, tokenize=False)
    except Exception:  # a template that needs more (a system turn, tools): EOS alone then
        return [], []
    after = text.split(_MARK, 1)[1].lstrip() if _MARK in text else ""
    # An added token the text starts with ("<|im_end|><|im_start|>" has no space between them),
    # longest first; else the text up to the first space is the marker.
    added = {str(t): i for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
    for content, tid in sorted(added.items(), key=lambda kv: -len(kv[0])):
        if content and after.startswith(content):
            return [tid], []
    marker = after.split()[0] if after.split() else ""
    if not marker:
        return [], []
    ids = tokenizer.convert_tokens_to_ids([marker])
    unk = tokenizer.unk_token_id
    if len(ids) == 1 and ids[0] is not None and ids[0] != unk and tokenizer.decode(ids) == marker:
        return [ids[0]], []
    return [], [marker]


def cut_reply(text: str, stop_strings: list[str]) -> str:
    """``text`` up to its first stop string; a trailing start of one is held back too, so that a
    streamed "<|im_" never flashes on screen before the rest of the marker arrives."""
    for s in stop_strings:
        if s in text:
            text = text[: text.index(s)]
    for s in stop_strings:
        for k in range(len(s) - 1, 0, -1):
            if text.endswith(s[:k]):
                return text[:-k]
    return text


def stream_chat(
    gen: Generator,
    messages: list[dict[str, str]],
    loaded: Loaded,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 0.95,
    seed: int = 0,
    token: str | None = None,
    use_adapter: bool = True,
) -> Iterator[str]:
    """Yield the assistant's reply to ``messages`` so far, as it streams. Generation ends at
    the template's end-of-turn token (see :func:`end_of_turn`) or EOS, neither shown.
    Raises ConfigError for a bad conversation (:func:`check_messages`)."""
    msgs = check_messages(messages)
    template, source = chat_template_for(loaded, token)
    ids = prompt_ids(loaded.tokenizer, msgs, template, source)
    stop_ids, stop_strings = end_of_turn(loaded.tokenizer, template)
    text = ""
    for text in gen.stream_ids(
        ids, loaded, max_new_tokens, temperature, top_p, seed, use_adapter, stop_ids, stop_strings, "conversation"
    ):
        yield cut_reply(text, stop_strings).strip()
    yield cut_reply(text, stop_strings).strip()


def compare_chat(
    gen: Generator,
    messages: list[dict[str, str]],
    loaded: Loaded,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 0.95,
    seed: int = 0,
    token: str | None = None,
) -> Iterator[tuple[str, str]]:
    """Side by side: yield ``(base reply, adapter reply)`` to the same conversation, the base
    (adapter switched off) first, with the same template, seed and settings."""
    return side_by_side(
        loaded.adapter,
        lambda on: stream_chat(gen, messages, loaded, max_new_tokens, temperature, top_p, seed, token, on),
    )


def messages_from_history(history: list[Any] | None, system_prompt: str | None = None) -> list[dict[str, str]]:
    """A Chatbot's value as plain ``[{"role", "content"}]`` messages, the optional system prompt
    first. Gradio passes each message's content as a list of parts (``{"type": "text", "text"}``),
    a script may send a string; file or component parts carry no text and are left out."""
    system = (system_prompt or "").strip()
    out = [{"role": "system", "content": system}] if system else []
    for m in history or []:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            continue
        content = m.get("content")
        parts = content if isinstance(content, list) else [content]
        text = "".join(
            p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else "" for p in parts
        )
        out.append({"role": m["role"], "content": text})
    return out

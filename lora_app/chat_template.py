"""The chat template a conversation is rendered with, in training and in Try it.

A model's own template (``tokenizer.chat_template``) is used when it has one; otherwise the
documented fallback, ChatML as TRL's ``setup_chat_format`` writes it (source: huggingface/trl,
trl/models/utils.py). Its markers are plain text to a tokenizer that lacks them as special
tokens; no token is added to the vocabulary.
"""

from __future__ import annotations

from typing import Any

FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def chat_template_of(tokenizer: Any) -> tuple[str, bool]:
    """``(template, is_fallback)``: the tokenizer's own chat template (a Jinja string), or
    :data:`FALLBACK_CHAT_TEMPLATE` and True when it has none."""
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own.strip():
        return own, False
    return FALLBACK_CHAT_TEMPLATE, True

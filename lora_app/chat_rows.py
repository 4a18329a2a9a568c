"""Rows of turns to training tokens: ``{"input_ids", "labels"}`` with the loss on the answers.

- prompt_completion / instruction (``[user, assistant]`` rows): prompt tokens (with the
  tokenizer's special tokens, e.g. BOS) + answer tokens (without) + EOS; labels -100 on the
  prompt. The prompt and the answer are tokenized apart, so the boundary is exact.
- conversation: the whole conversation rendered with ``tokenizer.apply_chat_template`` and the
  template of :func:`lora_app.chat_template.chat_template_of`, tokenized once (no special tokens
  added: the template writes its own BOS). Each assistant turn's characters are found by
  rendering prefix by prefix: the conversation up to the turn with ``add_generation_prompt``
  (where the answer starts) and through the turn (where it ends, trailing whitespace excluded so
  the end-of-turn token, e.g. ``<|im_end|>``, is the last learned token). This needs no
  ``{% generation %}`` markers, which most templates lack (transformers'
  ``return_assistant_tokens_mask`` relies on them). A token is learned when it starts inside an
  assistant turn. Every assistant turn is learned, system and user turns never.
- ``train_on_prompt``: labels equal input_ids everywhere (the text layout's rule).

Cutting at ``max_length``: a prompt/completion row loses prompt tokens first (its start, after
a BOS), then the answer's end; a conversation's user turn before its last answer loses its start
first (the answer kept whole where that is enough), then the conversation is cut at its end. A cut answer gets no EOS (a
model must not learn to stop mid-answer); the row is counted as ``answers_cut``. A row left with
no learned token is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import ConfigError
from .text import IGNORE_INDEX


@dataclass
class TokenRows:
    """``rows``: ``{"input_ids": list[int], "labels": list[int]}`` per kept row;
    ``answers_cut``: rows whose answer lost tokens to ``max_length``; ``dropped``: rows with no
    answer token left (not trained on); ``template_fallback``: the ChatML fallback was used."""

    rows: list[dict] = field(default_factory=list)
    answers_cut: int = 0
    dropped: int = 0
    template_fallback: bool = False


def _pair(turns, tok, max_length, train_on_prompt):
    eos = tok.eos_token_id
    p = list(tok(turns[0]["content"], add_special_tokens=True)["input_ids"]) if turns[0]["content"] else []
    if not turns[0]["content"] and tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]:
        p = [tok.bos_token_id]
    if p and p[-1] == eos and len(p) > 1:  # a tokenizer that appends EOS to every text
        p = p[:-1]
    a = list(tok(turns[1]["content"], add_special_tokens=False)["input_ids"]) + [eos]
    cut = False
    if len(p) + len(a) > max_length:
        keep_head = 1 if p and p[0] == tok.bos_token_id and p[0] != eos else 0
        room = max_length - len(a)
        if room >= keep_head:  # the prompt alone gives way: keep its end, the part next to the answer
            p = p[:keep_head] + (p[len(p) - (room - keep_head) :] if room > keep_head else [])
        else:
            p = p[:keep_head]
            a = a[: max_length - keep_head]
            cut = True
    ids = p + a
    labels = list(ids) if train_on_prompt else [IGNORE_INDEX] * len(p) + a
    return ids, labels, cut


def assistant_spans(turns: list[dict], tok, template: str) -> tuple[str, list[tuple[int, int]]]:
    """``(text, spans)``: the conversation rendered with ``template`` and the character spans
    ``[start, end)`` of its assistant turns (end-of-turn marker included, trailing whitespace not).

    Raises ConfigError when the template does not render a conversation's prefixes as prefixes
    of the whole (then spans cannot be found by rendering), fails to render it, or would take
    more memory or time than :mod:`lora_app.template_process` allows (rendered there).
    """
    from .template_process import apply_chat_template, refused_message
    from .template_sandbox import TemplateRefused

    try:
        full = apply_chat_template(tok, turns, chat_template=template, tokenize=False)
        spans = []
        for i, t in enumerate(turns):
            if t["role"] != "assistant":
                continue
            before = apply_chat_template(
                tok, turns[:i], chat_template=template, tokenize=False, add_generation_prompt=True
            )
            through = apply_chat_template(tok, turns[: i + 1], chat_template=template, tokenize=False)
            if not (full.startswith(through) and through.startswith(before)):
                raise ConfigError(
                    [
                        "data.layout: the model's chat template renders a conversation differently from its "
                        "beginning (e.g. it changes earlier turns once later ones exist), so the assistant turns "
                        "cannot be found. Fix: set data.train_on_prompt: true (loss on every token), or use "
                        "another base model."
                    ]
                )
            end = len(through.rstrip())
            spans.append((len(before), max(end, len(before))))
    except ConfigError:
        raise
    except TemplateRefused as err:  # a bomb (lora_app.template_sandbox): its size or time, and whose
        raise ConfigError([refused_message(getattr(tok, "name_or_path", "") or "the model", str(err))]) from None
    except Exception as err:  # jinja raise_exception(...) in a template: say which and why
        raise ConfigError(
            [
                f"data.layout: the chat template could not render a conversation ({err}). Fix: check the turns' roles "
                "and order (some templates require user/assistant alternation), or use another base model."
            ]
        ) from None
    return full, spans


def _render(turns, tok, template, train_on_prompt):
    text, spans = assistant_spans(turns, tok, template)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    starts = [s for s, _ in enc["offset_mapping"]]
    learned = [any(a <= s < b for a, b in spans) for s in starts]
    labels = [i if (train_on_prompt or k) else IGNORE_INDEX for i, k in zip(ids, learned, strict=True)]
    return ids, labels, learned


def _conversation(turns, tok, template, max_length, train_on_prompt):
    ids, labels, learned = _render(turns, tok, template, train_on_prompt)
    if len(ids) > max_length and any(learned[max_length:]) and not train_on_prompt:
        # The prompt side gives way first: the user turn before the last answer loses its start
        # (its end, next to the answer, stays), as a prompt/completion row's prompt does. A few
        # tries: the template's text around the turn re-tokenizes a little differently.
        last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
        user = next((i for i in range(last - 1, -1, -1) if turns[i]["role"] == "user"), None)
        for _ in range(4):
            if user is None:
                break
            words = tok(turns[user]["content"], add_special_tokens=False)["input_ids"]
            over = len(ids) - max_length
            if over <= 0 or not words:
                break
            shorter = [dict(t) for t in turns]
            shorter[user]["content"] = tok.decode(words[min(len(words), over + 1) :]).lstrip()
            s_ids, s_labels, s_learned = _render(shorter, tok, template, train_on_prompt)
            if sum(s_learned) < sum(learned[:max_length]):  # no better: the answer was cut anyway
                break
            turns, ids, labels, learned = shorter, s_ids, s_labels, s_learned
    cut = len(ids) > max_length and any(learned[max_length:])
    return ids[:max_length], labels[:max_length], cut


def tokenize_turns(
    rows: list[list[dict]], layout: str, tokenizer, max_length: int, train_on_prompt: bool = False
) -> TokenRows:
    """Tokenize rows of turns of ``layout`` (see the module docstring). Raises ValueError if the
    tokenizer has no EOS token, ConfigError when a conversation cannot be rendered."""
    from .chat_template import chat_template_of

    if tokenizer.eos_token_id is None:
        raise ValueError("model: the tokenizer has no EOS token; pick a model whose tokenizer defines one")
    out = TokenRows()
    template = None
    if layout == "conversation":
        template, out.template_fallback = chat_template_of(tokenizer)
    for turns in rows:
        if layout == "conversation":
            ids, labels, cut = _conversation(turns, tokenizer, template, max_length, train_on_prompt)
        else:
            ids, labels, cut = _pair(turns, tokenizer, max_length, train_on_prompt)
        out.answers_cut += cut
        if all(x == IGNORE_INDEX for x in labels[1:]):
            out.dropped += 1
            continue
        out.rows.append({"input_ids": ids, "labels": labels})
    return out


def tokenize_data(rows: list, layout: str, tokenizer, max_length: int, train_on_prompt: bool = False) -> TokenRows:
    """Any layout's rows to :class:`TokenRows`: text rows (strings) by
    :func:`lora_app.text.tokenize_rows` (labels == input_ids), the others by :func:`tokenize_turns`."""
    if layout == "text":
        from .text import tokenize_rows

        ids = tokenize_rows(rows, tokenizer, max_length)
        return TokenRows([{"input_ids": r, "labels": list(r)} for r in ids])
    return tokenize_turns(rows, layout, tokenizer, max_length, train_on_prompt)


def check_rows(tr: TokenRows, max_length: int) -> None:
    """Raise ConfigError (naming max_length and the fix) when no training row is left: every row's
    answer lay past ``max_length`` tokens (a long system prompt or question). Else the Trainer
    failed after the model loaded, with torch's "num_samples should be a positive integer"."""
    if not tr.rows:
        raise ConfigError(
            [
                f"training.max_length: no training row has an answer token within {max_length} tokens "
                f"({tr.dropped} rows dropped: their prompt fills max_length). Fix: raise training.max_length, "
                "shorten the prompts, or set data.train_on_prompt: true."
            ]
        )


def layout_info(td, tr, te, train_on_prompt: bool, max_length: int) -> dict:
    """The ``info`` event of a non-text layout: layout, columns, what is learned, the template, and
    the rows whose answer ``max_length`` cut (``tr``/``te``: chat_rows.TokenRows of train/eval)."""
    from . import count
    from .layouts import describe

    cut = tr.answers_cut + (te.answers_cut if te else 0)
    dropped = tr.dropped + (te.dropped if te else 0)
    parts = [f"layout {describe(td.layout, td.layout_columns)}"]
    parts.append("loss on every token (train_on_prompt)" if train_on_prompt else "loss on the answers only")
    if td.layout == "conversation":
        parts.append(
            "chat template: the ChatML fallback (the model has none)"
            if tr.template_fallback
            else "the model's chat template"
        )
    if cut:
        parts.append(f"{count(cut, 'row')} lost part of the answer to max_length {max_length}")
    if dropped:
        parts.append(f"{count(dropped, 'row')} with no answer token left dropped")
    return {
        "message": "; ".join(parts),
        "layout": td.layout,
        "answers_cut": cut,
        "rows_dropped": dropped,
        "template_fallback": tr.template_fallback,
    }

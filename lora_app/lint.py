"""The data lint: the exact tokens a run trains on, row by row, with the ones that carry no loss
marked, before anything is trained (the Data tab and ``python -m lora_app data --show N FILE``).

Uses the same code as training (:func:`lora_app.chat_rows.tokenize_data`) on the first rows,
with the base model's tokenizer only (never its weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import count
from .data import TextData
from .text import IGNORE_INDEX

NO_LOSS = "prompt (no loss)"
LOSS = "answer"
#: Rows tokenized for the counts (over max_length, answers cut).
LIMIT = 5000


@dataclass
class Lint:
    """``rows``: per shown row ``{"line", "tokens": [(text, category)], "n_tokens", "over"}``
    (category :data:`LOSS` or :data:`NO_LOSS`); ``header``: layout, columns, template, counts."""

    rows: list[dict] = field(default_factory=list)
    header: list[str] = field(default_factory=list)


def lint(td: TextData, tokenizer, max_length: int, n: int = 5, train_on_prompt: bool = False) -> Lint:
    """Tokenize ``td``'s first ``n`` rows as training does and say what each token is.

    Every row is tokenized (to count rows over ``max_length`` and answers cut); ``n`` only limits
    what is shown. Raises ConfigError (a chat template that cannot be rendered) or ValueError
    (no EOS token), as training would.
    """
    from .chat_rows import tokenize_data
    from .layouts import describe

    kept = td.texts[:LIMIT]  # a bound on the seconds this takes on a big file; the header says so
    untruncated = tokenize_data(kept, td.layout, tokenizer, 10**9, train_on_prompt)
    tr = tokenize_data(kept, td.layout, tokenizer, max_length, train_on_prompt)
    lines = [ln for ln in _row_lines(td)]
    out = Lint()
    if td.layout == "text":
        out.header.append(f"Layout text (column {td.text_column}): loss on every token.")
    else:
        what = "every token (train_on_prompt)" if train_on_prompt else "the answers only"
        out.header.append(f"Layout {describe(td.layout, td.layout_columns)}: loss on {what}.")
    if td.layout == "conversation":
        out.header.append(
            "Chat template: the model has none, so the documented ChatML fallback is used."
            if tr.template_fallback
            else "Chat template: the model's own."
        )
    over = [i for i, r in enumerate(untruncated.rows) if len(r["input_ids"]) > max_length]
    out.header.append(
        ("" if len(td.texts) <= LIMIT else f"Of the first {LIMIT:,} rows: ")
        + f"{count(len(over), 'row')} of {len(kept):,} over max_length {max_length} tokens"
        + (f" (lines {', '.join(str(lines[i]) for i in over[:10])}{'...' if len(over) > 10 else ''})" if over else "")
        + (f"; {count(tr.answers_cut, 'row')} lose part of the answer" if td.layout != "text" else "")
        + (f"; {count(tr.dropped, 'row')} with no answer left are dropped" if tr.dropped else "")
        + "."
    )
    for i, r in enumerate(tr.rows[:n]):
        toks = [
            (piece, LOSS if lab != IGNORE_INDEX else NO_LOSS)
            for piece, lab in zip(token_texts(tokenizer, r["input_ids"]), r["labels"], strict=True)
        ]
        full = len(untruncated.rows[i]["input_ids"]) if i < len(untruncated.rows) else len(r["input_ids"])
        out.rows.append(
            {"line": lines[i] if i < len(lines) else i + 1, "tokens": toks, "n_tokens": full, "over": full > max_length}
        )
    return out


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's text, one per id. A character whose bytes a byte-level BPE splits over several
    tokens (most Chinese characters: 3 bytes) is given whole to the token that completes it, the others
    get "" (decoded alone, each showed U+FFFD: found by the newcomer)."""
    out: list[str] = []
    start = 0
    for i in range(len(ids)):
        text = tokenizer.decode(ids[start : i + 1])
        if text.endswith("\ufffd") and i + 1 < len(ids) and i + 1 - start < 4:  # (UTF-8: 4 bytes at most)
            out.append("")
            continue
        out.append(text)
        start = i + 1
    return out


def _row_lines(td: TextData) -> list[int]:
    """The file line of each kept row (the frame's lines minus the skipped ones)."""
    df = td.frame
    lines = df.attrs.get("lines") if df is not None else None
    if df is None or lines is None or len(lines) != len(df):
        return list(range(1, len(td.texts) + 1))
    skipped = set(td.skipped_lines)
    return [int(x) for x in lines if int(x) not in skipped][: len(td.texts)]


def merged(tokens: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Neighbouring tokens of one category joined (what ``gr.HighlightedText`` shows)."""
    out: list[tuple[str, str]] = []
    for text, cat in tokens:
        if out and out[-1][1] == cat:
            out[-1] = (out[-1][0] + text, cat)
        else:
            out.append((text, cat))
    return out


def plain(result: Lint) -> str:
    """The lint as plain text: tokens with no loss inside ``[[ ]]``, one block per row."""
    parts = list(result.header)
    for r in result.rows:
        body = "".join(f"[[{t}]]" if c == NO_LOSS else t for t, c in merged(r["tokens"]))
        flag = " (over max_length: cut)" if r["over"] else ""
        parts.append(f"--- row at line {r['line']}: {r['n_tokens']} tokens{flag}\n{body}")
    return "\n".join(parts)


def preflight_notes(td: TextData, base: str, max_length: int, train_on_prompt: bool, **tok_kw) -> list[str]:
    """For Check and Start: the rows of a non-text layout that ``max_length`` cuts into the answer
    (and those left with no answer), tokenized with ``base``'s tokenizer (no weights). Raises
    ConfigError when the chat template cannot render the conversations; [] when there is no
    tokenizer to load here (the run itself will say why)."""
    from . import models
    from .chat_rows import check_rows, tokenize_data
    from .config import ConfigError

    if td.layout == "text":
        return []
    rm = models.resolve_model(base)
    # Asked before the tokenizer is read: the Hub cache would serve a private one (its chat template in an
    # error) to anyone offline (the breaker). The model check says why, with the other problems.
    if models.hub_refusal(rm, tok_kw.get("token")) is not None:
        return []
    try:
        tok = models.load_tokenizer(rm.load_path, **tok_kw)
    except ConfigError:
        raise
    except Exception:  # offline Hub id, gated repo ...: not this check's to report
        return []
    tr = tokenize_data(td.texts[:LIMIT], td.layout, tok, max_length, train_on_prompt)
    if len(td.texts) <= LIMIT:  # every row seen: none left to train on is a problem, said at Check
        check_rows(tr, max_length)
    notes = []
    if tr.template_fallback:
        notes.append("The base model has no chat template: conversations use the documented ChatML fallback.")
    if tr.answers_cut:
        notes.append(
            f"{count(tr.answers_cut, 'row')} {'loses' if tr.answers_cut == 1 else 'lose'} part of the answer to "
            f"max_length ({max_length} tokens){' in the first 5,000' if len(td.texts) > LIMIT else ''}. "
            "Fix (to keep them whole): raise max_length, or shorten those rows."
        )
    if tr.dropped:
        notes.append(f"{count(tr.dropped, 'row')} keep no answer token within max_length and are not trained on.")
    return notes

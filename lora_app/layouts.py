"""Data layouts: which columns a row's training text comes from, and which part is the answer.

- ``text``: one text column (the quotes of the reference recipe); every token is learned.
- ``prompt_completion``: ``prompt``/``completion`` (also ``question``/``answer``, ``input``/``output``);
  trained as prompt + completion + EOS, the prompt tokenized with the tokenizer's special tokens
  (BOS), the completion without.
- ``instruction``: ``instruction``, optional ``input``, ``output`` (the Alpaca layout), the prompt
  written with the Stanford Alpaca template (:data:`ALPACA_PROMPT`), then as prompt_completion.
- ``conversation``: a ``messages`` column (role/content, OpenAI style) or ``conversations``
  (from/value, ShareGPT style: human->user, gpt->assistant), rendered with the chat template of
  :func:`lora_app.chat_template.chat_template_of` (tokenized in :mod:`lora_app.chat_rows`).

A row of a non-text layout is held as a list of turns ``[{"role", "content"}]`` whatever its
file layout was: prompt_completion and instruction rows are ``[user, assistant]`` pairs.
Everything here runs before a model is loaded; bad rows are named by line, with the fix.
"""

from __future__ import annotations

import json
import math
import reprlib
from typing import Any

import numpy as np
import pandas as pd

from . import count
from .config import ConfigError
from .files import lines_of

LAYOUTS = ("text", "prompt_completion", "instruction", "conversation")
#: Column pairs read as prompt/completion, in this order of preference.
PAIRS = (("prompt", "completion"), ("question", "answer"), ("input", "output"))
CHAT_COLUMNS = ("messages", "conversations")
ROLES = ("system", "user", "assistant")
#: ShareGPT's ``from`` values (source: lm-sys/FastChat, fastchat/train/train.py ``roles``).
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}
TOOL_ROLES = ("tool", "function", "ipython", "function_call", "observation")

#: The Stanford Alpaca prompts (source: tatsu-lab/stanford_alpaca, train.py ``PROMPT_DICT``),
#: followed by a newline; the ``output`` follows it, then EOS.
ALPACA_PROMPT = {
    "input": (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
    ),
    "no_input": (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    ),
}

_SHORT = reprlib.Repr()  # a role of 4,000 characters is shown as its start and end
_SHORT.maxstring = 40
_FIX_ROLES = "Fix: give every turn a role of system, user or assistant (ShareGPT: from system, human or gpt)."


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def as_text(v) -> str | None:
    """A cell as the text trained on (and previewed), in every layout: strings as they are,
    numbers as written, lists/objects as JSON; None for a missing cell."""
    if _missing(v):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, dict, tuple)):
        return json.dumps(v, ensure_ascii=False, default=str)
    return str(v)


def _plain(v) -> Any:
    return v.tolist() if isinstance(v, np.ndarray) else v


_CHAT_KEYS = ({"role", "content"}, {"from", "value"})  # OpenAI-style messages, ShareGPT conversations


def is_chat(v) -> bool:
    """Whether a cell is a conversation: a non-empty list of turns, the first with role/content
    or from/value keys."""
    v = _plain(v)
    return (
        isinstance(v, list)
        and bool(v)
        and all(isinstance(t, dict) for t in v)
        and any(keys <= set(v[0]) for keys in _CHAT_KEYS)
    )


def _chat_column(values: list) -> bool:
    vals = [v for v in values[:1000] if not _missing(_plain(v))]
    return bool(vals) and all(is_chat(v) for v in vals)


def _cols(df: pd.DataFrame) -> dict[str, str]:
    return {str(c).lower(): c for c in df.columns}


def _has_values(df: pd.DataFrame, col) -> bool:
    return any(not _missing(v) for v in df[col].tolist())


def layout_columns(df: pd.DataFrame, layout: str) -> list[str] | None:
    """The columns ``layout`` reads in ``df`` (e.g. ``["prompt", "completion"]``), or None when
    ``df`` lacks them. ``text`` is never answered here (the text column is detected by data.py)."""
    low = _cols(df)
    if layout == "conversation":
        named = [low[n] for n in CHAT_COLUMNS if n in low and _has_values(df, low[n])]
        if named:  # both: rows of either style in one file, each row's own column read
            return named
        chat = [c for c in df.columns if _chat_column(df[c].tolist())]
        return chat[:1] or None
    if layout == "instruction":
        if "instruction" in low and "output" in low:
            return [low["instruction"]] + ([low["input"]] if "input" in low else []) + [low["output"]]
        return None
    if layout == "prompt_completion":
        for p, c in PAIRS:
            if p in low and c in low:
                return [low[p], low[c]]
    return None


def detect_layout(df: pd.DataFrame) -> str:
    """The layout of ``df``'s columns: conversation, then instruction, then prompt_completion
    (each when its columns are there and hold values), else text."""
    for layout in ("conversation", "instruction", "prompt_completion"):
        cols = layout_columns(df, layout)
        if cols and all(_has_values(df, c) for c in cols if str(c).lower() != "input" or layout != "instruction"):
            return layout
    return "text"


def _other_layouts(df: pd.DataFrame, layout: str) -> dict[str, list]:
    return {
        other: cols
        for other in ("conversation", "instruction", "prompt_completion")
        if other != layout
        and (cols := layout_columns(df, other))
        and not set(cols) & set(layout_columns(df, layout) or [])
    }


def to_turns(
    df: pd.DataFrame, layout: str, lines: list[int], unit: str
) -> tuple[list[list[dict]], list[int], list[str]]:
    """Rows of ``df`` in ``layout`` as lists of turns ``[{"role", "content"}]``.

    Returns ``(rows, skipped_lines, columns_used)``: rows whose answer is missing or blank are
    skipped and named (as empty text rows are). Raises ConfigError naming the rows (by
    ``lines``, in ``unit``) and the fix for: a layout's columns missing, mixed layouts in one
    file, and (conversations) unknown roles, tool-call or multimodal turns, empty assistant
    turns, conversations not ending on an assistant turn.
    """
    cols = layout_columns(df, layout)
    if not cols:
        want = {
            "conversation": "a 'messages' (role/content) or 'conversations' (from/value) column",
            "instruction": "'instruction' and 'output' columns (and optionally 'input')",
            "prompt_completion": "a prompt/completion, question/answer or input/output column pair",
        }[layout]
        raise ConfigError(
            [
                f"data.layout: '{layout}' needs {want}; the file has {', '.join(map(str, df.columns))}. "
                "Fix: choose the layout auto (detect it) or text, or rename the columns."
            ]
        )
    others = _other_layouts(df, layout)
    if layout == "conversation" and len(cols) > 1:  # messages where a row has them, else conversations
        mine = [next((v for c in cols if not _missing(_plain(v := df[c].iloc[i]))), None) for i in range(len(df))]
    else:
        mine = df[cols[0] if layout != "instruction" else cols[-1]].tolist()
    mixed: list[int] = []
    for other_cols in others.values():
        for i, ln in enumerate(lines):
            if _missing(_plain(mine[i])) and all(not _missing(_plain(df[c].iloc[i])) for c in other_cols):
                mixed.append(ln)
    if mixed:
        names = " and ".join(f"{k} ({'/'.join(map(str, v))})" for k, v in others.items())
        raise ConfigError(
            [
                f"data.layout: mixed layouts in one file: the rows are {layout} ({'/'.join(map(str, cols))}), but "
                f"{count(len(mixed), 'row')} {'is' if len(mixed) == 1 else 'are'} {names} ({lines_of(sorted(mixed), unit)}). "
                "Fix: put every row in one layout (one file per layout), or convert those rows."
            ]
        )
    if layout == "conversation":
        return _conversations(mine, lines, unit, list(map(str, cols))) + (list(map(str, cols)),)
    rows, skipped = [], []
    for i, ln in enumerate(lines):
        vals = {str(c).lower(): as_text(df[c].iloc[i]) or "" for c in cols}  # lists/objects as JSON, as in text
        if layout == "instruction":
            answer = vals["output"]
            key = "input" if vals.get("input", "").strip() else "no_input"
            prompt = ALPACA_PROMPT[key].format(instruction=vals["instruction"], input=vals.get("input", ""))
        else:
            prompt, answer = vals[str(cols[0]).lower()], vals[str(cols[1]).lower()]
        if not answer.strip():
            skipped.append(ln)
            continue
        rows.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])
    return rows, skipped, list(map(str, cols))


def _problems(bad: dict[str, list[int]], roles: list[str], unit: str, cols: list[str]) -> list[str]:
    """One sentence per kind of bad conversation: how many, their lines, what is wrong, the fix."""
    col = f"column '{cols[0]}'" if len(cols) == 1 else f"columns {'/'.join(repr(c) for c in cols)}"
    shown = ", ".join(_SHORT.repr(r) for r in roles[:3]) + (f" and {len(roles) - 3} more" if len(roles) > 3 else "")
    turn = '{"role": "user", "content": "Hi"}' if cols[0] != "conversations" else '{"from": "human", "value": "Hi"}'
    # kind: (what one row does, what several do, the fix)
    msgs = {
        "shape": (
            "is not a list of turns",
            "are not lists of turns",
            f"(objects with role/content or from/value). Fix: write each row's {cols[0]} as a list of turns such "
            f"as [{turn}, ...], or choose the layout text to train on the column as plain text",
        ),
        "tool": (
            "has a tool-call turn",
            "have a tool-call turn",
            "(tool_calls, or a tool/function role): tool calls are not supported yet, and dropping the turn "
            "would change the conversation. Fix: remove those rows or their tool turns",
        ),
        "multimodal": (
            "has a turn whose content is a list of parts",
            "have a turn whose content is a list of parts",
            "(images, audio): only text turns are supported. Fix: give each turn's content as one string, or "
            "remove those rows",
        ),
        "role": ("has a turn with an unknown role", "have a turn with an unknown role", f"({shown}). {_FIX_ROLES}"),
        "empty": (
            "has an empty assistant turn",
            "have an empty assistant turn",
            "(nothing to learn). Fix: write the answer, or remove the turn",
        ),
        "last": (
            "ends on a user (or system) turn",
            "end on a user (or system) turn",
            ": there is no answer to learn at its end. Fix: end every conversation with an assistant turn, or "
            "remove the last turn",
        ),
    }
    out = []
    for k, (one, many, rest) in msgs.items():
        if k in bad:
            n = len(bad[k])
            sep = "" if rest.startswith(":") else " "
            out.append(
                f"data.layout: {count(n, 'row' if k == 'shape' else 'conversation')} in {col} "
                f"({lines_of(sorted(bad[k]), unit)}) "
                f"{one if n == 1 else many}{sep}{rest}" + ("" if rest.endswith(".") else ".")
            )
    return out


def _conversations(values: list, lines: list[int], unit: str, cols: list[str]) -> tuple[list[list[dict]], list[int]]:
    rows, skipped = [], []
    bad: dict[str, list[int]] = {}
    roles_seen: dict[str, str] = {}

    def flag(kind: str, ln: int) -> None:
        bad.setdefault(kind, []).append(ln)

    for v, ln in zip(values, lines, strict=True):
        v = _plain(v)
        if _missing(v):
            skipped.append(ln)
            continue
        if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
            flag("shape", ln)
            continue
        turns, ok = [], True
        for t in v:
            t = {k: _plain(x) for k, x in t.items()}
            if "from" in t and "role" not in t:
                raw = str(t.get("from"))
                role = SHAREGPT_ROLES.get(raw.lower(), raw)
                content = t.get("value")
            else:
                role, content = str(t.get("role")), t.get("content")
            if t.get("tool_calls") or t.get("function_call") or role.lower() in TOOL_ROLES:
                flag("tool", ln)
                ok = False
                break
            if isinstance(content, (list, dict)):
                flag("multimodal", ln)
                ok = False
                break
            if role not in ROLES:
                roles_seen.setdefault(role, str(ln))
                flag("role", ln)
                ok = False
                break
            content = as_text(content) or ""
            if role == "assistant" and not content.strip():
                flag("empty", ln)
                ok = False
                break
            turns.append({"role": role, "content": content})
        if not ok:
            continue
        if not turns:
            skipped.append(ln)
        elif turns[-1]["role"] != "assistant":
            flag("last", ln)
        else:
            rows.append(turns)
    if bad:
        raise ConfigError(_problems(bad, list(roles_seen), unit, cols))
    return rows, skipped


def flat_text(row: str | list[dict]) -> str:
    """A row's characters in one string (for length notes): the text, or its turns joined."""
    return row if isinstance(row, str) else "\n".join(t["content"] for t in row)


def describe(layout: str, columns: list[str]) -> str:
    """'conversation (column messages)', 'prompt/completion (columns question, answer)'."""
    name = {"prompt_completion": "prompt/completion"}.get(layout, layout)
    return f"{name} ({'column' if len(columns) == 1 else 'columns'} {', '.join(columns)})"

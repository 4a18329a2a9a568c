"""Free text (a file name, a column, a split, a regex, a local path) inside the model card's Markdown.

The card is rendered by the Hub (CommonMark + GitHub tables). A name the user chose must stay the
text it is: a newline would end the sentence or the table row and start a heading of its own; a
backtick would close the code span; ``|`` would add a table column. HTML needs nothing: inside a
code span CommonMark shows it literally (spec 0.31, "Code spans").
"""

from __future__ import annotations

import json
import re

#: Names longer than this are cut in the card (the run folder keeps them whole).
LIMIT = 200


def one_line(text: object, limit: int = LIMIT) -> str:
    """``text`` on one line: every run of whitespace (newlines too) becomes one space, cut at ``limit``."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def plain(text: object, limit: int = LIMIT) -> str:
    """``text`` on one line as plain Markdown text: ``<``, ``>`` and ``&`` written as entities, so a
    local folder named ``<img src=x onerror=...>`` is shown, not rendered (found by the breaker)."""
    import html

    return html.escape(one_line(text, limit), quote=False)


def code(text: object, cell: bool = False, limit: int = LIMIT) -> str:
    """``text`` as one inline code span: fenced by one backtick more than its longest run of them,
    padded with a space when it starts or ends with one (CommonMark strips one space each side);
    in a table cell (``cell``) its ``|`` are escaped, which GitHub's tables need even in code."""
    s = one_line(text, limit)
    runs = [len(m) for m in re.findall(r"`+", s)]
    fence = "`" * (max(runs, default=0) + 1)
    if s.startswith("`") or s.endswith("`"):
        s = f" {s} "
    if cell:
        s = s.replace("|", r"\|")
    return f"{fence}{s}{fence}"


def cell(text: object, limit: int = LIMIT) -> str:
    """Plain table-cell text: one line, ``|`` escaped."""
    return one_line(text, limit).replace("|", r"\|")


def py_str(text: str) -> str:
    """A Python string literal of ``text`` for the card's code snippet (JSON's quoting is Python's)."""
    return json.dumps(text, ensure_ascii=False)

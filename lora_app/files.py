"""Reading an uploaded file's text into rows: its CSV dialect, JSON layout, Parquet types
(the bytes to text: :mod:`lora_app.encoding`).

What the Data tab previews is what a run trains on, so a file is either read right or refused
with a :class:`~lora_app.config.ConfigError` naming the cause (encoding, delimiter, layout, line
number) and the fix. Every row remembers where it came from (``frame.attrs["lines"]``: the line
of a CSV/JSONL/TXT file, the record of a JSON array, the row of a Parquet file), so that rows
dropped later are named, not just counted.

Libraries: clevercsv proposes the CSV delimiter and quote character (Van den Burg et al., "Wrangling messy
CSV files by detecting row and type patterns", 2019) and the header line has the last word (a
delimiter that is not in the header is not a delimiter: a one-column file keeps whole lines);
the stdlib csv module parses (it knows the line of each row); pyarrow reads Parquet.
The ``datasets`` json/csv builders are not used for uploads: they write an Arrow cache per file,
infer one type per column (a JSON "text" mixing 42 and "words" fails), and keep no line numbers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from . import count
from .config import ConfigError

FIELD = "data.path"
TEXT_COLUMN = "text"
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_NEWLINE = re.compile(r"\r\n|\r|\n")  # str.splitlines also splits on \x0c, \x1c, U+2028 ...: not line ends
#: Characters clevercsv looks at: its cost grows fast with the sample (64 KB: ~0.9 s here).
_SAMPLE = 16384


def lines_of(nums, unit: str = "line", most: int = 5) -> str:
    """'line 4', 'lines 4, 7' or 'lines 4, 7, 9, 12, 15 and 3 more' (units: line, record, row)."""
    nums = [int(n) for n in nums]
    head = ", ".join(map(str, nums[:most])) + (f" and {len(nums) - most} more" if len(nums) > most else "")
    return f"{unit}{'s' if len(nums) > 1 else ''} {head}"


def _refuse(name: str, what: str, fix: str) -> ConfigError:
    return ConfigError([f"{FIELD}: '{name}' {what}. {fix}"])


def split_lines(text: str) -> list[str]:
    """Lines as a file has them (CR, LF or CRLF); blank lines at the very end are not rows."""
    return _NEWLINE.split(text.rstrip("\r\n")) if text.strip() else []


def unique_columns(names: Sequence, name: str, where: str = "", strict: bool = True) -> list[str]:
    """Column names with the spaces at their ends removed (as every reader gives them). Raises
    ConfigError naming the names that are then equal ("text" and "text "): two columns of one
    name cannot both be read, and which one a run trained on would depend on the reader.
    ``strict`` False (a Hub dataset: the visitor cannot rename its columns): those names are kept
    as written instead, and a name written twice gets " (2)", " (3)" ...; the others are stripped."""
    stripped = [str(c).strip() for c in names]
    spelled: dict[str, list[str]] = {}
    for raw, s in zip(names, stripped, strict=True):
        spelled.setdefault(s, []).append(str(raw))
    dupes = {s: raw for s, raw in spelled.items() if len(raw) > 1}
    if dupes and not strict:
        out: list[str] = []
        for raw, s in zip(names, stripped, strict=True):
            n = s if s not in dupes else str(raw)
            k = 2
            while n in out:
                n, k = f"{s if s not in dupes else raw} ({k})", k + 1
            out.append(n)
        return out
    if dupes:
        shown = ", ".join(
            repr(s) + (f" (written {' and '.join(map(repr, raw))})" if len(set(raw)) > 1 else "")
            for s, raw in dupes.items()
        )
        raise _refuse(
            name,
            f"names the column{'s' if len(dupes) > 1 else ''} {shown} more than once{' ' + where if where else ''}",
            "Fix: give every column its own name"
            + (" (spaces at the ends of a name do not count)" if any(len(set(r)) > 1 for r in dupes.values()) else "")
            + (" in the first line." if where.startswith("in its header") else "."),
        )
    return stripped


# -- CSV -----------------------------------------------------------------------------------------
def read_csv(text: str, name: str) -> tuple[pd.DataFrame, list[int], list[str]]:
    """A CSV/TSV text as string cells: ``(frame, line of each row, notes)``.

    The delimiter is one of comma, semicolon, tab, pipe and must appear in the header line;
    with none there, the file has one column and each line is one row, commas and all. Rows
    with more fields than the header are refused by line; rows with fewer get empty cells
    (a note names them). Raises ConfigError naming the line of an unclosed quote.
    """
    import clevercsv

    first = next((ln for ln in split_lines(text) if ln.strip()), "")
    sample = text[:_SAMPLE]
    if len(text) > _SAMPLE and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    dialect = clevercsv.Detector().detect(sample, delimiters=list(DELIMITERS))
    quote = (dialect.quotechar if dialect else "") or ""
    in_header = [d for d in DELIMITERS if len(_fields(first, d, quote or '"')) > 1]
    if dialect and dialect.escapechar:  # rare (\" escapes): the stdlib parser below does not take it
        quote = ""
    delim: str | None
    if dialect and dialect.delimiter in in_header:
        delim = dialect.delimiter
    elif len(in_header) <= 1:
        delim = in_header[0] if in_header else None
    else:  # several in the header, clevercsv chose none of them: the one that splits rows like the header
        some = [ln for ln in split_lines(sample) if ln.strip()][:200]
        delim = max(
            in_header,
            key=lambda d: sum(len(_fields(ln, d, quote or '"')) == len(_fields(first, d, quote or '"')) for ln in some),
        )
    try:
        rows, where = _parse(text, delim, quote)
        if not quote and '"' in text and any(len(r) != len(rows[0]) for r in rows[1:] if r):
            # clevercsv saw no quoting because a quote is broken: parse with quotes to name its line
            rows, where = _parse(text, delim, '"')
    except csv.Error as err:
        raise _refuse(
            name,
            f"cannot be read as CSV from line {err.args[1]} ({err.args[0]}: a quoted cell that "
            "starts there is not closed, or text follows a closing quote)",
            'Fix: close the quote, and write a quote inside a quoted cell twice ("").',
        ) from None
    while rows and not rows[-1]:  # blank lines at the end are the file's end
        rows.pop()
        where.pop()
    while rows and len(rows[0]) <= 1 and not any(c.strip() for c in rows[0]):  # blank lines before the header
        rows.pop(0)
        where.pop(0)
    if not rows:
        return pd.DataFrame(), [], []
    if not any(c.strip() for c in rows[0]):  # "," or ";;": delimiters, and not one name
        raise _refuse(
            name,
            f"has a header (line {where[0]}) with {len(rows[0])} columns and no column names",
            "Fix: write the column names in the first line (such as text), or delete that line if it is an empty row.",
        )
    header = unique_columns(
        [h if h.strip() else f"column {i + 1}" for i, h in enumerate(rows[0])], name, f"in its header (line {where[0]})"
    )
    n = len(header)
    over: list[int] = []
    under: list[int] = []
    body: list[list[str]] = []
    lines: list[int] = []
    for rec, ln in zip(rows[1:], where[1:], strict=True):
        if len(rec) > n and not any(c.strip() for c in rec[n:]):
            rec = rec[:n]  # trailing empty fields (a spreadsheet's "a,b,,"): nothing is lost
        if len(rec) > n:
            over.append(ln)
        elif 0 < len(rec) < n:
            under.append(ln)
        body.append(rec + [""] * (n - len(rec)))
        lines.append(ln)
    sep = DELIMITERS.get(delim or "", "")
    if over:
        fix = (
            'Fix: put quotes around cells that hold the delimiter ("Hello, world"), or save a plain list of '
            "sentences as .txt (one row per line)."
        )
        raise _refuse(
            name,
            f"has {count(len(over), 'row')} with more fields than its header's {n} when split at "
            f"each {sep} ({lines_of(over)})",
            fix,
        )
    notes = []
    if under:
        notes.append(
            f"{count(len(under), 'row')} {'has' if len(under) == 1 else 'have'} fewer fields than the header "
            f"({lines_of(under)}): the missing cells are empty."
        )
    if delim:
        notes.append(f"Read as {sep}-separated with {n} columns.")
    return pd.DataFrame(body, columns=header, dtype=object), lines, notes


def _parse(text: str, delim: str | None, quote: str) -> tuple[list[list[str]], list[int]]:
    """Rows of cells and the line each starts on. Raises csv.Error(message, line)."""
    # csv refuses a cell over 131,072 characters ("field larger than field limit"), which the message
    # then blamed on an unclosed quote; the text is in memory whole, so no cell can be longer than it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    # One column: a delimiter that never occurs in text, so a line is never split.
    reader = csv.reader(
        io.StringIO(text, newline=""),
        delimiter=delim or "\x1f",
        quotechar=quote or '"',
        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE,
        strict=True,
    )
    rows, where, prev = [], [], 0
    try:
        for rec in reader:
            rows.append(rec)
            where.append(prev + 1)
            prev = reader.line_num
    except csv.Error as err:
        raise csv.Error(str(err), prev + 1) from None
    return rows, where


def _fields(line: str, delim: str, quote: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delim, quotechar=quote), [])
    except csv.Error:
        return line.split(delim)


# -- JSON ----------------------------------------------------------------------------------------
def read_json(text: str, name: str, jsonl: bool = False) -> tuple[list, list[int], str]:
    """JSON lines, a JSON array, an object of columns ({"text": [...], ...}) or an object holding
    one list of records ({"data": [...]}): ``(records, line or record number of each, unit)``.

    ``jsonl``: the file is named .jsonl, so one object on one line is one row. A blank line in
    JSON lines is an empty row (``None``). Raises ConfigError naming the lines
    that are not JSON, or the layout that is not rows.
    """
    stripped = text.strip()
    whole: Any = None
    err: json.JSONDecodeError | None = None
    try:
        whole = json.loads(stripped)
    except json.JSONDecodeError as e:
        err = e
    if err is None and isinstance(whole, list):
        return whole, list(range(1, len(whole) + 1)), "record"
    if err is None and isinstance(whole, dict):
        if jsonl and "\n" not in stripped:  # a one-line JSON lines file: one row
            return [whole], [where_first(text)], "line"
        return _object_layout(whole, name)
    if err is None:  # valid JSON, but one number, string, true/false or null: no rows
        raise _refuse(
            name,
            f"is a single JSON {type(whole).__name__ if whole is not None else 'null'} value, not rows",
            'Fix: save the rows as a JSON array [{"text": "..."}, ...] or as JSON lines.',
        )
    whole_bad = _refuse(
        name,
        f"is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})",
        "Fix: check the file's format, or save it as JSON lines (one object per line).",
    )
    if stripped.startswith("["):
        raise whole_bad
    rows: list[Any] = []
    where: list[int] = []
    bad: list[tuple[int, json.JSONDecodeError]] = []
    for i, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            rows.append(None)
        else:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as line_err:
                bad.append((i, line_err))
                continue
        where.append(i)
    if bad:
        i, first_err = bad[0]
        if i == where_first(text) and "Extra data" not in str(err):  # e.g. a pretty-printed object with an error
            raise whole_bad
        raise _refuse(
            name,
            f"has {count(len(bad), 'line')} that {'is' if len(bad) == 1 else 'are'} not valid JSON "
            f"({lines_of([b[0] for b in bad])}; line {i}: {first_err.msg} at column {first_err.colno})",
            'Fix: make each line one JSON object such as {"text": "..."}, or delete those lines.',
        )
    return rows, where, "line"


def where_first(text: str) -> int:
    """The number of the first non-blank line."""
    return next((i for i, ln in enumerate(split_lines(text), start=1) if ln.strip()), 1)


def _turns(rows: list) -> bool:
    """A list of chat turns ({"role", "content"} or ShareGPT's {"from", "value"}): one row, not rows."""
    return (
        bool(rows)
        and isinstance(rows[0], dict)
        and any(k <= set(rows[0]) for k in ({"role", "content"}, {"from", "value"}))
    )


def _object_layout(obj: dict, name: str) -> tuple[list, list[int], str]:
    lists = {k: v for k, v in obj.items() if isinstance(v, list)}
    records = [k for k, v in lists.items() if v and all(isinstance(r, dict) for r in v)]
    if len(records) == 1 and len(lists) == 1 and not _turns(lists[records[0]]):  # {"data": [{...}, ...], "version": 1}
        rows = lists[records[0]]
        return rows, list(range(1, len(rows) + 1)), "record"
    if lists and len(lists) == len(obj) and len({len(v) for v in lists.values()}) == 1 and not records:
        n = len(next(iter(lists.values())))  # columns: {"text": [...], "author": [...]}
        return [{k: v[i] for k, v in lists.items()} for i in range(n)], list(range(1, n + 1)), "record"
    if not lists:  # one object: one row
        return [obj], [1], "record"
    sizes = ", ".join(f"'{k}' ({count(len(v), 'item')})" for k, v in lists.items())
    raise _refuse(
        name,
        f"is one JSON object whose lists ({sizes}) are neither one list of records nor columns of equal length",
        'Fix: save the rows as a JSON array [{"text": "..."}, ...] or as JSON lines.',
    )


def records_frame(rows: list, lines: Sequence[int], unit: str, name: str) -> pd.DataFrame:
    """Records to a frame: objects as they are, plain strings as a 'text' column, ``None`` as
    an empty row. Raises ConfigError naming the first record that is neither."""
    given = [(r, ln) for r, ln in zip(rows, lines, strict=True) if r is not None]
    if given and all(isinstance(r, str) for r, _ in given):
        rows = [{TEXT_COLUMN: r} for r in rows]
    else:
        odd = [ln for r, ln in given if not isinstance(r, dict)]
        if odd:
            raise _refuse(
                name,
                f"mixes objects with other JSON values ({lines_of(odd, unit)})",
                'Fix: make every row an object such as {"text": "..."}.',
            )
    return pd.DataFrame.from_records([r if r is not None else {} for r in rows])


# -- Parquet / Arrow -----------------------------------------------------------------------------
def arrow_frame(table, name: str, strict: bool = True) -> pd.DataFrame:
    """A pyarrow Table as a frame of Python values: a list column gives lists (as JSON lines
    would), not numpy arrays whose text is "['a' 'b']". ``strict``: see :func:`unique_columns`."""
    names = unique_columns(table.column_names, name, strict=strict)
    return pd.DataFrame(
        {c: pd.Series(col.to_pylist(), dtype=object) for c, col in zip(names, table.columns, strict=True)}
    )


def row_numbers(n: int) -> list[int]:
    return list(range(1, n + 1))

"""Training text in: read a file or a Hub dataset, find the text column, check the rows.

Everything here runs before any model is loaded, so bad input is reported early, as a
:class:`~lora_app.config.ConfigError` that names the field and the fix. What the preview
shows is what a run trains on: the text column is the one shown, a cell becomes text the same
way in both, and every row dropped or changed on the way is counted and named by its line.

Files are read by :mod:`lora_app.encoding` (bytes to text) and :mod:`lora_app.files` (CSV dialect,
JSON layout, Parquet types);
"NA", "null", "None" are text, not missing values.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import numbers
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import count, encoding, files
from .config import ConfigError, DataConfig
from .files import lines_of
from .layouts import as_text
from .layouts import is_chat as _is_chat
from .repo_id import on_disk

SUPPORTED = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")
#: Column names tried first, in order, when detecting the text column.
PREFERRED_COLUMNS = ("text", "quote", "content", "body", "sentence", "document", "completion", "output")
TEXT_COLUMN = files.TEXT_COLUMN
#: A token without spaces and outside prose's alphabet: ids, hashes, labels, URLs, numbers.
_TOKEN = re.compile(r"[A-Za-z0-9_.:/#@+=~-]+")


def max_upload_bytes() -> int:
    """Upload size limit in bytes, from ``LORA_APP_MAX_UPLOAD_MB`` (default 200 MB)."""
    return int(float(os.environ.get("LORA_APP_MAX_UPLOAD_MB", "200")) * 1024 * 1024)


@dataclass
class TextData:
    """The training text and what was found on the way.

    ``texts``: one string per usable row, in file order. ``skipped_empty``: rows whose text
    was missing or blank, ``skipped_lines`` their line (record, row) numbers. ``columns``: all
    column names; ``text_column``: the one used. ``notes``: what was decided or changed on the
    way (the encoding, the delimiter, numbers read as text), one sentence each.
    """

    texts: list  # str per row (text layout), else a list of turns per row
    text_column: str
    columns: list[str]
    string_columns: list[str]
    skipped_empty: int = 0
    source: str = ""
    frame: pd.DataFrame | None = field(default=None, repr=False)
    skipped_lines: list[int] = field(default_factory=list)
    unit: str = "line"
    notes: list[str] = field(default_factory=list)
    #: The layout read (:mod:`lora_app.layouts`) and its columns. Rows of a layout other than
    #: "text" are lists of turns ``[{"role", "content"}]``, not strings.
    layout: str = "text"
    layout_columns: list[str] = field(default_factory=list)

    def skipped_line(self) -> str:
        """'2 empty rows skipped (lines 4, 7)' or ''."""
        if not self.skipped_empty:
            return ""
        where = f" ({lines_of(self.skipped_lines, self.unit)})" if self.skipped_lines else ""
        return f"{count(self.skipped_empty, 'empty row')} skipped{where}"

    def summary(self) -> str:
        if self.layout != "text":
            from .layouts import describe

            s = f"{count(len(self.texts), 'row')} from {self.source}, layout {describe(self.layout, self.layout_columns)}"
        else:
            s = f"{count(len(self.texts), 'row')} from {self.source}, text column '{self.text_column}'"
        if self.skipped_empty:
            s += f"; {self.skipped_line()}"
        return s


def _size(n: float) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .jsonl/.json/.csv/.tsv/.parquet/.txt file into a DataFrame of Python values.

    ``frame.attrs``: ``lines`` (numpy int array, where each row came from), ``unit`` ("line",
    "record" or "row"), ``encoding`` (None for Parquet), ``notes`` (list of sentences).
    Raises ConfigError (field ``data.path``) for a missing, empty, too large, unreadable or
    unsupported file, naming the cause (encoding, delimiter, layout, line) and the fix.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise ConfigError(
            [
                f"data.path: '{p.name}' has an unsupported extension '{ext or '(none)'}'. "
                f"Fix: upload one of {', '.join(SUPPORTED)}."
            ]
        )
    if not on_disk(p, "file"):
        raise ConfigError(
            [f"data.path: file not found: {p}. Fix: give the path of the data file (in the app: upload it again)."]
        )
    size = p.stat().st_size
    if size == 0:
        raise ConfigError([f"data.path: '{p.name}' is empty. Fix: upload a file with at least one row."])
    if size > max_upload_bytes():
        raise ConfigError(
            [
                f"data.path: '{p.name}' is {_size(size)}, over the {_size(max_upload_bytes())} limit. "
                "Fix: upload a smaller file (or fewer rows), or raise LORA_APP_MAX_UPLOAD_MB."
            ]
        )
    enc, unit = None, "line"
    notes: list[str] = []
    lines: Sequence[int]  # the file's line (or record) number of each row
    try:
        if ext == ".parquet":
            import pyarrow.parquet as pq

            try:
                names = pq.read_schema(p).names  # pyarrow refuses to read two columns of one name
                table = None if len(set(names)) < len(names) else pq.read_table(p)
            except Exception as err:  # pyarrow raises ArrowInvalid, OSError ...: all mean "not Parquet"
                raise ConfigError(
                    [
                        f"data.path: could not read '{p.name}' as Parquet ({str(err).splitlines()[0][:200]}). "
                        "Fix: check the file's format matches its extension."
                    ]
                ) from None
            files.unique_columns(names, p.name)
            df, unit = files.arrow_frame(table, p.name), "row"
            lines = files.row_numbers(len(df))
        else:
            text, enc = encoding.decode(p.read_bytes(), p.name)
            if not text.strip():
                raise ConfigError(
                    [f"data.path: '{p.name}' is empty (only blank lines). Fix: upload a file with at least one row."]
                )
            if ext == ".txt":  # one row per line; a blank line inside is an empty row (skipped, named)
                rows = files.split_lines(text)
                df, lines = pd.DataFrame({TEXT_COLUMN: pd.Series(rows, dtype=object)}), range(1, len(rows) + 1)
            elif ext in (".csv", ".tsv"):
                df, lines, notes = files.read_csv(text, p.name)
            else:
                rows, lines, unit = files.read_json(text, p.name, jsonl=ext == ".jsonl")
                df = files.records_frame(rows, lines, unit, p.name)
    except ConfigError:
        raise
    except Exception as err:  # a reader's own failure: still name the file and the fix
        raise ConfigError(
            [
                f"data.path: could not read '{p.name}' as {ext}: {type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}. Fix: check the file's format matches its extension."
            ]
        ) from None
    df.columns = files.unique_columns(df.columns, p.name)  # "text" and "text " would be one name
    if len(df) == 0:
        raise ConfigError(
            [
                f"data.path: '{p.name}' has no rows (a header alone is not a row). "
                "Fix: upload a file with at least one row."
            ]
        )
    if enc and enc not in ("utf-8", "utf-8-sig", "ascii"):
        notes.insert(0, f"Read as {encoding.encoding_name(enc)} text.")
    df.attrs.update(lines=np.asarray(list(lines), dtype=np.int64), unit=unit, encoding=enc, notes=notes)
    return df


# -- columns -------------------------------------------------------------------------------------
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def column_kind(values) -> str:
    """'chat' (lists of role/content turns), 'list' (other lists/objects), 'number', 'token'
    (ids, labels, hashes: no spaces, ASCII symbols only), 'prose' (everything else that is text),
    'empty'; a column of no text and no lists is named by its values' type (:func:`_value_kind`:
    'boolean', 'binary', 'timestamp' ...). Looks at the first 1,000 non-missing values."""
    vals = [v for v in itertools.islice(values, 5000) if not _missing(v)][:1000]
    if not vals:
        return "empty"
    strs = [v.strip() for v in vals if isinstance(v, str) and v.strip()]
    containers = [v for v in vals if isinstance(v, (list, dict, tuple, np.ndarray))]
    if containers and not strs:  # text mixed with a few lists stays text (the lists as JSON)
        return "chat" if all(_is_chat(v) for v in containers) else "list"
    if not strs:  # no text: name the values' type (a blank string is no value)
        kinds = {_value_kind(v) for v in vals if not isinstance(v, str)}
        if not kinds:
            return "empty"
        return kinds.pop() if len(kinds) == 1 else "number" if kinds == {"number", "boolean"} else "mixed"
    if all(_number(s) for s in strs):
        return "number"
    if all(_TOKEN.fullmatch(s) for s in strs):
        return "token"
    return "prose"


def _value_kind(v) -> str:
    """A non-text cell's type as a person names it: JSON true/false is boolean, not a number."""
    if isinstance(v, (bool, np.bool_)):
        return "boolean"
    if isinstance(v, (numbers.Number, np.number)):
        return "number"  # int, float, Decimal, numpy scalars
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "binary"
    if isinstance(v, (dt.datetime, np.datetime64)):  # pd.Timestamp is a datetime
        return "timestamp"
    if isinstance(v, dt.date):
        return "date"
    if isinstance(v, dt.time):
        return "time"
    if isinstance(v, (dt.timedelta, np.timedelta64)):
        return "duration"
    return type(v).__name__


def _number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def string_columns(df: pd.DataFrame) -> list[str]:
    """Columns a person may pick as text: prose first, then tokens and numbers written as text
    (not lists, conversations, or columns of numbers)."""
    kinds = {c: column_kind(df[c]) for c in df.columns}
    order = {"prose": 0, "token": 1}
    picked = [
        c
        for c in df.columns
        if kinds[c] in order or (kinds[c] == "number" and any(isinstance(v, str) for v in df[c].head(1000)))
    ]
    return sorted(picked, key=lambda c: order.get(kinds[c], 2))


def detect_text_column(df: pd.DataFrame) -> str:
    """The column to train on: real prose before tokens (an id or label column never wins over
    prose); within a kind, a preferred name, else the longest mean text.

    Raises ConfigError when no column holds text, or when the rows are chat conversations.
    """
    kinds = {c: column_kind(df[c]) for c in df.columns}
    _refuse_chat(kinds, None)
    for kind in ("prose", "token"):
        cols = [c for c in df.columns if kinds[c] == kind]
        if not cols:
            continue
        lower = {str(c).lower(): c for c in cols}
        for name in PREFERRED_COLUMNS:
            if name in lower:
                return lower[name]
        return max(cols, key=lambda c: df[c].dropna().map(lambda v: len(as_text(v) or "")).mean())
    shown = ", ".join(f"{c} ({kinds[c]})" if kinds[c] != "prose" else str(c) for c in df.columns)
    raise ConfigError(
        [
            f"data.text_column: no column holds text (columns: {shown}). "
            "Fix: upload a file with a text column such as 'text'."
        ]
    )


def _refuse_chat(kinds: dict, chosen: str | None) -> None:
    """Refuse chat conversations read as text unless ``chosen`` is "" (a prose column picked by hand)."""
    chat = [c for c, k in kinds.items() if k == "chat"]
    if chat and chosen != "":
        raise ConfigError(
            [
                f"data.layout: the rows are chat conversations (column '{chat[0]}' holds lists of chat turns, "
                "role/content or from/value), and the other columns are not the text of the conversations. "
                "Fix: choose the layout conversation (or auto), or upload plain text rows."
            ]
        )


def frame_to_text(df: pd.DataFrame, text_column: str | None, source: str, layout: str = "auto") -> TextData:
    """Read the rows of ``layout`` (``auto``: detected by :func:`lora_app.layouts.detect_layout`;
    an explicit ``text_column`` means text): for text, the text column (given or detected) and its
    non-empty rows; else each row as a list of turns (:func:`lora_app.layouts.to_turns`).

    Empty rows are counted and named by line (``df.attrs["lines"]`` when the frame came from
    :func:`read_table`, else the row number). Raises ConfigError for an unknown column, a
    column with no text, chat conversations read as text, or bad rows of another layout.
    """
    from . import layouts

    if layout == "auto":
        layout = "text" if text_column is not None else layouts.detect_layout(df)
    if layout != "text":
        lines = df.attrs.get("lines")
        lines = lines if lines is not None and len(lines) == len(df) else np.arange(1, len(df) + 1)
        unit = df.attrs.get("unit", "row")
        rows, empty, cols = layouts.to_turns(df, layout, [int(x) for x in lines], unit)
        if not rows:
            raise ConfigError(
                [
                    f"data.layout: no row of the {layout} layout has an answer. Fix: check the file's {', '.join(cols)} columns."
                ]
            )
        return TextData(
            rows,
            cols[-1],
            list(df.columns),
            string_columns(df),
            len(empty),
            source,
            df,
            skipped_lines=empty,
            unit=unit,
            notes=list(df.attrs.get("notes") or []),
            layout=layout,
            layout_columns=cols,
        )
    if text_column is not None and text_column not in df.columns:
        raise ConfigError(
            [f"data.text_column: no column '{text_column}'. Fix: choose one of: {', '.join(map(str, df.columns))}."]
        )
    if text_column is not None:  # a chosen id or label column of a chat file: still not its text
        kinds = {c: column_kind(df[c]) for c in df.columns}
        _refuse_chat(kinds, text_column if kinds[text_column] != "prose" else "")
    col = text_column or detect_text_column(df)
    lines = df.attrs.get("lines")
    lines = lines if lines is not None and len(lines) == len(df) else np.arange(1, len(df) + 1)
    unit = df.attrs.get("unit", "row")
    texts, empty, converted = [], [], []
    for v, ln in zip(df[col].tolist(), lines.tolist(), strict=True):
        s = as_text(v)
        if s is None or not s.strip():
            empty.append(ln)
            continue
        if not isinstance(v, str):
            converted.append(ln)
        texts.append(s)
    if not texts:
        raise ConfigError(
            [f"data.text_column: column '{col}' has no non-empty text. Fix: choose another column or check the file."]
        )
    notes = list(df.attrs.get("notes") or [])
    if text_column is not None:
        notes += _shorter_than_another(df, col, texts)
    if converted:
        notes.append(
            f"{count(len(converted), 'row')} of '{col}' {'holds' if len(converted) == 1 else 'hold'} numbers or "
            f"lists, trained on as written in the preview ({lines_of(converted, unit)})."
        )
    return TextData(
        texts,
        col,
        list(df.columns),
        string_columns(df),
        len(empty),
        source,
        df,
        skipped_lines=empty,
        unit=unit,
        notes=notes,
    )


def _shorter_than_another(df: pd.DataFrame, col: str, texts: list[str]) -> list[str]:
    """A note when the chosen text column is short (under 20 characters a row on average) and another
    string column's rows are at least 4 times as long: a label column picked as the text (the newcomer
    trained on the one-letter 'name' of a CSV without a word)."""
    mean = sum(map(len, texts)) / len(texts)
    if mean >= 20:
        return []
    longest, best = None, 0.0
    for c in string_columns(df):
        if c == col:
            continue
        vals = [v for v in df[c].head(10_000).tolist() if isinstance(v, str) and v.strip()]
        m = sum(map(len, vals)) / len(vals) if vals else 0.0
        if m > best:
            longest, best = c, m
    if longest is None or best < 4 * mean:
        return []
    return [
        f"Column '{col}' is short ({mean:.1f} characters a row on average) and '{longest}' holds longer text "
        f"({best:.0f}): is '{longest}' the text to train on? Fix: choose it as the text column."
    ]


def load_text(cfg: DataConfig, token: str | None = None) -> TextData:
    """Load the rows a run trains on, from ``cfg.path`` or the Hub dataset ``cfg.dataset_id``.

    With ``max_rows``, a Hub dataset is streamed and only those rows are read. Raises
    ConfigError naming the field and the fix.
    """
    if cfg.path:
        td = frame_to_text(read_table(cfg.path), cfg.text_column, cfg.source_name or Path(cfg.path).name, cfg.layout)
    elif cfg.dataset_id:
        from .hub_data import load_hub_frame  # imports `datasets` only when needed

        df = load_hub_frame(cfg.dataset_id, cfg.dataset_config, cfg.split, token=token, max_rows=cfg.max_rows)
        td = frame_to_text(df, cfg.text_column, cfg.dataset_id, cfg.layout)
    else:
        raise ConfigError(["data: no data chosen. Fix: upload a file or give a Hub dataset id."])
    if cfg.max_rows:
        td.texts = td.texts[: cfg.max_rows]
    return td


def preview(df: pd.DataFrame, n: int = 5, width: int = 200) -> pd.DataFrame:
    """The first ``n`` rows with each cell as it is trained on (:func:`as_text`), long cells cut
    to ``width`` characters, for display."""
    head = df.head(n).copy()
    for c in head.columns:
        head[c] = head[c].map(lambda v: (s[: width - 1] + "…") if len(s := as_text(v) or "") > width else s)
    return head

"""Training text in: read a file or a Hub dataset, find the text column, check the rows.

Everything here runs before any model is loaded, so bad input is reported early, as a
:class:`~lora_app.config.ConfigError` that names the field and the fix.

Reading is done by pandas (CSV/JSON/Parquet) with the choices a person expects from a text
tool: "NA", "null", "None" are text, not missing values; UTF-8 with or without a byte-order
mark, else Windows-1252; the CSV delimiter is sniffed (comma, semicolon, tab, pipe).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import count
from .config import ConfigError, DataConfig

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet", ".txt")
#: Column names tried first, in order, when detecting the text column.
PREFERRED_COLUMNS = ("text", "quote", "content", "body", "sentence", "document", "completion", "output")
TEXT_COLUMN = "text"


def max_upload_bytes() -> int:
    """Upload size limit in bytes, from ``LORA_APP_MAX_UPLOAD_MB`` (default 200 MB)."""
    return int(float(os.environ.get("LORA_APP_MAX_UPLOAD_MB", "200")) * 1024 * 1024)


@dataclass
class TextData:
    """The training text and what was found on the way.

    ``texts``: one string per usable row, in file order. ``skipped_empty``: rows whose text
    was missing or blank. ``columns``: all column names; ``text_column``: the one used.
    """

    texts: list[str]
    text_column: str
    columns: list[str]
    string_columns: list[str]
    skipped_empty: int = 0
    source: str = ""
    frame: pd.DataFrame | None = field(default=None, repr=False)

    def summary(self) -> str:
        s = f"{count(len(self.texts), 'row')} from {self.source}, text column '{self.text_column}'"
        if self.skipped_empty:
            s += f"; {count(self.skipped_empty, 'empty row')} skipped"
        return s


def _size(n: float) -> str:
    return f"{n / 2**20:,.1f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB"


def _decode(raw: bytes) -> str:
    # utf-8-sig strips a byte-order mark, so no invisible "\ufeff" lands in a column name.
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _read_json(text: str) -> pd.DataFrame:
    """A JSON array, a JSON-lines file, or an object holding one list of records.

    In JSON lines, a blank line between records is an empty row (skipped and counted later).
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("the file is empty")
    if stripped[0] == "[":
        return pd.DataFrame.from_records(_records(json.loads(stripped)))
    rows, bad = [], 0
    for line in stripped.splitlines():
        if not line.strip():
            rows.append(None)
            continue
        try:
            rows.append(json.loads(line))
        except ValueError:
            bad += 1
    if bad:
        # Maybe one pretty-printed object such as {"data": [...]}.
        try:
            obj = json.loads(stripped)
        except ValueError:
            raise ValueError(f"{bad} lines are not valid JSON") from None
        lists = [v for v in obj.values() if isinstance(v, list)] if isinstance(obj, dict) else []
        if len(lists) != 1:
            raise ValueError("a JSON object must hold exactly one list of records")
        return pd.DataFrame.from_records(_records(lists[0]))
    return pd.DataFrame.from_records(_records(rows))


def _records(rows: list) -> list[dict]:
    """JSON values to records: objects as they are, a list of strings as a 'text' column;
    ``None`` (a blank line, a JSON null) is an empty row."""
    given = [r for r in rows if r is not None]
    if given and all(isinstance(r, str) for r in given):
        return [{TEXT_COLUMN: r} for r in rows]
    if not all(isinstance(r, dict) for r in given):
        raise ValueError("each JSON record must be an object such as {\"text\": \"...\"}")
    return [r if r is not None else {} for r in rows]


def _read_csv(text: str) -> pd.DataFrame:
    try:
        sep = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        sep = ","
    # keep_default_na=False: "NA", "null", "None" are words in a text corpus.
    # skip_blank_lines=False: a blank line is an empty row, counted and reported as skipped.
    # Blank lines at the very end are the file's end, not rows.
    return pd.read_csv(io.StringIO(text.rstrip("\r\n") + "\n"), sep=sep, dtype=str, keep_default_na=False,
                       na_values=[], skip_blank_lines=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a .jsonl/.json/.csv/.parquet/.txt file into a DataFrame.

    Raises ConfigError (field ``data.path``) for a missing, empty, too large, unreadable or
    unsupported file.
    """
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise ConfigError([f"data.path: '{p.name}' has an unsupported extension '{ext or '(none)'}'. "
                           f"Fix: upload one of {', '.join(SUPPORTED)}."])
    if not p.is_file():
        raise ConfigError([f"data.path: file not found: {p}. Fix: upload the file again."])
    size = p.stat().st_size
    if size == 0:
        raise ConfigError([f"data.path: '{p.name}' is empty. Fix: upload a file with at least one row."])
    if size > max_upload_bytes():
        raise ConfigError([f"data.path: '{p.name}' is {_size(size)}, over the {_size(max_upload_bytes())} limit. "
                           "Fix: upload a smaller file (or fewer rows), or raise LORA_APP_MAX_UPLOAD_MB."])
    try:
        if ext == ".parquet":
            df = pd.read_parquet(p)
        else:
            text = _decode(p.read_bytes())
            if not text.strip():
                raise ConfigError([f"data.path: '{p.name}' is empty (only blank lines). "
                                   "Fix: upload a file with at least one row."])
            if ext == ".txt":
                # One row per line; blank lines inside are empty rows (skipped and counted later).
                df = pd.DataFrame({TEXT_COLUMN: text.strip("\r\n").splitlines()})
            elif ext == ".csv":
                df = _read_csv(text)
            else:
                df = _read_json(text)
    except ConfigError:
        raise
    except Exception as err:  # pandas/pyarrow/json raise many types; all mean "unreadable"
        raise ConfigError([f"data.path: could not read '{p.name}' as {ext}: {err}. "
                           "Fix: check the file's format matches its extension."]) from None
    df.columns = [str(c).strip() for c in df.columns]
    if len(df) == 0:
        raise ConfigError([f"data.path: '{p.name}' has no rows. Fix: upload a file with at least one row."])
    return df


def string_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding any strings (a JSON text column may mix in numbers; they are read as text)."""
    out = []
    for c in df.columns:
        vals = df[c].dropna()
        vals = vals[:1000]
        if any(isinstance(v, str) for v in vals):
            out.append(c)
    return out


def detect_text_column(df: pd.DataFrame) -> str:
    """The column to train on: a preferred name, else the string column with the longest text.

    Raises ConfigError when no column holds text.
    """
    cols = string_columns(df)
    if not cols:
        raise ConfigError([f"data.text_column: no column holds text (columns: {', '.join(map(str, df.columns))}). "
                           "Fix: upload a file with a text column such as 'text'."])
    lower = {c.lower(): c for c in cols}
    for name in PREFERRED_COLUMNS:
        if name in lower:
            return lower[name]
    return max(cols, key=lambda c: df[c].dropna().astype(str).str.len().mean())


def frame_to_text(df: pd.DataFrame, text_column: str | None, source: str) -> TextData:
    """Pick the text column (given or detected) and keep its non-empty rows as strings."""
    if text_column is not None and text_column not in df.columns:
        raise ConfigError([f"data.text_column: no column '{text_column}'. "
                           f"Fix: choose one of: {', '.join(map(str, df.columns))}."])
    col = text_column or detect_text_column(df)
    texts, empty = [], 0
    for v in df[col].tolist():
        if v is None or (isinstance(v, float) and v != v):
            empty += 1
            continue
        s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        if s.strip():
            texts.append(s)
        else:
            empty += 1
    if not texts:
        raise ConfigError([f"data.text_column: column '{col}' has no non-empty text. "
                           "Fix: choose another column or check the file."])
    return TextData(texts, col, list(df.columns), string_columns(df), empty, source, df)


def load_text(cfg: DataConfig, token: str | None = None) -> TextData:
    """Load the rows a run trains on, from ``cfg.path`` or the Hub dataset ``cfg.dataset_id``.

    Raises ConfigError naming the field and the fix.
    """
    if cfg.path:
        td = frame_to_text(read_table(cfg.path), cfg.text_column, cfg.source_name or Path(cfg.path).name)
    elif cfg.dataset_id:
        from .hub_data import load_hub_frame  # imports `datasets` only when needed

        df = load_hub_frame(cfg.dataset_id, cfg.dataset_config, cfg.split, token=token)
        td = frame_to_text(df, cfg.text_column, cfg.dataset_id)
    else:
        raise ConfigError(["data: no data chosen. Fix: upload a file or give a Hub dataset id."])
    if cfg.max_rows:
        td.texts = td.texts[: cfg.max_rows]
    return td


def preview(df: pd.DataFrame, n: int = 5, width: int = 200) -> pd.DataFrame:
    """The first ``n`` rows with long cells cut to ``width`` characters, for display."""
    head = df.head(n).copy()
    for c in head.columns:
        head[c] = head[c].map(lambda v: (s[: width - 1] + "…") if len(s := str(v)) > width else s)
    return head

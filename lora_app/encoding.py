"""A file's bytes to text: which encoding, and the bytes that make a file not text.

A byte-order mark decides (UTF-8/16/32); else the file is UTF-8 when it decodes as UTF-8; else
charset-normalizer (https://github.com/jawah/charset_normalizer) picks an encoding for the whole
file, Windows-1252 winning its ties. Two kinds of file would be read wrong that way, so they are
refused by line instead of guessed at:

- UTF-8 text with NUL bytes (``\\x00``): as the detector's input such a file reads as UTF-16
  ('abc\\x00def' -> '扡c敤੦'), and a NUL is no letter anyway. Real UTF-16/32 files without a mark
  still go to the detector: their UTF-8 reading is about half NULs (Latin letters) or is full of
  other control characters (Cyrillic: each letter's 0x04 byte).
- UTF-8 text with a line in another encoding (a Windows-1252 'ï' pasted among UTF-8 'é'): read
  whole as Windows-1252 every UTF-8 letter became two ('café' -> 'cafÃ©').
"""

from __future__ import annotations

import codecs
import re
import unicodedata

from . import count
from .config import ConfigError
from .files import FIELD, lines_of, split_lines

#: Longest UTF-32 mark first: FF FE 00 00 also starts with the UTF-16 LE mark FF FE.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
#: File signatures of formats people rename to .csv/.json by mistake.
_MAGIC = (
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook?)"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook"),
    (b"PAR1", "a Parquet file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"%PDF", "a PDF document"),
)
_LINE_END = re.compile(rb"\r\n|\r|\n")  # the line ends of files.split_lines, on bytes
#: UTF-16 text of Latin letters, read as UTF-8, is about half NULs (UTF-32: three quarters).
_WIDE_NULS = 0.4
_SAVE_UTF8 = "Fix: save the file again as UTF-8 text (in a spreadsheet: CSV UTF-8)."


def _refuse(name: str, what: str, fix: str) -> ConfigError:
    return ConfigError([f"{FIELD}: '{name}' {what}. {fix}"])


def decode(raw: bytes, name: str) -> tuple[str, str]:
    """``(text, encoding)``: a byte-order mark decides, else strict UTF-8, else charset-normalizer.

    Windows-1252 wins a tie in charset-normalizer's ranking (same chaos and coherence): on short
    Western text it otherwise picks look-alikes such as cp1250 ("naïve" -> "naďve"), or CJK codecs
    for a lone 0x92 apostrophe. Raises ConfigError for binary content, an invalid BOM file, UTF-8
    text with NUL bytes, or UTF-8 text with lines in another encoding (each naming the lines).
    """
    for bom, bom_enc in _BOMS:
        if raw.startswith(bom):
            try:
                marked = raw.decode(bom_enc)
            except UnicodeDecodeError as err:
                raise _refuse(
                    name,
                    f"starts with a {bom_enc.upper()} byte-order mark but byte {err.start:,} is not "
                    f"valid {bom_enc.upper()}",
                    _SAVE_UTF8,
                ) from None
            if "\x00" in marked:
                raise _nul_lines(marked, name)
            return marked, bom_enc
    for magic, what in _MAGIC:
        if raw.startswith(magic):
            raise _refuse(
                name,
                f"is {what}, not a text file",
                "Fix: export the data as .csv (UTF-8), .jsonl or "
                ".parquet" + (", or upload it with the .parquet extension" if magic == b"PAR1" else "") + ".",
            )
    text: str | None = None
    enc: str | None = None
    mixed = False  # maybe UTF-8 lines among lines of another encoding
    try:
        text, enc = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        mixed = b"\x00" not in raw  # (UTF-16/32 text has NULs, and may hold valid UTF-8 pairs by chance)
    if text is not None and "\x00" in text:
        if text.count("\x00") < _WIDE_NULS * len(text) and not _binary(text.replace("\x00", "")):
            raise _nul_lines(text, name)
        text = enc = None  # UTF-16/32 without a mark, or binary: the detector decides
    if text is None:
        import charset_normalizer as cn

        best = cn.from_bytes(raw).best()
        west = cn.from_bytes(raw, cp_isolation=["cp1252"]).best()
        if west is not None and (
            best is None or (west.chaos <= best.chaos + 0.01 and west.coherence >= best.coherence - 0.01)
        ):
            best = west
        if best is not None:
            # Only a one-byte code page's lines can be UTF-8 by accident of a paste: a double-byte
            # one's (GBK: 18% of common Chinese characters are valid UTF-8 pairs) often are by chance.
            if mixed and _one_byte(best.encoding):
                _refuse_mixed(raw, name)
            text, enc = str(best), best.encoding
    if text is None or enc is None or _binary(text):  # (both are set together)
        raise _refuse(
            name,
            "is not a text file in any encoding tried (UTF-8/16/32, Windows code pages: it holds binary bytes)",
            "Fix: upload the data as .csv, .jsonl, .json, .txt or .parquet.",
        )
    return text, enc


def _nul_lines(text: str, name: str) -> ConfigError:
    """The refusal of text with NUL characters, naming their lines."""
    where = [i for i, ln in enumerate(split_lines(text), start=1) if "\x00" in ln]
    return _refuse(
        name,
        f"holds NUL bytes (\\x00, no letter) on {_lines(where)}",
        "Fix: delete the NUL bytes from those lines (an editor shows them as NUL or ^@); if the file is "
        "full of them it may be a binary file, or UTF-16 text saved without its byte-order mark: save it as UTF-8.",
    )


def _refuse_mixed(raw: bytes, name: str) -> None:
    """Raise ConfigError when ``raw`` (not valid UTF-8 as a whole) has whole lines of UTF-8 with
    letters beyond ASCII and other lines that are not UTF-8: one encoding for the whole file
    would read one kind of line wrong. A file with no UTF-8 letters (all Windows-1252) passes."""
    utf8: list[int] = []
    bad: list[tuple[int, UnicodeDecodeError, bytes]] = []
    for i, line in enumerate(_LINE_END.split(raw), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.append((i, e, line))
        else:
            if any(b >= 0x80 for b in line):
                utf8.append(i)
    if not utf8 or not bad:
        return
    i, err, line = bad[0]
    col = len(line[: err.start].decode("utf-8", errors="replace")) + 1
    raise _refuse(
        name,
        f"mixes encodings: UTF-8 letters on {lines_of(utf8, most=3)}, and another encoding (such as "
        f"Windows-1252) on {_lines([b[0] for b in bad])}: byte 0x{line[err.start]:02X} of line {i}, column "
        f"{col}, is not UTF-8. Read in one encoding, one kind of line would get the wrong letters",
        "Fix: retype the accented letters of those lines and save the file as UTF-8 text "
        "(in a spreadsheet: CSV UTF-8).",
    )


def _lines(where: list[int]) -> str:
    """'line 2' or '3 lines (lines 2, 5, 9)'."""
    return lines_of(where) if len(where) == 1 else f"{count(len(where), 'line')} ({lines_of(where)})"


def _one_byte(enc: str) -> bool:
    """Whether ``enc`` reads every byte alone as a letter (Windows-1252, Latin-1, KOI8-R ...), unlike
    GBK, Shift-JIS or Big5, where most bytes above 0x7F start a pair."""
    alone = 0
    for b in range(0x80, 0x100):
        try:
            alone += len(bytes([b]).decode(enc)) == 1
        except (UnicodeDecodeError, LookupError):
            pass
    return alone >= 100


def _binary(text: str) -> bool:
    sample = text[:65536]
    ctrl = sum(1 for c in sample if c not in "\t\n\r\f" and unicodedata.category(c) == "Cc")
    return "\x00" in sample or ctrl > max(2, len(sample) // 100)


def encoding_name(enc: str | None) -> str:
    """A person's name for a Python codec name ('utf-16' -> 'UTF-16', 'cp1252' -> 'Windows-1252')."""
    if not enc:
        return ""
    e = enc.lower().replace("_", "-")
    if e.startswith("cp12"):
        return f"Windows-{e[2:]}"
    return {"utf-8-sig": "UTF-8 with a byte-order mark", "latin-1": "Latin-1"}.get(e, e.upper())

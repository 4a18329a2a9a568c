"""The messy files of tests/data/messy/ (written by tests/data/make_messy.py): each is read right
or refused by name, through the preflight the Start button runs. README.md's data table lists
the same files and outcomes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lora_app.config import ConfigError, DataConfig
from lora_app.data import load_text

MESSY = Path(__file__).resolve().parent / "data" / "messy"

#: file -> (texts, text column, a note that must be given) when read.
HELLO = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
N_SHAREGPT = 1
READ = {
    "cp1252.csv": (["It’s a café – naïve, “quoted”", "À bientôt"], "text", "Read as Windows-1252 text."),
    "latin1.txt": (["café au lait", "Über alles, señor"], "text", "Read as Windows-1252 text."),
    "cp1251.csv": (
        ["Привет, мир! Как дела у тебя сегодня?", "Добрый вечер, друзья"],
        "text",
        "Read as Windows-1251 text.",
    ),
    "utf8_bom.jsonl": (["Hello there", "Good day"], "text", None),
    "utf16be_bom.txt": (["First line, with a comma", "Second line"], "text", "Read as UTF-16 text."),
    "utf16le_nobom.csv": (["Hello there, friend", "Good day to you"], "text", "Read as UTF-16-LE text."),
    "tab.tsv": (["Hello, world", "Good morning, everyone"], "text", "Read as tab-separated with 2 columns."),
    "pipe.csv": (["Hello, world", "Good morning; everyone"], "text", "Read as pipe-separated with 2 columns."),
    "decimal_commas.csv": (["Good bread, fresh", "Cheap wine"], "text", "Read as semicolon-separated with 2 columns."),
    "multiline.csv": (["First line\nsecond line, same cell", 'She said "hi"', "Plain"], "text", None),
    "crlf_trailing.csv": (["Hello there", "Good day"], "text", None),
    "stray_quote.csv": (["fine", '"never closed', "more"], "text", None),
    "array.json": (["One", "Two"], "text", None),
    "strings.json": (["Just a sentence.", "Another one."], "text", None),
    "columns.json": (["One", "Two", "Three"], "text", None),
    "wrapped.json": (["One", "Two"], "text", None),
    "blank_lines.txt": (["First", "Third", "Sixth"], "text", None),
    "ragged_fewer.csv": (
        ["fine", "short row", "ok", "also short"],
        "text",
        "2 rows have fewer fields than the header (lines 3, 5): the missing cells are empty.",
    ),
    "ids_and_prose.jsonl": (["A calm sea."] * 4, "note", None),
    # Chat files are read as conversations (lora_app.layouts), each row its turns; ShareGPT's
    # from/value become role/content (human -> user, gpt -> assistant).
    "chat_openai.jsonl": ([HELLO] * 3, "messages", None),
    "chat_sharegpt.jsonl": ([HELLO] * N_SHAREGPT, "conversations", None),
}

#: file -> the refusal (a regex on the one problem).
REFUSED = {
    "empty.csv": r"^data\.path: 'empty\.csv' is empty\. Fix",
    "blank.jsonl": r"^data\.path: 'blank\.jsonl' is empty \(only blank lines\)\. Fix",
    "header_only.csv": r"^data\.path: 'header_only\.csv' has no rows \(a header alone is not a row\)\. Fix",
    "junk.csv": r"^data\.path: 'junk\.csv' is not a text file .*binary bytes.*Fix",
    "workbook.csv": r"^data\.path: 'workbook\.csv' is a ZIP archive \(an Excel \.xlsx workbook\?\), not a text file\. "
    r"Fix: export",
    "ragged_more.csv": r"^data\.path: 'ragged_more\.csv' has 2 rows with more fields than its header's 2 when split at "
    r"each comma \(lines 3, 5\)\. Fix: put quotes around cells",
    "unclosed_quote.csv": r"^data\.path: 'unclosed_quote\.csv' cannot be read as CSV from line 3 .*Fix: close the quote",
    "duplicate_columns.csv": r"^data\.path: 'duplicate_columns\.csv' names the column 'text' more than once .*Fix",
    "nul_byte.csv": r"^data\.path: 'nul_byte\.csv' holds NUL bytes \(\\x00, no letter\) on line 3\. Fix: delete the NUL",
    "mixed_encoding.txt": r"^data\.path: 'mixed_encoding\.txt' mixes encodings: UTF-8 letters on lines 1, 3, and another "
    r"encoding \(such as Windows-1252\) on line 2: byte 0xEF of line 2, column 3, is not UTF-8\..*Fix: retype",
    "numeric.csv": r"^data\.text_column: no column holds text \(columns: id \(number\), score \(number\)\)\. Fix",
    "broken.jsonl": r"^data\.path: 'broken\.jsonl' has 1 line that is not valid JSON \(line 3; line 3: Unterminated "
    r"string.*Fix: make each line one JSON object",
    "mixed.jsonl": r"^data\.path: 'mixed\.jsonl' mixes objects with other JSON values \(line 2\)\. Fix",
    "pretty_broken.json": r"^data\.path: 'pretty_broken\.json' is not valid JSON \(line 4, column 3: Expecting value\)\. Fix",
}


def test_every_messy_file_is_listed():
    assert sorted(p.name for p in MESSY.iterdir()) == sorted({**READ, **REFUSED})


@pytest.mark.parametrize("name", sorted(READ))
def test_messy_file_is_read_right(name):
    texts, column, note = READ[name]
    td = load_text(DataConfig(path=str(MESSY / name)))
    assert td.texts == texts and td.text_column == column
    assert note is None or note in td.notes, td.notes
    assert all("\ufeff" not in c and "\x00" not in c for c in td.columns)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_messy_file_is_refused_by_name(name):
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=str(MESSY / name)))
    assert len(e.value.problems) == 1 and "Fix:" in e.value.problems[0]
    assert re.search(REFUSED[name], e.value.problems[0]), e.value.problems[0]


def test_the_generator_wrote_these_files():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_messy", MESSY.parent / "make_messy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {n: (MESSY / n).read_bytes() for n in mod.FILES} == mod.FILES

"""Reading every supported format, detecting the text column, and the odd files people upload."""

import json

import pandas as pd
import pytest

from lora_app.config import ConfigError, DataConfig
from lora_app.data import detect_text_column, frame_to_text, load_text, preview, read_table

ROWS = [{"quote": "“Be yourself.”", "author": "Oscar Wilde", "likes": 3},
        {"quote": "“So it goes.”", "author": "Kurt Vonnegut", "likes": 5}]


def write(tmp_path, name, content, mode="w", **kw):
    p = tmp_path / name
    (p.write_bytes if mode == "wb" else p.write_text)(content, **kw)
    return p


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "txt"])
def test_each_format_reads_the_same_texts(tmp_path, fmt):
    if fmt == "jsonl":
        p = write(tmp_path, "d.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8")
    elif fmt == "json":
        p = write(tmp_path, "d.json", json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        p = tmp_path / "d.csv"
        pd.DataFrame(ROWS).to_csv(p, index=False)
    elif fmt == "parquet":
        p = tmp_path / "d.parquet"
        pd.DataFrame(ROWS).to_parquet(p)
    else:
        p = write(tmp_path, "d.txt", "“Be yourself.”\n\n“So it goes.”\n", encoding="utf-8")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["“Be yourself.”", "“So it goes.”"]
    assert td.text_column == ("text" if fmt == "txt" else "quote")


def test_detection_prefers_known_names_then_longest_string_column():
    df = pd.DataFrame({"id": [1, 2], "title": ["a", "b"], "body": ["x", "y"]})
    assert detect_text_column(df) == "body"
    df = pd.DataFrame({"id": [1, 2], "short": ["a", "b"], "long": ["a long one", "another long"]})
    assert detect_text_column(df) == "long"


def test_no_string_column_names_the_columns(tmp_path):
    p = write(tmp_path, "n.csv", "a,b\n1,2\n3,4\n")
    # CSV cells are read as text, so give a parquet of numbers
    p = tmp_path / "n.parquet"
    pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}).to_parquet(p)
    with pytest.raises(ConfigError, match=r"data\.text_column: no column holds text \(columns: a, b\)"):
        load_text(DataConfig(path=str(p)))


def test_chosen_column_missing_lists_the_real_ones(tmp_path):
    p = write(tmp_path, "d.jsonl", json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ConfigError, match=r"no column 'text'.*choose one of: quote, author, likes"):
        load_text(DataConfig(path=str(p), text_column="text"))


def test_na_words_are_text_and_empty_rows_are_counted(tmp_path):
    p = write(tmp_path, "d.csv", "text\nNA\nnull\n\"\"\nNone\nN/A\n   \nreal text\n")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["NA", "null", "None", "N/A", "real text"]
    assert td.skipped_empty == 2


def test_semicolon_csv_bom_and_windows_1252(tmp_path):
    p = write(tmp_path, "s.csv", "\ufefftext;author\nIt’s fine;me\n".encode("cp1252", errors="ignore")
              if False else "text;author\nIt’s fine;me\n".encode("cp1252"), mode="wb")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["It’s fine"] and td.columns == ["text", "author"]
    p = write(tmp_path, "b.csv", "\ufefftext,author\nhello,me\n".encode("utf-8"), mode="wb")
    td = load_text(DataConfig(path=str(p)))
    assert td.columns == ["text", "author"] and td.text_column == "text"


def test_json_array_in_jsonl_and_lines_in_json(tmp_path):
    a = write(tmp_path, "a.jsonl", json.dumps(ROWS))
    b = write(tmp_path, "b.json", "\n".join(json.dumps(r) for r in ROWS))
    assert load_text(DataConfig(path=str(a))).texts == load_text(DataConfig(path=str(b))).texts == [r["quote"] for r in ROWS]


def test_numbers_in_text_column_become_text(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"text": "words"}\n{"text": 42}\n{"text": 3.5}\n{"text": null}\n')
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["words", "42", "3.5"] and td.skipped_empty == 1


@pytest.mark.parametrize("name,content,msg", [
    ("e.jsonl", "", r"data\.path: 'e\.jsonl' is empty"),
    ("x.docx", "hello", r"unsupported extension '\.docx'"),
    ("bad.jsonl", "{not json}\n{\"a\": 1}\n", r"could not read 'bad\.jsonl'"),
])
def test_bad_files_name_the_field_and_fix(tmp_path, name, content, msg):
    p = write(tmp_path, name, content)
    with pytest.raises(ConfigError, match=msg) as e:
        load_text(DataConfig(path=str(p)))
    assert "Fix:" in str(e.value)


def test_size_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_APP_MAX_UPLOAD_MB", "0.001")
    p = write(tmp_path, "big.txt", "x" * 5000)
    with pytest.raises(ConfigError, match=r"'big\.txt' is 4\.9 KB, over the 1\.0 KB limit.*LORA_APP_MAX_UPLOAD_MB"):
        read_table(p)


def test_preview_cuts_long_cells():
    df = pd.DataFrame({"text": ["a" * 500, "b"]})
    pv = preview(df, n=1, width=50)
    assert len(pv) == 1 and len(pv["text"][0]) == 50 and pv["text"][0].endswith("…")


def test_real_quotes_file():
    from conftest import EXAMPLE_QUOTES

    td = frame_to_text(read_table(EXAMPLE_QUOTES), None, "quotes")
    assert td.text_column == "quote" and len(td.texts) == 1000 and td.skipped_empty == 0


def test_counts_read_right_for_one_and_many(tmp_path):
    from lora_app import count
    from lora_app.config import DataConfig
    from lora_app.data import load_text

    assert (count(1, "row"), count(2467, "row"), count(0, "row")) == ("1 row", "2,467 rows", "0 rows")
    one = tmp_path / "one.jsonl"
    one.write_text('{"quote": "So it goes."}\n{"quote": ""}\n', encoding="utf-8")
    assert load_text(DataConfig(path=str(one))).summary() == (
        f"1 row from {one.name}, text column 'quote'; 1 empty row skipped")

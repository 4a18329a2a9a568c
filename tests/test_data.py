"""Reading every supported format, detecting the text column, and the odd files people upload."""

import json

import pandas as pd
import pytest

from lora_app.config import ConfigError, DataConfig
from lora_app.data import detect_text_column, frame_to_text, load_text, preview, read_table

ROWS = [
    {"quote": "“Be yourself.”", "author": "Oscar Wilde", "likes": 3},
    {"quote": "“So it goes.”", "author": "Kurt Vonnegut", "likes": 5},
]


def write(tmp_path, name, content, mode="w", **kw):
    p = tmp_path / name
    (p.write_bytes if mode == "wb" else p.write_text)(content, **kw)
    return p


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "txt"])
def test_each_format_reads_the_same_texts(tmp_path, fmt):
    if fmt == "jsonl":
        p = write(
            tmp_path, "d.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n", encoding="utf-8"
        )
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
    # Numbers are no text, whether typed (Parquet) or written as text (CSV).
    pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}).to_parquet(tmp_path / "n.parquet")
    write(tmp_path, "n.csv", "a,b\n1,2\n3,4.5\n")
    for name in ("n.parquet", "n.csv"):
        with pytest.raises(
            ConfigError,
            match=r"data\.text_column: no column holds text \(columns: a \(number\), "
            r"b \(number\)\)",
        ):
            load_text(DataConfig(path=str(tmp_path / name)))


def test_chosen_column_missing_lists_the_real_ones(tmp_path):
    p = write(tmp_path, "d.jsonl", json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ConfigError, match=r"no column 'text'.*choose one of: quote, author, likes"):
        load_text(DataConfig(path=str(p), text_column="text"))


def test_na_words_are_text_and_empty_rows_are_counted(tmp_path):
    p = write(tmp_path, "d.csv", 'text\nNA\nnull\n""\nNone\nN/A\n   \nreal text\n')
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["NA", "null", "None", "N/A", "real text"]
    assert td.skipped_empty == 2


def test_semicolon_csv_bom_and_windows_1252(tmp_path):
    p = write(
        tmp_path,
        "s.csv",
        "\ufefftext;author\nIt’s fine;me\n".encode("cp1252", errors="ignore")
        if False
        else "text;author\nIt’s fine;me\n".encode("cp1252"),
        mode="wb",
    )
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["It’s fine"] and td.columns == ["text", "author"]
    p = write(tmp_path, "b.csv", "\ufefftext,author\nhello,me\n".encode("utf-8"), mode="wb")
    td = load_text(DataConfig(path=str(p)))
    assert td.columns == ["text", "author"] and td.text_column == "text"


def test_json_array_in_jsonl_and_lines_in_json(tmp_path):
    a = write(tmp_path, "a.jsonl", json.dumps(ROWS))
    b = write(tmp_path, "b.json", "\n".join(json.dumps(r) for r in ROWS))
    assert (
        load_text(DataConfig(path=str(a))).texts
        == load_text(DataConfig(path=str(b))).texts
        == [r["quote"] for r in ROWS]
    )


def test_numbers_in_text_column_become_text(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"text": "words"}\n{"text": 42}\n{"text": 3.5}\n{"text": null}\n')
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["words", "42", "3.5"] and td.skipped_empty == 1


@pytest.mark.parametrize(
    "name,content,msg",
    [
        ("e.jsonl", "", r"data\.path: 'e\.jsonl' is empty"),
        ("x.docx", "hello", r"unsupported extension '\.docx'"),
        (
            "bad.jsonl",
            '{not json}\n{"a": 1}\n',
            r"'bad\.jsonl' is not valid JSON \(line 1, column 2",
        ),  # Was: AttributeError ('NoneType' has no 'lineno'): valid JSON that is one value, not rows.
        ("one.json", "3", r"data\.path: 'one\.json' is a single JSON int value, not rows"),
        ("word.json", '"hello"', r"data\.path: 'word\.json' is a single JSON str value, not rows"),
        ("nothing.jsonl", "null\n", r"data\.path: 'nothing\.jsonl' is a single JSON null value, not rows"),
    ],
)
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
        f"1 row from {one.name}, text column 'quote'; 1 empty row skipped (line 2)"
    )


# -- issue 9, section 1: files that used to train on the wrong text ------------------------------
def test_one_column_csv_with_unquoted_commas_keeps_whole_lines(tmp_path):
    # Was: the part before the comma became an index and the run trained on " world", " everyone".
    p = write(tmp_path, "plain.csv", "text\nHello, world\nGood morning, everyone\n")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["Hello, world", "Good morning, everyone"] and td.columns == ["text"]
    assert preview(td.frame)["text"].tolist() == td.texts  # the preview shows what is trained on


def test_semicolon_file_with_list_like_cells_has_three_columns(tmp_path):
    p = write(
        tmp_path,
        "tags.csv",
        "id;text;tags\n1;The sea was calm that morning;['sea', 'calm']\n2;Rain fell all night, softly;['rain']\n",
    )
    td = load_text(DataConfig(path=str(p)))
    assert td.columns == ["id", "text", "tags"] and td.text_column == "text"
    assert td.texts == ["The sea was calm that morning", "Rain fell all night, softly"]
    assert td.frame["tags"].tolist() == ["['sea', 'calm']", "['rain']"]
    assert "Read as semicolon-separated with 3 columns." in td.notes


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_utf16_with_bom_reads_like_utf8(tmp_path, ext):
    # Was: the CSV became rows of NUL-laden garbage, the JSONL was refused as "not valid JSON".
    content = (
        'quote,author\n"“Be yourself.”",Oscar Wilde\n“So it goes.”,Kurt Vonnegut\n'
        if ext == "csv"
        else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)
    )
    utf8 = load_text(DataConfig(path=str(write(tmp_path, f"u8.{ext}", content.encode("utf-8"), mode="wb"))))
    for enc in ("utf-16", "utf-16-be"):  # Python's utf-16 writes a little-endian BOM; the BE one by hand
        raw = content.encode(enc) if enc == "utf-16" else b"\xfe\xff" + content.encode(enc)
        td = load_text(DataConfig(path=str(write(tmp_path, f"u16.{ext}", raw, mode="wb"))))
        assert td.texts == utf8.texts == ["“Be yourself.”", "“So it goes.”"]
        assert td.columns == utf8.columns and td.text_column == "quote"
        assert "Read as UTF-16 text." in td.notes


def test_parquet_list_column_reads_like_the_same_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"id": f"{i:04x}9f3c2e7a4b1d8c6e5f0a", "sentence": s, "tags": t}
        for i, (s, t) in enumerate([("A calm sea.", ["sea", "calm"]), ("Rain fell.", ["rain"]), ("Sun.", [])])
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    write(tmp_path, "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    got = {ext: load_text(DataConfig(path=str(tmp_path / f"d.{ext}"))) for ext in ("parquet", "jsonl")}
    for td in got.values():
        # The id (longer on average than the prose here) never wins over real prose.
        assert td.text_column == "sentence" and td.texts == ["A calm sea.", "Rain fell.", "Sun."]
    pv = {ext: preview(td.frame).to_dict("records") for ext, td in got.items()}
    assert pv["parquet"] == pv["jsonl"] and pv["parquet"][0]["tags"] == '["sea", "calm"]'  # not "['sea' 'calm']"
    tags = {ext: load_text(DataConfig(path=str(tmp_path / f"d.{ext}"), text_column="tags")).texts for ext in got}
    assert tags["parquet"] == tags["jsonl"] == ['["sea", "calm"]', '["rain"]', "[]"]


def test_id_like_columns_never_win_over_prose():
    ids = [f"9f3c2e7a-4b1d-8c6e-5f0a-{i:012d}" for i in range(3)]
    df = pd.DataFrame({"id": ids, "label": ["pos", "neg", "pos"], "review": ["Good.", "Bad idea.", "Fine, ok."]})
    assert detect_text_column(df) == "review"
    # Prose without spaces (Chinese) is still prose.
    df = pd.DataFrame({"uid": ids, "content_zh": ["今天天气很好。", "我们去公园散步吧。", "你好世界。"]})
    assert detect_text_column(df) == "content_zh"


def test_chat_conversations_are_read_as_conversations_not_as_a_column(tmp_path):
    """Chat rows were refused before layouts existed; now they are the conversation layout. A
    non-prose column (the conversations' own, or an id) chosen as text is still refused."""
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]
    p = write(tmp_path, "chat.jsonl", "".join(json.dumps({"id": f"c{i}", "messages": turns}) + "\n" for i in range(3)))
    td = load_text(DataConfig(path=str(p)))
    assert td.layout == "conversation" and td.layout_columns == ["messages"] and td.texts == [turns] * 3
    for column in ("messages", "id"):
        with pytest.raises(
            ConfigError,
            match=r"^data.layout: the rows are chat conversations \(column 'messages' holds "
            r"lists of chat turns.*Fix: choose the layout conversation",
        ):
            load_text(DataConfig(path=str(p), text_column=column))
    # A prose column chosen by hand next to the conversations is that column's text.
    p = write(tmp_path, "chat2.jsonl", json.dumps({"summary": "A short greeting.", "messages": turns}) + "\n")
    assert load_text(DataConfig(path=str(p), text_column="summary")).texts == ["A short greeting."]


def test_skipped_and_changed_rows_are_named_by_line(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"text": "words"}\n\n{"text": 42}\n{"text": null}\n{"text": ["a", "b"]}\n')
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["words", "42", '["a", "b"]'] and td.skipped_lines == [2, 4]
    assert td.summary() == "3 rows from m.jsonl, text column 'text'; 2 empty rows skipped (lines 2, 4)"
    assert any("2 rows of 'text' hold numbers or lists" in n and "(lines 3, 5)" in n for n in td.notes), td.notes


def _parquet(tmp_path, name, names):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / name
    pq.write_table(pa.Table.from_arrays([pa.array(["a b"]), pa.array(["d e f"])], names=names), p)
    return p


@pytest.mark.parametrize(
    "fmt,shown,where",
    [
        ("jsonl", "'text' (written 'text' and 'text ')", ""),
        ("json", "'text' (written 'text' and 'text ')", ""),
        ("csv", "'text' (written 'text' and ' text')", " in its header (line 1)"),
        ("parquet", "'' (written '' and ' ')", ""),
        ("parquet_same", "'x'", ""),
    ],
)
def test_column_names_equal_after_stripping_are_refused_in_every_format(tmp_path, fmt, shown, where):
    # Was: the JSON/Parquet frame kept both columns under one stripped name, and detect_layout
    # crashed (AttributeError: 'DataFrame' object has no attribute 'tolist'); only CSV was checked.
    row = {"text": "a b c", "text ": "d e f"}
    if fmt == "jsonl":
        p = write(tmp_path, "d.jsonl", json.dumps(row) + "\n")
    elif fmt == "json":
        p = write(tmp_path, "d.json", json.dumps([row, row]))
    elif fmt == "csv":
        p = write(tmp_path, "d.csv", "text, text\na b,c d\n")
    else:
        p = _parquet(tmp_path, "d.parquet", ["", " "] if fmt == "parquet" else ["x", "x"])
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=str(p)))
    spaces = " (spaces at the ends of a name do not count)" if "written" in shown else ""
    assert e.value.problems == [
        f"data.path: '{p.name}' names the column {shown} more than once{where}. "
        f"Fix: give every column its own name{spaces}{' in the first line' if where else ''}."
    ]


@pytest.mark.parametrize(
    "name,raw,where",
    [
        ("n.txt", b"abc\x00def\n", "line 1"),  # was read as '扡c敤੦' ("Read as UTF-16-LE text.") and trained on
        ("n.csv", b"text\nhel\x00lo\n", "line 2"),  # was "has no rows"
        (
            "n.jsonl",
            b'{"text": "a b"}\n{"text": "c\x00d"}\n{"text": "e f"}\n{"text": "\x00"}\n',
            "2 lines (lines 2, 4)",
        ),
        ("bom.txt", b"\xef\xbb\xbfone\ntw\x00o\n", "line 2"),
    ],
)
def test_utf8_text_with_nul_bytes_is_refused_by_line(tmp_path, name, raw, where):
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=str(write(tmp_path, name, raw, mode="wb"))))
    assert e.value.problems == [
        f"data.path: '{name}' holds NUL bytes (\\x00, no letter) on {where}. Fix: delete the NUL bytes from those "
        "lines (an editor shows them as NUL or ^@); if the file is full of them it may be a binary file, or UTF-16 "
        "text saved without its byte-order mark: save it as UTF-8."
    ]


@pytest.mark.parametrize("enc", ["utf-16-le", "utf-16-be", "utf-32-le"])
@pytest.mark.parametrize("lines", [["Hello there, friend", "Café au lait"], ["Привет мир", "Добрый вечер"]])
def test_utf16_and_utf32_without_a_mark_are_still_read(tmp_path, enc, lines):
    # Their UTF-8 reading has NULs too: about half of the bytes (Latin), or NULs among 0x04 bytes (Cyrillic).
    p = write(tmp_path, "w.txt", "".join(f"{ln}\n" for ln in lines).encode(enc), mode="wb")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == lines and f"Read as {enc.upper()} text." in td.notes


def test_utf8_with_a_line_in_another_encoding_is_refused_by_line(tmp_path):
    # Was: the whole file read as Windows-1252, row 1 trained on as 'cafÃ© ok'.
    p = write(tmp_path, "m.txt", b"caf\xc3\xa9 ok\nna\xefve bad\nplain\nd\xe9j\xe0 vu\n", mode="wb")
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=str(p)))
    assert e.value.problems == [
        "data.path: 'm.txt' mixes encodings: UTF-8 letters on line 1, and another encoding (such as Windows-1252) "
        "on 2 lines (lines 2, 4): byte 0xEF of line 2, column 3, is not UTF-8. Read in one encoding, one kind of "
        "line would get the wrong letters. Fix: retype the accented letters of those lines and save the file as "
        "UTF-8 text (in a spreadsheet: CSV UTF-8)."
    ]
    # A file wholly in Windows-1252 (no UTF-8 letters on any line) is read as before.
    p = write(tmp_path, "w.txt", "naïve bad\nplain\ndéjà vu\n".encode("cp1252"), mode="wb")
    td = load_text(DataConfig(path=str(p)))
    assert td.texts == ["naïve bad", "plain", "déjà vu"] and "Read as Windows-1252 text." in td.notes
    # Chinese in GBK/GB18030: a line of characters whose bytes happen to be valid UTF-8 (女, 木目) is
    # no UTF-8 line; these files were refused as mixed (found by the breaker) and are read as before.
    for name, text, enc in (
        ("a.csv", "text,label\n今天天气很好,正面\n这部电影很糟糕,负面\nok,女\n", "gb18030"),
        ("p.txt", "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n木目\n", "gbk"),
    ):
        p = write(tmp_path, name, text.encode(enc), mode="wb")
        assert read_table(p).iloc[:, 0].tolist() == [
            ln.split(",")[0] for ln in text.splitlines()[int(name.endswith(".csv")) :]
        ]


@pytest.mark.parametrize("header,n", [(",", 2), (";;", 3), (" , ", 2)])
def test_a_csv_header_of_empty_names_is_refused_as_such(tmp_path, header, n):
    # Was: dropped as a blank line, so the row under it became the header: "has no rows".
    p = write(tmp_path, "h.csv", f"{header}\na b,c d\n")
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=str(p)))
    assert e.value.problems == [
        f"data.path: 'h.csv' has a header (line 1) with {n} columns and no column names. Fix: write the column "
        "names in the first line (such as text), or delete that line if it is an empty row."
    ]
    # Blank lines before a header are still skipped, and one empty name among others is still named.
    td = load_text(DataConfig(path=str(write(tmp_path, "b.csv", "\n  \ntext,\nHello there,x\n"))))
    assert td.texts == ["Hello there"] and td.columns == ["text", "column 2"]


def test_columns_without_text_are_named_by_their_type(tmp_path):
    # Was: binary and timestamp columns were "(empty)", JSON booleans "(number)".
    import datetime as dt
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {
        "blob": pa.array([b"\x00\x01", b"x"]),
        "at": pa.array([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)]),
        "day": pa.array([dt.date(2024, 1, 1)] * 2),
        "ok": [True, False],
        "price": pa.array([decimal.Decimal("1.50")] * 2),
        "took": pa.array([dt.timedelta(seconds=3)] * 2),
        "none": pa.array([None, None], pa.string()),
    }
    pq.write_table(pa.table(cols), tmp_path / "t.parquet")
    write(tmp_path, "t.jsonl", '{"n": 3, "flag": true, "both": 1}\n{"n": 4.5, "flag": false, "both": false}\n')
    expected = {
        "t.parquet": "blob (binary), at (timestamp), day (date), ok (boolean), price (number), took (duration), "
        "none (empty)",
        "t.jsonl": "n (number), flag (boolean), both (number)",
    }
    for name, shown in expected.items():
        with pytest.raises(ConfigError) as e:
            load_text(DataConfig(path=str(tmp_path / name)))
        assert e.value.problems == [
            f"data.text_column: no column holds text (columns: {shown}). Fix: upload a file with a text column "
            "such as 'text'."
        ]


def test_a_csv_cell_longer_than_the_csv_modules_limit_is_read_whole(tmp_path):
    """Python's csv refuses cells over 131,072 characters; a 300,000-character quoted cell (a long
    document, quotes closed) was refused as "a quoted cell ... is not closed" (found by the breaker)."""
    long = "word, " * 50_000  # commas inside: the cell must be quoted
    p = tmp_path / "long.csv"
    p.write_text(f'text,n\n"{long}",1\nshort,2\n', encoding="utf-8")
    df = read_table(p)
    assert list(df["text"]) == [long, "short"] and len(df["text"][0]) == 300_000


def test_a_short_label_column_picked_as_the_text_gets_a_note_naming_the_longer_one():
    """The newcomer picked the one-letter 'name' column of a CSV as the text and trained on "A", "B",
    "C" without a word: a note names the column of longer text."""
    df = pd.DataFrame({"name": ["A", "B", "C"], "quote": ["Be yourself; everyone else is already taken."] * 3})
    td = frame_to_text(df, "name", "people.csv")
    assert td.texts == ["A", "B", "C"]
    assert td.notes == [
        "Column 'name' is short (1.0 characters a row on average) and 'quote' holds longer text (44): is 'quote' "
        "the text to train on? Fix: choose it as the text column."
    ]
    assert frame_to_text(df, "quote", "people.csv").notes == []
    assert frame_to_text(df, None, "people.csv").text_column == "quote"  # auto: the longer one, no note
    short = pd.DataFrame({"name": ["Ann", "Bob"], "city": ["Oslo", "Rome"]})  # both short: nothing to suggest
    assert frame_to_text(short, "name", "people.csv").notes == []

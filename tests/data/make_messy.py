"""Writes tests/data/messy/: small files in the shapes people really upload (run once; the files
are committed). What each must give is in tests/test_messy_files.py and README.md's data table."""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "messy"
J = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731

FILES: dict[str, bytes] = {
    "cp1252.csv": 'text,author\n"It’s a café – naïve, “quoted”",Zoë\nÀ bientôt,Émile\n'.encode("cp1252"),
    "latin1.txt": "café au lait\nÜber alles, señor\n".encode("latin-1"),
    "cp1251.csv": "text;author\nПривет, мир! Как дела у тебя сегодня?;Иван\nДобрый вечер, друзья;Ольга\n".encode(
        "cp1251"
    ),
    "utf8_bom.jsonl": "\ufeff".encode() + J([{"text": "Hello there"}, {"text": "Good day"}]).encode(),
    "utf16be_bom.txt": "First line, with a comma\nSecond line\n".encode("utf-16-be").join([b"\xfe\xff", b""]),
    "utf16le_nobom.csv": "text,author\nHello there, friend,me\nGood day to you,you\n".replace(
        "Hello there, friend", '"Hello there, friend"'
    ).encode("utf-16-le"),
    "tab.tsv": b"text\tauthor\nHello, world\tme\nGood morning, everyone\tyou\n",
    "pipe.csv": b"text|author\nHello, world|me\nGood morning; everyone|you\n",
    "decimal_commas.csv": b"text;price\nGood bread, fresh;2,50\nCheap wine;3,99\n",
    "multiline.csv": b'text,author\n"First line\nsecond line, same cell",me\n"She said ""hi""",you\nPlain,them\n',
    "crlf_trailing.csv": b"text,author,\r\nHello there,me,\r\nGood day,you,\r\n",
    "array.json": json.dumps([{"text": "One"}, {"text": "Two"}]).encode(),
    "strings.json": json.dumps(["Just a sentence.", "Another one."]).encode(),
    "columns.json": json.dumps({"text": ["One", "Two", "Three"], "author": ["a", "b", "c"]}).encode(),
    "wrapped.json": json.dumps({"version": 1, "data": [{"text": "One"}, {"text": "Two"}]}, indent=2).encode(),
    "pretty_broken.json": b'{\n  "data": [\n    {"text": "One"},\n  ]\n}\n',
    "broken.jsonl": b'{"text": "One"}\n{"text": "Two"}\n{"text": "Three\n{"text": "Four"}\n',
    "mixed.jsonl": b'{"text": "One"}\n42\n{"text": "Three"}\n',
    "blank_lines.txt": b"\nFirst\n\nThird\n   \nSixth\n\n\n",
    "empty.csv": b"",
    "blank.jsonl": b"\n\n  \n",
    "header_only.csv": b"text,author\n",
    "junk.csv": random.Random(7).randbytes(3000),
    "workbook.csv": b"PK\x03\x04\x14\x00\x06\x00" + bytes(200),
    "ragged_more.csv": b"text,author\nfine,me\nHello, world,me\nok,you\nGood, morning, all,you\n",
    "ragged_fewer.csv": b"text,author,year\nfine,me,1999\nshort row\nok,you,2001\nalso short,them\n",
    "numeric.csv": b"id,score\n1,2.5\n2,3\n3,-1e3\n",
    "duplicate_columns.csv": b"text,author,text\na,b,c\n",
    "stray_quote.csv": b'text,author\nfine,me\n"never closed,you\nmore,them\n',
    "unclosed_quote.csv": b'text,author\n"Hello, world",me\n"never closed,you\nmore,them\n"Good, day",us\n',
    "nul_byte.csv": b"text,author\nfine,me\nhel\x00lo,you\nmore,them\n",
    "mixed_encoding.txt": "café ok\n".encode() + "naïve bad\n".encode("cp1252") + "déjà vu\n".encode(),
    "ids_and_prose.jsonl": J(
        [{"uid": f"9f1c2e7a4b3d{i:04d}a8e6c5b4d3f2a1e0", "note": "A calm sea."} for i in range(4)]
    ).encode(),
    "chat_openai.jsonl": J(
        [
            {"id": f"c{i}", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
            for i in range(3)
        ]
    ).encode(),
    "chat_sharegpt.jsonl": J(
        [{"id": "1", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]
    ).encode(),
}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, data in FILES.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(FILES)} files to {OUT}")

"""Write quotes_chat.jsonl: 200 short conversations made from examples/quotes.jsonl (a system
turn, a user asking for a quote by its author or on its tag, the quote as the assistant's answer).
Run it to rewrite the file; tests read the file, never this script."""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUOTES = HERE.parents[1] / "examples" / "quotes.jsonl"


def main() -> None:
    rows = [json.loads(line) for line in QUOTES.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if len(r["quote"]) < 160 and r.get("author") and r.get("tags")][:200]
    with open(HERE / "quotes_chat.jsonl", "w", encoding="utf-8") as f:
        for i, r in enumerate(rows):
            ask = f"Tell me a quote about {r['tags'][0]}." if i % 2 else f"Give me a quote by {r['author']}."
            messages = [
                {"role": "system", "content": "You answer with one quote."},
                {"role": "user", "content": ask},
                {"role": "assistant", "content": r["quote"]},
            ]
            f.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

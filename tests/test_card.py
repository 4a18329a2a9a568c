"""The model card's Markdown keeps the names a person chose as the text they are (lora_app/md.py):
parsed with a real CommonMark parser (markdown-it-py, GitHub's table rule on), a file name, column,
split or regex can add no heading, no table column and no HTML, and the snippet stays Python."""

from __future__ import annotations

import ast

from markdown_it import MarkdownIt

from lora_app.card import render_card
from lora_app.config import RunConfig

HOSTILE_COLUMN = "col\n---\n## Injected heading\n`x`"
HOSTILE_FILE = "a`b``c <script>alert(1)</script> | d.jsonl"


def _tokens(card: str):
    body = card.split("\n---\n", 1)[1]  # after the YAML metadata
    return MarkdownIt("commonmark").enable("table").parse(body)


def _inline_code(tokens) -> list[str]:
    return [c.content for t in tokens if t.type == "inline" for c in t.children or [] if c.type == "code_inline"]


def test_names_with_newlines_backticks_html_and_pipes_stay_text():
    cfg = RunConfig.build(
        {
            "data": {"path": "/tmp/x.jsonl", "source_name": HOSTILE_FILE, "text_column": HOSTILE_COLUMN},
            "lora": {"rank_pattern": {"q_proj|v_proj": 8}, "target_modules": ["q_proj", "v_proj"]},
        }
    )
    base = '/models/my "best" model\nv2'
    card = render_card(cfg, base, [".*(q|v)_proj"], 1.0, 10)
    tokens = _tokens(card)

    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert headings == [
        'LoRA adapter for /models/my "best" model v2',
        "Data",
        "LoRA settings",
        "Training settings",
        "How to use",
    ]
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    for t in tokens:  # inline HTML inside paragraphs is a child token
        assert not [c for c in t.children or [] if c.type == "html_inline"], t.content
    code = _inline_code(tokens)
    assert "col --- ## Injected heading `x`" in code  # one line, the backticks kept as text
    assert HOSTILE_FILE in code
    assert '/models/my "best" model v2' in code

    # every table row has exactly the two columns of its header
    cells, row = [], []
    for t in tokens:
        if t.type == "tr_open":
            row = []
        elif t.type in ("td_open", "th_open"):
            row.append(t)
        elif t.type == "tr_close":
            cells.append(len(row))
    assert cells and set(cells) == {2}, cells
    assert r"| rank_pattern | q_proj\|v_proj: 8 |" in card
    assert r"| target_modules | .*(q\|v)_proj |" in card

    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    calls = [n for n in ast.walk(ast.parse(snippet)) if isinstance(n, ast.Call) and n.args]
    assert [c.args[0].value for c in calls if isinstance(c.args[0], ast.Constant)][:2] == [base, base]


def test_html_in_a_local_base_folders_name_is_shown_not_rendered():
    cfg = RunConfig.build({"data": {"path": "/tmp/quotes.jsonl"}})
    base = "/m/<img src=x onerror=alert(1)>"
    tokens = _tokens(render_card(cfg, base, ["q_proj"], 1.0, 10))
    assert not [c for t in tokens for c in t.children or [] if c.type == "html_inline"]
    title = next(tokens[i + 1] for i, t in enumerate(tokens) if t.type == "heading_open")
    assert "".join(c.content for c in title.children) == f"LoRA adapter for {base}"


def test_plain_names_read_as_before():
    cfg = RunConfig.build({"data": {"path": "/tmp/quotes.jsonl", "text_column": "quote"}})
    card = render_card(cfg, "HuggingFaceTB/SmolLM2-135M-Instruct", ["q_proj", "v_proj"], 1.0, 10)
    assert "Trained on the file `quotes.jsonl`, text column `quote` (layout `text`: loss on every token)." in card
    assert "| target_modules | q_proj, v_proj |" in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card

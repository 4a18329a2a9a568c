"""The Data tab's training tokens (the data lint) in a real browser: a conversation file is
detected as such, and the exact training text shows with the tokens that carry no loss marked."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser import CHROMIUM, button, tab

CHAT = Path(__file__).parent / "data" / "quotes_chat.jsonl"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


def test_conversation_file_shows_its_layout_and_training_tokens(app_url, page):
    url, _ = app_url
    page.goto(url)
    tab(page, "1. Data")
    page.locator("input[type=file]").first.set_input_files(str(CHAT))
    page.get_by_text("layout conversation (column messages)").wait_for()
    page.get_by_text("Training tokens (the exact text trained on, first rows)").click()
    button(page, "Show the training tokens").click()
    page.get_by_text("Chat template: the model's own.").wait_for()  # the bundled SmolLM2's
    view = page.locator("#lint-view")
    view.get_by_text("row at line 1", exact=False).first.wait_for()
    text = view.inner_text()
    assert "<|im_start|>system" in text and "You answer with one quote." in text
    assert "Economists can certainly disappoint you." in text
    assert "prompt (no loss)" in text and "answer" in text  # the legend
    # The answer is highlighted in the answer colour, the prompt in the no-loss grey (the legend's).
    legend = {
        b.inner_text(): b.evaluate("e => e.style.backgroundColor")
        for b in page.locator("[data-testid='highlighted-text:category-legend'] button").all()
    }
    assert set(legend) == {"answer", "prompt (no loss)"} and legend["answer"] != legend["prompt (no loss)"]

    def colour(text: str) -> str:
        token = view.locator("span.token", has=page.locator("span.text", has_text=text)).first
        return token.evaluate("e => e.style.backgroundColor")

    assert colour("Economists can certainly disappoint you.") == legend["answer"]
    assert colour("Give me a quote by Robert Orben.") == legend["prompt (no loss)"]

    # Other data chosen: the old data's tokens go away (they stayed, under the new data: the newcomer)
    button(page, "Use the example quotes (1,000 rows)").click()
    page.get_by_text(re.compile(r"text column quote")).wait_for()
    view.get_by_text("row at line 1", exact=False).first.wait_for(state="detached")
    assert "Chat template: the model's own." not in page.content()

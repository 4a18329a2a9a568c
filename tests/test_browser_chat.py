"""The Try tab's chat box in a real browser: an adapter folder whose model card says it was
trained on conversations switches Try it to Chat, a message gets its streamed reply (the
end-of-turn token not shown), the history is kept over turns, and Side by side answers the same
conversation with the base model alone and with the adapter. The models are the bigram ones of
tests/chat_models.py: the replies are known exactly (base " no", adapter " o")."""

from __future__ import annotations

import os
import re

import pytest
from browser import CHROMIUM, button, tab

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


@pytest.fixture
def chat_adapter(tmp_path):
    from chat_models import bigram_model, chatml_tokenizer, save_adapter

    tok = chatml_tokenizer()
    nl, a, b, eot, c = (tok.convert_tokens_to_ids(t) for t in ("Ċ", "Ġn", "o", "<|im_end|>", "z"))
    base = bigram_model(tmp_path / "base", tok, {nl: a, a: b, b: eot, eot: c, c: c})
    return save_adapter(base, tmp_path / "chat-adapter", swap=(nl, b))


def _turns(page, elem_id: str) -> list[tuple[str, str]]:
    """(role, text) of each message shown in the Chatbot ``elem_id``."""
    rows = page.evaluate(
        """id => [...document.querySelectorAll(`#${id} .message-row`)].map(r => [
            r.classList.contains('user-row') ? 'user' : 'bot', r.innerText.trim()])""",
        elem_id,
    )
    return [tuple(r) for r in rows]


def test_a_conversation_adapter_is_tried_in_a_chat_box(app_url, page, chat_adapter, tmp_path):
    from playwright.sync_api import expect

    url, _ = app_url
    expect.set_options(timeout=60_000)
    try:
        page.goto(url)
        tab(page, "5. Try it")
        prompt = page.get_by_label("Prompt", exact=True)
        expect(prompt).to_be_visible()  # a text adapter's (and no adapter's) completion box
        adapter = page.get_by_label("Adapter: one of your runs, a Hub adapter (owner/name) or a local folder")
        adapter.fill(str(chat_adapter))
        adapter.press("Tab")  # blur: the adapter's card is read
        expect(page.locator("#try-layout")).to_contain_text("Trained on conversations")
        expect(page.locator("#try-mode input[value=Chat]")).to_be_checked()
        expect(page.locator("#chat-box")).to_be_visible()
        expect(prompt).to_be_hidden()

        message = page.get_by_label("Message", exact=True)
        message.fill("Hi")
        button(page, "Send").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chat-box .message-row')].length === 2", timeout=120_000
        )
        expect(page.locator("#chat-box .message-row").nth(1)).to_have_text(re.compile(r"^\s*o\s*$"))
        assert _turns(page, "chat-box") == [("user", "Hi"), ("bot", "o")]
        expect(page.get_by_text(re.compile(r"chat template: the base model's"))).to_be_visible()
        assert message.input_value() == ""  # sent: the box is empty for the next turn
        assert "im_end" not in page.locator("#chat-box").inner_text()

        message.fill("And?")
        message.press("Enter")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chat-box .message-row')].length === 4", timeout=120_000
        )
        expect(page.locator("#chat-box .message-row").nth(3)).to_have_text(re.compile(r"^\s*o\s*$"))
        assert _turns(page, "chat-box") == [("user", "Hi"), ("bot", "o"), ("user", "And?"), ("bot", "o")]

        message.fill("Once more")
        page.locator("#chat-compare").click()
        for elem_id, reply in (("chat-base-out", "no"), ("chat-adapter-out", "o")):
            page.wait_for_function(
                "id => [...document.querySelectorAll(`#${id} .message-row`)].length === 6",
                arg=elem_id,
                timeout=120_000,
            )
            expect(page.locator(f"#{elem_id} .message-row").nth(5)).to_have_text(re.compile(rf"^\s*{reply}\s*$"))
            assert _turns(page, elem_id)[4] == ("user", "Once more")
        expect(page.get_by_text(re.compile(r"same conversation, chat template"))).to_be_visible()

        button(page, "Clear conversation").click()
        page.wait_for_function("() => document.querySelectorAll('#chat-box .message-row').length === 0")

        page.locator("#try-mode").get_by_text("Complete a prompt", exact=True).click()  # switched by hand
        expect(prompt).to_be_visible()
        expect(page.locator("#chat-box")).to_be_hidden()
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"\nthe page at the failure: {tmp_path / 'failure.png'}")
        raise

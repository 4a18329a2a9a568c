"""The Try tab's newcomer fixes, through the running app (gradio_client over HTTP, and a real
browser): settings out of their fields' ranges are named in the app's words before any model loads
(Gradio raised "Value -1 is less than minimum value 0.", and the browser set -5 tokens back to 1
without a word); a visitor of a shared server gets one message for any folder not of their runs (a
Hub adapter out of reach is in tests/test_generate.py)."""

from __future__ import annotations

from test_generate import _adapter
from test_identity import _client, _fn

SEED = "seed: -1 is out of range. Fix: a whole number from 0 to 18446744073709551615."


def _range(field: str, value: str, lo: str, hi: str, kind: str = "a whole number") -> str:
    return f"**Please fix:**\n- {field}: {value} is outside its range, {lo} to {hi}. Fix: {kind} from {lo} to {hi}."


def test_settings_out_of_range_are_named_before_any_model_loads(app_url, tiny_model, tmp_path):
    url, ctx = app_url
    app = _client(url)
    ad = str(_adapter(tiny_model, tmp_path / "ad"))
    where, base, adapted = app.predict(ad, "Hi", 4, 0.0, -1, api_name="/compare")
    assert (where, base, adapted) == (f"**Please fix:**\n- {SEED}", "", "")
    both = _fn(app, "chat_side_by_side")
    where, base, adapted = app.predict(ad, "Hi", [], "", 4, 0.0, -1, fn_index=both)
    assert where == f"**Please fix:**\n- {SEED}" and base == adapted == []
    tokens = _range("max_new_tokens", "{}", "1", "256")
    for n in (-5, 0, 100000):
        assert app.predict(ad, "Hi", n, 0.0, api_name="/generate") == (tokens.format(n), "")
        where, shown, box = app.predict(ad, "Hi", [], "", n, 0.0, api_name="/chat")
        assert (where, shown, box) == (tokens.format(n), [], "Hi")
    hot = _range("temperature", "50", "0", "1.5", "a number")
    assert app.predict(ad, "Hi", 4, 50, api_name="/generate") == (hot, "")
    assert app.predict(ad, "Hi", 4, 50, 0, api_name="/compare") == (hot, "", "")
    assert ctx.generator._loaded is None  # refused before any model was loaded
    where, out = app.predict(ad, "Hi", 2, 1.5, api_name="/generate")  # the largest temperature is valid
    assert "+ adapter" in where and out


def test_a_number_typed_past_a_sliders_end_is_named_not_set_back_silently(app_url, page, tiny_model, tmp_path):
    """The browser sets a number typed into a slider's box back into range when the box loses focus;
    -5 tokens then ran as 1 ("\\n") without a word."""
    from browser import button, tab
    from playwright.sync_api import expect

    url, ctx = app_url
    ad = str(_adapter(tiny_model, tmp_path / "ad"))
    page.goto(url)
    tab(page, "5. Try it")
    page.get_by_label("Adapter: one of your runs, a Hub adapter (owner/name) or a local folder").fill(ad)
    box = page.get_by_label("number input for max_new_tokens", exact=True)
    box.fill("-5")
    button(page, "Generate").click()
    expect(page.get_by_text("max_new_tokens: -5 is outside its range, 1 to 256.")).to_be_visible()
    assert ctx.generator._loaded is None
    box.fill("3")
    box.press("Tab")
    button(page, "Generate").click()
    expect(page.get_by_text("+ adapter")).to_be_visible()

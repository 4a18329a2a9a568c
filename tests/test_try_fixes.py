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


def test_a_visitor_of_a_shared_server_gets_one_message_for_any_folder_not_of_their_runs(
    tmp_path, tiny_model, monkeypatch, hub_server
):
    """'/tmp' said "holds no adapter_config.json" and '/nonexistent/dir' "is neither an adapter
    folder nor a Hub repo id": a visitor learned which server folders exist. Now any folder that is
    not in one of their runs gets the same words (adapter and base model alike); their run loads."""
    from test_identity import _cfg, _wait

    from lora_app import identity, public_repos
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager, NotYourRun
    from lora_app.ui import chat_panel
    from lora_app.ui.common import AppContext

    monkeypatch.setenv(public_repos.ENV, "1")
    for f in tiny_model.iterdir():  # on a shared server a run's base is a Hub id (the same folder rule)
        if f.is_file():
            hub_server.add_file("model", "lora-app-test/tiny-llama", f.name, f.read_bytes())
    cfg = _cfg(tiny_model)
    cfg.model.base_model_name_or_path = "lora-app-test/tiny-llama"
    ctx = AppContext(JobManager(tmp_path / "runs", poll_s=0.1), Generator(), frozenset())
    visitor = identity.Identity(identity.issue(ctx.key)[0])  # anonymous: the least privileged
    try:
        mine = ctx.jobs.submit(cfg, owner=visitor.owner)
        theirs = ctx.jobs.submit(cfg, owner="hf:alice")
        _wait(ctx, mine)
        _wait(ctx, theirs)
        root = ctx.jobs.root
        for ref in ("/tmp", "/nonexistent/dir", "../../../etc", str(root), f"{root}/{theirs}/adapter", str(tiny_model)):
            for field, check in (("adapter", ctx.adapter_ref), ("model.base_model_name_or_path", ctx.check_base_folder)):
                try:
                    check(visitor, ref)
                    said = "nothing"
                except NotYourRun as err:
                    said = str(err)
                assert said == (
                    f"{field}: '{ref}' is not a folder of one of your runs, and other folders on this server are "
                    "not open to visitors. Fix: pick one of your runs from the list (press Refresh), or type a Hub "
                    "repo id (owner/name)."
                ), ref
        for ref in (mine, f"{root}/{mine}/adapter"):
            loaded = chat_panel.load_for(ctx, visitor, ref, None)
            assert loaded.adapter == str(root / mine / "adapter") and loaded.base_id == "lora-app-test/tiny-llama"
        # the CLI and admins keep the detailed words
        for who in (identity.LOCAL, identity.Identity("hf:admin", admin=True)):
            assert ctx.adapter_ref(who, "/tmp") == "/tmp"
    finally:
        ctx.jobs.shutdown(grace_s=5)


def test_a_typed_value_counts_only_while_the_slider_sits_where_the_browser_put_it():
    """500 typed into max_new_tokens was set back to 256 by the browser; moved with the arrow keys
    (no release event) to 255, Generate still said "500 is outside its range" (the breaker)."""
    import gradio as gr

    from lora_app.ui import try_settings

    with gr.Blocks():
        max_new, temp = try_settings.sliders()
    said = "max_new_tokens: 500 is outside its range, 1 to 256. Fix: a whole number from 1 to 256."
    assert try_settings.problems(max_new, temp, 256, 0.0, {"max_new_tokens": 500}) == [said]
    assert try_settings.problems(max_new, temp, 255, 0.0, {"max_new_tokens": 500}) == []
    assert try_settings.problems(max_new, temp, 1, 0.0, {"max_new_tokens": -5})[0].startswith("max_new_tokens: -5 ")
    assert try_settings.problems(max_new, temp, 2, 0.0, {"max_new_tokens": -5}) == []


def test_api_values_that_are_no_numbers_are_named_as_such():
    """Through the API a seed of NaN, inf or "7" met Gradio's own conversion (a bare error, an
    OverflowError in the log), and max_new_tokens "12" or None read "12 is outside its range" (the
    breaker)."""
    import gradio as gr

    from lora_app.ui import try_settings
    from lora_app.ui.form import warmup_line

    with gr.Blocks():
        max_new, temp = try_settings.sliders()
        box = try_settings.seed_box("s")
    nan = box.preprocess(float("nan"))
    assert nan != nan and box.preprocess(float("inf")) == float("inf") and box.preprocess(7.0) == 7
    assert box.preprocess("7") == "7" and box.preprocess(None) is None

    def seed_problem(seed):
        return try_settings.problems(max_new, temp, 4, 0.0, None, seed)

    fix = "Fix: a whole number from 0 to 18446744073709551615."
    assert seed_problem(float("nan")) == [f"seed: nan is not a whole number. {fix}"]
    assert seed_problem(float("inf")) == [f"seed: inf is not a whole number. {fix}"]
    assert seed_problem("7") == [f"seed: '7' is not a whole number. {fix}"]
    assert seed_problem(7) == [] and seed_problem(None) == []
    assert try_settings.problems(max_new, temp, "12", 0.0) == [
        "max_new_tokens: '12' is not a whole number. Fix: a whole number from 1 to 256."
    ]
    assert try_settings.problems(max_new, temp, None, 0.0) == [
        "max_new_tokens: no value. Fix: a whole number from 1 to 256."
    ]
    # a bad learning_rate is Check's to name: the warm-up line still shows the warm-up
    assert warmup_line(30, 3, None, False, 5) == warmup_line(30, 3, None, False, "abc") == (
        "Warm-up: **3 of 30 steps** (warmup_steps)"
    )

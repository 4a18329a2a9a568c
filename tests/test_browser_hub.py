"""The Hub in a real browser (Playwright + /usr/bin/chromium), against the local fake Hub:
log in (with a typed token, or through Gradio's local OAuth mock: "Sign in with Hugging Face"),
push a finished run, load the adapter back by its repo id in "Try it" and see the side-by-side
completions (checked against the Generator run directly)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, button, fill_settings, free_port, set_base_model, tab
from test_browser import shots  # noqa: F401  (a fixture)
from test_hub import ALICE, BASE_ID, hub_model, upload_base  # noqa: F401  (hub_model is a fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]
REPO_ID = "alice/tiny-llama-lora-quotes"
PROMPT = "Be yourself;"
ADAPTER_LABEL = "Adapter: one of your runs, a Hub adapter (owner/name) or a local folder"


class _Everyone(frozenset):
    """Admins = everyone: the browser's random owner id sees the run submitted by the test."""

    def __contains__(self, item):
        return True


def _serve_finished_run(tmp_path, hub_model, hub_server):
    """Launch the app with one finished run (tiny model, 3 steps) and the base model on the fake
    Hub; yields ``(url, ctx, run_id)``. Build-time settings (env) must be in place before."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.config import RunConfig
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import CSS, build_app
    from lora_app.ui.common import AppContext

    ctx = AppContext(JobManager(tmp_path / "runs", poll_s=0.1), Generator(), _Everyone())
    cfg = RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 32},
            "model": {"base_model_name_or_path": str(hub_model)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": {
                "max_steps": 3,
                "warmup_steps": 0,
                "learning_rate": 3e-2,
                "max_length": 32,
                "per_device_train_batch_size": 8,
                "gradient_accumulation_steps": 1,
                "save_steps": 3,
            },
        }
    )
    run_id = ctx.jobs.submit(cfg, owner="someone")
    demo = build_app(ctx)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=CSS, quiet=True)
    try:
        deadline = time.time() + 300
        while ctx.jobs.get(run_id).status in ("queued", "running") and time.time() < deadline:
            time.sleep(0.5)
        assert ctx.jobs.get(run_id).status == "finished", ctx.jobs.get(run_id)
        upload_base(hub_server, hub_model)  # so that "Try it" can load the base the adapter names
        yield f"http://127.0.0.1:{port}/", ctx, run_id
    finally:
        ctx.jobs.close()
        demo.close()


@pytest.fixture
def app(tmp_path, hub_model, hub_server):
    yield from _serve_finished_run(tmp_path, hub_model, hub_server)


@pytest.fixture
def oauth_app(tmp_path, hub_model, hub_server, monkeypatch):
    """The app with a "Sign in with Hugging Face" button, run locally: Gradio mocks the OAuth flow
    with this machine's token, which huggingface_hub finds in its token FILE (as after
    ``hf auth login``), never in HF_TOKEN, so the app's own env fallback cannot log anyone in."""
    import gradio.oauth
    from huggingface_hub import constants, get_token

    from lora_app import hub_client

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SPACE_ID", "SYSTEM", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)
    # Gradio read OAUTH_CLIENT_ID at import: with it (or on a Space) it would run the real OAuth flow
    assert gradio.oauth.OAUTH_CLIENT_ID is None and gradio.oauth.get_space() is None
    # Like the real Hub, the test Hub now rejects Gradio's placeholder token: only the swap for the
    # local token (hub_client.resolve_token) makes whoami and the push work.
    monkeypatch.setattr(hub_server, "oauth_user", None)
    monkeypatch.setenv("LORA_APP_LOGIN_BUTTON", "1")
    # the token file lives outside the test's tmp folder (test_hub scans that for leaked tokens)
    # and is deleted at teardown
    with tempfile.TemporaryDirectory(prefix="lora_app_hf_token_") as d:
        token_file = Path(d) / "token"
        token_file.write_text(ALICE + "\n")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
        assert get_token() == ALICE  # read from the file (get_token re-reads it on every call)
        assert (
            hub_client.env_token() is None and hub_client.resolve_token() is None
        )  # no env token: nobody logged in yet
        yield from _serve_finished_run(tmp_path, hub_model, hub_server)


def _sign_in_as_route(app, users: dict[str, str]) -> None:
    """``GET /test-login/<user>``: sign this browser in as another Hub user, as the real OAuth
    callback on a Space does (Gradio's signed session cookie gets ``oauth_info`` with the user's
    profile and access token). Gradio's local mock signs in only the one user of the machine's
    token (alice here), so the second visitor comes in through this route."""
    import time as _time

    from fastapi.responses import RedirectResponse
    from starlette.routing import Route

    async def login_as(request):
        user = request.path_params["user"]
        token = next(t for t, u in users.items() if u == user)
        request.session["oauth_info"] = {
            "access_token": token,
            "token_type": "bearer",
            "scope": "openid profile write-repos",
            "expires_at": int(_time.time()) + 3600,
            "userinfo": {
                "sub": user,
                "name": user.title(),
                "preferred_username": user,
                "profile": f"https://huggingface.co/{user}",
                "picture": "",
            },
        }
        return RedirectResponse("/")

    app.router.routes.insert(0, Route("/test-login/{user}", login_as))


@pytest.fixture
def visitors_app(tmp_path, hub_model, hub_server, monkeypatch):
    """The app as on a Space with OAuth and an admin who is neither visitor (ADMIN_USERS=carol),
    no runs yet; alice signs in through Gradio's local OAuth mock, bob through /test-login/bob."""
    import gradio.oauth
    from conftest import HUB_USERS
    from huggingface_hub import constants

    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import CSS, build_app
    from lora_app.ui.common import AppContext

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SPACE_ID", "SYSTEM", "OAUTH_CLIENT_ID"):
        monkeypatch.delenv(var, raising=False)
    assert gradio.oauth.OAUTH_CLIENT_ID is None and gradio.oauth.get_space() is None
    monkeypatch.setattr(hub_server, "oauth_user", None)
    monkeypatch.setenv("LORA_APP_LOGIN_BUTTON", "1")
    upload_base(hub_server, hub_model)  # "Try it" loads the base model the adapter names
    with tempfile.TemporaryDirectory(prefix="lora_app_hf_token_") as d:
        token_file = Path(d) / "token"
        token_file.write_text(ALICE + "\n")
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
        ctx = AppContext(JobManager(tmp_path / "runs", poll_s=0.1), Generator(), frozenset({"hf:carol"}))
        demo = build_app(ctx)
        port = free_port()
        demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=CSS, quiet=True)
        _sign_in_as_route(demo.server_app, HUB_USERS)
        try:
            yield f"http://127.0.0.1:{port}/", ctx
        finally:
            ctx.jobs.shutdown(grace_s=5)
            demo.close()


def test_signed_in_visitor_trains_tries_and_pushes_own_run_others_see_none(
    visitors_app, page, hub_server, shots, hub_model, tmp_path
):
    """Before: a signed-in visitor who is not an admin found their run in Runs but neither in
    "Try it" nor in "Hub" (both looked runs up by the browser id; the run belongs to hf:alice)."""
    url, ctx = visitors_app
    with _failure_screenshot(page, tmp_path):
        # alice signs in (Gradio's mock), trains a tiny run in the browser
        _hub_tab_logged_out(page, url)
        page.screenshot(path=str(shots / "space_sign_in.png"))
        with page.expect_navigation(url=url, timeout=60_000):
            _login_button(page, "Sign in with Hugging Face").click()
        tab(page, "6. Hub")
        _login_button(page, "Logout (alice)").wait_for()
        page.locator("#hub-whoami").get_by_text("Logged in as alice (signed in with Hugging Face)").wait_for()
        page.screenshot(path=str(shots / "space_signed_in.png"))
        run_id = _train_tiny(page, ctx, hub_model)
        page.screenshot(path=str(shots / "space_train_signed_in.png"), full_page=True)
        assert ctx.jobs.get(run_id).owner == "hf:alice"
        root = str(ctx.jobs.root)

        # Runs: listed, without the server's folders
        tab(page, "4. Runs")
        button(page, "Refresh").click()
        table = page.get_by_role("grid", name="Your runs")
        from playwright.sync_api import expect

        expect(table).to_contain_text(run_id)
        page.get_by_label("Run", exact=True).click()
        page.get_by_role("option", name=re.compile(re.escape(run_id))).click()
        page.locator("#run-details").get_by_text("adapter saved").wait_for()
        page.wait_for_timeout(500)  # let the loss plot render
        assert root not in page.content()
        page.screenshot(path=str(shots / "space_runs_signed_in.png"), full_page=True)

        # Try it: the run is in the list; its adapter answers
        tab(page, "5. Try it")
        button(page, "Refresh runs").click()
        page.get_by_label("Finished run").click()
        page.get_by_role("option", name=re.compile(re.escape(run_id))).click()
        adapter_box = page.get_by_label(ADAPTER_LABEL)
        page.wait_for_function("([el, v]) => el.value === v", arg=[adapter_box.element_handle(), run_id])
        page.get_by_label("Prompt", exact=True).fill(PROMPT)
        button(page, "Generate").click()
        page.get_by_text(f"+ adapter [runs]/{run_id}/adapter").wait_for(timeout=120_000)
        _wait_value(page, page.get_by_label("Completion", exact=True))
        page.screenshot(path=str(shots / "space_try_signed_in.png"), full_page=True)

        # Hub: the run is in the list; push it (public) as alice
        tab(page, "6. Hub")
        button(page, "Refresh list").click()
        page.get_by_label("Run to push").click()
        page.get_by_role("option", name=re.compile(re.escape(run_id))).click()
        repo = page.get_by_label("Repo id (owner/name)")
        page.wait_for_function("el => el.value.startsWith('alice/')", arg=repo.element_handle())
        repo_id = repo.input_value()
        page.get_by_label("Private repo").uncheck()
        button(page, "Push to the Hub").click()
        page.locator("#hub-result").get_by_text(re.compile("Pushed to")).wait_for(timeout=120_000)
        assert "adapter_model.safetensors" in hub_server.files("model", repo_id)
        assert root not in page.content() and ALICE not in page.content()
        page.screenshot(path=str(shots / "space_hub_push.png"), full_page=True)

        # bob, signed in from another browser, sees none of it anywhere
        other = page.context.browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        other.set_default_timeout(60_000)
        try:
            other.goto(url + "test-login/bob")  # redirected back to the app, signed in
            assert other.url == url
            tab(other, "6. Hub")
            _login_button(other, "Logout (bob)").wait_for()
            other.locator("#hub-whoami").get_by_text(re.compile("Logged in as bob")).wait_for()
            tab(other, "3. Train")
            other.locator("#train-status").get_by_text("No run yet").wait_for()
            tab(other, "4. Runs")
            button(other, "Refresh").click()
            other.wait_for_timeout(1000)
            tab(other, "5. Try it")
            button(other, "Refresh runs").click()
            other.get_by_label("Finished run").click()
            other.wait_for_timeout(500)
            assert other.get_by_role("option", name=re.compile(re.escape(run_id))).count() == 0
            other.keyboard.press("Escape")
            assert run_id not in other.content()  # the Train, Runs and Try tabs hold nothing of it
            other.get_by_label(ADAPTER_LABEL).fill(run_id)  # naming it does not help either
            button(other, "Generate").click()
            other.get_by_text(re.compile(r"No run .* of yours")).first.wait_for()
            tab(other, "6. Hub")
            button(other, "Refresh list").click()
            other.get_by_label("Run to push").click()
            other.wait_for_timeout(500)
            assert other.get_by_role("option", name=re.compile(re.escape(run_id))).count() == 0
            other.keyboard.press("Escape")
            other.screenshot(path=str(shots / "space_other_user.png"), full_page=True)
        finally:
            other.context.close()
        # the API page ("Use via API"): the named actions only
        page.goto(url)
        page.get_by_text("Use via API").first.click()
        page.wait_for_function("() => document.body.innerText.includes('/use_example')")
        page.wait_for_timeout(1000)
        assert "/on_load" not in page.inner_text("body") and "/reattach" not in page.inner_text("body")
        from gradio_client import Client
        from test_identity import PUBLIC_API

        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert set(api["named_endpoints"]) == PUBLIC_API  # the LoginButton's own events are private too
        page.screenshot(path=str(shots / "space_api.png"))


def _train_tiny(page, ctx, hub_model) -> str:
    """Use the example quotes, the tiny base, 3 steps; Start; wait for "finished". Returns the run id."""
    tab(page, "1. Data")
    button(page, "Use the example quotes (1,000 rows)").click()
    page.get_by_text(re.compile(r"rows from")).wait_for()
    tab(page, "2. LoRA")
    set_base_model(page, hub_model)
    fill_settings(
        page,
        [
            ("max_steps", 3),
            ("warmup_steps", 0),
            ("max_length (tokens per row)", 32),
            ("per_device_train_batch_size", 8),
            ("gradient_accumulation_steps", 1),
            ("save_steps", 3),
            ("learning_rate", 0.03),
            ("r", 4),
            ("lora_alpha", 8),
        ],
    )
    tab(page, "3. Train")
    button(page, "Start training").click()
    status = page.locator("#train-status")
    deadline = time.time() + 300
    while not re.search(r"Run \S+: finished", status.inner_text()) and time.time() < deadline:
        time.sleep(0.25)
    assert re.search(r"Run \S+: finished", status.inner_text()), status.inner_text()
    (run,) = ctx.jobs.list()
    assert run.status == "finished", run
    return run.id


@contextlib.contextmanager
def _failure_screenshot(page, tmp_path):
    try:
        yield
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"\nthe page at the failure: {tmp_path / 'failure.png'}")
        raise


def test_login_push_and_try_side_by_side(app, page, hub_server, shots, tmp_path):
    url, ctx, run_id = app
    with _failure_screenshot(page, tmp_path):
        _flow(page, url, ctx, run_id, hub_server, shots)


def test_oauth_sign_in_push_and_try_side_by_side(oauth_app, page, hub_server, shots, tmp_path):
    url, ctx, run_id = oauth_app
    with _failure_screenshot(page, tmp_path):
        _oauth_flow(page, url, run_id, hub_server, shots)


def _wait_value(page, locator, timeout=120_000):
    page.wait_for_function("el => el.value.trim().length > 0", arg=locator.element_handle(), timeout=timeout)


def _login_button(page, label):
    """Gradio's LoginButton: its accessible name also holds the Hugging Face logo's alt text."""
    return page.get_by_role("button", name=re.compile(re.escape(label) + r"\s*$"))


def _hub_tab_logged_out(page, url):
    page.goto(url)
    tab(page, "6. Hub")
    who = page.locator("#hub-whoami")
    who.get_by_text("Not logged in.").wait_for()
    return who


def _flow(page, url, ctx, run_id, hub_server, shots):
    who = _hub_tab_logged_out(page, url)

    # log in with a token: the whoami line names the user; the field is emptied (never echoed back)
    token = page.locator("#hub-token input, #hub-token textarea").first
    token.fill(ALICE)
    button(page, "Use this token").click()
    who.get_by_text(re.compile("Logged in as alice")).wait_for()
    assert token.input_value() == ""
    assert ALICE not in page.content()
    _private_dataset_stays_private(page, url, hub_server)
    _push_and_try(page, run_id, hub_server, shots)


def _private_dataset_stays_private(page, url, hub_server):
    """alice loads her private Hub dataset and picks another column (read again with her token);
    a visitor in another browser, signed out, asks for it next and is refused. Before the fix
    ``datasets`` served it to them from the server's cache, and the column pick worked for alice
    only through that cache."""
    repo = "alice/private-sayings"
    hub_server.create_repo("dataset", repo, private=True)
    rows = [{"saying": f"Secret saying number {i} of alice.", "author": f"Author {i}"} for i in range(4)]
    hub_server.add_file("dataset", repo, "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def load(pg):
        tab(pg, "1. Data")
        pg.get_by_label("Hub dataset id").fill(repo)
        button(pg, "Load Hub dataset").click()

    load(page)
    page.get_by_text(re.compile(r"text column saying")).wait_for()
    page.get_by_label("Text column").click()
    page.get_by_role("option", name="author", exact=True).click()
    page.get_by_text(re.compile(r"text column author")).wait_for()  # re-read as alice: no problem shown
    assert "not found, or is private" not in page.content()

    other = page.context.browser.new_context().new_page()
    try:
        other.goto(url)
        load(other)
        other.get_by_text(re.compile(f"dataset '{repo}' was not found, or is private")).wait_for()
        assert "Secret saying" not in other.content()
    finally:
        other.context.close()
    tab(page, "6. Hub")  # where the push goes on


def _oauth_flow(page, url, run_id, hub_server, shots):
    who = _hub_tab_logged_out(page, url)  # the token file alone logs nobody in
    assert "session" not in {c["name"] for c in page.context.cookies()}

    # Gradio's mock: /login/huggingface -> /login/callback (oauth_info into the signed session
    # cookie) -> back to the app, which loads afresh (on its first tab)
    with page.expect_navigation(url=url, timeout=60_000):
        _login_button(page, "Sign in with Hugging Face").click()
    assert "session" in {c["name"] for c in page.context.cookies()}
    tab(page, "6. Hub")
    _login_button(page, "Logout (alice)").wait_for()
    who.get_by_text("Logged in as alice (signed in with Hugging Face)").wait_for()
    assert ALICE not in page.content()
    page.screenshot(path=str(shots / "hub_oauth_signed_in.png"), full_page=True)

    # the login belongs to that browser's session cookie: another browser is not logged in
    other = page.context.browser.new_context().new_page()
    try:
        _hub_tab_logged_out(other, url)
        _login_button(other, "Sign in with Hugging Face").wait_for()
    finally:
        other.context.close()
    _push_and_try(page, run_id, hub_server, shots, tag="_oauth")


def _push_and_try(page, run_id, hub_server, shots, tag=""):
    # pick the run: the repo id is pre-filled (from whoami); push (public)
    button(page, "Refresh list").click()
    page.get_by_label("Run to push").click()
    page.get_by_role("option", name=re.compile(re.escape(run_id))).click()
    repo = page.get_by_label("Repo id (owner/name)")
    page.wait_for_function("([el, v]) => el.value === v", arg=[repo.element_handle(), REPO_ID])
    page.get_by_label("Private repo").uncheck()
    button(page, "Push to the Hub").click()
    result = page.locator("#hub-result")
    result.get_by_text(re.compile("Pushed to")).wait_for(timeout=120_000)
    assert f"{hub_server.url}/{REPO_ID}" in result.inner_html()
    assert "adapter_model.safetensors" in hub_server.files("model", REPO_ID)
    assert not hub_server.repos[("model", REPO_ID)].private
    assert ALICE not in page.content()
    page.screenshot(path=str(shots / f"hub{tag}.png"), full_page=True)

    # Try it: the adapter by its repo id, side by side with its base model
    tab(page, "5. Try it")
    page.get_by_label(ADAPTER_LABEL).fill(REPO_ID)
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    for name, value in (("max_new_tokens", "12"), ("temperature (0 = greedy)", "1")):
        box = page.get_by_role("spinbutton", name=f"number input for {name}")
        box.fill(value)
        box.press("Tab")  # blur: Gradio commits the number
    button(page, "Side by side: base model vs. with the adapter").click()
    base_out = page.get_by_label("Base model alone", exact=True)
    adapter_out = page.get_by_label("With the adapter", exact=True)
    _wait_value(page, base_out)
    _wait_value(page, adapter_out)
    page.get_by_text(f"adapter {REPO_ID}").first.wait_for()
    block = adapter_out.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' block ')][1]")
    page.wait_for_function(
        "b => !b.classList.contains('generating') && "
        "[...b.querySelectorAll('[data-testid=status-tracker]')].every(s => s.classList.contains('hide'))",
        arg=block.element_handle(),
        timeout=120_000,
    )
    from lora_app.generate import Generator

    # sampling (temperature 1, seed 0): the random tiny model then writes varied text, the same every time
    kw = dict(max_new_tokens=12, temperature=1.0, seed=0, token=ALICE)
    *_, (want_base, want_adapter) = Generator().compare(PROMPT, REPO_ID, **kw)
    assert base_out.input_value() == want_base and adapter_out.input_value() == want_adapter
    assert ALICE not in page.content()
    page.screenshot(path=str(shots / f"try_side_by_side{tag}.png"), full_page=True)
    print(f"\nside by side: base {want_base!r} | adapter {want_adapter!r}")

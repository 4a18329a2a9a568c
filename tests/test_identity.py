"""Who is asking is decided on the server (lora_app.identity), and nobody sees or touches
another person's run: tested through gradio_client, as a script or an attacker would call the
app, including its private endpoints (a patched client calls them by index, as any raw HTTP
caller could). Also: the exact public API, and a page that reloads while Start is still
preparing re-attaches to the run that starts a moment later."""

from __future__ import annotations

import threading
import time

from conftest import EXAMPLE_QUOTES

PUBLIC_API = {
    "/check",
    "/train",
    "/stop",
    "/resume",
    "/runs",
    "/run",
    "/generate",
    "/compare",
    "/chat",
    "/push",
    "/use_example",
    "/load_file",
    "/load_hub_dataset",
}
TINY = {
    "r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "target_modules": "q_proj,v_proj",
    "max_steps": 2,
    "warmup_steps": 0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "max_length": 32,
    "save_steps": 2,
}


# -- the identity module on its own ------------------------------------------------------------
def test_only_ids_this_server_signed_are_owners(tmp_path, monkeypatch):
    from lora_app import identity

    monkeypatch.delenv("LORA_APP_SECRET", raising=False)
    key = identity.signing_key(tmp_path)
    assert key == identity.signing_key(tmp_path) and len(key) == 32  # kept: a restart knows its ids
    assert (tmp_path / ".identity_key").stat().st_mode & 0o777 == 0o600
    owner, token = identity.issue(key)
    assert owner.startswith("browser-") and identity.verify(key, token) == owner
    (tmp_path / "elsewhere").mkdir()
    other_key = identity.signing_key(tmp_path / "elsewhere")
    for forged in (
        owner,
        "hf:alice",
        f"hf:alice.{token.split('.')[1]}",
        token[:-1] + ("0" if token[-1] != "0" else "1"),
        token.replace("browser-", "hf:alice-"),
        token + "x",
        "",
        None,
        12,
        {"owner": owner},
    ):
        assert identity.verify(key, forged) is None, forged
    assert identity.verify(other_key, token) is None  # another server's key
    # resolve: the signed-in Hub user wins; only a well-formed anonymous id is taken from the state
    prof = type("P", (), {"username": "alice"})()
    assert identity.resolve(owner, prof).owner == "hf:alice"
    assert identity.resolve(owner).owner == owner
    for bad in ("hf:alice", "browser-1", "anonymous", None, "cli"):
        assert identity.resolve(bad).owner is None
    assert identity.resolve(None, prof, frozenset({"hf:alice"})).admin
    # the BrowserState key goes to the browser: it is derived from the signing key, never it
    monkeypatch.setenv("LORA_APP_SECRET", "s3cret-value")
    k2 = identity.signing_key(tmp_path)
    assert k2 != key and identity.browser_state_key(k2) not in (k2.hex(), "s3cret-value")


# -- the app through gradio_client -----------------------------------------------------------
def _serve(tmp_path, max_running=1):
    from browser import free_port

    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    ctx = AppContext(JobManager(tmp_path / "runs", max_running=max_running, poll_s=0.1), Generator(), frozenset())
    demo = build_app(ctx)
    port = free_port()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, ctx, f"http://127.0.0.1:{port}/"


def _stop(demo, ctx):
    for r in ctx.jobs.list():
        if r.status in ("running", "queued"):
            ctx.jobs.cancel(r.id, grace_s=5)
    ctx.jobs.close()
    demo.close()


def _client(url):
    """A gradio_client that also calls the private endpoints (as any HTTP caller can)."""
    from gradio_client import Client

    c = Client(url, verbose=False, download_files=False)
    for ep in c.endpoints.values():
        ep.is_valid = True
    return c


def _fn(client, name) -> int:
    """The fn index of the endpoint Gradio named ``name`` (private ones keep their name in the config)."""
    for i, d in enumerate(client.config["dependencies"]):
        if d.get("api_name") == name:
            return d.get("id", i)
    raise KeyError(name)


def _cfg(tiny_model, **kw):
    from lora_app.config import RunConfig

    t = {k: v for k, v in TINY.items() if k not in ("r", "lora_alpha", "lora_dropout", "target_modules")}
    return RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 32},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": {**t, **kw},
        }
    )


def _wait(ctx, run_id, statuses=("finished",), timeout=300):
    deadline = time.time() + timeout
    while ctx.jobs.get(run_id).status not in statuses and time.time() < deadline:
        time.sleep(0.2)
    assert ctx.jobs.get(run_id).status in statuses, ctx.jobs.get(run_id)


def test_api_lists_exactly_the_named_actions(tmp_path):
    """Before: 40 endpoints named /lambda, /wrapped_1, /do_refresh_7 ..., the owner a parameter of each."""
    demo, ctx, url = _serve(tmp_path, max_running=0)
    try:
        from gradio_client import Client

        info = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
        assert set(info["named_endpoints"]) == PUBLIC_API and not info["unnamed_endpoints"]
        params = {k: [p["parameter_name"] for p in v["parameters"]] for k, v in info["named_endpoints"].items()}
        assert params["/runs"] == ["selected"] and params["/stop"] == ["run_id"] and params["/run"] == ["run_id"]
        assert params["/generate"] == ["adapter", "prompt", "max_new_tokens", "temperature"]
        assert params["/chat"] == ["adapter", "message", "history", "system_prompt", "max_new_tokens", "temperature"]
        assert params["/push"] == ["run_id", "repo_id", "private", "base_model_id"]
        assert {"r", "lora_alpha", "target_modules", "max_steps", "learning_rate", "base_model_name_or_path"} <= set(
            params["/train"]
        ) and params["/train"] == params["/check"]
        for p in params.values():  # no owner, browser id or token is a parameter of anything
            assert not {"owner", "browser_owner", "token"} & set(p), p
        assert "Check the settings" in info["named_endpoints"]["/check"]["description"]
    finally:
        _stop(demo, ctx)


def test_forged_owners_and_other_peoples_runs_get_nothing(tmp_path, tiny_model, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    from lora_app import identity

    demo, ctx, url = _serve(tmp_path)
    victim_owner, victim_token = identity.issue(ctx.key)
    try:
        alice = ctx.jobs.submit(_cfg(tiny_model), owner="hf:alice")
        _wait(ctx, alice)
        busy = ctx.jobs.submit(_cfg(tiny_model, max_steps=100_000, save_steps=100_000), owner=victim_owner)
        _wait(ctx, busy, ("running",))
        root = str(ctx.jobs.root)
        attacker = _client(url)
        on_load = _fn(attacker, "on_load")

        # 1) whatever owner the attacker claims, the page gets an id of the server's own
        for forged in ("hf:alice", "alice", victim_owner, f"{victim_owner}.{'0' * 64}", "hf:alice." + "0" * 64, None):
            token_back = attacker.predict(forged, fn_index=on_load)
            assert identity.verify(ctx.key, token_back) not in (None, victim_owner, "hf:alice"), forged
            table, pick = attacker.predict(None, api_name="/runs")
            assert table["data"] == [] and pick["choices"] == [], forged

        # 2) naming the runs directly: no details, log, stop, resume, delete, try or push
        for run_id in (alice, busy):
            md, plot, log, yaml_file, _ = attacker.predict(run_id, api_name="/run")
            assert yaml_file["value"] is None and not yaml_file["interactive"]  # no settings file
            assert "of yours" in md and log == "" and root not in md
            assert "of yours" in attacker.predict(run_id, api_name="/stop")
            assert "of yours" in attacker.predict(run_id, api_name="/resume")
            delete = _fn(attacker, "delete_click")
            for _ in range(2):  # the second press would delete
                assert "of yours" in attacker.predict(run_id, fn_index=delete)
            for ref in (run_id, f"{root}/{run_id}/adapter", f"{root}/../runs/{run_id}/adapter"):
                where, out = attacker.predict(ref, "Hi", 4, 0.0, api_name="/generate")
                assert "of yours" in where and out == "", ref
                where, base, adapted = attacker.predict(ref, "Hi", 4, 0.0, 0, api_name="/compare")
                assert "of yours" in where and adapted == "", ref
                where, shown, box = attacker.predict(ref, "Hi", [], "", 4, 0.0, api_name="/chat")
                assert "of yours" in where and shown == [] and box == "Hi", ref
                both = _fn(attacker, "chat_side_by_side")
                where, base, adapted = attacker.predict(ref, "Hi", [], "", 4, 0.0, 0, fn_index=both)
                assert "of yours" in where and base == adapted == [], ref
                mode, note = attacker.predict(ref, fn_index=_fn(attacker, "detect_layout"))
                assert note == "", ref  # nothing read from their adapter's card
            assert "not one of your runs" in attacker.predict(run_id, "eve/x", False, "", api_name="/push")
        # the live-log follower (the Train tab's re-attach) shows nothing of theirs either
        status, *_ = attacker.predict(fn_index=_fn(attacker, "reattach"))
        assert "No run yet" in status
        assert ctx.jobs.get(busy).status == "running" and ctx.jobs.get(alice).status == "finished"
        assert {r.id for r in ctx.jobs.list()} == {alice, busy}  # nothing deleted

        # 3) the real owner's browser (its signed id) sees its run, without the server's folders
        owner_page = _client(url)
        assert owner_page.predict(victim_token, fn_index=on_load) == victim_token
        table, pick = owner_page.predict(None, api_name="/runs")
        assert [row[0] for row in table["data"]] == [busy] and root not in str(table)
        md, _, log, yaml_file, _ = owner_page.predict(busy, api_name="/run")
        assert yaml_file["interactive"] and yaml_file["value"]["path"].endswith(f"lora_app-{busy}.yaml")
        assert busy in md and "running" in md and root not in md + log and "[runs]" not in md
        assert "stopped" in owner_page.predict(busy, api_name="/stop")
        assert root not in owner_page.predict(busy, api_name="/stop")
        # Resume: the Runs tab's details are a snapshot, so the message says where it is live
        said = owner_page.predict(busy, api_name="/resume")
        assert said.startswith(f"Run {busy} is queued again") and "the **3. Train** tab shows your active run live" in said
        assert root not in said
    finally:
        _stop(demo, ctx)


def test_a_reload_while_start_prepares_reattaches_to_the_run(tmp_path, tiny_model, monkeypatch):
    """The first Start converts the bundled model for ~20 s before the run exists; a reload then
    showed "No run yet" and never the run. Here the preparation is held at its last step
    (the real preflight and submit run once it is let go) while the page reloads."""
    from lora_app.ui import train_tab

    gate, entered = threading.Event(), threading.Event()
    real = train_tab.check_and_submit

    def held(*a, **kw):
        entered.set()
        assert gate.wait(120)
        return real(*a, **kw)

    monkeypatch.setattr(train_tab, "check_and_submit", held)
    demo, ctx, url = _serve(tmp_path)
    try:
        page = _client(url)
        token = page.predict(None, fn_index=_fn(page, "on_load"))
        page.predict(api_name="/use_example")
        start = page.submit(api_name="/train", base_model_name_or_path=str(tiny_model), **TINY)
        assert entered.wait(60)
        while not start.outputs():
            time.sleep(0.1)
        assert "Preparing the run: **reading the data and checking the model**" in start.outputs()[-1][0]
        start.cancel()
        page.close()

        # the reload: same browser (its signed id), a new page session
        again = _client(url)
        assert again.predict(token, fn_index=_fn(again, "on_load")) == token
        follow = again.submit(fn_index=_fn(again, "reattach"))
        deadline = time.time() + 30
        while not follow.outputs() and time.time() < deadline:
            time.sleep(0.1)
        assert "Preparing the run" in follow.outputs()[0][0]
        assert ctx.jobs.list() == []  # the run does not exist yet
        gate.set()
        final = follow.result(timeout=300)
        (run,) = ctx.jobs.list()
        assert run.status == "finished" and run.owner.startswith("browser-")
        assert f"Run `{run.id}`: **finished**" in final[0]
    finally:
        gate.set()
        _stop(demo, ctx)


def test_a_script_trains_lists_and_tries_its_own_run(tmp_path, tiny_model):
    """The README's gradio_client example (on the tiny model): a script is a visitor whose
    identity the server issues on its first Start and keeps for its session."""
    from gradio_client import Client

    demo, ctx, url = _serve(tmp_path)
    try:
        app = Client(url, verbose=False)
        app.predict(api_name="/use_example")
        check_md, estimate_table, estimate_basis = app.predict(
            base_model_name_or_path=str(tiny_model), **TINY, api_name="/check"
        )
        assert "trainable params" in check_md and "H200" in str(estimate_table) and "Parameters:" in estimate_basis
        status, *_ = app.predict(base_model_name_or_path=str(tiny_model), **TINY, api_name="/train")
        (run,) = ctx.jobs.list()
        assert run.status == "finished" and f"Run `{run.id}`: **finished**" in status
        assert run.owner.startswith("browser-")
        table, _ = app.predict(None, api_name="/runs")
        assert [row[0] for row in table["data"]] == [run.id]
        where, text = app.predict(run.id, "Hello", 4, 0.0, api_name="/generate")
        assert f"adapter [runs]/{run.id}/adapter" in where and text and "base model alone" not in where
        where, _ = app.predict("", "Hello", 4, 0.0, api_name="/generate")  # no run picked: said plainly
        assert "**the base model alone** (no adapter: pick a finished run to try what it learned)" in where, where
        where, shown, box = app.predict(run.id, "Hello", [], "", 4, 0.0, api_name="/chat")
        assert f"adapter [runs]/{run.id}/adapter" in where and "chat template: fallback (ChatML)" in where
        assert [m["role"] for m in shown] == ["user", "assistant"] and shown[0]["content"][0]["text"] == "Hello", shown
        other = Client(url, verbose=False)  # another script: nothing of the first one's
        assert other.predict(None, api_name="/runs")[0]["data"] == []
        assert "of yours" in other.predict(run.id, "Hello", 4, 0.0, api_name="/generate")[0]
    finally:
        _stop(demo, ctx)

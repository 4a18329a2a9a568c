"""lora_app.ui handlers without a browser: what Gradio passes them and when a live view ends."""


def test_a_follower_stops_when_its_page_moved_on_to_another_run(tmp_path, tiny_model):
    """Start in a tab that follows an earlier run: the old follower must stop by itself, even if
    Gradio's cancel loses the race (CI once showed the other run's status in the second tab)."""
    import threading

    from conftest import EXAMPLE_QUOTES

    from lora_app.config import RunConfig
    from lora_app.jobs import JobManager
    from lora_app.ui.common import AppContext
    from lora_app.ui.train_tab import follow

    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.1)  # nothing starts: the run stays queued
    try:
        cfg = RunConfig.build(
            {"data": {"path": str(EXAMPLE_QUOTES)}, "model": {"base_model_name_or_path": str(tiny_model)}}
        )
        run_id = jm.submit(cfg, owner="me")
        ctx = AppContext(jm, None, frozenset())
        showing = {"page": run_id}
        gen = follow(ctx, run_id, lambda: showing["page"] == run_id)
        first = next(gen)
        assert run_id in first[0] and jm.get(run_id).status == "queued"
        showing["page"] = "another-run"  # this page pressed Start
        rest: list = []
        t = threading.Thread(target=lambda: rest.extend(gen), daemon=True)
        t.start()
        t.join(timeout=5)  # without the check a follower of a queued run never ends
        # it ended, while its run is still queued, with no update of its own (None: "no-op")
        assert not t.is_alive() and rest == [None]
        assert jm.get(run_id).status == "queued"
    finally:
        jm.close()


def test_every_handler_that_asks_for_the_request_gets_it(tmp_path):
    """Gradio injects ``request: gr.Request`` only where it can place it: after ``*vals`` it was
    silently None, so Start ran without the signed-in user's token or Hub identity."""
    import inspect

    from gradio.helpers import special_args

    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs")
    try:
        demo = build_app(AppContext(jm, None, frozenset()))
        checked = []
        for bf in demo.fns.values():
            fn = bf.fn
            if fn is None or "request" not in inspect.signature(fn).parameters:
                continue
            sentinel = object()
            n = len(bf.inputs) if isinstance(bf.inputs, list) else 1
            args, *_ = special_args(fn, [None] * n, request=sentinel)  # what Gradio calls fn with
            assert any(a is sentinel for a in args), fn.__qualname__
            checked.append(fn.__name__)
        assert {"on_start", "on_check", "reattach"} <= set(checked), checked
    finally:
        jm.close()


def test_problem_lines_reach_an_api_caller_as_written_without_html():
    """html.escape sent "must be a whole number (got &#x27;abc&#x27;) ... &gt;= 1" to gradio_client
    callers (the newcomer); only what could start HTML (or an entity) is escaped now."""
    from lora_app.ui.common import problems_md

    assert problems_md(["lora.r: must be a whole number (got 'abc'). Fix: set r to a whole number >= 1."]) == (
        "**Please fix:**\n- lora.r: must be a whole number (got 'abc'). Fix: set r to a whole number >= 1."
    )
    assert problems_md(['prompt: "<img src=x onerror=alert(1)>" & more']) == (
        '**Please fix:**\n- prompt: "&lt;img src=x onerror=alert(1)>" &amp; more'
    )


def test_the_data_tabs_token_view_follows_the_folder_rule(tmp_path, monkeypatch, bundled_model):
    """On a shared server the Data tab's "show training tokens" read any server folder's tokenizer as the
    base model, and its errors told '/tmp' from '/nonexistent/dir' (the breaker). It gets the Try tab's one
    answer now; the bundled model still works."""
    from lora_app import identity, public_repos
    from lora_app.jobs import JobManager
    from lora_app.settings import DEFAULT_BASE_MODEL
    from lora_app.ui import build_app
    from lora_app.ui.common import EXAMPLE_DATA, AppContext

    monkeypatch.setenv(public_repos.ENV, "1")
    jm = JobManager(tmp_path / "runs")
    try:
        ctx = AppContext(jm, None, frozenset())
        demo = build_app(ctx)
        (lint,) = [f for f in demo.fns.values() if f.name == "lint"]
        owner, _ = identity.issue(ctx.key)
        state = {"path": str(EXAMPLE_DATA), "source_name": "quotes.jsonl"}
        for base in ("/tmp", "/nonexistent/dir", str(jm.root)):
            md, view = lint.fn(state, base, 64, owner)
            assert view is None and md == (
                f"**Please fix:**\n- model.base_model_name_or_path: '{base}' is not a folder of one of your runs, "
                "and other folders on this server are not open to visitors. Fix: pick one of your runs from the "
                "list (press Refresh), or type a Hub repo id (owner/name)."
            )
        md, view = lint.fn(state, DEFAULT_BASE_MODEL, 64, owner)
        assert view and "Tokenizer of `HuggingFaceTB/SmolLM2-135M-Instruct`" in md
    finally:
        jm.close()

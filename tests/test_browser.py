"""Acceptance test of the product's main job, in a real browser (Playwright + Debian chromium).

Data upload -> LoRA settings and parameter count -> training on the REAL bundled
SmolLM2-135M, watched live (log lines and loss plot appear while it runs) -> Runs table ->
a completion from the trained adapter in "Try it".

Screenshots of every tab go to ``docs/screenshots/`` when ``LORA_APP_SCREENSHOTS=1``
(else to the test's temp folder):

    LORA_APP_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_browser.py -q -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from pathlib import Path

import pytest

from conftest import QUOTES, REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1280, "height": 900}
N_ROWS = 300  # a subset of the quotes: the upload, copy and tokenization stay quick
MAX_STEPS = 8
TRAINABLE_LINE = "trainable params: 921,600 || all params: 135,436,608"
TERMINAL = ("finished", "stopped", "failed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: docs/screenshots with LORA_APP_SCREENSHOTS=1, else a temp folder."""
    out = REPO / "docs" / "screenshots" if os.environ.get("LORA_APP_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def app_url(tmp_path):
    """The full app, launched in this process on a free port, with its runs in tmp_path/runs."""
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import CSS, build_app
    from lora_app.ui.common import AppContext

    ctx = AppContext(JobManager(tmp_path / "runs", poll_s=0.1), Generator(), frozenset())
    demo = build_app(ctx)
    port = _free_port()
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=CSS, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", ctx
    finally:
        for r in ctx.jobs.list():
            if r.status in ("running", "queued"):
                ctx.jobs.cancel(r.id, grace_s=5)
        ctx.jobs.close()
        demo.close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.set_default_timeout(60_000)
            yield pg
        finally:
            browser.close()


@pytest.fixture
def quotes_file(tmp_path) -> tuple[Path, int]:
    """The first N_ROWS quotes as a .jsonl upload; returns (path, rows with a non-empty quote)."""
    lines = QUOTES.read_text(encoding="utf-8").splitlines()[:N_ROWS]
    path = tmp_path / "upload" / "quotes.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, sum(1 for ln in lines if json.loads(ln).get("quote", "").strip())


def _button(page, name):
    return page.get_by_role("button", name=name, exact=True)


def _run_status(status_text: str) -> str | None:
    """The status word of the Train tab's status line, "Run <id>: <status> · ..."."""
    m = re.match(r"\s*Run \S+: (\w+)", status_text)
    return m.group(1) if m else None


def _tab(page, name):
    page.get_by_role("tab", name=name, exact=True).click()


def test_upload_train_live_and_generate(app_url, page, quotes_file, shots, bundled_model):
    url, ctx = app_url
    data_path, n_rows = quotes_file
    t0 = time.time()
    page.goto(url)

    # -- 1. Data: upload through the file input; row count and detected text column appear.
    _tab(page, "1. Data")
    page.locator("input[type=file]").first.set_input_files(str(data_path))
    summary = page.get_by_text(re.compile(r"rows from"))
    summary.wait_for()
    text = summary.inner_text()
    assert f"{n_rows:,} rows" in text and "text column quote" in text, text
    assert page.get_by_label("Text column").input_value() == "quote"
    page.get_by_text("Preview (first rows)").wait_for()
    page.screenshot(path=str(shots / "data.png"), full_page=True)

    # -- 2. LoRA: a short run on the default (bundled) base model; check settings.
    _tab(page, "2. LoRA")
    assert page.get_by_label("Base model (Hub id or local folder)").input_value() == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    for label, value in [("max_steps", MAX_STEPS), ("warmup_steps", 0), ("learning_rate", "1e-3"),
                         ("max_length (tokens per row)", 64), ("per_device_train_batch_size", 4),
                         ("gradient_accumulation_steps", 1), ("save_steps", 4)]:
        field = page.get_by_label(label, exact=True)
        field.fill(str(value))
        field.press("Tab")  # blur: Gradio commits the number
    _button(page, "Check settings and count trainable parameters").click()
    page.get_by_text(TRAINABLE_LINE).wait_for(timeout=120_000)
    page.screenshot(path=str(shots / "lora.png"), full_page=True)

    # -- 3. Train: start; log lines with "step" and the loss plot must appear WHILE it runs.
    _tab(page, "3. Train")
    _button(page, "Start training").click()
    status = page.locator("#train-status")
    log = page.locator("#train-log textarea")
    plot_drawn = page.locator("#loss-plot canvas, #loss-plot svg.marks, #loss-plot .vega-embed svg")
    live = None  # (status, log) as first seen with a step line and a drawn plot, before the end
    deadline = time.time() + 600
    while time.time() < deadline:
        st = status.inner_text()
        if _run_status(st) in TERMINAL:
            break
        lg = log.input_value()
        if live is None and re.search(rf"step \d+/{MAX_STEPS}", lg) and plot_drawn.count() > 0:
            live = (st, lg)
        time.sleep(0.25)
    else:
        pytest.fail(f"training did not end in time; status: {status.inner_text()!r}")
    assert live is not None, f"no live step lines + loss plot before the end; status {st!r}, log:\n{log.input_value()}"
    assert _run_status(live[0]) == "running", live[0]
    st = status.inner_text()
    assert _run_status(st) == "finished", f"run did not finish: {st}\n{log.input_value()}"
    assert TRAINABLE_LINE in st
    final_log = log.input_value()
    assert f"step {MAX_STEPS}/{MAX_STEPS}" in final_log, final_log
    assert "adapter saved at step 4" in final_log, final_log
    assert "100.0%" in page.locator("#train-progress .la-fill").get_attribute("style")
    page.wait_for_timeout(500)  # let the last plot update render
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    run = ctx.jobs.list()[0]
    assert run.status == "finished"
    adapter = ctx.jobs.run_dir(run.id) / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()

    # -- 4. Runs: the run is listed as finished.
    _tab(page, "4. Runs")
    _button(page, "Refresh").click()
    row = page.locator("table tr", has_text=run.id)
    row.first.wait_for()
    assert "finished" in row.first.inner_text()
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    # -- 5. Try it: pick the run, generate from the pre-filled prompt.
    _tab(page, "5. Try it")
    _button(page, "Refresh runs").click()
    prompt = page.get_by_label("Prompt", exact=True)
    assert prompt.input_value().strip() == "Two things are infinite:"
    page.get_by_label("Finished run").click()
    page.get_by_role("option", name=re.compile(re.escape(run.id))).click()
    adapter_box = page.get_by_label("Adapter: folder or Hub repo id (owner/name)")
    page.wait_for_function("([el, v]) => el.value === v", arg=[adapter_box.element_handle(), str(adapter)])
    _button(page, "Generate").click()
    completion = page.get_by_label("Completion", exact=True)
    page.wait_for_function("el => el.value.trim().length > 0", arg=completion.element_handle(), timeout=180_000)
    page.get_by_text("+ adapter").wait_for()
    # generation streams: wait until the text stops changing before the screenshot
    last, stable_since = None, time.time()
    while time.time() - stable_since < 2.0 and time.time() - t0 < 900:
        cur = completion.input_value()
        if cur != last:
            last, stable_since = cur, time.time()
        time.sleep(0.2)
    assert last.strip(), "empty completion"
    page.screenshot(path=str(shots / "try.png"), full_page=True)
    print(f"\nbrowser acceptance test: {time.time() - t0:.0f} s; completion: {last!r}")

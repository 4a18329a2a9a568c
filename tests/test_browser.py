"""The product's main job, in a real browser (Playwright driving Debian's /usr/bin/chromium).

``test_upload_train_live_and_generate`` is the acceptance test: upload a quotes .jsonl ->
LoRA settings and the parameter count -> training on the REAL bundled SmolLM2-135M, watched
live (log lines and the loss plot appear while it runs) -> the Runs table -> a completion
from the trained adapter in "Try it". It also takes a screenshot of every tab: into
``docs/screenshots/`` with ``LORA_APP_SCREENSHOTS=1``, else into the test's temp folder.

    LORA_APP_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_browser.py -x -q -p no:cacheprovider

Two shorter tests: invalid settings come back as one readable list (no training), and a
second tab and an app restart both re-attach to a run (tiny local model).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from browser import CHROMIUM, button, fill_settings, free_port, launch, set_base_model, shutdown, tab
from conftest import QUOTES, REPO

N_ROWS = 300  # a subset of the quotes: the upload, copy and tokenization stay quick
MAX_STEPS = 8
TRAINABLE_LINE = "trainable params: 4,884,480 || all params: 139,399,488"  # all-linear, r 16
TERMINAL = ("finished", "stopped", "failed")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


@pytest.fixture
def shots(tmp_path) -> Path:
    """Where screenshots go: docs/screenshots with LORA_APP_SCREENSHOTS=1, else a temp folder."""
    out = REPO / "docs" / "screenshots" if os.environ.get("LORA_APP_SCREENSHOTS") == "1" else tmp_path / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def quotes_file(tmp_path) -> tuple[Path, int]:
    """The first N_ROWS quotes as a .jsonl upload; returns (path, rows with a non-empty quote)."""
    lines = QUOTES.read_text(encoding="utf-8").splitlines()[:N_ROWS]
    path = tmp_path / "upload" / "quotes.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, sum(1 for ln in lines if json.loads(ln).get("quote", "").strip())


def _run_status(status_text: str) -> str | None:
    """The status word of the Train tab's status line, "Run <id>: <status> · ..."."""
    m = re.match(r"\s*Run \S+: (\w+)", status_text)
    return m.group(1) if m else None


@pytest.mark.slow
def test_upload_train_live_and_generate(app_url, page, quotes_file, shots, bundled_model, tmp_path):
    try:
        _main_flow(page, *app_url, *quotes_file, shots)
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"\nthe page at the failure: {tmp_path / 'failure.png'}")
        raise


def _main_flow(page, url, ctx, data_path, n_rows, shots):
    from playwright.sync_api import expect

    expect.set_options(timeout=60_000)
    t0 = time.time()
    page.goto(url)

    # -- 1. Data: upload through the file input; row count and detected text column appear.
    tab(page, "1. Data")
    page.locator("input[type=file]").first.set_input_files(str(data_path))
    summary = page.get_by_text(re.compile(r"rows from"))
    summary.wait_for()
    text = summary.inner_text()
    assert f"{n_rows:,} rows" in text and "text column quote" in text, text
    assert page.get_by_label("Text column").input_value() == "quote"
    page.get_by_text("Preview (first rows)").wait_for()
    page.screenshot(path=str(shots / "data.png"), full_page=True)

    # -- 2. LoRA: a short run on the default (bundled) base model; check settings.
    tab(page, "2. LoRA")
    assert (
        page.get_by_label("Base model (Hub id or local folder)").input_value() == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )
    fill_settings(
        page,
        [
            ("max_steps", MAX_STEPS),
            ("warmup_steps", 0),
            ("learning_rate", "1e-3"),
            ("max_length (tokens per row)", 64),
            ("per_device_train_batch_size", 4),
            ("gradient_accumulation_steps", 1),
            ("save_steps", 4),
        ],
    )
    button(page, "Check settings and count trainable parameters").click()
    page.get_by_text(TRAINABLE_LINE).wait_for(timeout=120_000)
    page.screenshot(path=str(shots / "lora.png"), full_page=True)

    # -- 3. Train: start; log lines with "step" and the loss plot must appear WHILE it runs.
    tab(page, "3. Train")
    button(page, "Start training").click()
    status = page.locator("#train-status")
    log = page.locator("#train-log textarea")

    # Gradio's LinePlot is a vega-embed SVG; a drawn line is a <path> with a non-empty `d` and a
    # stroke colour (a plot that failed to draw still has the paths: d="" or no stroke).
    def drawn(elem_id):
        return page.evaluate(
            f"() => [...document.querySelectorAll('#{elem_id} .vega-embed svg g.mark-line path')]"
            ".filter(e => (e.getAttribute('d') || '').length > 0 && e.getAttribute('stroke')).length"
        )

    live = None  # (status, log) as first seen with a step line and a drawn plot, before the end
    deadline = time.time() + 600
    while time.time() < deadline:
        st = status.inner_text()
        if _run_status(st) in TERMINAL:
            break
        lg = log.input_value()
        if live is None and re.search(rf"step \d+/{MAX_STEPS}", lg) and drawn("loss-plot") > 0:
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
    assert drawn("loss-plot") == 2, "training and held-out lines not both drawn"
    # the streamed log follows its end (Gradio's own autoscroll stops after the first update)
    assert log.evaluate("t => t.scrollTop + t.clientHeight >= t.scrollHeight - 30"), "log not scrolled to its end"
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    run = ctx.jobs.list()[0]
    assert run.status == "finished"
    adapter = ctx.jobs.run_dir(run.id) / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()

    # -- 4. Runs: the run is listed as finished; open it.
    tab(page, "4. Runs")
    button(page, "Refresh").click()
    table = page.get_by_role("grid", name="Your runs")
    expect(table).to_contain_text(run.id)
    expect(table).to_contain_text("finished")
    page.get_by_label("Run", exact=True).click()
    page.get_by_role("option", name=re.compile(re.escape(run.id))).click()
    page.get_by_text(f"Run {run.id}: finished", exact=True).wait_for()  # the run's details
    details = page.locator("#run-details").inner_text()
    assert details.count("held-out perplexity") == 1, details  # the finished message has it; not said twice
    page.wait_for_timeout(500)  # let the run's loss plot render
    assert drawn("runs-plot") == 2, "the run's training and held-out lines not both drawn"
    page.screenshot(path=str(shots / "runs.png"), full_page=True)

    # -- 5. Try it: pick the run, generate from the pre-filled prompt.
    tab(page, "5. Try it")  # the run finished after the page loaded: the tab lists it without Refresh
    prompt = page.get_by_label("Prompt", exact=True)
    assert prompt.input_value().strip() == "Two things are infinite:"
    page.get_by_label("Finished run").click()
    page.get_by_role("option", name=re.compile(re.escape(run.id))).click()
    adapter_box = page.get_by_label("Adapter: one of your runs, a Hub adapter (owner/name) or a local folder")
    page.wait_for_function("([el, v]) => el.value === v", arg=[adapter_box.element_handle(), run.id])
    button(page, "Generate").click()
    completion = page.get_by_label("Completion", exact=True)
    page.wait_for_function("el => el.value.trim().length > 0", arg=completion.element_handle(), timeout=180_000)
    # says which model answered (a visitor is not shown the server's folders)
    page.get_by_text(f"+ adapter [runs]/{run.id}/adapter").wait_for()
    assert str(adapter) not in page.content()
    # generation streams: wait until it is done (the block's progress tracker hides again)
    block = completion.locator("xpath=ancestor::div[contains(concat(' ', @class, ' '), ' block ')][1]")
    page.wait_for_function(
        "b => !b.classList.contains('generating') && "
        "[...b.querySelectorAll('[data-testid=status-tracker]')].every(s => s.classList.contains('hide'))",
        arg=block.element_handle(),
        timeout=180_000,
    )
    last = completion.input_value()
    assert last.strip(), "empty completion"
    page.screenshot(path=str(shots / "try.png"), full_page=True)
    print(f"\nbrowser acceptance test: {time.time() - t0:.0f} s; completion: {last!r}")


def test_invalid_settings_come_back_as_one_list(app_url, page):
    """Out-of-range numbers, a bad target module and no data: every problem, with its field and
    a fix, in one list (not Gradio's bare "Value 0 is less than minimum value 1." toast)."""
    url, ctx = app_url
    page.goto(url)
    tab(page, "2. LoRA")
    fill_settings(page, [("r", 0), ("lora_dropout", 2), ("max_steps", 0), ("target_modules", "foo_proj")])
    expected = ["lora.r:", "lora.lora_dropout:", "training.max_steps:", "lora.target_modules: foo_proj"]

    button(page, "Check settings and count trainable parameters").click()
    page.get_by_text("Please fix:").wait_for()
    for text in expected:
        item = page.locator("li:visible", has_text=text)
        assert item.count() == 1, text
        assert "Fix:" in item.inner_text()

    tab(page, "3. Train")
    button(page, "Start training").click()
    status = page.locator("#train-status")
    status.get_by_text("Please fix:").wait_for()
    for text in expected + ["data: no data chosen"]:
        assert status.locator("li", has_text=text).count() == 1, (text, status.inner_text())
    assert page.get_by_text("less than minimum value").count() == 0
    assert ctx.jobs.list() == []  # nothing was queued


@pytest.mark.slow
def test_second_tab_and_app_restart_reattach(tmp_path, page, quotes_file, tiny_model):
    """A second tab of the same browser re-attaches to the running run while the first still
    follows it; Stop ends it; after an app restart the browser still finds its run."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    demo, ctx = launch(tmp_path / "runs", port)
    try:
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(quotes_file[0]))
        page.get_by_text(re.compile(r"rows from")).wait_for()
        tab(page, "2. LoRA")
        set_base_model(page, tiny_model)
        fill_settings(
            page,
            [
                ("max_steps", 2000),
                ("warmup_steps", 0),
                ("max_length (tokens per row)", 64),
                ("gradient_accumulation_steps", 1),
                ("save_steps", 500),
            ],
        )
        tab(page, "3. Train")
        button(page, "Start training").click()
        log = page.locator("#train-log textarea")
        page.wait_for_function("t => /step \\d+\\//.test(t.value)", arg=log.element_handle(), timeout=300_000)
        run_id = ctx.jobs.list()[0].id

        # The same browser (same owner id in localStorage), two more tabs: each follows the run.
        others = [page.context.new_page() for _ in range(2)]
        for other in others:
            other.goto(url)
            tab(other, "3. Train")
        for other in others:
            other.locator("#train-status").get_by_text(f"{run_id}").wait_for(timeout=30_000)
            assert _run_status(other.locator("#train-status").inner_text()) == "running"
            other.close()

        button(page, "Stop").click()
        deadline = time.time() + 120
        while _run_status(page.locator("#train-status").inner_text()) != "stopped":
            assert time.time() < deadline, page.locator("#train-status").inner_text()
            time.sleep(0.5)
        assert ctx.jobs.get(run_id).status == "stopped"
    finally:
        shutdown(demo, ctx)

    # Restart the app (same port, same runs folder): the page finds its run again.
    demo, ctx = launch(tmp_path / "runs", port)
    try:
        page.reload()
        tab(page, "3. Train")
        page.locator("#train-status").get_by_text(f"{run_id}").wait_for(timeout=30_000)
        assert _run_status(page.locator("#train-status").inner_text()) == "stopped"
        tab(page, "4. Runs")
        from playwright.sync_api import expect

        expect(page.get_by_role("grid", name="Your runs")).to_contain_text(run_id)
    finally:
        shutdown(demo, ctx)


def test_the_global_batch_line_follows_the_batch_settings(app_url, page):
    """Under the settings: per_device_train_batch_size x gradient_accumulation_steps x processes,
    kept current as the fields change (one process on a machine without several GPUs)."""
    url, _ = app_url
    page.goto(url)
    tab(page, "2. LoRA")
    line = page.locator("#global-batch")
    line.get_by_text("4 x 4 x 1 process = 16 rows per optimizer step").wait_for()
    fill_settings(page, [("per_device_train_batch_size", 2), ("gradient_accumulation_steps", 8)])
    line.get_by_text("2 x 8 x 1 process = 16 rows per optimizer step").wait_for()
    fill_settings(page, [("gradient_accumulation_steps", 3)])
    line.get_by_text("2 x 3 x 1 process = 6 rows per optimizer step").wait_for()


def test_the_form_starts_on_the_fast_default_and_the_warmup_follows_max_steps(app_url, page):
    """The LoRA tab opens on the "fast default" preset (warm-up a tenth of 30 steps); changing max_steps
    moves the warm-up with it; typing warmup_steps empties warmup_ratio; choosing the reference recipe
    fills its values; typing a warmup_ratio then sets warmup_steps to 0 (else the preset's 100 would win)."""
    url, _ = app_url
    page.goto(url)
    tab(page, "2. LoRA")
    line = page.locator("#warmup-line")
    line.get_by_text("3 of 30 steps").wait_for()
    assert page.locator("#preset input").input_value() == "fast default"
    fill_settings(page, [("max_steps", 120)])
    line.get_by_text("12 of 120 steps").wait_for()  # ceil(120 * 0.1)
    fill_settings(page, [("warmup_steps", 7)])
    line.get_by_text("7 of 120 steps").wait_for()
    ratio = page.locator("label").filter(has_text=re.compile(r"^\s*warmup_ratio(\s|$)")).locator("textarea, input")
    assert ratio.first.input_value() == ""
    page.locator("#preset input").click()
    page.get_by_role("option", name="reference recipe").click()
    line.get_by_text("100 of 200 steps").wait_for()
    assert page.get_by_label("learning_rate", exact=True).input_value() == "0.0002"
    ratio.first.press_sequentially("0.05")  # typed: a ratio over the preset's 100 steps is the one used
    ratio.first.press("Tab")
    line.get_by_text("10 of 200 steps").wait_for()
    assert page.get_by_label("warmup_steps", exact=True).input_value() == "0"


def test_the_arrow_key_moves_the_learning_rate_by_a_small_step(app_url, page):
    """ArrowUp in learning_rate made 0.0003 into 1 (Gradio's default step is 1; found by the
    newcomer). It moves by 1e-5 now; a rate above 1e-2 gets a note at Check."""
    url, _ = app_url
    page.goto(url)
    tab(page, "2. LoRA")
    lr = page.get_by_label("learning_rate", exact=True)
    assert lr.input_value() == "0.0003"
    lr.click()
    lr.press("ArrowUp")
    page.wait_for_function("el => el.value !== '0.0003'", arg=lr.element_handle())
    assert float(lr.input_value()) == pytest.approx(0.00031), lr.input_value()

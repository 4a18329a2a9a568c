"""Reload and reconnect, in a real browser: a page reload mid-run does not touch the run, and
the Train tab re-attaches to it and replays its log from the start; Stop then ends it and says
the process is gone; the Runs tab lists it as stopped with its adapter.

Trains the tiny local Llama (its folder typed into the base model field), so it needs no
network and no real model:

    .venv/bin/python -m pytest tests/test_browser_jobs.py -q -p no:cacheprovider
"""

from __future__ import annotations

import os
import re
import time

import pytest
from browser import CHROMIUM, button, fill_settings, set_base_model, tab

MAX_STEPS = 400  # far more than the test waits for: it stops the run itself

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


def _steps(log_text: str) -> list[int]:
    return [int(m) for m in re.findall(rf"step (\d+)/{MAX_STEPS}", log_text)]


def _wait_log(page, pred, timeout=240.0, what="log"):
    log = page.locator("#train-log textarea")
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.input_value()
        if pred(text):
            return text
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; log:\n{log.input_value()[-2000:]}")


#: A long run of the tiny model, a step in well under a second: the tests stop it themselves.
LONG_RUN = [
    ("max_steps", MAX_STEPS),
    ("warmup_steps", 0),
    ("max_length (tokens per row)", 32),
    ("per_device_train_batch_size", 2),
    ("gradient_accumulation_steps", 1),
]


def _example_data_and_long_run(page, tiny_model, extra=()):
    """The example quotes in the Data tab, the tiny model and LONG_RUN (+ ``extra``) in the LoRA tab."""
    tab(page, "1. Data")
    button(page, "Use the example quotes (1,000 rows)").click()
    page.get_by_text(re.compile(r"rows from")).wait_for()
    tab(page, "2. LoRA")
    set_base_model(page, tiny_model)
    fill_settings(page, [*LONG_RUN, *extra])


def test_reload_mid_run_reattaches_and_replays_the_log(app_url, page, tiny_model, tmp_path):
    url, ctx = app_url
    page.goto(url)
    _example_data_and_long_run(page, tiny_model, [("save_steps", 2)])

    tab(page, "3. Train")
    button(page, "Start training").click()
    before = _wait_log(page, lambda t: len(_steps(t)) >= 2, what="two logged steps")
    (run,) = ctx.jobs.list()
    assert run.status == "running"
    first_line = before.splitlines()[0]
    assert "queued" in first_line and run.id in first_line, first_line
    pid = run.pid

    # Reload: the run goes on untouched; the page re-attaches and replays the log from its start.
    page.reload()
    tab(page, "3. Train")
    last_before = _steps(before)[-1]
    after = _wait_log(
        page,
        lambda t: t.startswith(first_line) and _steps(t) and _steps(t)[-1] > last_before,
        what="the replayed log to go past the step seen before the reload",
    )
    assert ctx.jobs.get(run.id).pid == pid and ctx.jobs.get(run.id).status == "running"
    assert _steps(after)[: len(_steps(before))] == _steps(before), "the replay is not the same log"
    assert re.search(rf"Run `?{run.id}`?: running", page.locator("#train-status").inner_text())

    # Stop, from the re-attached page: the process group is gone and the page says so.
    button(page, "Stop").click()
    stop_msg = page.locator("#train-stop")
    stop_msg.get_by_text(re.compile(r"process group are gone")).wait_for(timeout=60_000)
    text = stop_msg.inner_text()
    assert f"process {pid} and its process group are gone" in text and "adapter saved at step" in text, text
    assert ctx.jobs.get(run.id).status == "stopped"
    page.locator("#train-status").get_by_text(re.compile("stopped")).first.wait_for()

    # The Runs tab lists it, stopped, with its adapter (Gradio keeps hidden copies of the cells).
    tab(page, "4. Runs")
    button(page, "Refresh").click()
    table = page.locator("#runs-table")
    table.locator(f'text="{run.id}" >> visible=true').first.wait_for()
    table.locator('text="stopped" >> visible=true').first.wait_for()
    # a visitor is told the adapter is saved, not where it lies on the server
    assert table.locator('text="saved" >> visible=true').count() >= 1
    assert str(ctx.jobs.root) not in table.inner_text()

    # Open it: its log; download its settings as YAML; load that YAML back into the form.
    page.get_by_label("Run", exact=True).click()
    page.get_by_role("option", name=re.compile(re.escape(run.id))).click()
    page.locator("#run-details").get_by_text(re.compile(r"stopped")).first.wait_for()
    page.wait_for_function(
        "el => el.value.includes('adapter saved at step')", arg=page.locator("#runs-log textarea").element_handle()
    )
    with page.expect_download() as dl:
        page.locator("#runs-yaml").click()
    saved = tmp_path / "downloaded.yaml"
    dl.value.save_as(saved)
    from lora_app.config import RunConfig

    cfg = RunConfig.load(saved)
    assert cfg.training.max_steps == MAX_STEPS and cfg.model.base_model_name_or_path == str(tiny_model)

    tab(page, "2. LoRA")
    steps_box = page.get_by_label("max_steps", exact=True)
    steps_box.fill("7")
    steps_box.press("Tab")
    tab(page, "4. Runs")
    page.get_by_text("Load settings from a YAML file into the form").click()
    page.locator("#runs-yaml-upload input[type=file]").set_input_files(str(saved))
    page.get_by_text("Settings loaded into the").wait_for()
    tab(page, "2. LoRA")
    page.wait_for_function(f"el => el.value === '{MAX_STEPS}'", arg=steps_box.element_handle())


def test_start_in_a_second_tab_shows_its_own_run_not_the_one_it_was_following(app_url, page, tiny_model):
    """Two tabs of one browser (one owner): tab B re-attaches to tab A's run on load; when B
    presses Start, B must show B's new (queued) run, not keep streaming A's."""
    url, ctx = app_url
    context = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    tabs = [context.new_page(), context.new_page()]  # one context: shared localStorage, one owner
    for pg in tabs:
        pg.bring_to_front()  # a background page does not commit Gradio's input events
        pg.set_default_timeout(60_000)
        pg.goto(url)
        _example_data_and_long_run(pg, tiny_model)
        tab(pg, "3. Train")
    a, b = tabs
    a.bring_to_front()
    button(a, "Start training").click()
    _wait_log(a, lambda t: len(_steps(t)) >= 1, what="run A's first step")
    (run_a,) = ctx.jobs.list()
    b.bring_to_front()
    b.reload()  # B now follows A's run (same owner)
    tab(b, "3. Train")
    b.locator("#train-status").get_by_text(re.compile(run_a.id)).first.wait_for()
    tab(b, "2. LoRA")  # the reload reset B's form: set the short run again
    set_base_model(b, tiny_model)
    tab(b, "1. Data")
    button(b, "Use the example quotes (1,000 rows)").click()
    b.get_by_text(re.compile(r"rows from")).wait_for()
    run_b = _start_second_run(b, ctx, run_a)
    b.locator("#train-status").get_by_text(re.compile(run_b.id)).first.wait_for()
    time.sleep(2)  # A's follower, had it survived, would overwrite B's status within 0.5 s
    status_b = b.locator("#train-status").inner_text()
    # B's own run heads the status (a queued run may name the running one after it).
    assert re.match(rf"Run `?{run_b.id}", status_b.strip()), status_b


def _start_second_run(page, ctx, run_a):
    """Press Start in the Train tab while ``run_a`` exists; the run it queued, once listed (60 s at most)."""
    tab(page, "3. Train")
    button(page, "Start training").click()
    deadline = time.time() + 60
    while len(ctx.jobs.list()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    return next(r for r in ctx.jobs.list() if r.id != run_a.id)


def test_start_during_a_run_queues_the_next_or_says_what_is_wrong(app_url, page, tiny_model):
    """One page, a run going: Start again did nothing and said nothing (Gradio ignored the click
    while the first Start still streamed its run; found by the newcomer). Now a Start with a bad
    setting shows its problem, and it stays, above the run the page goes on following; a good
    one queues the next run and the page follows that."""
    url, ctx = app_url
    page.goto(url)
    _example_data_and_long_run(page, tiny_model)
    tab(page, "3. Train")
    button(page, "Start training").click()
    _wait_log(page, lambda t: len(_steps(t)) >= 1, what="run A's first step")
    (run_a,) = ctx.jobs.list()

    tab(page, "2. LoRA")
    fill_settings(page, [("max_steps", 0)])
    tab(page, "3. Train")
    button(page, "Start training").click()
    status = page.locator("#train-status")
    status.get_by_text(re.compile(r"training\.max_steps")).first.wait_for(timeout=30_000)
    # ... and the page goes on following run A under the problem: its steps still come in
    steps_before = _steps(page.locator("#train-log textarea").input_value())
    _wait_log(page, lambda t: _steps(t) and _steps(t)[-1] > steps_before[-1], what="run A going on")
    text = status.inner_text()
    assert "training.max_steps" in text and re.search(rf"Run `?{run_a.id}`?: running", text), text
    assert [r.id for r in ctx.jobs.list()] == [run_a.id]

    tab(page, "2. LoRA")
    fill_settings(page, [("max_steps", 5)])
    run_b = _start_second_run(page, ctx, run_a)
    status.get_by_text(re.compile(run_b.id)).first.wait_for()
    assert ctx.jobs.get(run_a.id).status == "running"
    # Stop now stops the run the page shows: B (queued behind A, so it never starts).
    button(page, "Stop").click()
    page.locator("#train-stop").get_by_text(re.compile(rf"{run_b.id}.*cancelled before it started")).wait_for()
    assert ctx.jobs.get(run_a.id).status == "running"

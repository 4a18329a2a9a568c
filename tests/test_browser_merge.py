"""In a real browser: Check shows the memory/time estimate table; a finished run's "Merge into the
base model" button merges, verifies and reports (tiny local model)."""

from __future__ import annotations

import os
import re
import time

import pytest
from browser import CHROMIUM, button, fill_settings, free_port, launch, set_base_model, shutdown, tab
from test_browser import quotes_file  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no system browser at {CHROMIUM}"),
]


@pytest.mark.slow
def test_estimate_table_on_check_and_merge_button(tmp_path, page, quotes_file, tiny_model):
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
                ("max_steps", 4),
                ("warmup_steps", 0),
                ("max_length (tokens per row)", 48),
                ("gradient_accumulation_steps", 1),
                ("save_steps", 4),
            ],
        )
        button(page, "Check settings and count trainable parameters").click()
        table = page.locator("#estimate-table")
        table.get_by_text("H200 141 GB").wait_for(timeout=60_000)
        for text in ("CPU (this machine)", "T4 16 GB", "A100 80 GB", "yes"):
            assert table.get_by_text(text).count() >= 1, text
        assert "published dense throughput" in page.locator("#estimate-basis").inner_text()
        assert (
            "Held-out evaluation on 15 rows (5% of 300 rows)"
            in page.get_by_text("Held-out evaluation").first.inner_text()
        )

        tab(page, "3. Train")
        button(page, "Start training").click()
        deadline = time.time() + 300
        while not ctx.jobs.list() or ctx.jobs.list()[0].status in ("queued", "running"):
            assert time.time() < deadline
            time.sleep(0.5)
        run_id = ctx.jobs.list()[0].id
        assert ctx.jobs.get(run_id).status == "finished"

        tab(page, "4. Runs")
        button(page, "Refresh").click()
        from playwright.sync_api import expect

        expect(page.get_by_role("grid", name="Your runs")).to_contain_text(run_id)
        page.get_by_label("Run", exact=True).click()
        page.get_by_role("option", name=re.compile(re.escape(run_id))).click()
        page.get_by_text(f"Run {run_id}: finished", exact=True).wait_for()
        page.get_by_text("Merge into the base model (a standalone model").click()
        page.get_by_text(re.compile("never into 8-bit or 4-bit weights")).first.wait_for()
        button(page, "Merge into the base model").click()
        out = page.locator("#merge-out")
        out.get_by_text("Done.").wait_for(timeout=300_000)
        text = out.inner_text()
        for phase in ("loading the base model", "merging", "saving sharded safetensors", "verified"):
            assert phase in text, (phase, text)
        assert (ctx.jobs.run_dir(run_id) / "merged" / "merge_check.json").is_file()
    finally:
        shutdown(demo, ctx)

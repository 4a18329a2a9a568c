"""What the browser tests share: the system chromium, the app launched in this process on a free
port, and the helpers that drive the form (tabs, buttons, settings). The fixtures built on these
(``page``, ``app_url``) are in conftest.py."""

from __future__ import annotations

import re
import socket
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1280, "height": 900}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(runs: Path, port: int):
    """Build and launch the full app in this process, its runs in ``runs``; returns ``(demo, ctx)``."""
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import CSS, build_app
    from lora_app.ui.common import AppContext

    ctx = AppContext(JobManager(runs, poll_s=0.1), Generator(), frozenset())
    demo = build_app(ctx)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=CSS, quiet=True)
    return demo, ctx


def shutdown(demo, ctx) -> None:
    """Stop every run of the app (5 s to save), then the app."""
    ctx.jobs.shutdown(grace_s=5)
    demo.close()


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def button(page, name: str):
    return page.get_by_role("button", name=name, exact=True)


def fill_settings(page, settings: list[tuple[str, object]]) -> None:
    """Type each ``(label, value)`` into the settings form; Tab blurs it, so Gradio commits it. Then
    each field is read back and typed again if an event still in flight from the page's load or an
    earlier field put another value there (a fresh-clone CI run trained max_steps 30, the preset's,
    though 400 was typed)."""

    def locate(label):
        field = page.get_by_label(label, exact=True)
        if field.count() == 0:  # a Textbox with `info`: its accessible name is not its label's text
            exact = re.compile(rf"^\s*{re.escape(label)}(\s|$)")  # the label's text, then the help
            field = page.locator("label").filter(has_text=exact).locator("textarea, input").first
        return field

    todo = list(settings)
    for _ in range(3):
        for label, value in todo:
            field = locate(label)
            field.fill(str(value))
            field.press("Tab")
        page.wait_for_timeout(300)
        todo = [(label, value) for label, value in todo if not _same(locate(label).input_value(), str(value))]
        if not todo:
            return
    raise AssertionError(f"the form did not keep {todo}")


def _same(shown: str, typed: str) -> bool:
    """A field shows what was typed (a number field may show 1e-3 as 0.001)."""
    try:
        return float(shown) == float(typed)
    except ValueError:
        return shown.strip() == typed.strip()


def set_base_model(page, model) -> None:
    """Type ``model`` (a Hub id or a folder) as the base model in the LoRA tab's form."""
    base = page.get_by_label("Base model (Hub id or local folder)")
    base.fill(str(model))
    base.press("Tab")  # blur: Gradio commits the value

"""Runs tab panel: "Merge into the base model" (and push the merged model), for the picked run.

The merge loads the whole base model, so it runs as its own process (``python -m lora_app
merge RUN_DIR``, the CLI twin), never in the web worker; its progress lines (loading, merging,
saving, checking, pushing) stream to the page. The token goes to the child only through its
environment (``HF_TOKEN``), never on its command line or in a file.
"""

from __future__ import annotations

import html
import os
import subprocess
import sys

import gradio as gr

from ..jobs import NotYourRun
from ..merge import DTYPES, QUANTIZED_NOTE
from .common import AppContext

TAIL = 40  # progress lines kept on the page


def merge_command(run_dir, dtype: str, push_repo: str | None, private: bool) -> list[str]:
    cmd = [sys.executable, "-m", "lora_app", "merge", str(run_dir), "--dtype", dtype]
    if push_repo:
        cmd += ["--push", push_repo.strip()] + (["--private"] if private else [])
    return cmd


def build(ctx: AppContext, pick, owner_state, token_fn=None) -> dict:
    """The panel under the Runs table: dtype, optional push, the button and its streamed log.
    Who may merge a run is decided as everywhere else (:meth:`AppContext.who` / ``run_of``)."""
    with gr.Accordion("Merge into the base model (a standalone model, no PEFT needed)", open=False):
        gr.Markdown(
            QUANTIZED_NOTE + " Every merge is checked: the merged model must give base + adapter's greedy "
            "tokens on a few prompts; a merge that fails is not pushed."
        )
        with gr.Row():
            dtype = gr.Dropdown(
                ["default", *DTYPES],
                value="default",
                label="dtype",
                info="default: float32 on CPU, bfloat16 on a GPU",
                elem_id="merge-dtype",
            )
            repo = gr.Textbox(
                label="then push to (owner/name, optional)", placeholder="empty: merge only", elem_id="merge-repo"
            )
            private = gr.Checkbox(True, label="Private repo")
        merge_b = gr.Button("Merge into the base model", elem_id="merge-button")
        out = gr.Markdown(elem_id="merge-out")

    def on_merge(
        run_id, owner, dt, push_repo, priv, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None
    ):
        if not run_id:
            yield "Pick a run first."
            return
        ident = ctx.who(owner, profile)
        try:
            ctx.run_of(ident, run_id)
        except NotYourRun as err:
            yield str(err)
            return
        rd = ctx.jobs.run_dir(run_id)
        env = dict(os.environ)
        env.pop("HF_TOKEN", None)
        token = token_fn(request) if (token_fn and push_repo and push_repo.strip()) else None
        if token:
            env["HF_TOKEN"] = token
        dt = None if dt in (None, "default") else dt
        from ..merge import default_dtype
        from ..models import device_kind

        cmd = merge_command(rd, dt or default_dtype(device_kind()), push_repo, priv)
        lines: list[str] = []
        yield f"Merging run `{run_id}`…"
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        ) as proc:
            for line in proc.stdout or ():  # (stdout=PIPE: always a stream)
                line = line.rstrip()
                if not line or _noise(line):
                    continue
                lines.append(html.escape(ctx.redact(ident, line)))
                yield "\n\n".join(lines[-TAIL:])
            rc = proc.wait()
        verdict = "**Done.**" if rc == 0 else "**The merge or the push did not complete** (see above)."
        yield "\n\n".join(lines[-TAIL:] + [verdict])

    merge_b.click(on_merge, [pick, owner_state, dtype, repo, private], [out], concurrency_limit=1)
    return {"merge_button": merge_b, "merge_out": out}


def _noise(line: str) -> bool:
    """Library progress bars and deprecation chatter from the child, not merge progress."""
    return (
        line.startswith(("Loading weights", "Writing model shards", "Loading checkpoint"))
        or "Warning: " in line
        or line.lstrip().startswith("warnings.warn")
    )

"""Data tab: upload a file, use the example, or load a Hub dataset; pick the text column or the
layout; see the exact training tokens of the first rows (the data lint, :mod:`lora_app.lint`)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from .. import count
from ..config import ConfigError
from ..data import SUPPORTED, frame_to_text, preview, read_table
from ..layouts import LAYOUTS, describe
from ..repo_id import on_disk
from .common import EXAMPLE_DATA, READ_ONLY, problems_md


def _describe(df: pd.DataFrame, column: str | None, source: str, layout: str = "auto"):
    td = frame_to_text(df, column, source, layout)
    if td.layout == "text":
        summary = f"**{count(len(td.texts), 'row')}** from `{source}` · text column **{td.text_column}**"
    else:
        summary = (
            f"**{count(len(td.texts), 'row')}** from `{source}` · layout **{describe(td.layout, td.layout_columns)}**"
            " · loss on the answers (see the training tokens below)"
        )
    if td.skipped_empty:
        summary += f" · {td.skipped_line()}"
    summary += "".join(f"\n\n{n}" for n in td.notes)  # encoding, delimiter, rows changed: said, not hidden
    choices = td.string_columns or [td.text_column]
    return td, summary, gr.update(choices=choices, value=td.text_column), preview(df)


def build(token_fn=None):
    """Build the tab; returns ``(data_state, components)``. ``data_state`` holds the DataConfig
    fields of the chosen source (path/source_name or dataset_id/config/split, text_column)."""
    data_state = gr.State({})
    gr.Markdown(
        "Upload a **.jsonl, .json, .csv, .tsv, .parquet or .txt** file, use the example quotes, "
        "or load a dataset from the Hugging Face Hub."
    )
    with gr.Row():
        with gr.Column():
            upload = gr.File(label="Training data file", file_types=list(SUPPORTED), type="filepath")
            example_btn = gr.Button("Use the example quotes (1,000 rows)", variant="secondary")
        with gr.Column():
            hub_id = gr.Textbox(label="Hub dataset id", placeholder="owner/name, e.g. Abirate/english_quotes")
            with gr.Row():
                hub_config = gr.Textbox(label="config (optional)")
                hub_split = gr.Textbox("train", label="split")
            hub_btn = gr.Button("Load Hub dataset")
    with gr.Row():
        column = gr.Dropdown(label="Text column", choices=[], interactive=True)
        layout = gr.Dropdown(
            ["auto", *LAYOUTS],
            value="auto",
            label="Layout (detected; change it to read the file another way)",
            interactive=True,
        )
    summary = gr.Markdown()
    table = gr.Dataframe(label="Preview (first rows)", interactive=False, wrap=True)
    with gr.Accordion("Training tokens (the exact text trained on, first rows)", open=False):
        with gr.Row():
            train_on_prompt = gr.Checkbox(False, label="Train on prompts too (loss on every token)")
            lint_btn = gr.Button("Show the training tokens", variant="secondary")
        lint_md = gr.Markdown()
        lint_view = gr.HighlightedText(
            label="Tokens per row (grey: no loss)",
            color_map={"answer": "green", "prompt (no loss)": "gray"},
            show_legend=True,
            elem_id="lint-view",
        )

    def from_file(path, name=None):
        if not path:
            return {}, "", gr.update(choices=[], value=None), None
        try:
            df = read_table(path)
            src = name or Path(path).name
            td, md, col, prev = _describe(df, None, src)
        except ConfigError as err:
            return {}, problems_md(err.problems), gr.update(choices=[], value=None), None
        return {"path": str(path), "source_name": src, **_fields(td)}, md, col, prev

    def from_hub(ds_id, cfg_name, split, request: gr.Request | None = None):
        from ..hub_data import load_hub_frame

        token = token_fn(request) if token_fn else None
        try:
            df = load_hub_frame(ds_id, cfg_name or None, split or "train", token=token)
            td, md, col, prev = _describe(df, None, ds_id.strip())
        except ConfigError as err:
            return {}, problems_md(err.problems), gr.update(choices=[], value=None), None
        state = {
            "dataset_id": ds_id.strip(),
            "dataset_config": cfg_name or None,
            "split": split or "train",
            **_fields(td),
        }
        return state, md, col, prev

    def reread(state, request: gr.Request | None):
        if state.get("path"):
            return read_table(state["path"]), state["source_name"]
        from ..hub_data import load_hub_frame

        token = token_fn(request) if token_fn else None  # read again as this visitor, never from the cache alone
        ds = state["dataset_id"]
        return load_hub_frame(ds, state.get("dataset_config"), state["split"], token=token), ds

    def pick_column(state, col, request: gr.Request | None = None):
        if not state or not col or col == state.get("text_column"):
            return state, gr.update()
        try:
            df, src = reread(state, request)
            _, md, _, _ = _describe(df, col, src, "text")
        except ConfigError as err:
            return state, problems_md(err.problems)
        return {**state, "text_column": col, "layout": "text"}, md

    def pick_layout(state, lay, request: gr.Request | None = None):
        if not state or not lay:
            return state, gr.update(), gr.update()
        try:
            df, src = reread(state, request)
            td, md, col, _ = _describe(df, None, src, lay)
        except ConfigError as err:
            return state, problems_md(err.problems), gr.update()
        return {**state, **_fields(td)}, md, col

    outs = [data_state, summary, column, table]
    # the training tokens shown are the old data's: cleared when other data is chosen (the newcomer)
    data_state.change(lambda: ("", None), None, [lint_md, lint_view], **READ_ONLY)
    shown = lambda s: gr.update(value=(s or {}).get("layout") or "auto")  # noqa: E731
    upload.change(from_file, [upload], outs).then(shown, [data_state], [layout])
    example_btn.click(lambda: from_file(str(EXAMPLE_DATA), "quotes.jsonl (example)"), None, outs).then(
        shown, [data_state], [layout]
    )
    hub_btn.click(from_hub, [hub_id, hub_config, hub_split], outs).then(shown, [data_state], [layout])
    column.input(pick_column, [data_state, column], [data_state, summary]).then(shown, [data_state], [layout])
    layout.input(pick_layout, [data_state, layout], [data_state, summary, column])
    train_on_prompt.input(
        lambda s, v: {**s, "train_on_prompt": bool(v)} if s else s, [data_state, train_on_prompt], [data_state]
    )
    return data_state, {
        "layout": layout,
        "train_on_prompt": train_on_prompt,
        "lint_button": lint_btn,
        "lint_md": lint_md,
        "lint_view": lint_view,
        "upload": upload,
        "example": example_btn,
        "column": column,
        "summary": summary,
        "table": table,
        "hub_id": hub_id,
    }


def _fields(td) -> dict:
    """The DataConfig fields the reading decided: the layout, and the text column of a text layout."""
    return {"layout": td.layout, "text_column": td.text_column if td.layout == "text" else None}


def show_lint(state: dict, base: str, max_length, token: str | None = None, n: int = 5):
    """``(markdown, highlighted)`` for the Data tab: the lint of the chosen data with ``base``'s
    tokenizer (the tokenizer only: no weights), or the problem."""
    from .. import models
    from ..config import DataConfig
    from ..data import load_text
    from ..lint import NO_LOSS, lint, merged

    if not state:
        return "Choose the data first (upload a file, the example, or a Hub dataset).", None
    try:
        cfg = DataConfig(**state)
        td = load_text(cfg, token=token)
        rm = models.resolve_model(base)
        if not rm.bundled and not on_disk(rm.load_path, "dir"):  # before the cache can answer for the Hub
            from ..hub_client import check_readable

            check_readable(rm.load_path, token)
        tok = models.load_tokenizer(rm.load_path, token=token)
        res = lint(td, tok, int(max_length or 256), n, cfg.train_on_prompt)
    except ConfigError as err:
        return problems_md(err.problems), None
    except Exception as err:  # no network for a Hub tokenizer, a tokenizer without EOS ...
        return f"Cannot show the training tokens with the tokenizer of `{base}`: {type(err).__name__}: {err}", None
    spans: list[tuple[str, str | None]] = []
    for r in res.rows:
        over = " · over max_length: cut" if r["over"] else ""
        spans.append((f"\n── row at {td.unit} {r['line']} · {r['n_tokens']} tokens{over} ──\n", None))
        spans += [(t, c if c == NO_LOSS else "answer") for t, c in merged(r["tokens"])]
    md = "\n\n".join(res.header) + f"\n\nTokenizer of `{base}`; tokens shown after templating and tokenization."
    return md, spans

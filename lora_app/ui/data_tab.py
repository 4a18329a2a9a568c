"""Data tab: upload a file, use the example, or load a Hub dataset; pick the text column."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from .. import count
from ..config import ConfigError
from ..data import SUPPORTED, frame_to_text, preview, read_table
from .common import EXAMPLE_DATA, problems_md


def _describe(df: pd.DataFrame, column: str | None, source: str):
    td = frame_to_text(df, column, source)
    summary = f"**{count(len(td.texts), 'row')}** from `{source}` · text column **{td.text_column}**"
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
    column = gr.Dropdown(label="Text column", choices=[], interactive=True)
    summary = gr.Markdown()
    table = gr.Dataframe(label="Preview (first rows)", interactive=False, wrap=True)

    def from_file(path, name=None):
        if not path:
            return {}, "", gr.update(choices=[], value=None), None
        try:
            df = read_table(path)
            src = name or Path(path).name
            td, md, col, prev = _describe(df, None, src)
        except ConfigError as err:
            return {}, problems_md(err.problems), gr.update(choices=[], value=None), None
        return {"path": str(path), "source_name": src, "text_column": td.text_column}, md, col, prev

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
            "text_column": td.text_column,
        }
        return state, md, col, prev

    def pick_column(state, col):
        if not state or not col or col == state.get("text_column"):
            return state, gr.update()
        try:
            if state.get("path"):
                df, src = read_table(state["path"]), state["source_name"]
            else:
                from ..hub_data import load_hub_frame

                df, src = (
                    load_hub_frame(state["dataset_id"], state.get("dataset_config"), state["split"]),
                    state["dataset_id"],
                )
            _, md, _, _ = _describe(df, col, src)
        except ConfigError as err:
            return state, problems_md(err.problems)
        return {**state, "text_column": col}, md

    outs = [data_state, summary, column, table]
    upload.change(from_file, [upload], outs)
    example_btn.click(lambda: from_file(str(EXAMPLE_DATA), "quotes.jsonl (example)"), None, outs)
    hub_btn.click(from_hub, [hub_id, hub_config, hub_split], outs)
    column.input(pick_column, [data_state, column], [data_state, summary])
    return data_state, {
        "upload": upload,
        "example": example_btn,
        "column": column,
        "summary": summary,
        "table": table,
        "hub_id": hub_id,
    }

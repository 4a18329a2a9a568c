"""Run settings as YAML files: the Runs tab's download (:func:`export_yaml`) and a YAML uploaded into
the form (:func:`load_yaml`), with what a visitor may read of the server's files on the way in."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..config import ConfigError, RunConfig
from ..identity import Identity
from . import form
from .common import AppContext, problems_md

YAML_DIR = Path(tempfile.gettempdir()) / "lora_app_configs"  # Gradio serves files from the temp dir


def export_yaml(ctx: AppContext, run_id: str, ident: Identity | None = None) -> Path:
    """The run's settings as a YAML file in the temp dir (``python -m lora_app train --config`` runs it).
    For a visitor (``ident`` not seeing paths) the data path is the file's name only."""
    cfg = RunConfig.load(ctx.jobs.run_dir(run_id) / "config.yaml")
    YAML_DIR.mkdir(parents=True, exist_ok=True)
    out = YAML_DIR / yaml_name(run_id)
    if ident is not None and not ident.sees_paths:
        # The run's private copy of the data is a server path: a visitor gets the name of the file they
        # uploaded (theirs to put beside the YAML; the copy's own name, train.jsonl, ran nowhere else).
        d = cfg.data
        if d.path:
            d.path = d.source_name or Path(d.path).name
        if d.eval_path:
            d.eval_path = d.eval_source_name or Path(d.eval_path).name
        # a base model in a folder of one of their runs: no server path either (the breaker)
        cfg.model.base_model_name_or_path = ctx.redact(ident, cfg.model.base_model_name_or_path)
    text = cfg.to_yaml()
    out.write_text(
        f"# lora_app run {run_id}; run it again with: python -m lora_app train --config {out.name}\n"
        f"# on several GPUs or machines: python -m lora_app train --config {out.name} --print-commands\n" + text,
        encoding="utf-8",
    )
    return out


def yaml_name(run_id: str) -> str:
    return f"lora_app-{run_id}.yaml"


def load_yaml(path: str | None, keys: list[str], data: dict | None, may_read: Callable[[str], bool] = lambda p: True):
    """A saved YAML into form values: ``(values_or_updates, data_state, message)``.

    Widgets whose keys the config lacks are left alone; the data source is taken when its
    file still exists and ``may_read`` it (:meth:`AppContext.may_read_path`: a visitor's YAML could
    name another visitor's data, or any server file), or it is a Hub dataset; else the current
    choice is kept, with the same words whether the file is missing or refused.
    """
    keep = [gr.update() for _ in keys]
    if not path:
        return keep, data, ""
    try:
        cfg = (
            RunConfig.load(path)
            if str(path).endswith((".json", ".yaml", ".yml"))
            else RunConfig.from_yaml(Path(path).read_text(encoding="utf-8"))
        )
    except ConfigError as err:
        return keep, data, problems_md(err.problems)
    except (OSError, UnicodeDecodeError) as err:
        return (
            keep,
            data,
            problems_md([f"config: cannot read the file ({err}). Fix: upload a config.yaml saved from the Runs tab."]),
        )
    dump = cfg.model_dump()
    known = [k for k in keys if k.split(".", 1)[0] in dump and k.split(".", 1)[1] in dump[k.split(".", 1)[0]]]
    values = dict(zip(known, form.from_config(cfg, known), strict=True))
    out = [values[k] if k in values else gr.update() for k in keys]
    d = cfg.data
    msg = "Settings loaded into the **2. LoRA** form."
    if cfg.lora.rank_pattern or cfg.lora.alpha_pattern:  # no widget for them (lora_app/ui/form.py)
        msg += " Its rank_pattern/alpha_pattern are YAML-only: train it with `python -m lora_app train --config FILE`."
    # The data settings the Data tab has no widget for ride along with the data choice to Start.
    extra = {
        k: v
        for k in ("max_rows", "eval_path", "eval_source_name", "eval_split", "layout", "train_on_prompt")
        if (v := getattr(d, k)) and v != "auto"
    }
    if d.eval_path and not (may_read(d.eval_path) and Path(d.eval_path).is_file()):
        extra.pop("eval_path", None)
        extra.pop("eval_source_name", None)
        msg += (
            f" Its held-out file `{d.eval_source_name or d.eval_path}` is not here: held-out rows come from the data."
        )
    if d.path and may_read(d.path) and Path(d.path).is_file():
        data = {
            "path": d.path,
            "source_name": d.source_name or Path(d.path).name,
            "text_column": d.text_column,
            **extra,
        }
        msg += f" Data: `{data['source_name']}`."
    elif d.dataset_id:
        data = {
            "dataset_id": d.dataset_id,
            "dataset_config": d.dataset_config,
            "split": d.split,
            "text_column": d.text_column,
            **extra,
        }
        msg += f" Data: Hub dataset `{d.dataset_id}`."
    elif d.path:
        msg += f" Its data file `{d.source_name or d.path}` is not here: choose the data in the **1. Data** tab."
    # Settings with no widget and not carried above: named, not dropped in silence.
    default, carried = RunConfig().model_dump(), set(keys) | {f"data.{k}" for k in (data or {})}
    dropped = [
        f"{sec}.{name}: {v}"
        for sec, fields in dump.items()
        for name, v in fields.items()
        if f"{sec}.{name}" not in carried and (sec != "data" or name in extra) and v != default[sec][name]
    ]
    if dropped:
        msg += (
            f" **Not in the form, so Start from here uses the defaults for:** {', '.join(dropped)}. Fix: run the "
            "file itself (`python -m lora_app train --config FILE`) to keep them."
        )
    return out, data, msg


def form_outputs(result):
    values, data, msg = result
    return (*values, data, msg)

"""The settings form: one widget per RunConfig field, and the one way to turn it into a config.

Widgets are keyed by ``"section.field"``; :func:`to_config` builds a RunConfig from those
values through :meth:`RunConfig.build`, exactly as the CLI and the tests do, so the UI
reports the same validation messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr
from gradio.blocks import Block

from ..config import RunConfig
from ..models import device_kind

D = RunConfig()  # defaults


def device_note() -> str:
    dev = device_kind()
    if dev == "cuda":
        import torch

        return (
            f"**GPU:** {torch.cuda.get_device_name(0)}. 8-bit (default, as in the reference recipe) and 4-bit "
            "loading of the base model through bitsandbytes are available."
        )
    return (
        f"**No CUDA GPU here ({dev}):** the base model is not quantized unless you choose 8bit or 4bit: "
        "bitsandbytes' CPU backend runs them (less memory, slower steps). precision below: auto = "
        "bfloat16 where this CPU has fast bf16, else float32."
    )


def build_model_widgets() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    w["model.base_model_name_or_path"] = gr.Textbox(
        D.model.base_model_name_or_path,
        label="Base model (Hub id or local folder)",
        info="Default: SmolLM2-135M-Instruct, bundled for offline use.",
    )
    gpu = device_kind() == "cuda"
    w["model.quantization"] = gr.Radio(
        ["auto", "none", "8bit", "4bit"],
        value="auto",
        label="Quantization of the base",
        info="auto = 8bit on a CUDA GPU, none elsewhere" + ("" if gpu else " (8bit/4bit run on the CPU too, slower)"),
    )
    w["model.precision"] = gr.Dropdown(
        ["auto", "float32", "bfloat16"],
        value=D.model.precision,
        label="precision",
        info="auto = bfloat16 on a GPU with bf16 or a CPU with AVX512-BF16/AMX where it measures faster, else "
        "float32; LoRA weights stay float32",
    )
    w["model.trust_remote_code"] = gr.Checkbox(False, label="trust_remote_code (runs the model repo's own code)")
    return w


# No `minimum=` on the numbers: Gradio would refuse an out-of-range value with a bare toast
# ("Value 0 is less than minimum value 1.", no field named, other problems unreported);
# RunConfig's validation reports every problem, with its field and a fix, as one list.
def build_lora_widgets() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["lora.r"] = gr.Number(D.lora.r, label="r")
        w["lora.lora_alpha"] = gr.Number(D.lora.lora_alpha, label="lora_alpha")
        w["lora.lora_dropout"] = gr.Number(D.lora.lora_dropout, label="lora_dropout", step=0.01)
    with gr.Row():
        w["lora.target_modules"] = gr.Textbox(
            "", label="target_modules", placeholder="empty = the architecture's default (q_proj,v_proj)"
        )
        w["lora.bias"] = gr.Dropdown(["none", "all", "lora_only"], value=D.lora.bias, label="bias")
    return w


def build_training_widgets() -> dict[str, gr.components.Component]:
    t = D.training
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["training.max_steps"] = gr.Number(t.max_steps, label="max_steps")
        w["training.learning_rate"] = gr.Number(t.learning_rate, label="learning_rate")
        w["training.warmup_steps"] = gr.Number(t.warmup_steps, label="warmup_steps")
        w["training.cap_warmup"] = gr.Checkbox(
            t.cap_warmup, label="cap_warmup (warmup_steps >= max_steps: warm up for a tenth of the run instead)"
        )
    with gr.Row():
        w["training.per_device_train_batch_size"] = gr.Number(
            t.per_device_train_batch_size, label="per_device_train_batch_size"
        )
        w["training.gradient_accumulation_steps"] = gr.Number(
            t.gradient_accumulation_steps, label="gradient_accumulation_steps"
        )
        w["training.max_length"] = gr.Number(t.max_length, label="max_length (tokens per row)")
    with gr.Row():
        w["training.packing"] = gr.Checkbox(t.packing, label="packing (no padding; rows never attend to each other)")
        w["training.merge_accumulation"] = gr.Checkbox(
            t.merge_accumulation, label="merge_accumulation (one forward per step when memory allows)"
        )
        w["training.gradient_checkpointing"] = gr.Checkbox(
            t.gradient_checkpointing, label="gradient_checkpointing (less memory, ~30% slower)"
        )
        w["training.save_steps"] = gr.Number(t.save_steps, label="save_steps")
    with gr.Row():  # held-out evaluation (lora_app/heldout.py); Check says what it will be for the data
        w["training.eval_fraction"] = gr.Number(t.eval_fraction, label="eval_fraction (held out; 0 = off)", step=0.01)
        w["training.eval_max_rows"] = gr.Number(t.eval_max_rows, label="eval_max_rows")
        w["training.eval_steps"] = gr.Number(t.eval_steps, label="eval_steps")
    with gr.Row():  # checkpoints on the Hub (lora_app/checkpoint_push.py): a run that survives a restart
        w["training.hub_checkpoints"] = gr.Checkbox(
            t.hub_checkpoints,
            label="hub_checkpoints: keep checkpoints on the Hub (private repo of yours, every save_steps; "
            "Runs tab: Resume from the Hub)",
        )
        w["training.hub_model_id"] = gr.Textbox(
            "", label="hub_model_id (owner/name)", placeholder="empty = <you>/<base>-lora-<data>-ckpt-<time>"
        )
    return w


def by_name(widgets: Mapping[str, Block]) -> dict[str, Block]:
    """``{"section.field": x}`` keyed by the bare field name (``r``, ``max_steps``): the
    keyword names of the Check and Start API endpoints. Field names are unique across sections."""
    out = {k.split(".", 1)[1]: w for k, w in widgets.items()}
    assert len(out) == len(widgets), "two settings share a field name"
    return out


def by_key(values: dict[str, object]) -> dict[str, object]:
    """The inverse of :func:`by_name` for values: ``{"r": 8}`` -> ``{"lora.r": 8}``."""
    full = {k.split(".", 1)[1]: k for k in _KEYS}
    return {full[name]: v for name, v in values.items() if name in full}


def _num(v):
    # gr.Number gives floats; a whole float becomes an int so "r: 16.0" validates as 16,
    # while 16.5 stays a float and is reported as "must be a whole number".
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


_KEYS = [
    f"{section}.{name}" for section in ("model", "lora", "training") for name in type(getattr(D, section)).model_fields
]


def to_raw(values: dict[str, object], data: dict | None) -> dict:
    """The nested dict :meth:`RunConfig.build` takes, from ``{"section.field": value}`` and the
    data source; nothing is checked here (:func:`lora_app.validate.preflight` reports every
    problem at once: settings, data file and model)."""
    raw: dict[str, dict] = {"data": dict(data or {})}
    for key, v in values.items():
        section, name = key.split(".", 1)
        if name == "target_modules" and (v is None or (isinstance(v, str) and not v.strip())):
            v = None
        raw.setdefault(section, {})[name] = _num(v)
    return raw


def to_config(values: dict[str, object], data: dict | None) -> RunConfig:
    """:func:`to_raw` validated into a RunConfig (no data or model is read: that is the
    preflight's part). Raises ConfigError listing every problem."""
    return RunConfig.build(to_raw(values, data))


def from_config(cfg: RunConfig, keys: list[str]) -> list:
    """Widget values for ``keys`` from a config (for loading a saved YAML into the form)."""
    dump = cfg.model_dump()
    out = []
    for key in keys:
        section, name = key.split(".", 1)
        v = dump[section][name]
        out.append(",".join(v) if name == "target_modules" and v else ("" if v is None else v))
    return out

"""The settings form: one widget per RunConfig field, and the one way to turn it into a config.

Widgets are keyed by ``"section.field"``; :func:`to_config` builds a RunConfig from those
values through :meth:`RunConfig.build`, exactly as the CLI and the tests do, so the UI
reports the same validation messages.
"""

from __future__ import annotations

from collections.abc import Mapping

import gradio as gr
from gradio.blocks import Block
from pydantic import ValidationError

from ..config import RunConfig, TrainingSettings, field_help
from ..models import device_kind
from ..presets import DEFAULT as DEFAULT_PRESET
from ..presets import PRESETS
from ..variants import INIT_LORA_WEIGHTS

D = RunConfig()  # defaults


def _help(key: str) -> str:
    # The help under each widget is its config field's description (lora_app/config.py): one text
    # for the form, the CLI (`train --settings`) and the docs.
    return field_help(key.split(".", 1)[1])


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
        info=_help("model.base_model_name_or_path"),
    )
    w["model.quantization"] = gr.Radio(
        ["auto", "none", "8bit", "4bit"],
        value="auto",
        label="Quantization of the base",
        info=_help("model.quantization"),
    )
    w["model.precision"] = gr.Dropdown(
        ["auto", "float32", "bfloat16"],
        value=D.model.precision,
        label="precision",
        info=_help("model.precision"),
    )
    w["model.trust_remote_code"] = gr.Checkbox(
        False, label="trust_remote_code (runs the model repo's own code)", info=_help("model.trust_remote_code")
    )
    return w


# No `minimum=` on the numbers: Gradio would refuse an out-of-range value with a bare toast
# ("Value 0 is less than minimum value 1.", no field named, other problems unreported);
# RunConfig's validation reports every problem, with its field and a fix, as one list.
def build_lora_widgets() -> dict[str, gr.components.Component]:
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["lora.r"] = gr.Number(D.lora.r, label="r", info=_help("lora.r"))
        w["lora.lora_alpha"] = gr.Number(D.lora.lora_alpha, label="lora_alpha", info=_help("lora.lora_alpha"))
        w["lora.lora_dropout"] = gr.Number(
            D.lora.lora_dropout, label="lora_dropout", step=0.01, info=_help("lora.lora_dropout")
        )
    with gr.Row():
        w["lora.target_modules"] = gr.Textbox(
            ",".join(D.lora.target_modules or []),
            label="target_modules",
            placeholder="empty = the architecture's default (q_proj,v_proj)",
            info=_help("lora.target_modules"),
        )
        w["lora.bias"] = gr.Dropdown(
            ["none", "all", "lora_only"], value=D.lora.bias, label="bias", info=_help("lora.bias")
        )
    with gr.Row():  # PEFT's variants (lora_app/variants.py checks them against the model at Check)
        w["lora.use_rslora"] = gr.Checkbox(D.lora.use_rslora, label="use_rslora", info=_help("lora.use_rslora"))
        w["lora.use_dora"] = gr.Checkbox(D.lora.use_dora, label="use_dora", info=_help("lora.use_dora"))
        w["lora.init_lora_weights"] = gr.Dropdown(
            list(INIT_LORA_WEIGHTS),
            value=D.lora.init_lora_weights,
            allow_custom_value=True,  # pissa_niter_N (fast SVD)
            label="init_lora_weights",
            info=_help("lora.init_lora_weights"),
        )
        w["lora.modules_to_save"] = gr.Textbox(
            "",
            label="modules_to_save",
            placeholder="empty = none; e.g. lm_head",
            info=_help("lora.modules_to_save"),
        )
    gr.Markdown(
        "Per-module `rank_pattern` / `alpha_pattern` are set in a YAML config only (`lora: {rank_pattern: "
        "{q_proj: 8}}`, then `python -m lora_app train --config run.yaml`); the form does not carry them."
    )
    return w


def build_preset_widget() -> gr.Dropdown:
    """The preset dropdown (lora_app/presets.py); :func:`wire_preset` makes it fill the form."""
    return gr.Dropdown(
        list(PRESETS),
        value=DEFAULT_PRESET,
        label="preset",
        info="fills target_modules, r, lora_alpha, lora_dropout, use_rslora, learning_rate, warm-up, max_steps and "
        f"the batch; each stays editable. {DEFAULT_PRESET!r} (the default) passed the reference recipe's held-out "
        "perplexity in 0.10-0.16 of its training time over 5 seeds (bench/RESULTS.md)",
        elem_id="preset",
    )


def wire_preset(preset: gr.Dropdown, widgets: Mapping[str, gr.components.Component]) -> None:
    """On a change of ``preset``, set the form's widgets to that preset's values."""
    keys = sorted({f"{sec}.{name}" for p in PRESETS.values() for sec, vals in p.items() for name in vals})

    def fill(name: str) -> list:
        if name not in PRESETS:
            return [gr.update() for _ in keys]
        # shown as a loaded YAML shows them (from_config): a list as "a,b", None as an empty box
        named = {f"{sec}.{k}" for sec, vals in PRESETS[name].items() for k in vals}
        shown = dict(zip(keys, from_config(RunConfig.build({"preset": name}), keys), strict=True))
        return [shown[k] if k in named else gr.update() for k in keys]

    preset.change(fill, inputs=preset, outputs=[widgets[k] for k in keys], queue=False)


def build_training_widgets() -> dict[str, gr.components.Component]:
    t = D.training
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["training.max_steps"] = gr.Number(t.max_steps, label="max_steps", info=_help("training.max_steps"))
        w["training.learning_rate"] = gr.Number(
            # step: the arrow keys and the wheel move it by 1e-5 (Gradio's default step 1 made 3e-4 into 1)
            t.learning_rate,
            label="learning_rate",
            step=1e-5,
            info=_help("training.learning_rate"),
        )
        w["training.warmup_steps"] = gr.Number(
            t.warmup_steps, label="warmup_steps", info=_help("training.warmup_steps")
        )
        # A text box, not a Number: an empty Number is None, which makes the /check and /train API
        # require the argument (gradio_client), and scripts that never set it would break.
        w["training.warmup_ratio"] = gr.Textbox(
            "" if t.warmup_ratio is None else f"{t.warmup_ratio:g}",
            label="warmup_ratio",
            placeholder="empty = use warmup_steps",
            info=_help("training.warmup_ratio"),
        )
        w["training.cap_warmup"] = gr.Checkbox(
            t.cap_warmup,
            label="cap_warmup",
            info=_help("training.cap_warmup"),
        )
    _add_warmup_line(w)
    with gr.Row():
        w["training.per_device_train_batch_size"] = gr.Number(
            t.per_device_train_batch_size,
            label="per_device_train_batch_size",
            info=_help("training.per_device_train_batch_size"),
        )
        w["training.gradient_accumulation_steps"] = gr.Number(
            t.gradient_accumulation_steps,
            label="gradient_accumulation_steps",
            info=_help("training.gradient_accumulation_steps"),
        )
        w["training.max_length"] = gr.Number(
            t.max_length, label="max_length (tokens per row)", info=_help("training.max_length")
        )
    with gr.Row():
        w["training.packing"] = gr.Checkbox(t.packing, label="packing", info=_help("training.packing"))
        w["training.merge_accumulation"] = gr.Checkbox(
            t.merge_accumulation,
            label="merge_accumulation",
            info=_help("training.merge_accumulation"),
        )
        w["training.gradient_checkpointing"] = gr.Checkbox(
            t.gradient_checkpointing,
            label="gradient_checkpointing",
            info=_help("training.gradient_checkpointing"),
        )
        w["training.save_steps"] = gr.Number(t.save_steps, label="save_steps", info=_help("training.save_steps"))
    with gr.Row():  # held-out evaluation (lora_app/heldout.py); Check says what it will be for the data
        w["training.eval_fraction"] = gr.Number(
            t.eval_fraction, label="eval_fraction", step=0.01, info=_help("training.eval_fraction")
        )
        w["training.eval_max_rows"] = gr.Number(
            t.eval_max_rows, label="eval_max_rows", info=_help("training.eval_max_rows")
        )
        w["training.eval_steps"] = gr.Number(t.eval_steps, label="eval_steps", info=_help("training.eval_steps"))
    with gr.Row():  # checkpoints on the Hub (lora_app/checkpoint_push.py): a run that survives a restart
        w["training.hub_checkpoints"] = gr.Checkbox(
            t.hub_checkpoints,
            label="hub_checkpoints: keep checkpoints on the Hub (Runs tab: Resume from the Hub)",
            info=_help("training.hub_checkpoints"),
        )
        w["training.hub_model_id"] = gr.Textbox(
            "",
            label="hub_model_id (owner/name)",
            placeholder="empty = <you>/<base>-lora-<data>-ckpt-<time>",
            info=_help("training.hub_model_id"),
        )
    return w


def warmup_line(
    max_steps: object,
    warmup_steps: object,
    warmup_ratio: object,
    cap_warmup: object = False,
    learning_rate: object = None,
) -> str:
    """The line under the warm-up settings: the warm-up that will run, in optimizer steps, as
    :meth:`TrainingSettings.warmup` computes it (warmup_ratio of max_steps rounded up when set, so it
    follows max_steps; else warmup_steps, capped to a tenth of the run by ``cap_warmup``), and
    :func:`lora_app.validate.warmup_note`'s warning when it is not shorter than the run (a "100 of 30
    steps" line said nothing until Check: the newcomer)."""
    from ..validate import warmup_note

    ratio = (
        None if warmup_ratio is None or (isinstance(warmup_ratio, str) and not warmup_ratio.strip()) else warmup_ratio
    )
    try:
        raw = dict(
            max_steps=_num(max_steps), warmup_steps=_num(warmup_steps), warmup_ratio=ratio, cap_warmup=cap_warmup
        )
        try:  # a bad learning_rate is Check's to name, not the warm-up's (it blamed max_steps: the breaker)
            t = TrainingSettings.model_validate({**raw, "learning_rate": learning_rate})
        except ValidationError:
            t = TrainingSettings.model_validate(raw)
    except ValidationError:
        return "Warm-up: set max_steps and warmup_steps (or warmup_ratio) to see it; Check names what is wrong."
    how = (
        f"warmup_ratio {t.warmup_ratio:g} x max_steps, rounded up: it follows max_steps"
        if t.warmup_ratio is not None
        else f"warmup_steps {_num(warmup_steps)}, capped by cap_warmup to a tenth of the run"
        if cap_warmup is True and _num(warmup_steps) != t.warmup_steps
        else "warmup_steps"
    )
    note = warmup_note(t)
    return f"Warm-up: **{t.warmup()} of {t.max_steps} steps** ({how})" + (
        f"\n\n**{note.split(': ', 1)[0]}:** {note.split(': ', 1)[1]}" if note else ""
    )


def _steps_after_ratio(ratio: object, steps: object) -> object:
    """warmup_steps once a warmup_ratio is typed: 0 (a ratio typed is the warm-up meant), or as it
    was when the ratio was emptied."""
    return steps if ratio is None or (isinstance(ratio, str) and not ratio.strip()) else 0


def _add_warmup_line(w: Mapping[str, gr.components.Component]) -> gr.Markdown:
    """The :func:`warmup_line` Markdown, kept current (private events). The warm-up typed last is the
    one meant: typing a warmup_steps empties warmup_ratio, typing a warmup_ratio sets warmup_steps to 0
    (which would otherwise win over it), as a config that sets one of them alone."""
    ins = [w[f"training.{k}"] for k in ("max_steps", "warmup_steps", "warmup_ratio", "cap_warmup", "learning_rate")]
    line = gr.Markdown(warmup_line(*[getattr(x, "value", None) for x in ins]), elem_id="warmup-line")
    for x in ins:
        x.change(warmup_line, ins, line, show_progress="hidden", queue=False)  # type: ignore[attr-defined]
    w["training.warmup_steps"].input(  # type: ignore[attr-defined]
        lambda _steps: "", w["training.warmup_steps"], w["training.warmup_ratio"], queue=False
    )
    w["training.warmup_ratio"].input(  # type: ignore[attr-defined]
        _steps_after_ratio,
        [w["training.warmup_ratio"], w["training.warmup_steps"]],
        w["training.warmup_steps"],
        queue=False,
    )
    return line


def gpu_count() -> int:
    """CUDA GPUs on this machine (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def build_distributed_widgets() -> dict[str, gr.components.Component]:
    """The ``distributed`` settings, shown only on a machine with more than one GPU (elsewhere the
    defaults hold: one process; YAML and the CLI still take them)."""
    n = gpu_count()
    if n <= 1:
        return {}
    d = D.distributed
    w: dict[str, gr.components.Component] = {}
    with gr.Row():
        w["distributed.num_processes"] = gr.Number(
            d.num_processes, label=f"num_processes (this machine has {n} GPUs)", info=_help("distributed.num_processes")
        )
        w["distributed.strategy"] = gr.Radio(
            ["ddp", "fsdp"], value=d.strategy, label="strategy", info=_help("distributed.strategy")
        )
        w["distributed.mixed_precision"] = gr.Dropdown(
            ["auto", "no", "bf16", "fp16"],
            value=d.mixed_precision,
            label="mixed_precision",
            info=_help("distributed.mixed_precision"),
        )
    return w


def global_batch_line(batch: object, accumulation: object, processes: object = 1) -> str:
    """The line under the batch settings: rows per optimizer step, as the Trainer counts them
    (per_device_train_batch_size x gradient_accumulation_steps x processes)."""
    vals = [_num(v) for v in (batch, accumulation, processes)]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in vals):
        return "Global batch: set whole numbers >= 1 for the batch size and accumulation."
    b, a, p = vals
    return (
        f"Global batch: {b} x {a} x {p} process{'es' if p != 1 else ''} = **{b * a * p} rows per optimizer step** "
        "(per_device_train_batch_size x gradient_accumulation_steps x processes)"
    )


def add_global_batch_line(widgets: Mapping[str, Block]) -> gr.Markdown:
    """The :func:`global_batch_line` Markdown, kept current as its settings change (a private event)."""
    keys = ["training.per_device_train_batch_size", "training.gradient_accumulation_steps"]
    keys += [k for k in ["distributed.num_processes"] if k in widgets]
    ins = [widgets[k] for k in keys]
    line = gr.Markdown(global_batch_line(*[getattr(w, "value", None) for w in ins]), elem_id="global-batch")
    for w in ins:
        w.change(global_batch_line, ins, line, show_progress="hidden", queue=False)  # type: ignore[attr-defined]
    return line


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
    f"{section}.{name}"
    for section in ("model", "lora", "training", "distributed")
    for name in type(getattr(D, section)).model_fields
]


_EMPTY_IS_NONE = ("target_modules", "modules_to_save", "warmup_ratio", "hub_model_id")


def to_raw(values: dict[str, object], data: dict | None) -> dict:
    """The nested dict :meth:`RunConfig.build` takes, from ``{"section.field": value}`` and the
    data source; nothing is checked here (:func:`lora_app.validate.preflight` reports every
    problem at once: settings, data file and model)."""
    raw: dict[str, dict] = {"data": dict(data or {})}
    for key, v in values.items():
        section, name = key.split(".", 1)
        if name in _EMPTY_IS_NONE and (v is None or (isinstance(v, str) and not v.strip())):
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
        listed = name in ("target_modules", "modules_to_save") and v
        out.append(",".join(v) if listed else ("" if v is None else v))
    return out

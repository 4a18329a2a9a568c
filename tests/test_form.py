"""lora_app.ui.form: the settings form to a RunConfig."""

import pytest

from lora_app.config import ConfigError


@pytest.mark.parametrize("value", [1.5, 16.5])
def test_ui_form_refuses_a_fractional_r_instead_of_rounding(value):
    from lora_app.ui import form

    with pytest.raises(ConfigError, match=rf"lora\.r: must be a whole number \(got {value}\)"):
        form.to_config({"lora.r": value}, {"path": "x.jsonl"})
    assert form.to_config({"lora.r": 16.0}, {"path": "x.jsonl"}).lora.r == 16


def test_global_batch_line_counts_rows_per_optimizer_step():
    from lora_app.ui import form

    assert form.global_batch_line(4, 4) == (
        "Global batch: 4 x 4 x 1 process = **16 rows per optimizer step** "
        "(per_device_train_batch_size x gradient_accumulation_steps x processes)"
    )
    assert "2 x 4 x 8 processes = **64 rows per optimizer step**" in form.global_batch_line(2.0, 4, 8)
    assert form.global_batch_line(0, 4).startswith("Global batch: set whole numbers")
    assert form.global_batch_line(None, 4).startswith("Global batch: set whole numbers")


def test_distributed_settings_reach_the_config_and_are_hidden_without_several_gpus():
    import gradio as gr

    from lora_app.ui import form

    cfg = form.to_config(
        {"distributed.num_processes": 4.0, "distributed.strategy": "fsdp", "lora.r": 8}, {"path": "x.jsonl"}
    )
    assert (cfg.distributed.num_processes, cfg.distributed.strategy, cfg.lora.r) == (4, "fsdp", 8)
    assert form.by_key({"num_processes": 2, "strategy": "ddp"}) == {
        "distributed.num_processes": 2,
        "distributed.strategy": "ddp",
    }
    with gr.Blocks():
        widgets = form.build_training_widgets()
        shown = form.build_distributed_widgets()  # only from 2 GPUs on
        assert sorted(shown) == (
            []
            if form.gpu_count() <= 1
            else [f"distributed.{k}" for k in ("mixed_precision", "num_processes", "strategy")]
        )
        line = form.add_global_batch_line(widgets)
    assert "4 x 4 x 1 process = **16 rows" in line.value


def test_every_form_setting_shows_its_config_fields_help():
    """One text per setting: the widget's help under it is the field's description in config.py."""
    import gradio as gr

    from lora_app.config import RunConfig
    from lora_app.ui import form

    with gr.Blocks():
        widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
    assert len(widgets) >= 20
    for key, w in widgets.items():
        section, name = key.split(".", 1)
        desc = type(getattr(RunConfig(), section)).model_fields[name].description
        assert desc, f"{key} has no description in config.py"
        assert w.info == desc, key


def test_the_form_starts_on_the_fast_default_and_its_starting_values_build_the_default_config():
    """The form's starting values are RunConfig's defaults, i.e. the "fast default" preset: Start on an
    untouched form trains exactly ``RunConfig()`` (with the chosen data), and the preset dropdown says so."""
    import gradio as gr

    from lora_app.config import RunConfig
    from lora_app.presets import FAST
    from lora_app.ui import form

    with gr.Blocks():
        preset = form.build_preset_widget()
        widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
    assert preset.value == FAST
    start = {k: w.value for k, w in widgets.items()}
    assert {k: start[k] for k in ("lora.r", "lora.lora_alpha", "lora.use_rslora")} == {
        "lora.r": 16,
        "lora.lora_alpha": 32,
        "lora.use_rslora": True,
    }
    # the box shows the default's modules (it was a hard-coded "" that built another config)
    assert (start["lora.target_modules"], start["lora.lora_dropout"]) == ("all-linear", 0.0)
    assert [start[f"training.{k}"] for k in ("learning_rate", "warmup_steps", "warmup_ratio", "max_steps")] == [
        3e-4,
        0,
        "0.1",
        30,
    ]
    data = {"path": "x.jsonl"}
    assert (
        form.to_config(start, data)
        == RunConfig.build({"data": data})
        == RunConfig.build({"preset": FAST, "data": data})
    )


def test_the_warmup_line_follows_max_steps_and_says_which_setting_sets_it():
    from lora_app.ui import form

    ratio = "warmup_ratio 0.1 x max_steps, rounded up: it follows max_steps"
    assert form.warmup_line(50, 0, "0.1") == f"Warm-up: **5 of 50 steps** ({ratio})"
    assert form.warmup_line(30, 0, "0.1") == f"Warm-up: **3 of 30 steps** ({ratio})"  # the default
    assert form.warmup_line(120.0, 0.0, "0.1") == f"Warm-up: **12 of 120 steps** ({ratio})"  # gr.Number floats
    assert form.warmup_line(120, 10, "") == "Warm-up: **10 of 120 steps** (warmup_steps)"
    assert form.warmup_line(120, 10, None) == "Warm-up: **10 of 120 steps** (warmup_steps)"
    assert form.warmup_line(0, 0, "0.1").startswith("Warm-up: set max_steps")
    assert form.warmup_line(50, 0, "abc").startswith("Warm-up: set max_steps")


def test_a_warmup_not_shorter_than_the_run_is_flagged_on_its_line_before_check():
    """"Warm-up: 100 of 30 steps" stood there without a word until Check (the newcomer): the line now
    carries Check's warning, with the form's learning rate, and says when cap_warmup shortens it."""
    from lora_app.ui import form

    assert form.warmup_line(30, 100, "", False, 2e-4) == (
        "Warm-up: **100 of 30 steps** (warmup_steps)\n\n**Warning:** training.warmup_steps (100) is not shorter "
        "than the run (max_steps 30): the learning rate only rises, from 0 to 29% of learning_rate (5.8e-05 instead "
        "of 0.0002) at the last step, and never decays. Fix: set warmup_steps below max_steps (e.g. 3, a tenth of "
        "the run), or set training.cap_warmup: true to cap it there."
    )
    assert form.warmup_line(30.0, 30.0, None, True, 2e-4) == (
        "Warm-up: **3 of 30 steps** (warmup_steps 30, capped by cap_warmup to a tenth of the run)"
    )
    assert form.warmup_line(30, 29, None, False, 2e-4) == "Warm-up: **29 of 30 steps** (warmup_steps)"


def test_typing_warmup_steps_empties_the_ratio_and_the_line_follows(tmp_path):
    """The events behind the form: typing a warmup_steps (``input``, the user's edit, not a preset's
    fill) empties warmup_ratio; typing a ratio sets warmup_steps to 0, which would otherwise win;
    every warm-up setting updates the line."""
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app, form
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs")
    try:
        demo = build_app(AppContext(jm, None, frozenset()))
        line = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "warmup-line")
        assert (
            line.value == "Warm-up: **3 of 30 steps** (warmup_ratio 0.1 x max_steps, rounded up: it follows max_steps)"
        )
        fns = [f for f in demo.fns.values() if line in f.outputs]
        assert sorted(t[1] for f in fns for t in f.targets) == ["change"] * 5
        assert {o.label for o in fns[0].inputs} == {
            "max_steps",
            "warmup_steps",
            "warmup_ratio",
            "cap_warmup",
            "learning_rate",
        }
        (clear,) = [
            f
            for f in demo.fns.values()
            if [t[1] for t in f.targets] == ["input"] and f.inputs[0].label == "warmup_steps"
        ]
        assert [o.label for o in clear.outputs] == ["warmup_ratio"] and clear.fn(10) == ""
        assert clear.api_visibility == "private"
        # typing a ratio sets warmup_steps to 0, which would otherwise win (the reference recipe's 100)
        (zero,) = [
            f
            for f in demo.fns.values()
            if [t[1] for t in f.targets] == ["input"] and f.inputs[0].label == "warmup_ratio"
        ]
        assert [o.label for o in zero.outputs] == ["warmup_steps"] and zero.api_visibility == "private"
        assert (zero.fn("0.05", 100), zero.fn("", 100), zero.fn(None, 100)) == (0, 100, 100)
        assert form.warmup_line(200, 0, "0.05") == (
            "Warm-up: **10 of 200 steps** (warmup_ratio 0.05 x max_steps, rounded up: it follows max_steps)"
        )
        assert form.warmup_line(200, 100, "0.05") == "Warm-up: **100 of 200 steps** (warmup_steps)"
    finally:
        jm.close()

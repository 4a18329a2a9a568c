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

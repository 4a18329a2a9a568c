"""lora_app.ui.form: the settings form to a RunConfig."""

import pytest

from lora_app.config import ConfigError


@pytest.mark.parametrize("value", [1.5, 16.5])
def test_ui_form_refuses_a_fractional_r_instead_of_rounding(value):
    from lora_app.ui import form

    with pytest.raises(ConfigError, match=rf"lora\.r: must be a whole number \(got {value}\)"):
        form.to_config({"lora.r": value}, {"path": "x.jsonl"})
    assert form.to_config({"lora.r": 16.0}, {"path": "x.jsonl"}).lora.r == 16


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

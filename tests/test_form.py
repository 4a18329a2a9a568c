"""lora_app.ui.form: the settings form to a RunConfig."""

import pytest

from lora_app.config import ConfigError


@pytest.mark.parametrize("value", [1.5, 16.5])
def test_ui_form_refuses_a_fractional_r_instead_of_rounding(value):
    from lora_app.ui import form

    with pytest.raises(ConfigError, match=rf"lora\.r: must be a whole number \(got {value}\)"):
        form.to_config({"lora.r": value}, {"path": "x.jsonl"})
    assert form.to_config({"lora.r": 16.0}, {"path": "x.jsonl"}).lora.r == 16

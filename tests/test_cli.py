"""lora_app.__main__: the command line reports problems as sentences, not tracebacks."""


def test_cli_generate_reports_problems_without_a_traceback(capsys):
    from lora_app.__main__ import main

    assert main(["generate", "--adapter", "/no/such/adapter"]) == 2
    err = capsys.readouterr().err
    assert "Cannot generate:" in err and "adapter: '/no/such/adapter'" in err and "Traceback" not in err


def test_cli_settings_lists_every_field_with_its_default_and_help(capsys):
    from lora_app.__main__ import main
    from lora_app.config import LoraSettings

    assert main(["train", "--settings"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"lora.r = 16: {LoraSettings.model_fields['r'].description}" in out
    assert "training.learning_rate = 0.0002: peak learning rate of AdamW, reached after the warm-up" in out
    from lora_app.config import RunConfig

    assert len(out) == sum(
        len(type(getattr(RunConfig(), s)).model_fields) for s in ("data", "model", "lora", "training")
    )
    assert {line.split(" = ")[0] for line in out} >= {"data.path", "model.precision", "lora.bias", "training.seed"}

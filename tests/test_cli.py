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
    assert "training.learning_rate = 0.0003: peak learning rate of AdamW, reached after the warm-up" in out
    assert "training.max_steps = 30: optimizer steps to train (each sees batch x accumulation rows)" in out
    assert "training.warmup_ratio = 0.1: warm up for this share of max_steps" in "\n".join(out)
    assert f"lora.use_rslora = True: {LoraSettings.model_fields['use_rslora'].description}" in out
    from lora_app.config import RunConfig

    assert len(out) == sum(
        len(type(getattr(RunConfig(), s)).model_fields) for s in ("data", "model", "lora", "training", "distributed")
    )
    assert {line.split(" = ")[0] for line in out} >= {
        "data.path",
        "model.precision",
        "lora.bias",
        "training.seed",
        "distributed.strategy",
    }


def test_cli_repeated_set_options_all_apply(tmp_path, capsys):
    """``--set a=1 --set b=2``: argparse's default "store" kept only the last --set, so the first
    override was silently dropped (found by the breaker). Both problems are reported now."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.__main__ import main

    y = tmp_path / "run.yaml"
    y.write_text(f"data:\n  path: '{EXAMPLE_QUOTES}'\n", encoding="utf-8")
    argv = ["train", "--config", str(y), "--runs", str(tmp_path / "runs")]
    assert main(argv + ["--set", "training.max_steps=0", "--set", "lora.r=0"]) == 2
    err = capsys.readouterr().err
    assert "training.max_steps" in err and "lora.r" in err, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing queued


def test_cli_set_warmup_steps_on_a_saved_config_means_those_steps(tmp_path):
    """A run's config.yaml carries both warmup_steps (0) and the default warmup_ratio (0.1), so
    ``--config config.yaml --set training.warmup_steps=20`` warmed up for 5 of 50 steps, the
    override silently lost (found by the breaker). Given alone, it means those steps, as in a file."""
    from lora_app.__main__ import _with_overrides
    from lora_app.config import RunConfig, parse_raw

    saved = tmp_path / "config.yaml"
    RunConfig().save(saved)
    raw = _with_overrides(parse_raw(saved.read_text(encoding="utf-8")), ["training.warmup_steps=20"])
    t = RunConfig.build(raw).training
    assert (t.warmup_steps, t.warmup_ratio, t.warmup()) == (20, None, 20)
    both = _with_overrides(
        parse_raw(saved.read_text(encoding="utf-8")), ["training.warmup_steps=20", "training.warmup_ratio=0.2"]
    )
    assert RunConfig.build(both).training.warmup() == 20  # both given: the steps win, as in transformers
    ratio = _with_overrides(parse_raw(saved.read_text(encoding="utf-8")), ["training.warmup_ratio=0.3"])
    assert RunConfig.build(ratio).training.warmup() == 9
    preset = _with_overrides({"preset": "fast default"}, ["training.warmup_steps=7"])
    assert RunConfig.build(preset).training.warmup() == 7


def test_cli_config_of_a_run_saved_before_rslora_trains_the_same_adapter_scale(tmp_path):
    """A config.yaml dumped before use_rslora existed trained with lora_alpha / r; RunConfig.load
    knew that but ``train --config`` read the file with today's default (rsLoRA on), so the scale
    grew sqrt(r)-fold: 2.0 -> 8.0 at r=16 (found by the breaker). A hand-written partial file still
    gets today's defaults."""
    import yaml

    from lora_app.__main__ import _load_raw
    from lora_app.config import RunConfig

    old = RunConfig().model_dump(mode="json")
    del old["lora"]["use_rslora"]
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(old), encoding="utf-8")
    cfg = RunConfig.build(_load_raw(str(saved)))
    assert (cfg.lora.use_rslora, cfg.lora.r, cfg.lora.lora_alpha) == (False, 16, 32.0)
    assert cfg == RunConfig.load(saved)
    partial = tmp_path / "mine.yaml"
    partial.write_text("lora:\n  r: 8\n", encoding="utf-8")
    assert RunConfig.build(_load_raw(str(partial))).lora.use_rslora is True


def test_cli_set_values_yaml_cannot_read_and_bad_generate_settings_are_messages(tmp_path, capsys):
    """``--set data.path=*.jsonl`` (a file name YAML reads as an alias) and ``training.max_steps=[``
    ended in a yaml ScannerError traceback; ``generate --max-new-tokens 0`` in transformers'
    ValueError (found by the breaker). The first is taken as written (so the data check names the
    missing file), the second is a problem of max_steps, the third a sentence; all before a model
    loads."""
    from lora_app.__main__ import _overrides, main

    assert _overrides(["data.path=*.jsonl", "data.source_name=@x", "training.max_steps=["]) == {
        "data": {"path": "*.jsonl", "source_name": "@x"},
        "training": {"max_steps": "["},
    }
    y = tmp_path / "run.yaml"
    y.write_text("training:\n  max_steps: 3\n", encoding="utf-8")
    argv = ["train", "--config", str(y), "--runs", str(tmp_path / "runs"), "--set", f"data.path={tmp_path}/*.jsonl"]
    assert main(argv + ["--set", "training.max_steps=["]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "training.max_steps: must be a whole number (got '[')" in err, err
    assert f"{tmp_path}/*.jsonl" in err, err
    assert main(["generate", "--base", "/no/such/model", "--max-new-tokens", "0", "--temperature", "nan"]) == 2
    err = capsys.readouterr().err
    assert "max_new_tokens: 0 is not a whole number >= 1" in err and "temperature: nan is not a number >= 0" in err
    assert "Traceback" not in err and "/no/such/model" not in err  # settings first, before any model is looked up


def test_cli_data_refuses_column_names_equal_after_stripping_without_a_traceback(tmp_path, capsys):
    from lora_app.__main__ import main

    # Was: AttributeError: 'DataFrame' object has no attribute 'tolist' (a traceback).
    p = tmp_path / "dup.jsonl"
    p.write_text('{"text":"a b c","text ":"d e f"}\n', encoding="utf-8")
    assert main(["data", str(p)]) == 2
    assert capsys.readouterr().err == (
        "Cannot read the data:\n  - data.path: 'dup.jsonl' names the column 'text' (written 'text' and 'text ') "
        "more than once. Fix: give every column its own name (spaces at the ends of a name do not count).\n"
    )


def test_cli_data_counts_and_layouts_are_checked_and_push_names_a_missing_folder(capsys):
    """`data --layout bogus` said only "1 validation error for DataConfig"; `--show -3` showed the last
    3 rows and 0 nothing; `push /nonexist` complained about the login (found by the breaker)."""
    import pytest

    from lora_app.__main__ import main

    for args, want in (
        (
            ["--layout", "bogus"],
            "argument --layout: invalid choice: 'bogus' (choose from 'auto', 'text', 'prompt_completion', "
            "'instruction', 'conversation')",
        ),
        (["--show", "-3"], "argument --show: -3 is below 1: give a count of at least 1"),
        (["--show", "0"], "argument --show: 0 is below 1: give a count of at least 1"),
        (["--max-length", "x"], "argument --max-length: 'x' is not a whole number"),
    ):
        with pytest.raises(SystemExit) as stop:
            main(["data", "examples/quotes.jsonl", *args])
        assert stop.value.code == 2
        assert capsys.readouterr().err.strip().endswith(want), args
    assert main(["push", "/no/such/run"]) == 2
    assert capsys.readouterr().err == (
        "The push did not happen: '/no/such/run' is not a folder. Fix: give a run or adapter folder.\n"
    )

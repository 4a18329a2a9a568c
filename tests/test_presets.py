"""Presets (issue 14, section 3): "fast default" is the app's default everywhere (RunConfig, YAML, the
CLI, the form), read from lora_app/presets.py; the reference recipe stays reachable exactly, by YAML,
the CLI and the form; a preset's values sit under the ones given; a bad name is refused naming the
field and the fix."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from lora_app.config import ConfigError, LoraSettings, RunConfig, TrainingSettings
from lora_app.presets import DEFAULT, FAST, PRESETS, REFERENCE

REFERENCE_VALUES = dict(
    learning_rate=2e-4,
    warmup_steps=100,
    warmup_ratio=None,
    max_steps=200,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
)
FAST_VALUES = dict(
    learning_rate=3e-4,
    warmup_steps=0,
    warmup_ratio=0.1,
    max_steps=30,
    per_device_train_batch_size=4,
    gradient_accumulation_steps=4,
)


def _training(cfg: RunConfig) -> dict:
    return {k: getattr(cfg.training, k) for k in REFERENCE_VALUES}


def _lora(cfg: RunConfig) -> tuple:
    lo = cfg.lora
    return (lo.r, lo.lora_alpha, lo.lora_dropout, lo.target_modules, lo.bias, lo.use_rslora, lo.use_dora)


def test_the_reference_recipe_is_exactly_the_peft_example():
    cfg = RunConfig.from_yaml("preset: reference recipe\n")
    assert _training(cfg) == REFERENCE_VALUES and cfg.training.warmup() == 100
    # target_modules None: q_proj,v_proj where the model has them (models.default_target_modules)
    assert _lora(cfg) == (16, 32, 0.05, None, "none", False, False)
    assert cfg != RunConfig()  # no longer the app's default


def test_the_app_defaults_are_the_fast_preset_field_by_field():
    assert DEFAULT == FAST
    # every setting a preset names: the field's own default is the fast preset's value (read from it)
    for section, model in (("lora", LoraSettings), ("training", TrainingSettings)):
        named = {k for p in PRESETS.values() for k in p.get(section, {})}
        assert named, section
        for k in named:
            assert model.model_fields[k].default == PRESETS[FAST][section][k], f"{section}.{k}"
    cfg = RunConfig()
    assert _training(cfg) == FAST_VALUES and cfg.training.warmup() == 3  # ceil(30 * 0.1)
    assert _lora(cfg) == (16, 32, 0.0, ["all-linear"], "none", True, False)
    # and the same from a YAML without `preset:`, an empty one, and one naming the fast preset
    assert RunConfig.from_yaml("") == RunConfig.from_yaml("training: {seed: 42}\n") == cfg
    assert RunConfig.from_yaml("preset: fast default\n") == cfg


def test_warmup_steps_given_alone_means_those_steps():
    """The default warm-up is a ratio; a config that sets warmup_steps alone gets those steps, not a
    silent tenth of the run, with or without a preset; both given: warmup_steps above 0 wins (as in
    transformers) and the ratio is emptied, so config.yaml records the warm-up that runs."""
    assert RunConfig.build({"training": {"warmup_steps": 10}}).training.warmup() == 10
    assert RunConfig.build({"training": {"warmup_steps": 0}}).training.warmup() == 0
    fast = RunConfig.build({"preset": FAST, "training": {"warmup_steps": 10, "max_steps": 80}}).training
    assert (fast.warmup_ratio, fast.warmup(), fast.learning_rate) == (None, 10, 3e-4)
    both = RunConfig.build({"training": {"warmup_steps": 3, "warmup_ratio": 0.2}}).training
    assert (both.warmup_steps, both.warmup_ratio, both.warmup()) == (3, None, 3)
    zero_and_ratio = RunConfig.build({"training": {"warmup_steps": 0, "warmup_ratio": 0.2}}).training
    assert zero_and_ratio.warmup() == 6  # ceil(30 * 0.2): steps 0 leave the ratio
    from lora_app.validate import warmup_note

    assert warmup_note(both) is None and warmup_note(RunConfig().training) is None
    assert RunConfig.build({"training": {"max_steps": 200}}).training.warmup() == 20  # follows max_steps
    ref = RunConfig.build({"preset": REFERENCE, "training": {"warmup_ratio": 0.05}}).training
    assert (ref.warmup_steps, ref.warmup()) == (0, 10)  # the ratio given wins over the preset's steps
    ref = RunConfig.build({"preset": REFERENCE, "training": {"warmup_ratio": None}}).training
    assert ref.warmup() == 100  # an empty ratio given alone leaves the preset's steps
    # cap_warmup reads the defaults from the fields, not numbers of its own
    capped = RunConfig.build({"training": {"cap_warmup": True, "warmup_steps": 80}}).training
    assert (capped.warmup_steps, capped.warmup()) == (3, 3)  # max_steps 30 // 10


def test_warmup_steps_win_over_the_forms_default_ratio_in_the_api_the_cli_and_a_yaml(tmp_path):
    """The bug: a script's /train(warmup_steps=10) also sends the form's default warmup_ratio "0.1"
    (gradio_client fills in every parameter), and the ratio won: 4 of 40 steps instead of 10. The
    API, a YAML with both and the CLI's --set now give the same 10 steps, and a run saved when the
    ratio won keeps its ratio."""
    import yaml
    from gradio_client import Client
    from test_identity import TINY, _serve, _stop

    from lora_app.__main__ import _with_overrides

    demo, ctx, url = _serve(tmp_path, max_running=0)  # queued, never trained
    try:
        app = Client(url, verbose=False)
        app.predict(api_name="/use_example")
        kw = {k: v for k, v in TINY.items() if k != "warmup_steps"}
        check_md, *_ = app.predict(warmup_steps=10, **{**kw, "max_steps": 40}, api_name="/check")
        assert "warmup_steps (10) is not used" not in check_md, check_md
        app.submit(warmup_steps=10, **{**kw, "max_steps": 40}, api_name="/train")
        deadline = time.time() + 120
        while not ctx.jobs.list() and time.time() < deadline:
            time.sleep(0.2)
        (run,) = ctx.jobs.list()
        t = RunConfig.load(ctx.jobs.run_dir(run.id) / "config.yaml").training
        assert (t.warmup_steps, t.warmup_ratio, t.warmup()) == (10, None, 10)
    finally:
        _stop(demo, ctx)
    # the CLI: --set over the fast default, a YAML with both
    raw = _with_overrides({"training": {"max_steps": 40}}, ["training.warmup_steps=10"])
    assert RunConfig.build(raw).training.warmup() == 10
    raw = _with_overrides({"training": {"max_steps": 40, "warmup_ratio": 0.1}}, ["training.warmup_steps=10"])
    assert RunConfig.build(raw).training.warmup() == 10
    raw = _with_overrides({"training": {"max_steps": 40, "warmup_steps": 10}}, ["training.warmup_ratio=0.5"])
    assert RunConfig.build(raw).training.warmup() == 20  # the ratio set last is the one meant
    # a config.yaml saved when the ratio won over both (steps and ratio set): resumed with the ratio
    old = RunConfig().model_dump()
    old["training"].update(warmup_steps=10, warmup_ratio=0.1, max_steps=40)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    assert RunConfig.load(tmp_path / "config.yaml").training.warmup() == 4  # ceil(40 * 0.1), as it ran


def test_the_fast_preset_warms_up_a_tenth_of_its_run_and_given_values_win():
    cfg = RunConfig.from_yaml("preset: fast default\ntraining:\n  max_steps: 80\n")
    assert (cfg.training.learning_rate, cfg.training.warmup_ratio, cfg.lora.use_rslora) == (3e-4, 0.1, True)
    assert (cfg.training.max_steps, cfg.training.warmup()) == (80, 8)  # ceil(80 * 0.1), as transformers
    # a run's config.yaml records the values, not the name: it reloads to the same settings
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg and "preset" not in cfg.to_yaml()
    # switching a fast config back to the reference recipe gives the reference exactly
    back = RunConfig.build({"preset": REFERENCE, "lora": {"r": 16}})
    assert _training(back) == REFERENCE_VALUES and back.training.warmup() == 100 and not back.lora.use_rslora


def test_an_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ConfigError) as err:
        RunConfig.build({"preset": "fastest"})
    assert err.value.problems == [
        "preset: 'fastest' is not a preset. Fix: choose one of 'reference recipe', 'fast default'."
    ]


def test_cli_preset_and_bad_name(tmp_path, capsys):
    from lora_app.__main__ import main

    (tmp_path / "run.yaml").write_text("preset: reference recipe\n")
    rc = main(["train", "--config", str(tmp_path / "run.yaml"), "--preset", "nope", "--runs", str(tmp_path / "r")])
    assert rc == 2
    assert "preset: 'nope' is not a preset. Fix: choose one of" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_form_values_of_each_preset_build_that_preset():
    from lora_app.ui import form

    for name, values in PRESETS.items():
        flat = {f"{sec}.{k}": v for sec, vals in values.items() for k, v in vals.items()}
        cfg = form.to_config(flat, {"path": "x.jsonl"})
        assert cfg == RunConfig.build({"preset": name, "data": {"path": "x.jsonl"}})
    fast = RunConfig.build({"preset": FAST})
    keys = ["training.warmup_ratio", "training.learning_rate", "lora.modules_to_save"]
    assert form.from_config(fast, keys) == [0.1, 3e-4, ""]


def test_the_form_preset_dropdown_fills_the_widgets(tmp_path):
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs")
    try:
        demo = build_app(AppContext(jm, None, frozenset()))
        (bf,) = [b for b in demo.fns.values() if getattr(b.fn, "__name__", "") == "fill"]
        assert [i.elem_id for i in bf.inputs] == ["preset"] and bf.inputs[0].value == FAST
        labels = [o.label.split(" ")[0] for o in bf.outputs]
        fast = dict(zip(labels, bf.fn(FAST), strict=True))
        assert fast == {
            "gradient_accumulation_steps": 4,
            "learning_rate": 3e-4,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "max_steps": 30,
            "per_device_train_batch_size": 4,
            "r": 16,
            "target_modules": "all-linear",
            "use_rslora": True,
            "warmup_ratio": 0.1,
            "warmup_steps": 0,
        }
        ref = dict(zip(labels, bf.fn(REFERENCE), strict=True))
        assert {k: ref[k] for k in REFERENCE_VALUES if k != "warmup_ratio"} == {
            k: v for k, v in REFERENCE_VALUES.items() if k != "warmup_ratio"
        }
        # empty boxes: no ratio, and the architecture's default modules (q_proj,v_proj)
        assert (ref["warmup_ratio"], ref["target_modules"], ref["lora_dropout"]) == ("", "", 0.05)
    finally:
        jm.close()


def test_cli_without_a_preset_trains_the_fast_default_and_its_card_shows_the_warmup(tmp_path, tiny_model, capsys):
    """``train --config`` with no ``--preset`` and a YAML without ``preset:``: the run's config.yaml is
    the fast default's, and its model card and the Runs tab give the warm-up in steps and the ratio
    it came from."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.__main__ import main

    y = tmp_path / "run.yaml"
    y.write_text(
        f"data: {{path: {EXAMPLE_QUOTES}, max_rows: 16}}\nmodel: {{base_model_name_or_path: {tiny_model}}}\n"
        "training: {max_length: 16, eval_fraction: 0, save_steps: 1000}\n"
    )
    assert main(["train", "--config", str(y), "--runs", str(tmp_path / "runs")]) == 0, capsys.readouterr()
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    cfg = RunConfig.load(run_dir / "config.yaml")
    assert _training(cfg) == FAST_VALUES and cfg.lora.use_rslora is True
    card = (run_dir / "adapter" / "README.md").read_text()
    assert "| warmup_steps | 3 (warmup_ratio 0.1) |" in card and "| learning_rate | 0.0003 |" in card
    assert "| max_steps | 30 (steps done: 30) |" in card and "| use_rslora | True |" in card
    # and the Runs tab's details of the run say the same
    from lora_app.identity import Identity
    from lora_app.jobs import JobManager
    from lora_app.ui.common import AppContext
    from lora_app.ui.runs_tab import run_detail

    jm = JobManager(tmp_path / "runs")
    try:
        md = run_detail(AppContext(jm, None, frozenset()), run_dir.name, Identity("boss", admin=True))[0]
    finally:
        jm.close()
    assert "learning_rate 0.0003, warm-up 3 of 30 steps (warmup_ratio 0.1), rsLoRA" in md, md


def test_bench_train_compares_both_paths_on_the_reference_recipe():
    """bench/bench_train.py's app variant runs the reference recipe's values (those its Trainer variant
    hard-codes), not the app's default recipe, with the bench's own steps and warm-up."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import bench_train

    spec = {
        "steps": 16,
        "warmup": 2,
        "max_length": 64,
        "batch": 4,
        "accum": 4,
        "train_file": "x.jsonl",
        "model": "m",
        "quant": "none",
        "levers": {},
    }
    cfg = bench_train.app_config(spec)
    t = cfg.training
    assert (t.learning_rate, t.warmup_steps, t.warmup_ratio, t.warmup(), t.max_steps) == (2e-4, 2, None, 2, 16)
    assert bench_train.LR == 2e-4 and (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (4, 4)
    assert _lora(cfg) == (16, 32, 0.05, None, "none", False, False)


def test_a_run_saved_before_use_rslora_and_warmup_ratio_existed_loads_as_it_trained(tmp_path):
    """A run's config.yaml from before 2026-12-01 02:33 has warmup_steps 100 and neither
    warmup_ratio nor use_rslora. Its warm-up stayed 100 steps, but use_rslora took the new default
    True: resumed, merged or copied to the form, its adapter's scale grew from lora_alpha/r to
    lora_alpha/sqrt(r), 4x at r=16 (found by the breaker). It loads as it trained now."""
    import yaml

    from lora_app.config import RunConfig

    old = yaml.safe_load(RunConfig.build({"preset": REFERENCE}).to_yaml())
    for k in ("use_rslora", "use_dora", "init_lora_weights", "modules_to_save", "rank_pattern", "alpha_pattern"):
        old["lora"].pop(k)
    for k in ("warmup_ratio", "chunked_loss"):
        old["training"].pop(k)
    old["model"].pop("attn_implementation")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old), encoding="utf-8")
    cfg = RunConfig.load(tmp_path / "config.yaml")
    assert (cfg.lora.use_rslora, cfg.training.warmup(), cfg.training.learning_rate) == (False, 100, 2e-4)
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.training.max_steps) == (16, 32, 200)
    # today's dumps and hand-written configs keep their own values and today's defaults
    RunConfig().save(tmp_path / "now.yaml")
    assert RunConfig.load(tmp_path / "now.yaml").lora.use_rslora is True
    (tmp_path / "mine.yaml").write_text("lora:\n  r: 8\n", encoding="utf-8")
    assert RunConfig.load(tmp_path / "mine.yaml").lora.use_rslora is True

"""Bugs found by a newcomer tester (one test per bug, named after the behaviour)."""

import subprocess
import sys

import pytest
from conftest import EXAMPLE_QUOTES, REPO


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "lora_app", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    """A run folder trained to its end (2 steps) on the tiny model."""
    from lora_app.config import RunConfig
    from lora_app.train import train

    rd = tmp_path_factory.mktemp("finished") / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": {"max_steps": 2, "save_steps": 2, "max_length": 32, "per_device_train_batch_size": 4},
        }
    ).save(rd / "config.yaml")
    assert train(rd) == 0
    return rd


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# -- bug 2
def test_cli_resume_of_a_finished_run_is_refused_and_writes_nothing(finished_run):
    before = _snapshot(finished_run)
    r = _cli("train", str(finished_run), "--resume")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "only a stopped or failed run can be resumed" in r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(finished_run) == before


# -- bug 8
def test_cli_train_on_a_folder_that_is_not_a_run_says_so_and_writes_nothing(tmp_path):
    missing = tmp_path / "nope"
    r = _cli("train", str(missing))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "does not exist" in r.stderr and not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("train", str(empty))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "is not a run folder (it holds no config.yaml)" in r.stderr
    assert list(empty.iterdir()) == []


# -- bug 3
def test_a_visitor_on_a_space_may_not_name_server_folders_or_others_runs_as_base_model(
    tmp_path, tiny_model, monkeypatch
):
    from gradio_client import Client
    from test_identity import TINY, _cfg, _serve, _stop

    monkeypatch.setenv("SPACE_ID", "someone/lora_app")
    demo, ctx, url = _serve(tmp_path, max_running=0)
    try:
        theirs = ctx.jobs.submit(_cfg(tiny_model), owner="hf:alice")
        merged = ctx.jobs.run_dir(theirs) / "merged"
        merged.mkdir()
        app = Client(url, verbose=False)
        app.predict(api_name="/use_example")
        # one answer for each: another's run, the runs root, a system folder, a model folder
        says = "is not a folder of one of your runs, and other folders on this server are not open to visitors"
        for base in (str(merged), str(ctx.jobs.root), "/etc", str(tiny_model)):
            check_md, *_ = app.predict(base_model_name_or_path=base, **TINY, api_name="/check")
            assert says in check_md and "not a model" not in check_md, (base, check_md)
            status, *_ = app.predict(base_model_name_or_path=base, **TINY, api_name="/train")
            assert says in status, (base, status)
        assert [r.id for r in ctx.jobs.list()] == [theirs]  # nothing queued for the visitor
    finally:
        _stop(demo, ctx)


# -- bug 4
def test_liger_on_where_it_cannot_run_is_a_preflight_problem_listed_with_the_others(tmp_path, tiny_model):
    import yaml

    from lora_app.speedups import liger_available

    if liger_available():
        pytest.skip("liger_kernel imports here: 'on' is valid on a GPU")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
                "model": {"base_model_name_or_path": str(tiny_model)},
                "lora": {"r": 0, "target_modules": ["q_proj"]},
                "training": {"max_steps": 2, "use_liger_kernel": "on"},
            }
        )
    )
    runs = tmp_path / "runs"
    r = _cli("train", "--config", str(cfg), "--runs", str(runs))
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "training.use_liger_kernel: on" in r.stderr and "lora.r" in r.stderr  # together, in one list
    assert not runs.exists() or not any(runs.iterdir())


# -- bug 7
def test_a_corrupt_adapter_is_one_clear_problem_naming_the_file(tmp_path, finished_run):
    import shutil

    truncated = tmp_path / "truncated"
    shutil.copytree(finished_run / "adapter", truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    bad_json = tmp_path / "bad_json"
    shutil.copytree(finished_run / "adapter", bad_json)
    (bad_json / "adapter_config.json").write_text('{"r": 4, "lora_alpha": ', encoding="utf-8")
    for folder, file in ((truncated, "adapter_model.safetensors"), (bad_json, "adapter_config.json")):
        r = _cli("generate", "--adapter", str(folder), "--max-new-tokens", "2")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        problem = r.stderr.split("  - ", 1)[1].strip()
        assert problem.startswith(f"adapter: {folder / file} cannot be read (") and "\n" not in problem, problem


# -- bug 9
def test_merge_of_a_missing_folder_says_it_does_not_exist_with_rc_2(tmp_path):
    from lora_app.__main__ import main

    missing = tmp_path / "nope"
    r = _cli("merge", str(missing))
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"merge: the folder '{missing}' does not exist" in r.stderr and "no saved adapter" not in r.stderr
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["merge", str(empty)]) == 2  # a folder with no adapter: an input problem too


# -- bug 10
def test_check_without_data_names_the_missing_data_and_still_counts_parameters(tmp_path, tiny_model):
    from gradio_client import Client
    from test_identity import TINY, _serve, _stop

    demo, ctx, url = _serve(tmp_path, max_running=0)
    try:
        app = Client(url, verbose=False)  # no data chosen
        check_md, *_ = app.predict(base_model_name_or_path=str(tiny_model), **TINY, api_name="/check")
        assert "data: no data chosen" in check_md and "trainable params: 1,792 || all params: 95,040" in check_md, (
            check_md
        )
        check_md, *_ = app.predict(base_model_name_or_path=str(tiny_model), **{**TINY, "r": 0}, api_name="/check")
        assert "data: no data chosen" in check_md and "lora.r" in check_md, check_md  # one list, both
        status, *_ = app.predict(base_model_name_or_path=str(tiny_model), **TINY, api_name="/train")
        assert "data: no data chosen" in status and ctx.jobs.list() == []  # what Start says too
    finally:
        _stop(demo, ctx)


# -- bug 5
def test_the_estimate_follows_model_precision():
    from test_estimate import opt_6_7b_config

    from lora_app import estimate
    from lora_app.config import RunConfig
    from lora_app.precision import choose

    mc = opt_6_7b_config()
    linear, other, _ = estimate.parameter_split(mc)
    rows = {}
    for prec in ("auto", "float32", "bfloat16"):
        cfg = RunConfig.build(
            {"model": {"base_model_name_or_path": "facebook/opt-6.7b", "precision": prec, "quantization": "none"}}
        )
        rows[prec] = {r["hardware"]: r for r in estimate.estimate(mc, cfg, 8388608, 6666862592).rows}
    assert rows["float32"]["CPU (this machine)"]["weights GB"] == round(4 * (linear + other) / 1e9, 2)
    assert rows["bfloat16"]["CPU (this machine)"]["weights GB"] == round(2 * (linear + other) / 1e9, 2)
    per_param = 2 if choose("auto", "cpu").dtype == "bfloat16" else 4  # auto: what a run here would load
    assert rows["auto"]["CPU (this machine)"]["weights GB"] == round(per_param * (linear + other) / 1e9, 2)
    # on a GPU too: float32 set = 4 bytes a weight, not the tier's bf16/fp16
    assert rows["float32"]["A100 80 GB"]["weights GB"] == round(4 * (linear + other) / 1e9, 2)
    assert rows["auto"]["A100 80 GB"]["weights GB"] == round(2 * (linear + other) / 1e9, 2)


# -- bug 6
def test_loading_a_yaml_into_the_form_keeps_or_names_every_setting(tmp_path):
    import gradio as gr

    from lora_app.config import RunConfig
    from lora_app.ui import form
    from lora_app.ui.runs_tab import load_yaml

    with gr.Blocks():
        widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
    keys = list(widgets)
    path = tmp_path / "config.yaml"
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
            "training": {
                "seed": 7,
                "lr_scheduler_type": "cosine",
                "eval_rows": 5,
                "use_liger_kernel": "off",
                "cap_warmup": True,
                "max_steps": 20,
            },
        }
    ).save(path)
    values, data, msg = load_yaml(str(path), keys, None)
    values = dict(zip(keys, values))
    assert values["training.cap_warmup"] is True and values["training.max_steps"] == 20  # the warm-up fix, in the form
    cfg = RunConfig.build(form.to_raw(values, data))  # what Start gets
    assert cfg.training.cap_warmup is True and cfg.data.max_rows == 8 and cfg.data.path == str(EXAMPLE_QUOTES)
    for dropped in (
        "training.seed: 7",
        "training.lr_scheduler_type: cosine",
        "training.eval_rows: 5",
        "training.use_liger_kernel: off",
    ):
        assert dropped in msg, msg
    assert "cap_warmup" not in msg and "max_rows" not in msg and "max_steps" not in msg  # kept, so not named


# -- bug 13
def test_set_without_the_section_field_value_format_says_the_format(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data:\n  path: {EXAMPLE_QUOTES}\n", encoding="utf-8")
    runs = tmp_path / "runs"
    r = _cli("train", "--config", str(cfg), "--runs", str(runs), "--set", "foo", "max_steps=3", "training.r")
    assert r.returncode == 2, r.stderr[-2000:]
    for p in ("foo", "max_steps=3", "training.r"):
        assert f"--set {p}: expected SECTION.FIELD=VALUE" in r.stderr, r.stderr
    assert "is not a known setting" not in r.stderr and not runs.exists()


# -- bug 14
NOISE = ("is_gradient_checkpointing", "Unable to fetch remote file", "{'loss'", "{'train_runtime'", "{'eval_loss'")


def test_training_output_has_no_library_noise(tmp_path, tiny_model):
    from lora_app.config import RunConfig

    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 40},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "training": {
                "max_steps": 2,
                "save_steps": 1,
                "max_length": 32,
                "per_device_train_batch_size": 4,
                "gradient_checkpointing": True,
                "eval_steps": 1,
                "eval_rows": 4,
            },
        }
    ).save(rd / "config.yaml")
    r = _cli("train", str(rd))
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert not [n for n in NOISE if n in out], out[-3000:]
    # an adapter whose base is a Hub id: PEFT's save looks the base up on the Hub (offline: a warning)
    code = (
        "from pathlib import Path\nimport lora_app\nfrom peft import LoraConfig, get_peft_model\n"
        "from transformers import AutoModelForCausalLM\nfrom lora_app.train import save_adapter\n"
        f"m = get_peft_model(AutoModelForCausalLM.from_pretrained({str(tiny_model)!r}), "
        "LoraConfig(r=2, target_modules=['q_proj']))\n"
        "m.peft_config['default'].base_model_name_or_path = 'nobody-here/no-such-model'\n"
        f"save_adapter(m, Path({str(tmp_path)!r}), 'card')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert r.returncode == 0 and (tmp_path / "adapter" / "adapter_config.json").is_file(), r.stderr[-3000:]
    assert not [n for n in NOISE if n in r.stdout + r.stderr], (r.stdout + r.stderr)[-3000:]


# -- bug 11
def test_resume_keeps_the_runs_first_start_time(jobs, tiny_model):
    import time

    from test_jobs import log_steps, make_cfg, wait_for

    rid = jobs.submit(make_cfg(tiny_model, max_steps=5000, save_steps=2), owner="alice")
    wait_for(lambda: len(log_steps(jobs, rid)) >= 3, what="3 steps")
    started = jobs.get(rid).started
    jobs.cancel(rid, "alice")
    stopped = jobs.get(rid)
    assert stopped.status == "stopped" and stopped.ended > started
    time.sleep(1.0)
    jobs.resume(rid, "alice")
    n = len(log_steps(jobs, rid))
    wait_for(lambda: len(log_steps(jobs, rid)) > n and jobs.get(rid).pid, what="a step after resume")
    again = jobs.get(rid)
    assert again.status == "running" and again.started == started  # not the resume time
    assert again.duration_s >= stopped.ended - started + 1.0
    jobs.cancel(rid, "alice", grace_s=10)


# -- bug 12
def test_a_queued_visitor_sees_another_persons_progress_but_not_its_run_id(jobs, tiny_model):
    import re

    from test_jobs import log_steps, make_cfg, wait_for

    from lora_app.ui.common import queue_note

    a = jobs.submit(make_cfg(tiny_model, max_steps=5000), owner="alice")
    wait_for(lambda: log_steps(jobs, a), what="a's first step")
    b = jobs.submit(make_cfg(tiny_model, max_steps=2), owner="bob")
    a2 = jobs.submit(make_cfg(tiny_model, max_steps=2), owner="alice")
    bobs = queue_note(jobs, b)
    assert a not in bobs and re.search(r"Another run is training \(step \d+/5000", bobs), bobs
    assert f"Running now: `{a}` at step" in queue_note(jobs, a2)  # alice's own run: named
    jobs.cancel(a, "alice", grace_s=10)


def test_a_second_start_while_the_first_is_prepared_is_refused(tmp_path):
    """Start now takes clicks while a run streams (Gradio trigger_mode "multiple"), so a double
    click must not queue two runs: while a page's Start is being prepared, that page's next
    returns None (the page says so); another page (or API client) of the same owner may start
    one, and once the first is done the page's next Start is prepared as usual."""
    from lora_app.jobs import JobManager
    from lora_app.ui.common import AppContext
    from lora_app.ui.train_tab import _PREP_LOCK, _PREPARING, Preparation, prepare_and_submit

    jobs = JobManager(tmp_path / "runs", poll_s=0.1)
    try:
        ctx = AppContext(jobs, None, frozenset())
        first = Preparation("reading the data and checking the model", session="page-1")
        with _PREP_LOCK:
            _PREPARING["u:double"] = first
        bad = {"training": {"max_steps": 0}}
        assert prepare_and_submit(ctx, bad, "u:double", None, "page-1") is None
        other = prepare_and_submit(ctx, bad, "u:double", None, "page-2")  # another tab of the same person
        assert other is not None and other.done.wait(60) and other.session == "page-2"
        first.done.set()
        second = prepare_and_submit(ctx, bad, "u:double", None, "page-1")
        assert second is not None and second.done.wait(60)
        assert second.run_id is None and any(p.startswith("training.max_steps") for p in second.problems or [])
        assert jobs.list() == []
    finally:
        jobs.shutdown(grace_s=1)
        with _PREP_LOCK:
            _PREPARING.pop("u:double", None)


def test_an_ended_runs_progress_bar_shows_no_remaining_time():
    """A stopped run's bar kept its last estimate: "stopped · step 35/50 · remaining 0:34" (found
    by the newcomer). Ended runs show the elapsed time alone; a running one keeps its estimate."""
    from lora_app.ui.common import progress_html

    for status in ("stopped", "failed", "finished"):
        bar = progress_html(35, 50, 94, 34, status)
        assert f"{status} · step 35/50 · elapsed 1:34</div>" in bar and "remaining" not in bar, bar
    assert "running · step 35/50 · elapsed 1:34 · remaining 0:34</div>" in progress_html(35, 50, 94, 34, "running")

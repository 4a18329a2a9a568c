"""The job queue under faults: kills, stops, resumes, restarts, owners, and the Runs tab's helpers.

Every run here trains the tiny local Llama for a few steps in a real child process
(``python -m lora_app train RUN_DIR``), so each costs the child's start-up (~10-20 s on a
busy 2-core machine); the tests share runs where one run can show several things.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE_QUOTES, REPO

from lora_app import allocator, container
from lora_app.config import RunConfig
from lora_app.events import read_events
from lora_app.jobs import JobManager, NotYourRun
from lora_app.procs import alive, group_members
from lora_app.ui.common import queue_note, run_summary

TARGETS = ["q_proj", "v_proj"]


def make_cfg(tiny_model, data: Path = EXAMPLE_QUOTES, **training) -> RunConfig:
    t = dict(
        max_steps=2,
        warmup_steps=0,
        learning_rate=1e-2,
        max_length=32,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        save_steps=50,
    )
    t.update(training)
    return RunConfig.build(
        {
            "data": {"path": str(data), "max_rows": 16},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": TARGETS},
            "training": t,
        }
    )


def upload_copy(tmp_path, name="upload.jsonl") -> Path:
    """A stand-in for a file in Gradio's upload cache."""
    p = tmp_path / "gradio_cache" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(EXAMPLE_QUOTES, p)
    return p


def wait_for(pred, timeout=240.0, every=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def events(jm, run_id, type_=None):
    evs, _ = read_events(jm.run_dir(run_id))
    return [e for e in evs if type_ is None or e["type"] == type_]


def log_steps(jm, run_id) -> list[int]:
    return [e["step"] for e in events(jm, run_id, "log")]


def run_folders(root: Path) -> list[str]:
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def wait_done(jm, run_id, timeout=300.0):
    return wait_for(
        lambda: (i := jm.get(run_id)).status not in ("queued", "running") and i, timeout, what=f"run {run_id} to end"
    )


# -- faults --------------------------------------------------------------------------------
def test_two_quick_submits_then_a_killed_run_fails_and_the_queue_goes_on(jobs, tiny_model, tmp_path):
    """Two submits in the same second -> two runs (positions 0 and 1, own folders and logs);
    the uploads are deleted right away (Gradio cache cleanup) and the runs use their copies;
    the first run is SIGKILLed mid-run -> "failed" with the reason; the second then starts
    and finishes; the index lists both with status, start, duration and final loss."""
    up_a, up_b = upload_copy(tmp_path, "a.jsonl"), upload_copy(tmp_path, "b.jsonl")
    t0 = time.time()
    a = jobs.submit(make_cfg(tiny_model, up_a, max_steps=5000), owner="alice")
    b = jobs.submit(make_cfg(tiny_model, up_b, max_steps=2), owner="bob")
    assert time.time() - t0 < 1.0 and a != b
    assert (jobs.queue_position(a), jobs.queue_position(b)) == (0, 1)
    assert jobs.run_dir(a) != jobs.run_dir(b)
    for rid in (a, b):
        evs = events(jobs, rid)
        assert evs[0]["status"] == "queued" and rid in evs[0]["message"]  # each run has its own log
        assert Path(RunConfig.load(jobs.run_dir(rid) / "config.yaml").data.path).parent == jobs.run_dir(rid) / "data"
    up_a.unlink()
    up_b.unlink()

    # a is running: wait for its first training step, then kill it like the OOM killer would.
    wait_for(lambda: log_steps(jobs, a), what="a's first step")
    assert jobs.get(b).status == "queued" and jobs.queue_position(b) == 1
    note = queue_note(jobs, b)
    assert "next in line" in note and "Another run is training (step " in note and a not in note, note  # alice's
    pid = jobs.get(a).pid
    os.kill(pid, signal.SIGKILL)
    info_a = wait_done(jobs, a, timeout=30)
    assert info_a.status == "failed"
    assert "killed by signal SIGKILL" in info_a.message and "out-of-memory" in info_a.message, info_a.message
    assert events(jobs, a)[-1] == {**events(jobs, a)[-1], "type": "status", "status": "failed"}

    # The manager keeps serving: b starts (reading its own copy of the deleted upload) and finishes.
    info_b = wait_done(jobs, b)
    assert info_b.status == "finished", (info_b.message, (jobs.run_dir(b) / "train.log").read_text()[-2000:])
    assert info_b.final_loss is not None and info_b.started >= info_a.ended - 1
    assert (jobs.run_dir(b) / "adapter" / "adapter_model.safetensors").is_file()
    # The child ran on the allocator planned for it (tcmalloc where installed, as in CI: allocator.py)
    (alloc,) = [e for e in events(jobs, b) if "allocator" in e]
    assert alloc["allocator"] == allocator.plan().name and alloc["message"].startswith(allocator.plan().reason + "; ")
    # ... with one torch thread per usable core (a container's CPU quota, not the host's cores), as
    # the job manager set OMP_NUM_THREADS for it, unless the person set it (container.thread_env)
    want = int(os.environ.get("OMP_NUM_THREADS") or container.usable_cores())
    assert alloc["threads"] == want and f"{want} CPU threads (OMP_NUM_THREADS={want};" in alloc["message"], alloc

    rows = {r.id: r for r in jobs.list()}
    assert set(rows) == {a, b}
    assert rows[a].status == "failed" and rows[b].status == "finished"
    assert all(r.started and r.duration_s > 0 for r in rows.values())
    assert rows[a].final_loss is None and rows[b].final_loss == info_b.final_loss
    summary = run_summary(jobs, rows[b])
    assert summary["steps"] == "2/2" and summary["r"] == 4 and summary["targets"] == "q_proj,v_proj"
    assert summary["adapter"].endswith("adapter")


def test_stop_kills_the_group_keeps_the_adapter_and_resume_continues(jobs, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rid = jobs.submit(make_cfg(tiny_model, max_steps=5000, save_steps=2), owner="alice")
    wait_for(lambda: len(log_steps(jobs, rid)) >= 3, what="3 steps")
    pid = jobs.get(rid).pid
    with pytest.raises(NotYourRun):
        jobs.cancel(rid, "bob")
    assert jobs.get(rid).status == "running"
    t0 = time.time()
    msg = jobs.cancel(rid, "alice")
    took = time.time() - t0
    assert took < 20, (took, msg)
    assert (
        msg.startswith(f"Run {rid} stopped (stopping took ")
        and (
            f" s): process {pid} and its process group are gone. (A CPU run: no GPU memory to report.) The adapter "
            "saved at step "
        )
        in msg
    ), msg
    assert group_members(pid) == []
    info = jobs.get(rid)
    assert info.status == "stopped", info
    before = log_steps(jobs, rid)
    assert f"The adapter saved at step {before[-1]} is kept" in msg, msg
    ad = jobs.run_dir(rid) / "adapter"
    assert (ad / "adapter_config.json").is_file() and (ad / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    PeftModel.from_pretrained(base, ad)  # loads
    assert (jobs.run_dir(rid) / "checkpoints" / f"checkpoint-{before[-1]}").is_dir()

    with pytest.raises(NotYourRun):
        jobs.resume(rid, "bob")
    assert "resumes from its checkpoint at step" in jobs.resume(rid, "alice")
    n_before = len(before)
    wait_for(lambda: len(log_steps(jobs, rid)) > n_before, what="a step after resume")
    after = log_steps(jobs, rid)[n_before:]
    assert after[0] == before[-1] + 1, (before, after)
    jobs.cancel(rid, "alice", grace_s=10)
    assert jobs.get(rid).status == "stopped"


def test_restart_picks_up_a_queued_run_and_adopts_a_running_one(tmp_path, tiny_model):
    root = tmp_path / "runs"
    up = upload_copy(tmp_path)
    jm1 = JobManager(root, max_running=0, poll_s=0.1)  # a device that takes nothing: the run stays queued
    rid = jm1.submit(make_cfg(tiny_model, up, max_steps=6), owner="alice")
    jm1.close()
    up.unlink()  # the upload cache is cleaned while the app is down

    jm2 = JobManager(root, poll_s=0.1)  # app restart
    try:
        assert jm2.get(rid).status in ("queued", "running")
        wait_for(lambda: jm2.get(rid).status == "running" and jm2.get(rid).pid, what="start after restart")
    finally:
        jm2.close()  # the app goes away again, mid-run; the run goes on in its own process group
    jm3 = JobManager(root, poll_s=0.1)
    try:
        assert jm3.get(rid).status == "running"  # adopted, not marked failed
        info = wait_done(jm3, rid)
        assert info.status == "finished", (info.message, (jm3.run_dir(rid) / "train.log").read_text()[-2000:])
        assert info.final_loss is not None
    finally:
        jm3.close()


def test_a_claimed_run_is_started_once_across_managers(tmp_path):
    """Two managers on one root (app + CLI): the queued run is claimed by exactly one of them."""
    root = tmp_path / "runs"
    jm1 = JobManager(root, max_running=0, poll_s=0.05)
    jm2 = JobManager(root, max_running=0, poll_s=0.05)
    try:
        rid = jm1.submit(RunConfig(), owner="x")
        # _start_next is what the scheduler calls; call it from both at once, with Popen stubbed.
        started = []
        import lora_app.jobs as J

        real = J.subprocess.Popen

        class FakePopen:
            def __init__(self, *a, **k):
                started.append(a)
                self.pid = 99999999

            def poll(self):
                return None if alive(self.pid) else 0

            def wait(self):
                return 0

        J.subprocess.Popen = FakePopen
        try:
            with jm1._lock, jm2._lock:  # the scheduler threads wait; only these two calls may start it
                jm1.max_running = jm2.max_running = 1
                r1, r2 = jm1._start_next(), jm2._start_next()
                jm1.max_running = jm2.max_running = 0
                assert len(started) == 1 and (r1, r2) == (True, False)
                assert jm1.get(rid).status == "running" and jm2.get(rid).pid == 99999999
        finally:
            J.subprocess.Popen = real
        # The pid is no process: whichever manager looks next records the run as failed, not stuck.
        wait_for(lambda: jm2.get(rid).status == "failed", timeout=10, what="the dead run to be reaped")
    finally:
        jm1.close()
        jm2.close()


# -- owners ----------------------------------------------------------------------------------
def test_owners_see_and_stop_only_their_runs_admins_all(tmp_path):
    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.05, admins=frozenset({"hf:boss"}))
    try:
        a = jm.submit(RunConfig(), owner="hf:alice")
        b = jm.submit(RunConfig(), owner="browser-123")
        assert [r.id for r in jm.visible("hf:alice")] == [a]
        assert [r.id for r in jm.visible("browser-123")] == [b]
        assert jm.visible("hf:mallory") == []
        assert {r.id for r in jm.visible("hf:boss")} == {a, b}
        assert jm.visible(None) == []  # nobody known: nothing (never "all")
        for act in (
            lambda: jm.cancel(a, "browser-123"),
            lambda: jm.delete(a, "browser-123"),
            lambda: jm.resume(a, "browser-123"),
        ):
            with pytest.raises(NotYourRun, match="belongs to someone else"):
                act()
        assert jm.get(a).status == "queued" and jm.run_dir(a).is_dir()
        assert "cancelled before it started" in jm.cancel(a, "hf:alice")
        assert jm.get(a).status == "stopped"
        assert "cancelled" in jm.cancel(b, "hf:boss")  # admin bypass
        assert "deleted" in jm.delete(b, "hf:boss")
        assert jm.get(b) is None and not jm.run_dir(b).exists()
        assert "resumes from step 0" in jm.resume(a, "hf:alice")
        assert jm.get(a).status == "queued"
        assert "only a stopped or failed run" in jm.resume(a, "hf:alice")
        assert "deleted" in jm.delete(a, "hf:alice")
        assert run_folders(jm.root) == []
    finally:
        jm.close()


def test_admin_users_env(monkeypatch, tmp_path):
    from lora_app.jobs import admin_owners

    monkeypatch.setenv("ADMIN_USERS", "boss, hf:chief ,")
    assert admin_owners() == {"hf:boss", "hf:chief"}
    jm = JobManager(tmp_path / "r", max_running=0)
    try:
        assert jm.is_admin("hf:boss") and not jm.is_admin("boss") and not jm.is_admin(None)
    finally:
        jm.close()


# -- messages ------------------------------------------------------------------------------
def test_oom_message_says_what_to_lower(tmp_path, tiny_model, monkeypatch):
    import torch
    import transformers

    from lora_app.train import _failure_message, train

    msg = _failure_message(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    for hint in ("per_device_train_batch_size", "max_length", "4bit", "gradient_checkpointing"):
        assert hint in msg
    assert "per_device_train_batch_size" in _failure_message(torch.OutOfMemoryError("allocator failed"))
    assert "Fix" not in _failure_message(ValueError("bad row"))

    # A run that raises it: failed, with the advice, as the Train tab shows it.
    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(transformers.Trainer, "train", oom)
    rd = tmp_path / "run"
    rd.mkdir()
    make_cfg(tiny_model).save(rd / "config.yaml")
    assert train(rd) == 1
    last = events_of(rd)[-1]
    assert last["status"] == "failed" and "OutOfMemoryError" in last["message"]
    assert "lower per_device_train_batch_size" in last["message"] and "4bit" in last["message"]


def events_of(rd):
    return read_events(rd)[0]


# -- config in and out: YAML from a run, into the form, and on the command line ---------------
def test_yaml_download_loads_into_the_form_and_runs_from_the_cli(tmp_path, tiny_model):
    import gradio as gr

    from lora_app.identity import Identity
    from lora_app.ui import form
    from lora_app.ui.common import AppContext
    from lora_app.ui.runs_tab import export_yaml, load_yaml, run_detail, runs_frame

    root = tmp_path / "runs"
    jm = JobManager(root, max_running=0, poll_s=0.05)
    try:
        cfg = make_cfg(tiny_model, max_steps=2)
        rid = jm.submit(cfg, owner="alice")
        ctx = AppContext(jm, None, frozenset())
        alice, bob = Identity("alice"), Identity("bob")
        df = runs_frame(ctx, alice)
        assert list(df["run"]) == [rid] and df["status"][0] == "queued" and df["targets"][0] == "q_proj,v_proj"
        assert runs_frame(ctx, bob).empty and runs_frame(ctx, Identity(None)).empty
        md, _, log = run_detail(ctx, rid, alice)
        assert "queued" in md and "queued" in log and str(root) not in md  # no server folders for visitors
        assert "this view does not follow the run. Press **Refresh**, or watch it live in **3. Train**." in md
        assert str(root) in run_detail(ctx, rid, Identity("boss", admin=True))[0]
        assert "No run" in run_detail(ctx, rid, bob)[0]
        y = export_yaml(ctx, rid)
        assert y.is_file() and RunConfig.load(y).lora == cfg.lora

        # Into the form: every widget gets the run's value; to_config gives the same config back.
        with gr.Blocks():
            widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
        keys = list(widgets)
        values, data, msg = load_yaml(str(y), keys, {})
        assert "Settings loaded" in msg and data["path"].startswith(str(jm.run_dir(rid)))
        back = form.to_config(dict(zip(keys, values)), data)
        want = RunConfig.load(jm.run_dir(rid) / "config.yaml")
        assert back.lora == want.lora and back.model == want.model
        for k in keys:
            sec, name = k.split(".")
            assert getattr(getattr(back, sec), name) == getattr(getattr(want, sec), name), k
        bad = tmp_path / "bad.yaml"
        bad.write_text("lora: {r: 0}\n")
        _, data2, msg2 = load_yaml(str(bad), keys, {"path": "x"})
        assert "lora.r" in msg2 and data2 == {"path": "x"}
        jm.cancel(rid)
        assert "does not follow" not in run_detail(ctx, rid, alice)[0]  # ended: nothing more to follow
    finally:
        jm.close()

    # The same YAML on the command line, end to end.
    cli_runs = tmp_path / "cli_runs"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lora_app",
            "train",
            "--config",
            str(y),
            "--runs",
            str(cli_runs),
            "--set",
            "training.max_steps=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "finished: step 3/3" in out.stdout, out.stdout[-2000:]
    (cli_run,) = run_folders(cli_runs)
    assert (cli_runs / cli_run / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((cli_runs / cli_run / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_cli_reports_every_problem_and_writes_nothing(tmp_path, tiny_model, capsys):
    from lora_app.__main__ import main

    bad = tmp_path / "bad.yaml"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad.write_text(
        f"data: {{path: {empty}}}\nmodel: {{base_model_name_or_path: {tiny_model}}}\n"
        "lora: {r: 0, target_modules: [q_proj, nope]}\ntraining: {learning_rate: 0}\n"
    )
    runs = tmp_path / "runs"
    assert main(["train", "--config", str(bad), "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    for want in ("lora.r:", "training.learning_rate:", "'empty.jsonl' is empty", "nope is not in this model"):
        assert want in err, err
    assert not runs.exists()


def test_owner_is_the_hub_login_else_the_signed_browser_id(tmp_path):
    """Before: ``request_owner(browser_owner, request)`` took the owner from the request body."""
    from types import SimpleNamespace

    from lora_app import identity
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs", max_running=0, admins=frozenset({"hf:boss"}))
    try:
        ctx = AppContext(jm, None, frozenset())
        owner, _ = identity.issue(ctx.key)
        assert ctx.who(owner, SimpleNamespace(username="alice")).owner == "hf:alice"
        assert ctx.who(owner).owner == owner and not ctx.who(owner).admin
        assert ctx.who(None, SimpleNamespace(username="boss")).admin  # JobManager's ADMIN_USERS count too
        for forged in ("hf:alice", "browser-1", "anonymous", None):
            assert ctx.who(forged).owner is None and ctx.visible(ctx.who(forged)) == []
        a = jm.submit(RunConfig(), owner="hf:alice")
        assert [r.id for r in ctx.visible(ctx.who(owner, SimpleNamespace(username="alice")))] == [a]
        assert ctx.visible(ctx.who(owner)) == []
    finally:
        jm.close()


def test_a_visitors_yaml_names_their_own_file_and_reads_no_one_elses(tmp_path, tiny_model, monkeypatch):
    """The Runs tab's YAML gave a visitor ``data.path: train.jsonl``, the run folder's private copy,
    which ran nowhere else ("file not found: train.jsonl. Fix: upload the file again", at a command
    line: the newcomer). It names the file they uploaded now. And an uploaded YAML could name any
    server file as data (another visitor's private copy, the server's .env), which the Data tab
    then showed: on a shared server a visitor's YAML reads only files of their own runs."""
    import gradio as gr

    from lora_app import public_repos
    from lora_app.data import load_text
    from lora_app.identity import Identity
    from lora_app.ui import form
    from lora_app.ui.common import AppContext
    from lora_app.ui.runs_tab import export_yaml, load_yaml

    mine = tmp_path / "home" / "my quotes.jsonl"
    mine.parent.mkdir()
    shutil.copyfile(EXAMPLE_QUOTES, mine)
    (secret := tmp_path / ".env").write_text('{"text": "HF_TOKEN=hf_server_secret"}\n')
    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.05)
    try:
        cfg = make_cfg(tiny_model, data=mine)
        cfg.data.eval_path = str(mine)
        rid = jm.submit(cfg, owner="alice")
        ctx = AppContext(jm, None, frozenset())
        alice, bob, boss = Identity("alice"), Identity("bob"), Identity("boss", admin=True)
        stored = RunConfig.load(jm.run_dir(rid) / "config.yaml").data
        assert stored.source_name == stored.eval_source_name == "my quotes.jsonl"
        assert (Path(stored.path), Path(stored.eval_path)) == (  # private copies: an upload cache may be cleaned
            jm.run_dir(rid) / "data" / "train.jsonl",
            jm.run_dir(rid) / "data" / "eval.jsonl",
        )

        exported = RunConfig.load(export_yaml(ctx, rid, alice)).data
        assert (exported.path, exported.eval_path) == ("my quotes.jsonl", "my quotes.jsonl")
        monkeypatch.chdir(mine.parent)  # where its owner keeps the file and runs the YAML
        assert len(load_text(exported).texts) == 16
        assert RunConfig.load(export_yaml(ctx, rid, boss)).data.path == stored.path  # an admin: the server copy
        # a base model in a folder of one of their runs (a merge): no server path either (the breaker)
        merged = make_cfg(tiny_model, data=mine)
        merged.model.base_model_name_or_path = str(jm.run_dir(rid) / "merged")
        on_merge = jm.submit(merged, owner="alice")
        assert RunConfig.load(export_yaml(ctx, on_merge, alice)).model.base_model_name_or_path == f"[runs]/{rid}/merged"
        jm.cancel(on_merge)

        with gr.Blocks():
            widgets = {**form.build_model_widgets(), **form.build_lora_widgets(), **form.build_training_widgets()}
        keys = list(widgets)
        server_yaml = tmp_path / "server.yaml"
        RunConfig.load(jm.run_dir(rid) / "config.yaml").save(server_yaml)  # names alice's copy
        env_yaml = tmp_path / "env.yaml"
        RunConfig.build({"data": {"path": str(secret), "text_column": "text"}}).save(env_yaml)

        def data_of(yaml_path: Path, who: Identity):
            _, data, msg = load_yaml(str(yaml_path), keys, None, may_read=lambda p: ctx.may_read_path(who, p))
            return data, msg

        monkeypatch.setenv(public_repos.ENV, "1")
        for who in (alice, boss):
            data, msg = data_of(server_yaml, who)
            assert data["path"] == stored.path and data["eval_path"] == stored.eval_path, msg
        data, msg = data_of(server_yaml, bob)
        assert data is None
        assert "Its data file `my quotes.jsonl` is not here: choose the data in the **1. Data** tab." in msg
        assert "Its held-out file `my quotes.jsonl` is not here" in msg
        missing = tmp_path / "missing.yaml"
        RunConfig.build({"data": {"path": str(jm.run_dir(rid) / "data" / "nope.jsonl")}}).save(missing)
        assert "nope.jsonl` is not here: choose the data in the **1. Data** tab." in data_of(missing, alice)[1]
        assert data_of(env_yaml, bob)[0] is None and data_of(env_yaml, Identity(None))[0] is None
        assert data_of(env_yaml, boss)[0]["path"] == str(secret)
        monkeypatch.setenv(public_repos.ENV, "0")  # a one-person server: its owner's files
        assert data_of(env_yaml, bob)[0]["path"] == str(secret)
        assert data_of(server_yaml, bob)[0] is None  # still: another person's run
        jm.cancel(rid)
    finally:
        jm.close()


def test_the_queue_estimate_holds_when_the_running_run_is_at_its_last_step(tmp_path, tiny_model):
    """A waiting run's estimate said "in about 0:05", then, with the running run at step 10/10
    (evaluating and saving, the trainer reports no time left), "not known yet (the running run has not
    measured its speed)" (the newcomer). Its speed is then its elapsed time per step."""
    from lora_app.events import EventWriter
    from lora_app.ui.common import start_estimate

    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.05)
    try:
        a = jm.submit(make_cfg(tiny_model, max_steps=10), owner="alice")
        b = jm.submit(make_cfg(tiny_model, max_steps=20), owner="bob")
        w = EventWriter(jm.run_dir(a))
        w.emit("progress", step=9, max_steps=10, elapsed_s=45.0, remaining_s=5.0)
        first = start_estimate(jm, [jm.get(b)], [jm.get(a)])
        assert first.startswith("Estimated start: in about 0:05 ") and "the running run's 0:05 left" in first, first
        w.emit("progress", step=10, max_steps=10, elapsed_s=50.0, remaining_s=None)
        w.close()
        last = start_estimate(jm, [jm.get(b)], [jm.get(a)])
        assert last.startswith("Estimated start: in about 0:00 "), last
        assert (
            "the running run's last step done (it evaluates and saves), plus 0 run(s) ahead at its measured 5.00 s/step"
            in last
        )
        c = jm.submit(make_cfg(tiny_model, max_steps=20), owner="carol")  # behind b: b's 20 steps at 5 s
        assert start_estimate(jm, [jm.get(b), jm.get(c)], [jm.get(a)]).startswith("Estimated start: in about 1:40 ")
    finally:
        jm.close()


def test_use_these_settings_puts_a_runs_settings_and_data_back_into_the_form(tmp_path, tiny_model):
    """After a reload mid-run the form was back at the defaults and Start said "no data chosen" (the
    newcomer): the Runs tab's Use these settings fills the form and the data from the picked run, as
    its YAML would; another person's run fills nothing."""
    from lora_app import identity
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.05)
    try:
        ctx = AppContext(jm, None, frozenset())
        demo = build_app(ctx)
        me, _ = identity.issue(ctx.key)
        other, _ = identity.issue(ctx.key)
        rid = jm.submit(make_cfg(tiny_model, max_steps=7, learning_rate=5e-3), owner=me)
        (use,) = [f for f in demo.fns.values() if f.name == "on_use"]
        labels = [getattr(o, "label", None) for o in use.outputs]
        out = dict(zip(labels, use.fn(rid, None, me), strict=True))
        data = use.fn(rid, None, me)[-2]
        assert (out["max_steps"], out["learning_rate"], out["r"]) == (7, 5e-3, 4)
        assert data["path"] == str(jm.run_dir(rid) / "data" / "train.jsonl") and data["max_rows"] == 16
        assert use.fn(rid, None, me)[-1].startswith(f"Run `{rid}`'s settings loaded into the **2. LoRA** form.")
        theirs = use.fn(rid, {"path": "mine"}, other)
        assert theirs[-2] == {"path": "mine"} and theirs[-1].startswith(f"No run `{rid}` of yours")
        assert all(isinstance(v, dict) and v.get("__type__") == "update" for v in theirs[:-2])
    finally:
        jm.close()

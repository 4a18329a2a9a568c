"""Checkpoints on the Hub (issue 13, section 2) against the local Hub (tests/hub_server.py): the
Trainer's own push every save_steps, the run's config and data with it, no token anywhere in the
run folder, push failures as warnings retried at the next save, the push preflight at Start, and
a run whose folder is gone resumed from the Hub to the same adapter as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from test_jobs import log_steps, make_cfg, wait_done, wait_for

from lora_app.config import ConfigError, RunConfig
from lora_app.events import read_events
from lora_app.hub_resume import MARKER, resume_from_hub
from lora_app.jobs import JobManager
from lora_app.validate import check_and_submit

ALICE = "hf_alice"
STEPS = 120  # long enough to be stopped after its first pushed checkpoint (a tiny-model step: ~0.05 s)


def hub_cfg(tiny_model, **training) -> RunConfig:
    t = dict(max_steps=STEPS, save_steps=4, hub_checkpoints=True, learning_rate=5e-3)
    t.update(training)
    return make_cfg(tiny_model, **t)


def no_token_in(folder: Path, token: str) -> list[str]:
    """Files under ``folder`` whose bytes contain ``token``."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]


def hub_pushes(rd: Path) -> list[dict]:
    return [e for e in read_events(rd)[0] if "hub_push" in e]


def test_start_runs_the_push_preflight_before_any_run_exists(hub_server, tiny_model, tmp_path):
    jm = JobManager(tmp_path / "runs", max_running=0)
    try:
        cases = [
            (None, {}, "no Hugging Face token"),
            ("hf_alice_read", {}, "read-only"),
            (ALICE, {"hub_model_id": "bob/ckpt"}, "you cannot push to 'bob/ckpt'"),
        ]
        for token, extra, expected in cases:
            with pytest.raises(ConfigError) as err:
                check_and_submit(jm, hub_cfg(tiny_model, **extra), owner="hf:alice", token=token)
            assert any(expected in p for p in err.value.problems), err.value.problems
        # Another run's checkpoint in the repo: refused (the Trainer would overwrite it).
        hub_server.add_file("model", "alice/taken", MARKER, json.dumps({"global_step": 3}))
        with pytest.raises(ConfigError, match="already holds the checkpoint of another run"):
            check_and_submit(jm, hub_cfg(tiny_model, hub_model_id="alice/taken"), owner="hf:alice", token=ALICE)
        # Reported together with the other problems of the settings.
        bad = hub_cfg(tiny_model).model_dump()
        bad["lora"]["r"] = 0
        with pytest.raises(ConfigError) as err:
            check_and_submit(jm, bad, owner="hf:alice", token=None)
        assert [p.split(":")[0] for p in err.value.problems] == ["lora.r", "training.hub_checkpoints"]
        assert jm.list() == [] and not [p for p in jm.root.iterdir() if p.is_dir()]  # nothing written
        assert not [r for r in hub_server.repos if r[1] != "alice/taken"]  # nothing created on the Hub
    finally:
        jm.close()


def test_checkpoints_on_the_hub_survive_a_lost_run_folder(hub_server, tiny_model, tmp_path):
    """A run pushes its checkpoints; it is stopped and its folder deleted (a Space restart
    without persistent storage); Resume from the Hub continues at the next step, and the final
    adapter equals an uninterrupted run's."""
    from lora_app.train import train

    jm = JobManager(tmp_path / "runs", poll_s=0.1)
    try:
        rid, _ = check_and_submit(jm, hub_cfg(tiny_model), owner="hf:alice", token=ALICE, env={"HF_TOKEN": ALICE})
        cfg = RunConfig.load(jm.run_dir(rid) / "config.yaml")
        repo = cfg.training.hub_model_id
        assert repo.startswith("alice/llama-lora-quotes-ckpt-"), repo  # the signed-in user's, one per run
        # Checkpoints appear on the Hub while it trains.
        wait_for(
            lambda: ("model", repo) in hub_server.repos and MARKER in hub_server.files("model", repo),
            timeout=300,
            what="the first checkpoint on the Hub",
        )
        assert hub_server.repos[("model", repo)].private
        msg = jm.cancel(rid, "hf:alice", grace_s=60)
        info = wait_done(jm, rid)
        assert info.status == "stopped", (msg, info.message)
        files = hub_server.files("model", repo)
        step = json.loads(files[MARKER])["global_step"]
        stopped_at = max(log_steps(jm, rid))
        assert 4 <= step == stopped_at < STEPS, (step, stopped_at)  # the stop's own checkpoint got there too
        assert {"config.yaml", "data/train.jsonl", "last-checkpoint/adapter_model.safetensors"} <= set(files)
        assert "last-checkpoint/rng_state.pth" in files and "last-checkpoint/optimizer.pt" in files
        assert RunConfig.model_validate(yaml.safe_load(files["config.yaml"])).training.hub_model_id == repo
        oks = [e for e in hub_pushes(jm.run_dir(rid)) if e["hub_push"] == "ok"]
        assert oks and oks[-1]["step"] == step
        failed = [e["message"] for e in hub_pushes(jm.run_dir(rid)) if e["hub_push"] != "ok"]
        assert not failed, "\n".join(failed)  # (joined: a list's repr is cut short in the report)
        # The token: in the process's environment only, never in a file of the run folder or the repo.
        assert no_token_in(jm.run_dir(rid), ALICE) == []
        assert [p for p, b in files.items() if ALICE.encode() in b] == []

        jm.delete(rid, "hf:alice")
        assert not jm.run_dir(rid).exists()

        with pytest.raises(ConfigError, match="holds no lora_app checkpoint"):
            hub_server.add_file("model", "alice/empty", "README.md", "hi")
            resume_from_hub(jm, "alice/empty", "hf:alice", ALICE)
        rid2, at = resume_from_hub(jm, repo, "hf:alice", ALICE)
        assert at == step
        info2 = wait_done(jm, rid2)
        assert info2.status == "finished", (info2.message, (jm.run_dir(rid2) / "train.log").read_text()[-3000:])
        steps2 = log_steps(jm, rid2)  # the history up to the checkpoint, then the new steps
        assert steps2 == list(range(1, STEPS + 1)), steps2
        new = [e for e in read_events(jm.run_dir(rid2))[0] if e["type"] == "status" and e["status"] == "training"]
        assert new[-1]["message"] == f"starting at step {step}"
        assert json.loads(hub_server.files("model", repo)[MARKER])["global_step"] == STEPS
        assert no_token_in(jm.run_dir(rid2), ALICE) == []
        with pytest.raises(ConfigError, match=f"already finished \\(step {STEPS} of max_steps {STEPS}\\)"):
            resume_from_hub(jm, repo, "hf:alice", ALICE)
        resumed = load_file(jm.run_dir(rid2) / "adapter" / "adapter_model.safetensors")
    finally:
        jm.shutdown(grace_s=5)

    # The same run, uninterrupted, in this process (no Hub).
    ref = tmp_path / "ref"
    ref.mkdir()
    plain = hub_cfg(tiny_model, hub_checkpoints=False)
    plain.save(ref / "config.yaml")
    assert train(ref) == 0
    whole = load_file(ref / "adapter" / "adapter_model.safetensors")
    assert resumed.keys() == whole.keys() and len(whole) > 0
    # Per tensor by relative norm, not element-wise: the two runs are other processes (other thread
    # counts may sum in another order), and AdamW's sign-like steps let a weight whose gradient is
    # rounding noise move by a noise-decided amount (test_batching's merged-accumulation test).
    rel = max(float((resumed[k] - whole[k]).norm() / whole[k].norm().clamp_min(1e-12)) for k in whole)
    print(f"resumed vs uninterrupted: largest relative difference {rel:.3g}, stopped at {step}")
    assert rel < 1e-4, rel
    assert any(float(whole[k].abs().max()) > 0 for k in whole if "lora_B" in k)  # it trained


def test_push_failures_are_warnings_retried_at_the_next_save(hub_server, tiny_model, tmp_path, monkeypatch):
    """The Hub is down when the run starts: the repo cannot be created and the first saves cannot
    push (warnings); it comes back; the next save pushes; the run finishes either way."""
    from lora_app.train import train

    rd = tmp_path / "run"
    rd.mkdir()
    hub_cfg(tiny_model, max_steps=24, save_steps=3, hub_model_id="alice/flaky").save(rd / "config.yaml")
    monkeypatch.setenv("HF_TOKEN", ALICE)
    hub_server.stop()
    back = threading.Event()

    def bring_back():  # once a push has failed at a save (not only at the start), the Hub returns
        deadline = time.time() + 300
        while time.time() < deadline:
            fails = [e for e in hub_pushes(rd) if e["hub_push"] == "failed"] if (rd / "events.jsonl").exists() else []
            if len(fails) >= 2:
                hub_server.start()
                back.set()
                return
            time.sleep(0.05)

    t = threading.Thread(target=bring_back, daemon=True)
    t.start()
    assert train(rd) == 0
    t.join(5)
    assert back.is_set()
    events = read_events(rd)[0]
    assert events[-1]["status"] == "finished"
    pushes = hub_pushes(rd)
    failed = [e for e in pushes if e["hub_push"] == "failed"]
    assert failed and all(e["message"].startswith("Warning: checkpoint not pushed to alice/flaky") for e in failed)
    assert "could not reach the Hub" in failed[0]["message"] and "next save tries again" in failed[0]["message"]
    ok = [e for e in pushes if e["hub_push"] == "ok"]
    assert ok and ok[-1]["step"] == 24, pushes
    assert json.loads(hub_server.files("model", "alice/flaky")[MARKER])["global_step"] == 24
    assert no_token_in(rd, ALICE) == []
    assert torch.isfinite(torch.tensor([e["loss"] for e in events if e["type"] == "log"])).all()


@pytest.mark.browser
def test_runs_tab_resumes_from_the_hub(hub_server, tiny_model, tmp_path, monkeypatch):
    """The Runs tab's Resume from the Hub, in a browser: a checkpoint repo (pushed by a run
    stopped at step 4, whose folder is gone) becomes a new run of this browser that finishes."""
    from browser import button, free_port, launch, shutdown, tab
    from playwright.sync_api import expect, sync_playwright

    from lora_app.train import train

    monkeypatch.setenv("HF_TOKEN", ALICE)  # off a Space: the app's token (as after `hf auth login`)
    gone = tmp_path / "gone"
    gone.mkdir()
    cfg = hub_cfg(tiny_model, max_steps=STEPS, save_steps=2, hub_model_id="alice/ui-ckpt")
    cfg.save(gone / "config.yaml")

    def stop_at_step_4():  # SIGTERM, as Stop sends it: the run saves (and pushes) where it is
        wait_for(lambda: [e for e in read_events(gone)[0] if e.get("step", 0) >= 4], timeout=300, what="step 4")
        os.kill(os.getpid(), signal.SIGTERM)

    handler = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=stop_at_step_4, daemon=True).start()
    try:
        assert train(gone) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    step = json.loads(hub_server.files("model", "alice/ui-ckpt")[MARKER])["global_step"]
    assert 4 <= step < STEPS and read_events(gone)[0][-1]["status"] == "stopped"

    port = free_port()
    demo, ctx = launch(tmp_path / "runs", port)
    try:
        from browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/")
            tab(page, "4. Runs")
            page.get_by_text("Resume from the Hub (a run whose folder is gone").click()
            page.get_by_label("Checkpoint repo (owner/name)").fill("alice/nothing-here")
            button(page, "Resume from the Hub").click()
            page.locator("#runs-action").get_by_text("not found").wait_for()
            page.get_by_label("Checkpoint repo (owner/name)").fill("alice/ui-ckpt")
            button(page, "Resume from the Hub").click()
            page.locator("#runs-action").get_by_text("it continues").wait_for()
            assert f"at step {step + 1}" in page.locator("#runs-action").inner_text()
            (run,) = ctx.jobs.list()
            wait_for(lambda: ctx.jobs.get(run.id).status == "finished", timeout=300, what="the resumed run")
            button(page, "Refresh").click()
            expect(page.locator("#runs-table")).to_contain_text("finished", timeout=60_000)
            browser.close()
    finally:
        shutdown(demo, ctx)

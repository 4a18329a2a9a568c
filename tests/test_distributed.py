"""Many processes through accelerate launch, on the CPU with the gloo backend (issue 13, section 1).

Every run here is a real ``accelerate launch --multi_gpu --num_processes 2 -m lora_app train RUN_DIR``
started by the job manager (torchrun underneath; on this GPU-less machine the two ranks are CPU
processes in a gloo group), on the tiny local Llama: a few seconds of start-up per run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import EXAMPLE_QUOTES

from lora_app import launch, procs
from lora_app.config import ConfigError, RunConfig
from lora_app.events import read_events
from lora_app.validate import preflight

#: Loss of the same step, 1 process x batch 4 vs 2 processes x batch 2 (same rows, same order):
#: float32 throughout, so what differs is only the order of the sums (a 2-way gloo all-reduce of
#: the gradients, per-process packing bins and token counts). Measured: at most 1.0e-5 over 3
#: steps (1e-4 in an earlier 4-step run); 1e-3 is ten times that and still 50x below the
#: step-to-step change of the loss (~0.05). The adapters: each LoRA matrix within 2% (relative
#: norm of the difference; measured at most 0.6%, see the test for why not element-wise).
LOSS_TOL = 1e-3
ADAPTER_TOL = 0.02


def cfg(tiny_model, processes: int, batch: int, **training) -> RunConfig:
    t = dict(
        max_steps=3,
        warmup_steps=1,
        learning_rate=1e-2,
        max_length=32,
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=2,
        eval_fraction=0,
        save_steps=50,
    )
    t.update(training)
    return RunConfig.build(
        {
            "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 96},
            "model": {"base_model_name_or_path": str(tiny_model)},
            # dropout 0: the two runs draw different random numbers, so any dropout would differ
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": t,
            "distributed": {"num_processes": processes},
        }
    )


def wait_done(jm, run_id, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = jm.get(run_id)
        if info.status not in ("queued", "running"):
            return info
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not end in {timeout} s")


def events(jm, run_id, type_=None):
    evs, _ = read_events(jm.run_dir(run_id))
    return [e for e in evs if type_ is None or e["type"] == type_]


def wait_for_step(jm, run_id, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if events(jm, run_id, "log"):
            return
        assert jm.get(run_id).status in ("queued", "running"), jm.get(run_id).message
        time.sleep(0.1)
    raise AssertionError("no training step")


def adapter_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


# -- the command and the config (no process started) ---------------------------------------
def test_one_process_is_plain_and_two_run_under_accelerate_launch(tmp_path, tiny_model):
    one = launch.train_command(tmp_path, cfg(tiny_model, 1, 4), resume=True)
    assert one == [sys.executable, "-m", "lora_app", "train", str(tmp_path), "--resume"]
    two = launch.train_command(tmp_path, cfg(tiny_model, 2, 2))
    assert two[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert two[two.index("--num_processes") + 1] == "2" and "--multi_gpu" in two
    assert two[two.index("--main_process_port") + 1] == "0"  # the OS picks a free one, not torchrun's 29500
    assert two[-4:] == ["-m", "lora_app", "train", str(tmp_path)]


def test_user_commands_name_the_yaml_and_the_processes(tiny_model):
    c = launch.user_commands(cfg(tiny_model, 4, 2), "my run.yaml")
    assert c["single"] == "python -m lora_app train --config 'my run.yaml' --set distributed.num_processes=1"
    assert c["multi_gpu"] == "accelerate launch --multi_gpu --num_processes 4 -m lora_app train --config 'my run.yaml'"
    for flag in ("--num_machines 2", "--num_processes 8", "--machine_rank $MACHINE_RANK", "--main_process_ip"):
        assert flag in c["multi_node"]
    assert launch.user_commands(cfg(tiny_model, 1, 2))["single"] == "python -m lora_app train --config run.yaml"


def test_printed_commands_run_for_yaml_names_a_shell_or_argparse_would_misread(tmp_path, tiny_model):
    """Each printed command, run as printed (the shell splits it, argparse reads it), gets the YAML
    it names: spaces, quotes, $ and a leading dash (``--config -my.yaml`` was "expected one
    argument"; found by the breaker)."""
    import os
    import shlex

    for i, name in enumerate(("-my.yaml", "my run's $HOME.yaml", "--help.yaml")):
        d = tmp_path / str(i)
        d.mkdir()
        cfg(tiny_model, 2, 2).save(d / name)
        for where, cmd in launch.user_commands(RunConfig.load(d / name), name).items():
            argv = shlex.split(cmd)
            tail = argv[argv.index("lora_app") + 1 :]
            out = subprocess.run(
                [sys.executable, "-m", "lora_app", *tail, "--print-commands"],
                cwd=d,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, (where, cmd, out.stderr[-500:])
            assert out.stdout.startswith("# one GPU or a CPU\n"), out.stdout  # the YAML was found and read


def test_config_problems_name_the_field_and_the_fix(tiny_model):
    with pytest.raises(ConfigError) as err:
        RunConfig.build({"distributed": {"num_processes": 0, "strategy": "zero3", "mixed_precision": "fp8"}})
    text = str(err.value)
    assert "distributed.num_processes" in text and "Fix: set num_processes to a whole number >= 1" in text
    assert "distributed.strategy" in text and "Fix: choose ddp or fsdp" in text
    assert "distributed.mixed_precision" in text and "Fix: choose auto, no, bf16 or fp16" in text


def test_preflight_says_a_quantized_base_trains_with_ddp_only(tiny_model):
    raw = cfg(tiny_model, 2, 2).model_dump(mode="json")
    raw["model"]["quantization"] = "8bit"  # explicit 8bit also runs on a CPU (bitsandbytes' CPU backend)
    raw["distributed"]["strategy"] = "fsdp"
    with pytest.raises(ConfigError) as err:
        preflight(raw)
    assert err.value.problems == [
        "distributed.strategy: fsdp cannot shard a 8bit base (bitsandbytes' quantized weights train with DDP "
        "only). Fix: set distributed.strategy: ddp, or model.quantization: none."
    ]
    raw["distributed"]["strategy"] = "ddp"
    assert preflight(raw)[0].distributed.strategy == "ddp"


def test_more_processes_than_cpu_cores_are_refused_on_a_cpu(tiny_model):
    """num_processes 1000 on a CPU server started 1000 ranks, each loading the model (found by the
    breaker): refused by preflight, naming the cores, before any process starts."""
    from lora_app.container import usable_cores
    from lora_app.models import device_kind

    if device_kind() != "cpu":
        pytest.skip("the CPU rule; GPUs have their own (as many processes as GPUs)")
    cores = usable_cores()  # the CPUs, or fewer under a container's CPU quota
    for n in (cores + 1, 1000):
        with pytest.raises(ConfigError) as err:
            preflight(cfg(tiny_model, n, 2).model_dump(mode="json"))
        assert err.value.problems == [
            f"distributed.num_processes: {n} processes on the CPU need as many cores; this machine has {cores}. "
            f"Fix: set num_processes to at most {cores} (or run the multi-node command on a cluster)."
        ]
    if cores >= 2:
        assert preflight(cfg(tiny_model, 2, 2).model_dump(mode="json"))[0].distributed.num_processes == 2


def test_rank_failure_names_the_first_rank_that_failed(tmp_path, monkeypatch):
    assert launch.rank_failure(tmp_path) is None
    monkeypatch.setenv("RANK", "1")
    launch.write_rank_error(tmp_path, "ValueError: bad row")
    time.sleep(0.01)
    monkeypatch.setenv("RANK", "0")
    launch.write_rank_error(tmp_path, "RuntimeError: Connection closed by peer")
    assert json.loads((tmp_path / "rank-1.err").read_text())["rank"] == 1
    assert launch.rank_failure(tmp_path) == "rank 1 failed: ValueError: bad row (then rank 0 stopped with it)"


# -- real runs: 2 gloo processes ------------------------------------------------------------
def test_two_processes_train_the_same_steps_as_one_with_the_same_global_batch(jobs, tiny_model):
    """1 process x batch 4 x accumulation 2 vs 2 processes x batch 2 x accumulation 2: the same 8
    rows per optimizer step, in the same order (accelerate hands the ranks consecutive batches of
    one seeded permutation), the same learning rates, losses within LOSS_TOL, one event log
    (rank 0's), one adapter, and the adapters equal within float rounding."""
    one = jobs.submit(cfg(tiny_model, 1, 4))
    two = jobs.submit(cfg(tiny_model, 2, 2))
    t0 = time.time()
    assert wait_done(jobs, one).status == "finished"
    t1 = time.time()
    info = wait_done(jobs, two)
    t2 = time.time()
    assert info.status == "finished", info.message
    print(f"1 process: {t1 - t0:.1f} s, 2 processes: {t2 - t1:.1f} s")
    logs1, logs2 = events(jobs, one, "log"), events(jobs, two, "log")
    assert [e["step"] for e in logs1] == [e["step"] for e in logs2] == [1, 2, 3]
    assert [e["learning_rate"] for e in logs1] == [e["learning_rate"] for e in logs2]
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(logs1, logs2, strict=True)]
    print("loss differences", diffs)
    assert max(diffs) < LOSS_TOL, (logs1, logs2)
    info_ev = [e for e in events(jobs, two, "info") if "num_processes" in e]
    assert [e["num_processes"] for e in info_ev] == [2] and "= 8 rows per optimizer step" in info_ev[0]["message"]
    # One event log: rank 0 alone wrote it (a second writer would double every event).
    assert [e["status"] for e in events(jobs, two, "status")].count("training") == 1
    assert len(events(jobs, two, "saved")) == 1
    rd = jobs.run_dir(two)
    assert sorted(p.name for p in rd.iterdir() if "adapter" in p.name) == ["adapter"]
    assert not list(rd.glob("rank-*.err"))
    a1, a2 = adapter_tensors(jobs.run_dir(one)), adapter_tensors(rd)
    assert a1.keys() == a2.keys() and len(a1) == 8  # 2 layers x q,v x A,B
    # Adam divides by the root of the squared gradients, so where a gradient is ~0 its float
    # rounding moves a weight by up to ~lr: compare each matrix as a whole (relative norm).
    rel = {k: float((a1[k] - a2[k]).norm() / a1[k].norm()) for k in a1}
    print("adapter relative differences", rel)
    assert max(rel.values()) < ADAPTER_TOL


def test_fsdp_settings_as_transformers_reads_them(tiny_model):
    """No two GPUs here to run FSDP (accelerate applies it to GPUs only): check that the settings
    reach accelerate's FSDP plugin as meant (FSDP2, full shard, one unit per LlamaDecoderLayer, full
    state dict for saving), and that the preflight refuses fsdp on this CPU machine."""
    from transformers import AutoModelForCausalLM, TrainingArguments

    c = cfg(tiny_model, 2, 2)
    c.distributed.strategy = "fsdp"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.get_base_model = lambda: model  # (a PeftModel's accessor; the plain model is its own base)
    extra = launch.trainer_args(c, model, "cuda", 2)
    assert extra["ddp_find_unused_parameters"] is False and "ddp_backend" not in extra
    plugin = TrainingArguments(output_dir="unused", use_cpu=True, **extra).fsdp_plugin_args
    assert plugin["fsdp_version"] == 2 and plugin["reshard_after_forward"] is True
    assert plugin["auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert launch.trainer_args(c, model, "cpu", 1) == {}
    with pytest.raises(ConfigError, match=r"distributed\.strategy: fsdp shards the base across CUDA GPUs"):
        preflight(c.model_dump(mode="json"))


def test_stop_ends_every_process_of_a_two_process_run(jobs, tiny_model):
    run = jobs.submit(cfg(tiny_model, 2, 2, max_steps=5000))
    wait_for_step(jobs, run)
    leader = jobs.get(run).pid
    groups = procs.run_groups(leader)
    pids = [p for g in groups for p in procs.group_members(g) or []]
    # the launcher (torchrun's agent) and its two ranks, each rank in a session of its own
    assert len(groups) == 3 and len(pids) >= 3, (groups, pids)
    text = jobs.cancel(run, grace_s=30)
    print(text)
    rd = jobs.run_dir(run)
    why = f"{text}\n--- train.log:\n{procs.tail(rd / 'train.log', 60)}"  # what a failure needs to be read
    info = jobs.get(run)
    assert info.status == "stopped", why
    assert "its process group are gone" in text and "killed" not in text, why
    assert [p for p in pids if procs.alive(p)] == []
    last = events(jobs, run, "status")[-1]
    assert last["status"] == "stopped" and last.get("step", 0) >= 1, why
    assert (rd / "adapter" / "adapter_model.safetensors").is_file()
    # The ranks were signalled, not the launcher: it ended as after a finished run, without
    # torchrun's shutdown ("Sending process ... closing signal SIGTERM").
    assert "closing signal" not in (rd / "train.log").read_text(), why


def _rank_pids(leader: int) -> dict[int, int]:
    """RANK -> pid of each training rank of the run led by ``leader`` (from /proc/PID/environ)."""
    out = {}
    for g in procs.run_groups(leader) - {leader}:
        for pid in procs.group_members(g) or []:
            env = dict(
                kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv
            )
            if b"RANK" in env:
                out[int(env[b"RANK"])] = pid
    return out


def test_a_stop_seen_by_one_rank_is_reported_by_rank_0(jobs, tiny_model):
    """SIGTERM to rank 1 alone (a scheduler's preemption reaches any rank): the ranks agree to
    stop after the same step, and rank 0, which got no signal, reports the run "stopped" at that
    step. It reported "finished" (its own flag was not set) though the run ended at step 3 of 5000."""
    import os
    import signal

    run = jobs.submit(cfg(tiny_model, 2, 2, max_steps=5000))
    wait_for_step(jobs, run)
    ranks = _rank_pids(jobs.get(run).pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGTERM)
    info = wait_done(jobs, run, timeout=120)
    last = events(jobs, run, "status")[-1]
    why = procs.tail(jobs.run_dir(run) / "train.log", 40)
    assert info.status == "stopped" and last["status"] == "stopped", (info.message, why)
    assert 1 <= last["step"] < 5000 and f"step {last['step']}/5000," in last["message"], last
    assert (jobs.run_dir(run) / "adapter" / "adapter_model.safetensors").is_file()


def test_a_rank_that_crashes_fails_the_run_with_its_reason(jobs, tiny_model):
    run = jobs.submit(cfg(tiny_model, 2, 2, max_steps=4), env={"LORA_APP_TEST_CRASH_RANK": "1"})
    info = wait_done(jobs, run, timeout=120)
    print(info.message)
    assert info.status == "failed"
    assert info.message.startswith("rank 1 failed: RuntimeError: test crash of rank 1"), info.message
    assert [e["status"] for e in events(jobs, run, "status")].count("failed") == 1
    assert procs.group_alive(info.pid) is False
    # Resumed without the crash: both ranks train it to the end; the old rank-1.err is not this
    # attempt's failure (the job manager clears it before the start).
    jobs.resume(run)
    info = wait_done(jobs, run, timeout=120)
    assert info.status == "finished", (info.message, procs.tail(jobs.run_dir(run) / "train.log", 40))
    assert not list(jobs.run_dir(run).glob("rank-*.err"))


def test_printed_commands_keep_the_set_overrides(tmp_path, tiny_model, capsys):
    """``train --config run.yaml --set training.max_steps=7 --runs DIR --print-commands`` printed
    commands without the --set and --runs: run as printed they trained the YAML's 3 steps into
    the default runs folder (found by the breaker)."""
    import shlex

    from lora_app.__main__ import _overrides, main

    y = tmp_path / "run.yaml"
    cfg(tiny_model, 2, 2).save(y)
    sets = ["training.max_steps=7", "data.text_column=my col"]
    argv = ["train", "--config", str(y), "--print-commands", "--runs", "/shared/my runs"]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(printed) == 3
    for cmd in printed:
        args = shlex.split(cmd)
        given = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        over = _overrides(given)
        assert over["training"]["max_steps"] == 7 and over["data"]["text_column"] == "my col", cmd
        assert args[args.index("--runs") + 1] == "/shared/my runs", cmd  # --runs kept too
    # the one-process command's own --set comes last, so it wins
    assert shlex.split(printed[0])[-2:] == ["--set", "distributed.num_processes=1"]


def test_print_commands_for_a_yaml(tmp_path, tiny_model):
    from lora_app.__main__ import main

    y = tmp_path / "run.yaml"
    cfg(tiny_model, 2, 2).save(y)
    out = subprocess.run(
        [sys.executable, "-m", "lora_app", "train", "--config", str(y), "--print-commands"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    c = launch.user_commands(cfg(tiny_model, 2, 2), str(y))
    assert out.stdout.splitlines()[1::2] == [c["single"], c["multi_gpu"], c["multi_node"]]
    assert main(["train", "--config", str(y), "--print-commands", "--set", "distributed.strategy=zero3"]) == 2


def test_the_printed_multi_process_command_runs_the_yaml(tmp_path, tiny_model):
    """``accelerate launch --num_processes 2 -m lora_app train --config run.yaml``, as printed (plus
    port 0: a free one, and a runs folder): rank 0 makes one run folder, both ranks train it, one adapter."""
    y = tmp_path / "run.yaml"
    cfg(tiny_model, 1, 2, max_steps=2).save(y)
    cmd = launch.user_commands(RunConfig.load(y), str(y))["multi_gpu"].replace("--num_processes 8", "--num_processes 2")
    argv = [sys.executable, "-m", "accelerate.commands.launch", *cmd.split()[2:]]
    argv[argv.index("--multi_gpu") + 1 : argv.index("--multi_gpu") + 1] = ["--main_process_port", "0"]
    out = subprocess.run(argv + ["--runs", str(tmp_path / "runs")], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (rd,) = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert RunConfig.load(rd / "config.yaml").distributed.num_processes == 2
    evs, _ = read_events(rd)
    assert [e["status"] for e in evs if e["type"] == "status"][-1] == "finished"
    assert [e["step"] for e in evs if e["type"] == "log"] == [1, 2]
    assert (rd / "adapter" / "adapter_model.safetensors").is_file()
    assert "finished: step 2/2" in out.stdout


def test_runs_tab_shows_the_commands_for_the_runs_yaml(tmp_path, tiny_model):
    from lora_app.identity import Identity
    from lora_app.jobs import JobManager
    from lora_app.ui.common import AppContext
    from lora_app.ui.runs_tab import export_yaml, run_detail

    jm = JobManager(tmp_path / "runs", max_running=0)  # queued, never started
    try:
        rid = jm.submit(cfg(tiny_model, 2, 2), owner="alice")
        ctx = AppContext(jm, None, frozenset())
        md = run_detail(ctx, rid, Identity("alice"))[0]
        name = export_yaml(ctx, rid).name
        for command in launch.user_commands(cfg(tiny_model, 2, 2), name).values():
            assert f"`{command}`" in md
        assert "accelerate launch --multi_gpu --num_processes 2 -m lora_app train --config" in md
    finally:
        jm.close()

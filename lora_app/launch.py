"""How a run's training process is started: one plain process, or ``accelerate launch`` for many.

The app starts ``python -m lora_app train RUN_DIR`` when ``distributed.num_processes`` is 1, else
``python -m accelerate.commands.launch --multi_gpu --num_processes N ... -m lora_app train RUN_DIR``
(accelerate's own launcher, which runs torchrun's elastic agent: one process per rank with RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set; no process spawning of ours). ``--multi_gpu`` is
accelerate's name for "torchrun, N processes"; without CUDA the ranks run on the CPU and
transformers' TrainingArguments (``use_cpu``, ``ddp_backend="gloo"``) makes them a gloo group.

Also here: the commands that run a saved YAML on one's own machine or cluster
(:func:`user_commands`), and how a rank's failure reaches the run's record (:func:`write_rank_error`,
:func:`rank_failure`): every rank that fails writes ``RUN_DIR/rank-N.err``; the first failure in
time is the cause (the other ranks then fail on a closed connection), and the run's message names it.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from .config import RunConfig
from .events import EventWriter

#: The environment torchrun gives each rank (source: torch.distributed.run, "Environment Variables").
RANK_ENV = "RANK"
WORLD_ENV = "WORLD_SIZE"


def rank() -> int:
    """This process's global rank (0 outside a launcher): ``RANK``, as accelerate's PartialState reads it."""
    return int(os.environ.get(RANK_ENV, "0") or 0)


def world_size() -> int:
    """Processes in this run (1 outside a launcher): ``WORLD_SIZE``."""
    return int(os.environ.get(WORLD_ENV, "1") or 1)


def end_process_group() -> None:
    """End a finished run's process group on every rank together: a barrier, then
    ``destroy_process_group`` (PyTorch's advice for the end of a distributed program). Left to
    the interpreter's exit, one rank of a finished two-process CPU run died of SIGABRT once in CI
    (the launcher then failed the run); gloo's teardown while its peer was still going is the
    likely cause. No-op without a process group; an error is printed, not raised (the run is
    finished and saved: its teardown must not fail it)."""
    import torch.distributed as dist

    try:
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    except Exception as err:
        print(f"process group teardown: {type(err).__name__}: {err}", file=sys.stderr)


def is_main_process() -> bool:
    """Rank 0: the one process that writes events and saves the adapter."""
    return rank() == 0


def _accelerate_args(cfg: RunConfig, port: int | None = None) -> list[str]:
    # port 0: torchrun's store binds a port the OS picks (no race with another run or a test for
    # a port chosen beforehand; accelerate launch --help suggests it for automatic selection).
    d = cfg.distributed
    args = ["--multi_gpu", "--num_processes", str(d.num_processes), "--num_machines", "1", "--dynamo_backend", "no"]
    if d.mixed_precision != "auto":
        args += ["--mixed_precision", d.mixed_precision]
    if port is not None:
        args += ["--main_process_port", str(port)]
    return args


def train_command(run_dir: Path, cfg: RunConfig, resume: bool = False) -> list[str]:
    """The argv of a run's training process: ``python -m lora_app train RUN_DIR [--resume]``, under
    ``accelerate launch`` when ``distributed.num_processes`` > 1. ``run_dir`` stays in every
    process's command line (:func:`lora_app.procs.run_alive` recognises the run by it)."""
    tail = ["-m", "lora_app", "train", str(run_dir)] + (["--resume"] if resume else [])
    if cfg.distributed.num_processes <= 1:
        return [sys.executable, *tail]
    return [sys.executable, "-m", "accelerate.commands.launch", *_accelerate_args(cfg, 0), *tail]


def user_commands(
    cfg: RunConfig, yaml_name: str = "run.yaml", sets: list[str] | None = None, runs: str | None = None
) -> dict[str, str]:
    """The shell commands that run this config's YAML (saved as ``yaml_name``) elsewhere, by where:
    ``single`` (one GPU or a CPU), ``multi_gpu`` (one machine, N processes: N =
    ``distributed.num_processes``, or 8 as an example when it is 1), ``multi_node`` (2 machines x N
    processes; run once per machine with its ``--machine_rank``). Flags as ``accelerate launch --help``
    names them. Under a launcher, ``train --config`` makes the run folder on rank 0 and every rank
    trains it (``lora_app.__main__``); the number of processes is the launcher's. ``sets``: the
    ``--set section.key=value`` overrides given with the YAML and ``runs`` (``--runs DIR``), kept
    in every command."""
    n = cfg.distributed.num_processes if cfg.distributed.num_processes > 1 else 8
    # shlex.quote for the shell; "--config=" for a name argparse would take for an option ("-x.yaml")
    sep = "=" if yaml_name.startswith("-") else " "
    train = f"-m lora_app train --config{sep}{shlex.quote(yaml_name)}" + "".join(
        f" --set {shlex.quote(s)}" for s in sets or []
    )
    if runs:
        train += f" --runs {shlex.quote(runs)}" if not runs.startswith("-") else f" --runs={shlex.quote(runs)}"
    single = f"python {train}" + (" --set distributed.num_processes=1" if cfg.distributed.num_processes > 1 else "")
    mp = "" if cfg.distributed.mixed_precision == "auto" else f" --mixed_precision {cfg.distributed.mixed_precision}"
    return {
        "single": single,
        "multi_gpu": f"accelerate launch --multi_gpu --num_processes {n}{mp} {train}",
        "multi_node": (
            f"accelerate launch --multi_gpu --num_machines 2 --num_processes {2 * n} --machine_rank $MACHINE_RANK "
            f"--main_process_ip $MASTER_ADDR --main_process_port 29500{mp} {train}"
        ),
    }


def commands_markdown(cfg: RunConfig, yaml_name: str = "run.yaml") -> str:
    """:func:`user_commands` as Markdown: the Runs tab's "Run it elsewhere" text."""
    c = user_commands(cfg, yaml_name)
    return (
        f"**Run these settings elsewhere** (save them as `{yaml_name}`; pip install this app there):\n\n"
        f"- one GPU or a CPU: `{c['single']}`\n"
        f"- one machine with several GPUs: `{c['multi_gpu']}`\n"
        f"- several machines (once on each, `MACHINE_RANK` 0, 1, ...; `MASTER_ADDR` = machine 0's address; "
        f"the runs folder on a shared filesystem): `{c['multi_node']}`\n\n"
        "A Slurm job script for the last one: see the README, section *Many GPUs and clusters*."
    )


class NoEvents(EventWriter):
    """The event writer of a rank other than 0: writes nothing (events are rank 0's alone)."""

    def __init__(self) -> None:
        pass

    def emit(self, type: str, **fields) -> dict:
        return {"type": type, **fields}

    def close(self) -> None:
        pass


def trainer_args(cfg: RunConfig, model, device: str, world: int) -> dict:
    """TrainingArguments for a run of ``world`` processes (none for one): gloo on a CPU (also where
    MPI is installed, which accelerate would otherwise pick); no search for unused parameters
    (every LoRA weight is used in every forward, and the search costs a graph walk per step).
    FSDP with the LoRA-friendly settings: FSDP2 (transformers' default ``fsdp_config["version"]``),
    which shards every parameter on its own, so frozen base weights and trainable LoRA weights never
    share a flat parameter (what FSDP1's ``use_orig_params=True`` was for); auto wrap per decoder
    layer (``_no_split_modules``, the classes transformers itself keeps whole); full state dict for
    saving (source: transformers ``TrainingArguments._process_fsdp_args``, accelerate
    ``FullyShardedDataParallelPlugin``)."""
    if world <= 1:
        return {}
    out: dict = {"ddp_find_unused_parameters": False}
    if device == "cpu":
        out["ddp_backend"] = "gloo"
    if cfg.distributed.strategy == "fsdp":
        layers = sorted(getattr(model.get_base_model(), "_no_split_modules", None) or [])
        out["fsdp"] = True
        out["fsdp_config"] = {
            "version": 2,
            "reshard_after_forward": True,  # full shard
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "transformer_layer_cls_to_wrap": layers,
            "state_dict_type": "FULL_STATE_DICT",
        }
    return out


def clear_rank_errors(run_dir: Path, only_mine: bool = False) -> None:
    """Remove the ``rank-N.err`` files of an earlier attempt of the run (all, or this rank's)."""
    for p in Path(run_dir).glob(f"rank-{rank() if only_mine else '*'}.err"):
        p.unlink(missing_ok=True)


def write_rank_error(run_dir: Path, message: str) -> None:
    """Record this rank's failure as ``run_dir/rank-<RANK>.err`` (JSON: rank, time, message), written
    whole (tmp + rename) so a reader never sees half of it."""
    r = rank()
    path = Path(run_dir) / f"rank-{r}.err"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"rank": r, "time": time.time(), "message": message}), encoding="utf-8")
    os.replace(tmp, path)


def rank_failure(run_dir: Path, wait_s: float = 0.0) -> str | None:
    """The run's failure as its ranks recorded it: "rank N failed: <its reason>" for the first rank
    that failed (by time: the others fail because it went away), naming the others that failed
    after it; None when no rank wrote one. ``wait_s``: wait up to this long for a rank other than
    this one to record its failure (rank 0 fails on a closed connection a moment before the rank
    that caused it has written why)."""
    deadline = time.time() + wait_s
    while True:
        errs = []
        for p in sorted(Path(run_dir).glob("rank-*.err")):
            try:
                errs.append(json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        others = [e for e in errs if e.get("rank") != rank()]
        if others or time.time() >= deadline:
            break
        time.sleep(0.1)
    if not errs:
        return None
    errs.sort(key=lambda e: e.get("time", 0))
    first = errs[0]
    text = f"rank {first['rank']} failed: {first['message']}"
    later = sorted({e["rank"] for e in errs[1:]})
    if later:
        text += f" (then rank{'s' if len(later) > 1 else ''} {', '.join(map(str, later))} stopped with it)"
    return text

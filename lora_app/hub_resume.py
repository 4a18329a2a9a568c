"""Checkpoints on the Hub (``training.hub_checkpoints``), the app's side: the push preflight at
Start, and "Resume from the Hub" after a restart that lost the run folder.

The training process's side (what is pushed, and how failures become warnings) is
:mod:`lora_app.checkpoint_push`; what a checkpoint repo holds, after the Trainer's pushes:
``last-checkpoint/`` (the Trainer's checkpoint: adapter, optimizer, scheduler, RNG state,
``trainer_state.json``), ``config.yaml``, ``data/`` and ``lora_app_events.jsonl``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .checkpoint_push import EVENTS_FILE
from .config import RunConfig, TrainingSettings
from .hub import check_destination
from .hub_client import HubError, explain, whoami
from .repo_id import check_repo_id, sanitize

if TYPE_CHECKING:
    from .jobs import JobManager

#: Files the Trainer's own pushes put in a checkpoint repo besides lora_app's (a repo holding
#: only these is a checkpoint repo, or an adapter repo, not something else).
REPO_FILES = {
    ".gitattributes",
    "README.md",
    "config.yaml",
    "adapter_config.json",
    "adapter_model.safetensors",
    "training_args.bin",
    EVENTS_FILE,
}
MARKER = "last-checkpoint/trainer_state.json"


def default_checkpoint_repo(user: str, base: str, data: str, now: float | None = None) -> str:
    """``<user>/<base>-lora-<data>-ckpt-<UTC time>``: one repo per run (a run's checkpoints never
    overwrite another's)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    short = sanitize(base.rstrip("/").split("/")[-1], 40)
    data = sanitize(data.rsplit(".", 1)[0], 30)
    return f"{user}/{sanitize('-'.join(p for p in (short, 'lora', data, 'ckpt', stamp) if p))}"


def checkpoint_repo(t: TrainingSettings, base: str, data: str, token: str | None) -> str:
    """The push preflight of a run with ``hub_checkpoints``, at Start, before any GPU time: a
    token is there, works, may write (not read-only) under the repo's owner, and the repo is new
    or holds no other run's checkpoint (the Trainer would overwrite ``last-checkpoint/``).
    Returns the repo id (``t.hub_model_id``, else :func:`default_checkpoint_repo`); raises
    HubError listing the problem and its fix."""
    if not token:
        raise HubError(
            [
                "training.hub_checkpoints: no Hugging Face token, so nothing can be pushed. Fix: sign in with "
                "Hugging Face (or paste a token with write access in the Hub tab, or set HF_TOKEN), or turn "
                "hub_checkpoints off."
            ]
        )
    user = whoami(token, use_cache=False)
    repo_id = t.hub_model_id or default_checkpoint_repo(user.name, base, data)
    problems = check_repo_id(repo_id)
    if problems:
        raise HubError([p.replace("hub.repo_id", "training.hub_model_id") for p in problems])
    check_destination(repo_id, token, "", REPO_FILES, MARKER, "checkpoints of a lora_app run", validate_yaml=False)
    from huggingface_hub import HfApi

    try:
        files = set(HfApi().list_repo_files(repo_id, token=token))
    except Exception:  # not there (check_destination saw to every other answer)
        files = set()
    if MARKER in files:
        raise HubError(
            [
                f"training.hub_model_id: '{repo_id}' already holds the checkpoint of another run, which this run "
                "would overwrite. Fix: leave hub_model_id empty (a new repo per run), pick a new name, or continue "
                "that run with Resume from the Hub (Runs tab)."
            ]
        )
    return repo_id


def with_checkpoint_repo(cfg: RunConfig, token: str | None) -> RunConfig:
    """``cfg`` with ``training.hub_model_id`` set by :func:`checkpoint_repo` (a copy); ``cfg``
    itself when ``hub_checkpoints`` is off."""
    if not cfg.training.hub_checkpoints:
        return cfg
    data = cfg.data.dataset_id or cfg.data.source_name or Path(cfg.data.path or "").name
    out = cfg.model_copy(deep=True)
    out.training.hub_model_id = checkpoint_repo(cfg.training, cfg.model.base_model_name_or_path, data, token)
    return out


def resume_from_hub(jobs: JobManager, repo_id: str, owner: str, token: str | None) -> tuple[str, int]:
    """Queue a new run that continues the checkpoint in ``repo_id``: downloads ``config.yaml``,
    ``last-checkpoint/``, ``data/`` and the run's events (``snapshot_download``), and submits the
    run with that checkpoint as ``checkpoints/checkpoint-<step>``, so the Trainer goes on at
    step + 1 with the same settings, RNG and data order (``resume_from_checkpoint``); it keeps
    pushing to ``repo_id``. Returns ``(run_id, step)``. Raises HubError (bad id, no access, no
    checkpoint there) or QueueFull; nothing is written then."""
    repo_id = (repo_id or "").strip()
    problems = check_repo_id(repo_id)
    if problems:
        raise HubError(problems)
    jobs.check_room(owner)
    from huggingface_hub import snapshot_download

    with tempfile.TemporaryDirectory(prefix="lora_app_hub_resume_") as tmp:
        try:
            snapshot_download(
                repo_id,
                local_dir=tmp,
                token=token,
                allow_patterns=["config.yaml", "last-checkpoint/*", "data/*", EVENTS_FILE],
            )
        except Exception as err:
            raise HubError([explain(err, f"download the checkpoint of '{repo_id}'", repo_id)]) from None
        root = Path(tmp)
        if not (root / MARKER).is_file() or not (root / "config.yaml").is_file():
            raise HubError(
                [
                    f"hub.repo_id: '{repo_id}' holds no lora_app checkpoint (last-checkpoint/ and config.yaml). "
                    "Fix: give the repo a run with 'keep checkpoints on the Hub' pushed to (training.hub_model_id)."
                ]
            )
        step = int(json.loads((root / MARKER).read_text(encoding="utf-8"))["global_step"])
        cfg = RunConfig.load(root / "config.yaml")
        if step >= cfg.training.max_steps:
            raise HubError(
                [
                    f"hub.repo_id: the run in '{repo_id}' already finished (step {step} of max_steps "
                    f"{cfg.training.max_steps}): nothing to resume. Its adapter is in the repo's root: try it "
                    "with its repo id in the Try tab."
                ]
            )
        for name, field in (("train", "path"), ("eval", "eval_path")):
            if getattr(cfg.data, field):
                found = sorted((root / "data").glob(name + ".*")) if (root / "data").is_dir() else []
                if not found:
                    raise HubError(
                        [
                            f"hub.repo_id: '{repo_id}' lacks the run's data file (data/{name}.*). Fix: resume it "
                            "where the run folder is, or start a new run."
                        ]
                    )
                setattr(cfg.data, field, str(found[0]))
        cfg.training.hub_checkpoints, cfg.training.hub_model_id = True, repo_id
        ck = root / f"checkpoint-{step}"
        shutil.move(root / "last-checkpoint", ck)
        history = []
        if (root / EVENTS_FILE).is_file():
            lines = (root / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
            history = [e for e in (json.loads(x) for x in lines if x.strip()) if e.get("step", 0) <= step]
        env = {"HF_TOKEN": token} if token else None
        run_id = jobs.submit(cfg, owner=owner, env=env, checkpoint=ck, history=history)
    return run_id, step

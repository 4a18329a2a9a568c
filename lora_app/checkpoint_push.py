"""Checkpoints on the Hub (``training.hub_checkpoints``), the training process's side.

The push is the Trainer's own (``push_to_hub=True, hub_strategy="checkpoint"``, read in
``transformers.Trainer._push_from_checkpoint``): at every save it uploads the Trainer's output
folder (``RUN_DIR/checkpoints``, but not its ``checkpoint-*`` folders) to the repo's root and the
newest checkpoint to ``last-checkpoint/``, each with ``HfApi.upload_folder(run_as_future=True)``:
one background thread, so training does not wait for the upload. What the Trainer does *not* do,
and this module adds:

- a failure is silent there (the future just holds the exception, and ``PushInProgress`` only
  asks whether it is done); here each ended push becomes an ``info`` event (``hub_push``: "ok"
  or "failed", with the reason), and a failed one is naturally retried: the next save pushes the
  whole folder and the newer checkpoint again. A repo that cannot be created when the Trainer
  starts (``init_hf_repo`` raises, which would fail the run) is a warning too, tried again at
  each save. Nothing here ever fails the run.
- the Trainer uploads the live ``checkpoint-<step>`` folder in the background, and its checkpoint
  rotation (``save_total_limit=1``) deletes that folder at the next save, often before the
  upload started ("is not a directory"); here a copy (``_hub_push/``, one checkpoint's size on
  disk) is uploaded instead, replaced only once its push is done.
- the run travels with its checkpoint: ``config.yaml``, the data copy (``data/``) and the
  events a resume needs (``lora_app_events.jsonl``: losses, held-out points and the batching
  plan, no folder paths) are put in ``_hub_root/``, which the Trainer uploads to the repo's root
  in place of its whole output folder (whose walk met the checkpoint folders it rotates).
  :mod:`lora_app.hub_resume` rebuilds a run folder from them.

No token is passed to the Trainer: huggingface_hub reads ``HF_TOKEN`` from the environment the
job manager gave the process, while ``TrainingArguments`` are pickled into every checkpoint's
``training_args.bin`` (``torch.save(self.args)``), which is written to the run folder and uploaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .events import EventWriter, read_events

OUTPUT_DIR = "checkpoints"  # the Trainer's output_dir inside the run folder
EVENTS_FILE = "lora_app_events.jsonl"
PUSH_COPY = "_hub_push"  # the copy of the checkpoint being uploaded, in the output folder
ROOT_COPY = "_hub_root"  # what the repo's root gets (config, data, events, the Trainer's files)


def training_arguments(t) -> dict[str, Any]:
    """TrainingArguments keywords for ``t`` (TrainingSettings): empty unless ``hub_checkpoints``.
    ``hub_private_repo``: the repo is created private (an existing repo keeps its visibility)."""
    if not t.hub_checkpoints:
        return {}
    return {"push_to_hub": True, "hub_model_id": t.hub_model_id, "hub_strategy": "checkpoint", "hub_private_repo": True}


def resume_events(events: list[dict]) -> list[dict]:
    """The events of a run that a resume elsewhere needs: training losses, held-out evaluations
    and the batching plan (``info`` with ``merged``: a resume must keep the micro-batch split, as
    the Trainer skips the batches already seen by count). Their messages hold no folder path."""
    return [e for e in events if e.get("type") in ("log", "eval") or (e.get("type") == "info" and "merged" in e)]


def stage(run_dir: Path) -> None:
    """Copy ``config.yaml``, the data files it names (``data.path`` as ``data/train<ext>``,
    ``data.eval_path`` as ``data/eval<ext>``; a Hub dataset is named by its id) and
    :func:`resume_events` into ``ROOT_COPY`` in the Trainer's output folder: each push uploads that
    folder to the repo's root. The repo is private: the data stays the owner's."""
    from .config import RunConfig

    out = run_dir / OUTPUT_DIR / ROOT_COPY
    (out / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "config.yaml", out / "config.yaml")
    cfg = RunConfig.load(run_dir / "config.yaml")
    for name, src in (("train", cfg.data.path), ("eval", cfg.data.eval_path)):
        dst = out / "data" / (name + Path(src or "").suffix.lower())
        if src and Path(src).is_file() and not dst.exists():  # the run's data does not change
            shutil.copyfile(src, dst)
    lines = [json.dumps(e, ensure_ascii=False, default=str) for e in resume_events(read_events(run_dir)[0])]
    (out / EVENTS_FILE).write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def trainer_class(base: type, run_dir: Path, ev: EventWriter) -> type:
    """``base`` (a ``transformers.Trainer`` class) whose Hub pushes never fail the run and report
    how each ended (:func:`report`); see the module docstring."""

    class HubCheckpointTrainer(base):
        _reported: set

        def init_hf_repo(self, token=None, private=None):
            self.push_in_progress = None
            try:
                super().init_hf_repo(token=token, private=private)
            except Exception as err:  # no network, a revoked token: the run goes on without pushes for now
                self.hub_model_id = None
                ev.emit("info", message=_warning(self.args.hub_model_id, "create", err), hub_push="failed")

        def _push_from_checkpoint(self, checkpoint_folder):
            report(self, ev)
            pip = self.push_in_progress
            if pip is not None and not pip.is_done():
                return  # as the Trainer does (hub_always_push off): the next save pushes a newer one
            if self.hub_model_id is None:
                self.init_hf_repo()
                if self.hub_model_id is None:
                    return
            # The upload runs later, in the background, while the Trainer's checkpoint rotation
            # (save_total_limit=1) deletes this folder at the next save: upload a copy that
            # nothing touches until its push is done (the root upload skips "_*" paths).
            copy = run_dir / OUTPUT_DIR / PUSH_COPY
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(checkpoint_folder, copy / Path(checkpoint_folder).name)
            stage(run_dir)  # the events up to this checkpoint travel with it
            before = set(pip.jobs) if pip is not None else set()
            # The Trainer's root upload walks its output folder later, in the background, and its
            # walk (``glob("**/*")``, filtered only afterwards) went into the checkpoint-* folders the
            # next save writes and rotates: FileNotFoundError, one failed push in a CI run. It walks
            # ROOT_COPY instead, where the Trainer also copies its files for this push.
            out_dir = self.args.output_dir
            self.args.output_dir = str(run_dir / OUTPUT_DIR / ROOT_COPY)
            try:
                super()._push_from_checkpoint(str(copy / Path(checkpoint_folder).name))
            except Exception as err:
                ev.emit("info", message=_warning(self.hub_model_id, "push to", err), hub_push="failed")
            finally:
                self.args.output_dir = out_dir
            steps = self.__dict__.setdefault("_job_step", {})
            for job in self.push_in_progress.jobs if self.push_in_progress is not None else []:
                if job not in before:  # this save's two uploads (root files, last-checkpoint/)
                    steps[job] = self.state.global_step

    return HubCheckpointTrainer


def finish(trainer, run_dir: Path, ev: EventWriter) -> None:
    """After ``trainer.train()``: wait for the pushes still going, and push the last checkpoint
    once more when the Hub does not have it yet (the Trainer skips a save's push while the
    previous one runs, and the final save often comes right after another), so a stopped run
    can always be resumed from its last step. Reports every push (:func:`report`)."""
    from .run_folder import last_checkpoint

    trainer._finish_current_push()
    report(trainer, ev)
    last = last_checkpoint(run_dir)
    if last is not None and trainer.__dict__.get("_ok_step", -1) < int(last.rsplit("-", 1)[1]):
        trainer._push_from_checkpoint(last)
        trainer._finish_current_push()
        report(trainer, ev)


def report(trainer, ev: EventWriter) -> None:
    """An ``info`` event for each push of ``trainer`` that ended since the last call: ``hub_push``
    "ok" (with the commit) or "failed" (a warning with the reason; the next save retries)."""
    seen = trainer.__dict__.setdefault("_reported", set())
    pip = getattr(trainer, "push_in_progress", None)
    for job in list(pip.jobs) if pip is not None else []:
        if job in seen or not job.done():
            continue
        seen.add(job)
        err = job.exception()
        if err is not None:
            ev.emit("info", message=_warning(trainer.hub_model_id, "push to", err), hub_push="failed")
            continue
        step = trainer.__dict__.get("_job_step", {}).get(job)
        if step is not None and "checkpoint" in (getattr(job.result(), "commit_message", "") or ""):
            trainer._ok_step = max(trainer.__dict__.get("_ok_step", -1), step)
            ev.emit(
                "info",
                message=f"Hub: the checkpoint at step {step} is in {trainer.hub_model_id} (last-checkpoint/)",
                hub_push="ok",
                step=step,
                repo_id=trainer.hub_model_id,
            )


def _warning(repo_id: str | None, action: str, err: BaseException) -> str:
    from .hub_client import explain

    return (
        f"Warning: checkpoint not pushed to {repo_id}: {explain(err, action + ' the checkpoint repo', repo_id)} "
        "Training goes on; the next save tries again."
    )

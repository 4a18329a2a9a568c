"""What a run folder holds, read and written the same way by the training process and the job manager.

``RUN_DIR/adapter/`` (the latest saved adapter, replaced atomically), ``RUN_DIR/checkpoints/``
(the Trainer's ``checkpoint-<step>`` folders, for resuming), ``RUN_DIR/events.jsonl`` (see
:mod:`lora_app.events`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .events import EventWriter, read_events

if TYPE_CHECKING:
    pass

ADAPTER_DIR = "adapter"
#: The tokenizer files a conversation run's adapter folder holds (with the chat template it
#: trained with, so Try it and a Hub copy render chats the same way); a push uploads them too.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def new_run_id() -> str:
    """A run id: its local start time and 6 random hex digits, e.g. ``20261201-031700-a1b2c3``."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def save_adapter(
    model, run_dir: Path, card: str, state_dict: dict | None = None, tokenizer=None, initial: Path | None = None
) -> Path:
    """Write the adapter (``model.save_pretrained``: adapter_config.json + adapter_model.safetensors)
    and its model card ``card`` (README.md) to ``run_dir/adapter`` atomically: written to a tmp
    folder, then renamed, so a reader (the Try tab, a push) never sees half an adapter. Returns the folder.
    ``state_dict``: the full weights when the model's own are shards (FSDP; PEFT keeps its LoRA keys).
    ``tokenizer``: saved too (``save_pretrained``: tokenizer.json, tokenizer_config.json with its
    ``chat_template``...) when given: a conversation run's, with the chat template it trained with.
    ``initial``: the adapter as PiSSA/OLoRA initialised it; PEFT then saves the difference as a plain
    LoRA of twice the rank that applies to the unchanged base model (``path_initial_model_for_weight_conversion``)."""
    final = run_dir / ADAPTER_DIR
    tmp = run_dir / f".{ADAPTER_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    kw: dict = {"state_dict": state_dict} if state_dict else {}
    if initial is not None:
        kw["path_initial_model_for_weight_conversion"] = str(initial)
    model.save_pretrained(tmp, safe_serialization=True, **kw)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    (tmp / "README.md").write_text(card, encoding="utf-8")
    return replace_folder(tmp, final)


def replace_folder(tmp: Path, final: Path) -> Path:
    """Put the finished folder ``tmp`` in place of ``final`` with renames only (the old one is
    moved aside first and removed last), so ``final`` is always absent or whole. Returns ``final``."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def last_checkpoint(run_dir: Path) -> str | None:
    """The folder of the run's last Trainer checkpoint (found by transformers'
    ``get_last_checkpoint``, as ``Trainer.train(resume_from_checkpoint=...)`` expects), or None."""
    from transformers.trainer_utils import get_last_checkpoint  # (imports torch: only when resuming)

    ck = run_dir / "checkpoints"
    return get_last_checkpoint(str(ck)) if ck.is_dir() else None


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of :func:`last_checkpoint` (``checkpoint-<step>``); None if the run has none."""
    last = last_checkpoint(run_dir)
    return int(last.rsplit("-", 1)[1]) if last else None


def last_saved(run_dir: Path) -> dict | None:
    """The run's last ``saved`` event, if its adapter folder is really there; else None."""
    events, _ = read_events(run_dir)
    saved = [e for e in events if e.get("type") == "saved"]
    return saved[-1] if saved and (run_dir / ADAPTER_DIR / "adapter_config.json").exists() else None


def kept_line(run_dir: Path) -> str:
    """The end of Stop's answer: which saved adapter is kept (:func:`last_saved`)."""
    saved = last_saved(run_dir)
    if not saved:
        return " No adapter had been saved yet."
    return f" The adapter saved at step {saved['step']} is kept in {saved['path']}."


def create_folder(root: Path, run_id: str, cfg, checkpoint: Path | None = None, history: list[dict] | None = None):
    """Make ``root/run_id``: ``config.yaml`` (``cfg``, a RunConfig, with ``data.path`` pointing at
    the copy), ``data/train<ext>`` (a private copy of the data file, so a cleaned upload cache or
    a closed browser tab cannot take it away mid-run; ``data.eval_path``'s as ``data/eval<ext>``),
    ``events.jsonl`` (``history``, then "queued"), and ``checkpoints/<checkpoint's name>`` when a checkpoint is given (a resume).
    The folder appears whole or not at all (built as ``.run_id.tmp``, then renamed). Returns
    the config as saved."""
    tmp = root / f".{run_id}.tmp"
    tmp.mkdir(parents=True)
    try:
        cfg = cfg.model_copy(deep=True)
        d = cfg.data
        # the held-out file too (an upload, the same risk), under the names checkpoint_push gives them
        for field, name_field, stem in (("path", "source_name", "train"), ("eval_path", "eval_source_name", "eval")):
            if not getattr(d, field):
                continue
            src = Path(getattr(d, field))
            (tmp / "data").mkdir(exist_ok=True)
            dst = tmp / "data" / (stem + src.suffix.lower())
            shutil.copyfile(src, dst)
            setattr(d, name_field, getattr(d, name_field) or src.name)
            setattr(d, field, str(root / run_id / "data" / dst.name))
        cfg.save(tmp / "config.yaml")
        if checkpoint is not None:
            shutil.copytree(checkpoint, tmp / "checkpoints" / Path(checkpoint).name)
        writer = EventWriter(tmp)
        for e in history or []:
            writer.emit(**e)
        writer.emit("status", status="queued", message=f"run {run_id} queued")
        writer.close()
        os.rename(tmp, root / run_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg

"""The training job: base model + LoRA + ``transformers.Trainer``, reporting to the event log.

Runs as its own process (``python -m lora_app train RUN_DIR``), started by :mod:`lora_app.jobs`;
never imported by the web server. Contract with the outside world, all inside RUN_DIR:

- reads ``config.yaml`` (a :class:`~lora_app.config.RunConfig`) and the data it names;
- appends to ``events.jsonl`` (see :mod:`lora_app.events`);
- writes ``adapter/`` (adapter_config.json + adapter_model.safetensors + README.md), replaced
  atomically every ``save_steps`` and at the end, so a reader never sees half an adapter;
- ``checkpoints/`` holds the Trainer state for resuming (with ``training.hub_checkpoints`` also
  what goes to the Hub at each save: :mod:`lora_app.checkpoint_push`);
- SIGTERM/SIGINT = stop: the current step finishes, the adapter is saved, status "stopped".
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from .config import ConfigError, RunConfig
from .events import EventWriter, read_events
from .progress import TokenCounter, make_callback
from .run_folder import last_checkpoint, save_adapter


def _held_out_rows(rows):
    from .text import TokenizedRows

    class _HeldOutRows(TokenizedRows):
        def __getitem__(self, i: int) -> dict:
            return {"input_ids": self.rows[i], "held_out": True}

    return _HeldOutRows(rows)


def train(run_dir: str | Path, resume: bool = False, keep: dict | None = None) -> int:
    """Run the job in ``run_dir``. Returns the process exit code (0 finished or stopped, 1 failed, 2 not a run that can be trained).

    ``keep``: if a dict is given, the trained model and tokenizer are put in it (in-process use).
    """
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "config.yaml").is_file():  # checked before the EventWriter creates events.jsonl in it
        what = "does not exist" if not run_dir.exists() else "is not a run folder (it holds no config.yaml)"
        print(f"{run_dir} {what}: give a run folder, or a config file with --config.", file=sys.stderr)
        return 2
    if resume:  # the app queues a resume as "queued"; a finished run's adapter must not be trained on and overwritten
        last = [e.get("status") for e in read_events(run_dir)[0] if e.get("type") == "status"][-1:]
        if last and last[0] not in ("stopped", "failed", "queued"):
            print(f"Run {run_dir.name} is {last[0]}: only a stopped or failed run can be resumed.", file=sys.stderr)
            return 2
    ev = EventWriter(run_dir)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        return _train(run_dir, ev, stop, resume, keep)
    except ConfigError as err:
        ev.emit("status", status="failed", message=str(err))
        return 1
    except Exception as err:  # the reason goes to the UI; the traceback to stderr (run log)
        traceback.print_exc()
        ev.emit("status", status="failed", message=_failure_message(err))
        return 1
    finally:
        ev.close()


def _failure_message(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():
        text += (
            " | Fix: lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch), lower max_length, turn on gradient_checkpointing, or load the base in 4bit."
        )
    return text


def enable_gradient_checkpointing(model) -> None:
    """Checkpoint activations so that every LoRA weight still gets its gradient.

    Non-reentrant checkpointing is used: with the reentrant variant, a checkpointed block
    whose inputs do not require grad (frozen embeddings feed it) silently yields no gradient
    for the LoRA weights inside it (torch.utils.checkpoint docs, "use_reentrant").
    """
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.2x; the old name goes in v6
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()


def _train(run_dir: Path, ev: EventWriter, stop: threading.Event, resume: bool, keep: dict | None = None) -> int:
    t_start = time.time()
    cfg = RunConfig.load(run_dir / "config.yaml")
    ev.emit(
        "status", status="loading", message=f"pid {os.getpid()}: loading data and {cfg.model.base_model_name_or_path}"
    )

    import torch
    from peft import get_peft_model
    from transformers import TrainingArguments, set_seed

    from . import batching, card, checkpoint_push, count, heldout, models, precision, speedups
    from .data import load_text
    from .text import (
        PaddingCollator,
        TokenizedRows,
        packing_collator,
        packing_keeps_rows_apart,
        pad_id_of,
        tokenize_rows,
    )

    token = os.environ.get("HF_TOKEN") or None
    set_seed(cfg.training.seed)
    if cfg.data.dataset_id:
        ev.emit("status", status="loading", message=f"reading Hub dataset {cfg.data.dataset_id}")
    td = load_text(cfg.data, token=token)
    if not cfg.data.text_column:  # the model card names the column that was really used
        cfg.data.text_column = td.text_column
    rm = models.resolve_model(cfg.model.base_model_name_or_path)
    device = models.device_kind()
    problem = models.quantization_problem(cfg.model, device)
    if problem:
        raise ConfigError([problem])
    ho = heldout.split(td.texts, cfg.data, cfg.training, td.text_column, token)
    try:  # before the model loads: "on" without liger_kernel or a GPU is a config problem
        use_liger, liger_why = speedups.resolve_liger(cfg.training.use_liger_kernel, device)
    except ValueError as err:
        raise ConfigError([str(err)]) from None
    tok = models.load_tokenizer(rm.load_path, cfg.model.trust_remote_code, token)
    # Each long step says what it is doing: the Train tab shows the last status message.
    ev.emit(
        "status",
        status="loading",
        message=f"tokenizing {count(len(ho.train) + len(ho.eval), 'row')} (max_length {cfg.training.max_length})",
    )
    rows = tokenize_rows(ho.train, tok, cfg.training.max_length)
    eval_rows = tokenize_rows(ho.eval, tok, cfg.training.max_length) if ho.eval else []
    ev.emit("status", status="loading", message=f"loading the weights of {cfg.model.base_model_name_or_path}")
    model = models.load_base_model(
        cfg.model, rm.load_path, device, gradient_checkpointing=cfg.training.gradient_checkpointing, token=token
    )
    available = models.linear_module_names(model)
    targets = models.expand_target_modules(
        cfg.lora.target_modules or models.default_target_modules(model.config.model_type, available), available
    )
    problems = models.check_target_modules(targets, available)
    if problems:
        raise ConfigError(problems)
    model = get_peft_model(model, models.lora_config(cfg.lora, targets))
    # The adapter must name the Hub id, not the local folder the weights were read from.
    model.peft_config["default"].base_model_name_or_path = rm.hub_id
    trainable, total = model.get_nb_trainable_parameters()
    line = models.trainable_line(trainable, total)
    ev.emit(
        "info",
        message=f"{td.summary()}; {count(len(rows), 'row')} tokenized (max_length {cfg.training.max_length})",
        rows=len(rows),
        skipped_empty=td.skipped_empty,
        text_column=td.text_column,
    )
    ev.emit("info", message=ho.note, eval_rows=len(eval_rows), eval_source=ho.source)
    ev.emit(
        "info",
        message=f"{line} | device {device}, quantization "
        f"{models.effective_quantization(cfg.model, device)}, targets {','.join(targets)}, "
        f"loaded in {time.time() - t_start:.1f} s",
        trainable_params=trainable,
        all_params=total,
        device=device,
        quantization=models.effective_quantization(cfg.model, device),
        hub_id=rm.hub_id,
        bundled=rm.bundled,
    )
    choice = precision.choose(cfg.model.precision, device)
    ev.emit("info", message=choice.reason, precision=choice.dtype, precision_setting=cfg.model.precision)
    if cfg.training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    ev.emit("info", message=liger_why, use_liger_kernel=use_liger)
    if cfg.training.torch_compile:  # after the LoRA wrap, so the compiled layers contain the adapters
        n = speedups.compile_decoder_layers(model) if device == "cuda" else 0
        ev.emit(
            "info",
            message=f"torch.compile: {n} decoder layers (compiled at the first step)"
            if n
            else f"torch.compile off: {'no decoder layer stack found' if device == 'cuda' else 'CUDA only'}",
            compiled_layers=n,
        )

    t = cfg.training
    if t.packing and not packing_keeps_rows_apart(model):
        t.packing = False  # the model card says what really ran
        ev.emit(
            "info",
            message=f"packing off: {model.config.model_type} ignores the packed rows' position ids "
            "(its rows would attend to each other); rows are padded instead",
            packing=False,
        )
    earlier = [e for e in read_events(run_dir)[0] if e.get("type") == "info" and "merged" in e] if resume else []
    if earlier:  # keep the split the run started with: its speed and memory stay what the first part showed
        e = earlier[-1]
        plan = batching.StepPlan(
            e["per_device_train_batch_size"],
            e["gradient_accumulation_steps"],
            e["merged"],
            e["message"].removeprefix("batching: ") + " (as before the resume)",
        )
    else:
        plan = batching.plan_step(
            [len(r) for r in rows],
            t.per_device_train_batch_size,
            t.gradient_accumulation_steps,
            device=device,
            merge=t.merge_accumulation,
            bytes_per_token=batching.activation_bytes_per_token(
                model.config, torch.finfo(choice.torch_dtype).bits // 8
            ),
            free_bytes=batching.free_memory_bytes(device),
            packed=t.packing,
        )
    ev.emit(
        "info",
        message=f"batching: {plan.message}",
        per_device_train_batch_size=plan.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        merged=plan.merged,
    )
    counter = TokenCounter(
        packing_collator(t.max_length, pad_id_of(tok)) if t.packing else PaddingCollator(pad_id_of(tok))
    )
    dtype = choice.torch_dtype  # bf16/fp16: autocast for the matmuls; the LoRA weights stay float32
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_strategy="steps",
        save_total_limit=1,
        save_only_model=False,
        seed=t.seed,
        report_to=[],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        bf16=dtype == torch.bfloat16,
        fp16=device == "cuda" and dtype == torch.float16,
        use_cpu=device == "cpu",
        use_liger_kernel=use_liger,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=t.eval_steps,
        prediction_loss_only=True,
        per_device_eval_batch_size=plan.per_device_train_batch_size,
        **checkpoint_push.training_arguments(t),  # training.hub_checkpoints: the Trainer's own push
    )

    def on_save(state):
        last_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        path = save_adapter(
            model,
            run_dir,
            card.render_card(
                cfg,
                rm.hub_id,
                targets,
                last_loss,
                state.global_step,
                line,
                evals=card.eval_summary(read_events(run_dir)[0]),
            ),
        )
        ev.emit("saved", step=state.global_step, path=str(path))

    trainer_cls = heldout.eval_trainer_class()
    if t.hub_checkpoints:  # config, data and events go up with each checkpoint; push failures are warnings
        checkpoint_push.stage(run_dir)
        trainer_cls = checkpoint_push.trainer_class(trainer_cls, run_dir, ev)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=TokenizedRows(rows),
        data_collator=counter,
        eval_dataset=_held_out_rows(eval_rows) if eval_rows else None,
        callbacks=[make_callback(ev, stop, counter, on_save)],
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw {'loss': ...} prints: the events log every step already
    resume_from = last_checkpoint(run_dir) if resume else None
    base_eval, _ = heldout.eval_points(read_events(run_dir)[0])
    if eval_rows and base_eval is None and not stop.is_set():
        # Before any step the LoRA B matrices are zero: this is the base model's held-out perplexity.
        ev.emit(
            "status",
            status="evaluating",
            message=f"held-out perplexity of the base model on {count(len(eval_rows), 'row')}",
        )
        trainer.evaluate()
    trainer.train(resume_from_checkpoint=resume_from)
    if t.hub_checkpoints:
        checkpoint_push.finish(trainer, run_dir, ev)
    if keep is not None:  # for tests: the trained model itself, to compare with the reloaded adapter
        keep.update(model=model, tokenizer=tok)
    state = trainer.state
    # The Trainer itself evaluates the last step too (DefaultFlowCallback, eval_strategy "steps").
    stopped = stop.is_set() and state.global_step < state.max_steps
    ev.emit("status", status="saving", message=f"saving adapter at step {state.global_step}")
    on_save(state)
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    final = "stopped" if stopped else "finished"
    summary = card.eval_summary(read_events(run_dir)[0])
    ppl = f", {summary['line']}" if summary else ""
    ev.emit(
        "status",
        status=final,
        message=f"step {state.global_step}/{state.max_steps}, final loss "
        f"{losses[-1] if losses else float('nan'):.4f}{ppl}, {time.time() - t_start:.1f} s",
        step=state.global_step,
        final_loss=losses[-1] if losses else None,
        eval_loss=summary["eval_loss"] if summary else None,
        perplexity=summary["perplexity"] if summary else None,
    )
    return 0


def perplexity(model, tokenizer, texts: list[str], max_length: int = 256, batch_size: int = 8) -> float:
    """exp(mean token negative log-likelihood) over ``texts``, each ending with EOS, labels as
    in training (padding excluded). Runs under ``torch.no_grad`` on the model's device."""
    import torch

    from .text import PaddingCollator, pad_id_of, tokenize_rows

    rows = tokenize_rows(texts, tokenizer, max_length)
    collate = PaddingCollator(pad_id_of(tokenizer))
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            b = {k: v.to(dev) for k, v in collate([{"input_ids": r} for r in rows[i : i + batch_size]]).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            labels = b["labels"][:, 1:]
            nll = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += nll.item()
            count += int((labels != -100).sum())
    model.train(was_training)
    return math.exp(total / count)


if __name__ == "__main__":  # pragma: no cover - the CLI in __main__ is the usual entry
    sys.exit(train(sys.argv[1]))

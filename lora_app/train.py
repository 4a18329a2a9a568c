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

With ``distributed.num_processes`` > 1 every rank runs this (under ``accelerate launch``, see
:mod:`lora_app.launch`): only rank 0 writes events and the adapter; a stop is agreed by all ranks
at the same step; a rank that fails writes ``rank-N.err`` and rank 0's "failed" names the rank
that failed first. Test-only hook: ``LORA_APP_TEST_CRASH_RANK=N`` makes rank N raise just before
training (tests/test_distributed.py; a natural crash of one rank only is hard to arrange).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from . import app_home, attention, chunked_loss, container, launch
from .config import ConfigError, RunConfig
from .events import EventWriter, read_events
from .progress import TokenCounter, counting_trainer_class, make_callback
from .repo_id import on_disk
from .run_folder import last_checkpoint, save_adapter


def train(run_dir: str | Path, resume: bool = False, keep: dict | None = None) -> int:
    """Run the job in ``run_dir``. Returns the process exit code (0 finished or stopped, 1 failed, 2 not a run that can be trained).

    ``keep``: if a dict is given, the trained model and tokenizer are put in it (in-process use).
    """
    run_dir = Path(run_dir).resolve()
    if not on_disk(run_dir / "config.yaml", "file"):  # checked before the EventWriter creates events.jsonl in it
        what = "does not exist" if not on_disk(run_dir) else "is not a run folder (it holds no config.yaml)"
        print(f"{run_dir} {what}: give a run folder, or a config file with --config.", file=sys.stderr)
        return 2
    # The app queues a resume as "queued"; a finished run's adapter must not be trained on and
    # overwritten. Rank 0 alone decides: the others would read the events rank 0 has started writing
    # ("loading": a race the 2-process resume test lost on a quiet machine) and refuse.
    if resume and launch.is_main_process():
        last = [e.get("status") for e in read_events(run_dir)[0] if e.get("type") == "status"][-1:]
        if last and last[0] not in ("stopped", "failed", "queued"):
            print(f"Run {run_dir.name} is {last[0]}: only a stopped or failed run can be resumed.", file=sys.stderr)
            return 2
    ev = EventWriter(run_dir) if launch.is_main_process() else launch.NoEvents()  # one event log: rank 0's
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if launch.world_size() > 1:
        from .procs import die_with_parent

        launch.clear_rank_errors(run_dir, only_mine=True)  # (each rank writes only its own)
        die_with_parent()  # torchrun starts a rank in its own session: it must not outlive a killed launcher
    try:
        return _train(run_dir, ev, stop, resume, keep)
    except ConfigError as err:
        return _fail(run_dir, ev, str(err))
    except Exception as err:  # the reason goes to the UI; the traceback to stderr (run log)
        traceback.print_exc()
        return _fail(run_dir, ev, _failure_message(err))
    finally:
        ev.close()


def _fail(run_dir: Path, ev, message: str) -> int:
    """Record the failure: alone, in the event log; with several ranks, in ``rank-N.err`` too, and
    rank 0's event names the rank that failed first (waiting a few seconds for it to say why:
    when another rank dies, rank 0 fails at once on the closed connection)."""
    if launch.world_size() > 1:
        launch.write_rank_error(run_dir, message)
        message = launch.rank_failure(run_dir, wait_s=5.0 if launch.is_main_process() else 0.0) or message
    ev.emit("status", status="failed", message=message)
    return 1


def _failure_message(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower():
        text += (
            " | Fix: lower per_device_train_batch_size (raise gradient_accumulation_steps to keep the "
            "effective batch), lower max_length, turn on gradient_checkpointing, or load the base in 4bit."
        )
    return text


def _train(run_dir: Path, ev: EventWriter, stop: threading.Event, resume: bool, keep: dict | None = None) -> int:
    t_start = time.time()
    cfg = RunConfig.load(run_dir / "config.yaml")
    ev.emit(
        "status", status="loading", message=f"pid {os.getpid()}: loading data and {cfg.model.base_model_name_or_path}"
    )

    import torch
    from peft import get_peft_model
    from transformers import TrainingArguments, set_seed

    from . import batching, card, chat_rows, checkpoint_push, count, heldout, models, precision, speedups, variants
    from .chat_rows import tokenize_data
    from .data import load_text
    from .text import PaddingCollator, TokenizedRows, packing_collator, packing_keeps_rows_apart, pad_id_of

    token = os.environ.get("HF_TOKEN") or None
    world = launch.world_size()
    if world > 1 and torch.cuda.is_available():  # one GPU per rank: the model loads on the current device
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    set_seed(cfg.training.seed)
    if cfg.data.dataset_id:
        ev.emit("status", status="loading", message=f"reading Hub dataset {cfg.data.dataset_id}")
    td = load_text(cfg.data, token=token)
    if cfg.data.layout == "auto":  # the model card names the layout that was really used
        cfg.data.layout = td.layout  # type: ignore[assignment]
    if not cfg.data.text_column and td.layout == "text":  # ... and the text column
        cfg.data.text_column = td.text_column
    rm = models.resolve_model(cfg.model.base_model_name_or_path)
    device = models.device_kind()
    problem = models.quantization_problem(cfg.model, device)
    if problem:
        raise ConfigError([problem])
    ho = heldout.split(
        td.texts, cfg.data, cfg.training, td.text_column if td.layout == "text" else None, token, layout=td.layout
    )
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
    tr = tokenize_data(ho.train, td.layout, tok, cfg.training.max_length, cfg.data.train_on_prompt)
    te = tokenize_data(ho.eval, td.layout, tok, cfg.training.max_length, cfg.data.train_on_prompt) if ho.eval else None
    rows, eval_rows = tr.rows, te.rows if te else []
    if td.layout != "text":
        ev.emit("info", **chat_rows.layout_info(td, tr, te, cfg.data.train_on_prompt, cfg.training.max_length))
        chat_rows.check_rows(tr, cfg.training.max_length)  # before the model loads
    ev.emit("status", status="loading", message=f"loading the weights of {cfg.model.base_model_name_or_path}")
    fsdp = world > 1 and cfg.distributed.strategy == "fsdp"
    model = models.load_base_model(
        cfg.model,
        rm.load_path,
        device,
        gradient_checkpointing=cfg.training.gradient_checkpointing,
        token=token,
        place=not fsdp,
    )
    available = models.linear_module_names(model)
    targets = models.expand_target_modules(
        cfg.lora.target_modules or models.default_target_modules(model.config.model_type, available),
        available,
        cfg.lora.modules_to_save,
    )
    problems = models.check_target_modules(targets, available) or variants.problems(
        cfg.lora,
        [n for n, _ in model.named_modules()],
        targets,
        models.effective_quantization(cfg.model, device),
        device,
    )
    if problems:
        raise ConfigError(problems)
    model = get_peft_model(model, models.lora_config(cfg.lora, targets))
    initial = run_dir / "initial_adapter"  # PiSSA/OLoRA: A and B at init, to save a plain LoRA of the base
    if variants.mutates_base(cfg.lora) and launch.is_main_process() and not (resume and initial.is_dir()):
        model.save_pretrained(initial, safe_serialization=True)
    # The adapter must name the Hub id, not the local folder the weights were read from.
    model.peft_config["default"].base_model_name_or_path = rm.hub_id
    trainable, total = model.get_nb_trainable_parameters()
    line = models.trainable_line(trainable, total)
    ev.emit(
        "info",
        message=f"{td.summary()}; {count(len(rows), 'row')} tokenized (max_length {cfg.training.max_length})",
        rows=len(rows),
        skipped_empty=td.skipped_empty,
        text_column=td.text_column if td.layout == "text" else None,
        layout=td.layout,
    )
    ev.emit("info", message=ho.note, eval_rows=len(eval_rows), eval_source=ho.source)
    ev.emit(
        "info",
        message=f"{line} | device {device}, quantization "
        f"{models.effective_quantization(cfg.model, device)}, targets {','.join(targets)}{variants.summary(cfg.lora)}, "
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
    ev.emit("info", **container.process_info())
    impl, why = attention.choose(
        cfg.model.attn_implementation,
        device,
        model.config,
        cfg.training.max_length,
        choice.dtype,
        app_home(),
        sdpa_ok=bool(getattr(model, "_supports_sdpa", False)),  # (the PEFT wrapper passes it through)
    )
    model.set_attn_implementation(impl)  # before the packing probe below, which then checks this kernel
    ev.emit("info", message=why, attn_implementation=impl)
    ev.emit("info", message=liger_why, use_liger_kernel=use_liger)
    chunk_why = (
        chunked_loss.why_not(model, world, use_liger) if cfg.training.chunked_loss else "off (training.chunked_loss)"
    )
    ev.emit("info", message=f"chunked loss: {chunk_why or 'on'}", chunked_loss=chunk_why is None)
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
            [len(r["input_ids"]) for r in rows],
            t.per_device_train_batch_size,
            t.gradient_accumulation_steps,
            device=device,
            merge=t.merge_accumulation,
            bytes_per_token=batching.activation_bytes_per_token(
                model.config,
                torch.finfo(choice.torch_dtype).bits // 8,
                chunked_loss=chunk_why is None,
                eager_length=t.max_length if impl == "eager" else 0,
                dropout_features=batching.lora_dropout_features(model),
                input_features=batching.lora_input_features(model),
            ),
            # the ranks of one machine share its RAM (each has its own GPU)
            free_bytes=batching.free_memory_bytes(device)
            // (int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device == "cpu" else 1),
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
    mp = cfg.distributed.mixed_precision
    bf16, fp16 = (
        (dtype == torch.bfloat16, device == "cuda" and dtype == torch.float16)
        if mp == "auto"
        else (mp == "bf16", mp == "fp16")
    )
    if world > 1:
        ev.emit(
            "info",
            message=f"{world} processes ({cfg.distributed.strategy}"
            f"{', gloo' if device == 'cpu' else ''}): global batch {plan.per_device_train_batch_size} x "
            f"{plan.gradient_accumulation_steps} x {world} = "
            f"{plan.per_device_train_batch_size * plan.gradient_accumulation_steps * world} rows per optimizer step",
            num_processes=world,
        )
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps,
        warmup_steps=t.warmup(),  # warmup_ratio, when given, as steps (the model card shows both)
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
        bf16=bf16,
        fp16=fp16,
        use_cpu=device == "cpu",
        use_liger_kernel=use_liger,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=t.eval_steps,
        prediction_loss_only=True,
        per_device_eval_batch_size=plan.per_device_train_batch_size,
        # The Trainer's own option (it was our own helper before). Non-reentrant, torch's
        # recommended variant: the reentrant one gives a checkpointed block whose inputs do not
        # require grad (frozen embeddings feed it) no gradient unless the embeddings are hooked
        # (torch.utils.checkpoint docs, "use_reentrant"); tests/test_train.py checks every LoRA
        # weight still learns.
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        **(extra := launch.trainer_args(cfg, model, device, world)),
        **checkpoint_push.training_arguments(t),  # training.hub_checkpoints: the Trainer's own push
    )

    # A conversation adapter carries its tokenizer with the chat template it was trained with, so
    # Try it (and anyone loading it from the Hub) renders conversations the same way.
    chat_tokenizer = None
    if td.layout == "conversation":
        from .chat_template import chat_template_of

        chat_tokenizer = tok
        tok.chat_template = chat_template_of(tok)[0]

    def on_save(state):
        # FSDP: every rank takes part in gathering the full weights; only rank 0 writes them.
        sd = trainer.accelerator.get_state_dict(trainer.model) if fsdp else None
        if not launch.is_main_process():
            return
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
            state_dict=sd,
            tokenizer=chat_tokenizer,
            initial=initial if variants.mutates_base(cfg.lora) else None,
        )
        ev.emit("saved", step=state.global_step, path=str(path))

    trainer_cls = counting_trainer_class(heldout.eval_trainer_class(), counter)
    if chunk_why is None:
        trainer_cls = chunked_loss.trainer_class(trainer_cls)
    if t.hub_checkpoints:  # config, data and events go up with each checkpoint; push failures are warnings
        checkpoint_push.stage(run_dir)
        trainer_cls = checkpoint_push.trainer_class(trainer_cls, run_dir, ev)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=TokenizedRows(rows),
        data_collator=counter,
        eval_dataset=heldout.held_out_rows(eval_rows) if eval_rows else None,
        callbacks=[make_callback(ev, stop, counter, on_save)],
    )
    from transformers import PrinterCallback

    if fsdp:  # the Trainer's accelerator took the FSDP plugin (it shards the model when training starts)
        layers = ",".join(extra["fsdp_config"]["transformer_layer_cls_to_wrap"])
        ev.emit("info", message=f"FSDP2: full shard, one unit per {layers}", fsdp=bool(trainer.is_fsdp_enabled))
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
    if os.environ.get("LORA_APP_TEST_CRASH_RANK") == str(launch.rank()):  # test-only (module docstring)
        raise RuntimeError(f"test crash of rank {launch.rank()} (LORA_APP_TEST_CRASH_RANK)")
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
    launch.end_process_group()  # (the ranks of a finished run end together)
    return 0


if __name__ == "__main__":  # pragma: no cover - the CLI in __main__ is the usual entry
    sys.exit(train(sys.argv[1]))

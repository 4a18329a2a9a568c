"""The training process's reporting: Trainer hooks -> events in ``RUN_DIR/events.jsonl``.

Split from :mod:`lora_app.train` (which builds the model, data and Trainer); see
:mod:`lora_app.events` for the event types and their fields.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .events import EventWriter


class TokenCounter:
    """Wraps a collator (held-out rows, marked ``held_out`` by ``heldout.held_out_rows``, lose the
    mark) and counts the label-carrying (non-padding) tokens of the micro-batches training steps
    use: ``tokens``, summed by :meth:`count_step`, which :func:`counting_trainer_class` calls.

    Counted when a step takes a batch, not when it is collated: accelerate's data loader collates
    one batch ahead (to know which is last), so collate-time counts credited a step with the next
    one's tokens; on a 40-row run tokens_per_s went 204, 51, 0, 217, ... with the epochs."""

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0

    def __call__(self, features):
        held_out = bool(features) and "held_out" in features[0]
        # Held-out rows keep their labels: the held-out loss is on the same tokens as training's.
        return self.collator(
            [{k: v for k, v in f.items() if k != "held_out"} for f in features] if held_out else features
        )

    def count_step(self, inputs) -> None:
        """Add the tokens with a label (not -100) in one training micro-batch ``inputs``."""
        self.tokens += int((inputs["labels"] != -100).sum())


def counting_trainer_class(base: type, counter: TokenCounter) -> type:
    """``base`` (a ``transformers.Trainer`` subclass) whose ``training_step`` counts its batch's
    tokens in ``counter`` first."""

    class CountingTrainer(base):
        def training_step(self, model, inputs, num_items_in_batch=None):
            counter.count_step(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return CountingTrainer


def _stop_agreed(stop: threading.Event, args) -> bool:
    """Whether training stops after this step. One process: its stop flag. Several: any rank's
    flag, agreed by all (a max all-reduce of one number per step), so every rank stops after the
    same step; a rank that stopped alone would leave the others waiting in the next step's
    gradient all-reduce. An agreed stop sets this rank's flag too: each rank then reports the run
    as stopped, not only the rank that got the signal (rank 0 writes the final status)."""
    if args.world_size <= 1:
        return stop.is_set()
    import torch
    import torch.distributed as dist

    flag = torch.tensor([1.0 if stop.is_set() else 0.0], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item():
        stop.set()
    return bool(flag.item())


def make_callback(ev: EventWriter, stop: threading.Event, counter: TokenCounter, on_save: Callable[[Any], None]):
    """A ``transformers.TrainerCallback`` that writes the run's progress to ``ev``: ``status``
    (training), ``progress`` (step, max_steps, elapsed_s, remaining_s in seconds) every step,
    ``log`` (loss, learning_rate, grad_norm, tokens, tokens_per_s) at each Trainer log, ``eval``
    (held-out loss and perplexity) at each evaluation; calls ``on_save(state)`` every
    ``save_steps`` before the last step, and ends training after the current step once ``stop``
    is set (with a Trainer checkpoint at that step, so a resume goes on from there)."""
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Turns Trainer hooks into events; honours the stop flag between steps."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.time()
            self.step0 = state.global_step
            self.tok0, self.t_last = counter.tokens, time.time()
            ev.emit("status", status="training", message=f"starting at step {state.global_step}")

        def on_step_end(self, args, state, control, **kw):
            done = state.global_step - self.step0
            elapsed = time.time() - self.t0
            remaining = elapsed / done * (state.max_steps - state.global_step) if done else None
            ev.emit(
                "progress",
                step=state.global_step,
                max_steps=state.max_steps,
                elapsed_s=round(elapsed, 2),
                remaining_s=None if remaining is None else round(remaining, 1),
            )
            if state.global_step % args.save_steps == 0 and state.global_step < state.max_steps:
                on_save(state)
            if _stop_agreed(stop, args):
                control.should_training_stop = True
                control.should_save = True  # a Trainer checkpoint at this step: resume goes on from here

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            m = metrics or {}
            if "eval_perplexity" in m:
                ev.emit(
                    "eval",
                    step=state.global_step,
                    max_steps=state.max_steps,
                    eval_loss=m["eval_loss"],
                    perplexity=m["eval_perplexity"],
                    tokens=m.get("eval_tokens"),
                    base=state.global_step == 0,
                    runtime_s=m.get("eval_runtime"),
                )
            if hasattr(self, "t_last"):
                self.t_last = time.time()  # evaluation time is not training time (tokens_per_s)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:
                return
            now = time.time()
            tps = (counter.tokens - self.tok0) / max(now - self.t_last, 1e-9)
            self.tok0, self.t_last = counter.tokens, now
            ev.emit(
                "log",
                step=state.global_step,
                max_steps=state.max_steps,
                loss=float(logs["loss"]),
                learning_rate=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens=counter.tokens,
                tokens_per_s=round(tps, 1),
            )

    return EventCallback()

"""The held-out rows a run is evaluated on: a share of the training data, a second file, or a
named split of the Hub dataset. Decided before any model is loaded (preflight and the
training process call the same :func:`split`), so the page can say what will happen.

- ``data.eval_path``: a second file; its rows (text column as the training data's, at most
  ``training.eval_max_rows``) are the held-out set and every training row is trained on.
- ``data.eval_split``: a split of the same Hub dataset (e.g. ``validation``), the same way.
- else ``training.eval_rows`` rows (if given), or ``training.eval_fraction`` of the rows capped
  at ``training.eval_max_rows``, drawn at random (seeded by ``training.seed``) and taken out
  of training. Fewer than :data:`MIN_EVAL_ROWS` rows: no evaluation, and the note says why.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from . import count
from .config import ConfigError, DataConfig, TrainingSettings

#: Below this many rows a held-out perplexity is mostly noise: no evaluation then.
MIN_EVAL_ROWS = 5


@dataclass
class HeldOut:
    """``train``/``eval``: the texts each side gets; ``source``: where the eval rows come from
    (for the log and the model card); ``note``: one line for the page and the log."""

    train: list
    eval: list
    source: str
    note: str


def split(
    texts: list,
    data: DataConfig,
    training: TrainingSettings,
    text_column: str | None,
    token: str | None = None,
    layout: str = "text",
) -> HeldOut:
    """Split ``texts`` (the training rows: strings, or lists of turns) per the settings; a second
    file or split is read in the training data's ``layout`` (its ``text_column`` for text). Raises ConfigError naming the field
    and the fix when the held-out set cannot be had (too many rows asked, unreadable second file,
    unknown split)."""
    cap = training.eval_max_rows
    if data.eval_split and not data.dataset_id:
        raise ConfigError(
            [
                f"data.eval_split: '{data.eval_split}' names a split of a Hub dataset, but the data is a "
                "file. Fix: give the held-out rows as a second file (data.eval_path), or leave it empty."
            ]
        )
    if data.eval_path or data.eval_split:
        from .data import load_text

        if data.eval_path:
            sub = DataConfig(
                path=data.eval_path,
                text_column=text_column if layout == "text" else None,
                source_name=data.eval_source_name,
                layout=layout,  # one of LAYOUTS, checked by DataConfig
            )
            field = "data.eval_path"
        else:
            sub = DataConfig(
                dataset_id=data.dataset_id,
                dataset_config=data.dataset_config,
                split=data.eval_split,
                text_column=text_column if layout == "text" else None,
                layout=layout,
            )
            field = "data.eval_split"
        try:
            td = load_text(sub, token=token)
        except ConfigError as err:
            # The reader names its own field (data.path, data.split): name the held-out one instead.
            raise ConfigError(
                [f"{field}: {p.split(': ', 1)[1] if p.startswith('data.') else p}" for p in err.problems]
            ) from None
        rows = td.texts[:cap]
        src = (
            f"the file '{data.eval_source_name or data.eval_path.replace(chr(92), '/').split('/')[-1]}'"
            if data.eval_path
            else f"the split '{data.eval_split}'"
        )
        cut = f" (the first {cap} of {len(td.texts):,})" if len(td.texts) > cap else ""
        return HeldOut(list(texts), rows, src, f"Held-out evaluation on {count(len(rows), 'row')} of {src}{cut}.")

    n = len(texts)
    if training.eval_rows is not None:
        k = training.eval_rows
        if k >= n:
            raise ConfigError(
                [
                    f"training.eval_rows: {count(k, 'held-out row')} asked, but the data has only "
                    f"{count(n, 'row')} (at least one must remain to train on). Fix: set eval_rows below "
                    f"{n}, or leave it empty to hold out eval_fraction ({training.eval_fraction:g})."
                ]
            )
        why = f"eval_rows {k}"
    else:
        k = min(cap, int(n * training.eval_fraction))
        why = f"{training.eval_fraction:.0%} of {count(n, 'row')}" + (
            f", capped at {cap}" if n * training.eval_fraction > cap else ""
        )
        if training.eval_fraction == 0:
            return HeldOut(list(texts), [], "", "Held-out evaluation is off (eval_fraction 0).")
        if k < MIN_EVAL_ROWS:
            return HeldOut(
                list(texts),
                [],
                "",
                f"No held-out evaluation: {why} is {count(k, 'row')}, fewer than the "
                f"{MIN_EVAL_ROWS} a perplexity needs. Fix (to get one): more rows, a larger eval_fraction, or "
                "a second file for evaluation.",
            )
    order = list(range(n))
    random.Random(training.seed).shuffle(order)
    held = set(order[:k])
    train = [t for i, t in enumerate(texts) if i not in held]
    ev = [texts[i] for i in sorted(held)]
    return HeldOut(
        train,
        ev,
        f"{count(k, 'held-out row')} of the data ({why})",
        f"Held-out evaluation on {count(k, 'row')} ({why}), not trained on; {count(len(train), 'row')} to train.",
    )


# -- evaluation with the Trainer ----------------------------------------------------------------
def eval_trainer_class():
    """``transformers.Trainer`` whose evaluation reports the *token-weighted* held-out loss and
    its perplexity (``eval_loss``, ``eval_perplexity``).

    The stock evaluation loop averages each batch's mean loss weighted by rows per batch
    (``losses.repeat(batch_size)`` in ``Trainer.evaluation_loop``), so with packed bins of unequal
    token counts ``exp(eval_loss)`` was not the perplexity of the held-out tokens. Here every
    batch's summed negative log-likelihood (mean loss x its predicted tokens, counted over
    ``labels[..., 1:]`` as causal-LM losses shift them) is added up, so packing and padding give
    the same number (tests/test_eval.py). Evaluation itself stays the Trainer's (eval_dataset,
    eval_strategy="steps"); with several processes each evaluates its share of the rows and the
    sums are added across them (accelerate pads the last share with repeated rows to keep the
    shares even, so a few rows may count twice).

    Evaluating does not change the training that follows: torch's CPU random state is put back
    after it (each DataLoader iteration draws a seed from it, so without this the dropout masks
    after an evaluation, and so the run, depended on ``eval_steps``).
    """
    import math

    import torch
    from transformers import Trainer

    class EvalTrainer(Trainer):
        _nll = 0.0
        _tokens = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            if not model.training:
                loss: Any = out[0] if return_outputs else out
                n = int((inputs["labels"][..., 1:] != -100).sum())
                self._nll += float(loss.detach().float().mean()) * n
                self._tokens += n
            return out

        def evaluation_loop(self, *args, **kwargs):
            self._nll, self._tokens = 0.0, 0
            rng = torch.get_rng_state()
            try:
                with torch.no_grad():
                    output = super().evaluation_loop(*args, **kwargs)
            finally:
                torch.set_rng_state(rng)
            prefix = kwargs.get("metric_key_prefix", args[4] if len(args) > 4 else "eval")
            nll, tokens = self._nll, self._tokens
            if self.args.world_size > 1:  # each rank evaluated its share of the rows: add them up
                t = torch.tensor([nll, float(tokens)], dtype=torch.float64, device=self.args.device)
                t = self.accelerator.reduce(t, reduction="sum")
                nll, tokens = float(t[0]), int(t[1])
            if tokens and output.metrics is not None:
                loss = nll / tokens
                output.metrics[f"{prefix}_loss"] = loss
                output.metrics[f"{prefix}_perplexity"] = math.exp(min(loss, 50.0))
                output.metrics[f"{prefix}_tokens"] = tokens
            return output

    return EvalTrainer


def eval_points(events: list[dict]) -> tuple[dict | None, list[dict]]:
    """``(base, during)`` from a run's events: the base model's held-out eval (before training)
    and the evaluations during and at the end of training, in order."""
    evals = [e for e in events if e.get("type") == "eval"]
    base = next((e for e in evals if e.get("base")), None)
    return base, [e for e in evals if not e.get("base")]


def held_out_rows(rows):
    """The held-out rows as a dataset whose items say so (``held_out``: the token counter leaves them
    out of the training-token count)."""
    from .text import TokenizedRows

    class _HeldOutRows(TokenizedRows):
        def __getitem__(self, i: int) -> dict:
            return {**super().__getitem__(i), "held_out": True}

    return _HeldOutRows(rows)


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

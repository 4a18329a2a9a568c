"""How an optimizer step's rows become forward passes: merge the accumulation micro-batches
into one forward/backward when memory allows.

``per_device_train_batch_size x gradient_accumulation_steps`` rows make one optimizer step.
Gradient accumulation exists to save memory; it does not change the gradient, because
transformers' Trainer divides every micro-batch's summed loss by the number of target tokens in
the *whole* step (``num_items_in_batch``). Running the same rows as one micro-batch therefore
gives the same rows per step and the same gradient (up to float summation order), and bigger
matrix products: measured 1.15-1.30x on the 2-core CPU (bench/RESULTS.md). The data order is
unchanged too: the Trainer's sampler draws one permutation and batches consecutive indices.

On CUDA we leave the user's split alone: there, accumulation is usually what makes the run fit.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT_BYTES = 4
# Share of the free RAM the merged forward's activations may take (the rest: weights, the
# optimizer, the tokenized data, the web app and the OS).
RAM_SHARE = 1 / 3


def activation_bytes_per_token(model_config) -> int:
    """Bytes one training token keeps alive between forward and backward (float32), estimated
    from the model's shape: per layer ~10 x hidden + 6 x intermediate values saved for backward,
    plus ~3 x vocabulary for the logits, their softmax and its gradient.

    Calibrated on SmolLM2-135M (30 layers, hidden 576, intermediate 1536, vocab 49,152): the
    estimate is 2.39 MB/token; measured peak RSS grew by 2.4 MB per packed token (4,096 tokens:
    10.5 GB). Raises AttributeError if the config lacks ``hidden_size``/``num_hidden_layers``.
    """
    if hasattr(model_config, "get_text_config"):  # multimodal configs (gemma3, llama4) keep these in text_config
        model_config = model_config.get_text_config()
    h = model_config.hidden_size
    layers = model_config.num_hidden_layers
    inter = getattr(model_config, "intermediate_size", None) or 4 * h
    vocab = getattr(model_config, "vocab_size", 0) or 0
    return FLOAT_BYTES * (layers * (10 * h + 6 * inter) + 3 * vocab)


@dataclass
class StepPlan:
    """What the Trainer gets: ``per_device_train_batch_size`` rows per forward,
    ``gradient_accumulation_steps`` forwards per optimizer step; ``message`` says why."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    merged: bool
    message: str


def plan_step(lengths: list[int], batch: int, accumulation: int, *, device: str, merge: bool,
              bytes_per_token: int, free_bytes: int, packed: bool = True) -> StepPlan:
    """Choose the micro-batch for ``batch x accumulation`` rows per optimizer step.

    ``lengths``: tokens per training row. Merges (one forward of ``batch x accumulation`` rows)
    only on CPU, only when ``merge``, and only when the worst case, the longest
    ``batch x accumulation`` rows together, needs at most ``RAM_SHARE`` of ``free_bytes``.
    ``packed``: whether rows are packed; when not, every row of a forward is padded to the
    longest, so the worst case is ``batch x accumulation`` times the longest row.
    """
    keep = StepPlan(batch, accumulation, False, f"{accumulation} micro-batches of {batch} rows per step")
    if accumulation == 1 or not merge:
        return keep
    if device != "cpu":
        return StepPlan(batch, accumulation, False, keep.message + " (kept: on a GPU accumulation saves memory)")
    rows = batch * accumulation
    longest = sorted(lengths, reverse=True)[:rows]
    worst = (sum(longest) if packed else rows * max(longest, default=0)) * bytes_per_token
    budget = free_bytes * RAM_SHARE
    if worst > budget:
        return StepPlan(batch, accumulation, False, keep.message + f" (kept: one forward of {rows} rows could need "
                        f"{worst / 2**30:.1f} GiB, over a third of the {free_bytes / 2**30:.1f} GiB free)")
    return StepPlan(rows, 1, True, f"one forward of {rows} rows per step (the {accumulation} accumulation "
                    f"micro-batches merged: same rows, same gradient, faster on CPU; at most "
                    f"{worst / 2**30:.1f} GiB of activations)")


def free_memory_bytes() -> int:
    """Available RAM now (psutil), the figure the OOM killer cares about."""
    import psutil

    return int(psutil.virtual_memory().available)

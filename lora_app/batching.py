"""How an optimizer step's rows become forward passes: merge the accumulation micro-batches
into as few forwards as memory allows (one when it can).

``per_device_train_batch_size x gradient_accumulation_steps`` rows make one optimizer step.
Gradient accumulation exists to save memory; it does not change the gradient, because
transformers' Trainer divides every micro-batch's summed loss by the number of target tokens in
the *whole* step (``num_items_in_batch``). Running the same rows as one micro-batch therefore
gives the same rows per step and the same gradient (up to float summation order), and bigger
matrix products: measured 1.15-1.30x on the 2-core CPU (bench/RESULTS.md). The data order is
unchanged too: the Trainer's sampler draws one permutation and batches consecutive indices.

On a CUDA GPU the same holds, and merging matters more: a LoRA step on a small micro-batch is
bound by kernel launches and Python, not by the GPU's arithmetic, so one forward of 16 rows costs
little more than one of 4. We merge there only when the worst case fits in half of the GPU's free
memory (measured after the model is loaded); otherwise accumulation is what makes the run fit,
and the user's split is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT_BYTES = 4
# Share of the free RAM the merged forward's activations may take (the rest: weights, the
# optimizer, the tokenized data, the web app and the OS).
RAM_SHARE = 1 / 3
# Share of the GPU's free memory (after the weights are loaded) the merged forward may take: the
# GPU holds nothing else but the allocator's caching and fragmentation.
GPU_SHARE = 1 / 2


def activation_bytes_per_token(
    model_config,
    value_bytes: int = FLOAT_BYTES,
    *,
    chunked_loss: bool = False,
    eager_length: int = 0,
    dropout_features: int = 0,
    input_features: int = 0,
) -> int:
    """Bytes one training token keeps alive between forward and backward, estimated from the
    model's shape: per layer ~10 x hidden + 6 x intermediate values of ``value_bytes`` each (4 for
    float32, 2 when the matmuls run in bf16/fp16) saved for backward, plus ~3 x vocabulary float32
    values for the logits, their softmax and its gradient (the loss upcasts the logits).

    ``chunked_loss``: the LM head runs a chunk of positions at a time (lora_app.chunked_loss), so the
    vocabulary term is left out (a chunk's logits are transient, ~32 MiB in all). ``eager_length``:
    with eager attention at rows of up to this many tokens, each layer also keeps every query's
    attention probabilities over the row's keys for the backward pass: heads x length values, once in
    float32 (the softmax's output) and once in ``value_bytes`` (the matmul's input), per token
    (transformers' ``eager_attention_forward``); SDPA keeps none of them. An estimate from what the
    backward pass keeps, not measured: for SmolLM2 in bf16 at 128 tokens, 0.21 MB per token beside the
    layers' 0.90 MB. ``dropout_features``: the input features, summed over every LoRA-wrapped module
    of the model, whose LoRA branch has dropout on (:func:`lora_dropout_features`): PEFT gives each
    such module a dropped-out copy of its input (``value_bytes`` per feature, kept for lora_A's weight
    gradient) and a one-byte mask, where without dropout lora_A keeps the input itself.
    Measured: SmolLM2-135M on every linear layer, bf16, a merged step of 869 quotes' tokens in bins of
    256: peak RSS 2,547 MB with lora_dropout 0.05 vs 2,082 MB with 0 (+465 MB; this term: 149,760 x 3
    bytes x ~1,024 positions = 460 MB).
    ``input_features``: the inputs LoRA keeps beyond q_proj/v_proj's shared one
    (:func:`lora_input_features`): a frozen base layer keeps no input (no weight gradient), but lora_A
    needs its input for its own, so each further input a no-dropout LoRA branch reads is kept, at
    ``value_bytes`` a feature. Measured with torch's saved-tensor hooks, SmolLM2-135M in float32, 16 x
    128 tokens, both without dropout: every linear layer keeps 668 MiB more than q/v (this term: 30 x
    (2 x 576 + 1,536) x 4 bytes x 2,048 = 630 MiB).

    Calibrated on SmolLM2-135M (30 layers, hidden 576, intermediate 1536, vocab 49,152): the
    estimate is 2.39 MB/token; measured peak RSS grew by 2.4 MB per packed token (4,096 tokens:
    10.5 GB; float32, SDPA, stock loss). Raises AttributeError if the config lacks
    ``hidden_size``/``num_hidden_layers``.
    """
    if hasattr(model_config, "get_text_config"):  # multimodal configs (gemma3, llama4) keep these in text_config
        model_config = model_config.get_text_config()
    h = model_config.hidden_size
    layers = model_config.num_hidden_layers
    inter = getattr(model_config, "intermediate_size", None) or 4 * h
    vocab = 0 if chunked_loss else getattr(model_config, "vocab_size", 0) or 0
    heads = getattr(model_config, "num_attention_heads", 0) or 0
    scores = layers * heads * eager_length * (FLOAT_BYTES + value_bytes)
    dropped = dropout_features * (value_bytes + 1)
    kept = input_features * value_bytes
    return value_bytes * layers * (10 * h + 6 * inter) + FLOAT_BYTES * 3 * vocab + scores + dropped + kept


def _lora_layers(model, dropout: bool) -> list:
    """The LoRA-wrapped modules of a PEFT ``model`` whose ``lora_dropout`` is (``dropout``) or is not
    a real dropout (PEFT puts ``nn.Identity`` there for 0)."""
    import torch

    return [
        m
        for m in model.modules()
        if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
        and any(isinstance(d, torch.nn.Dropout) for d in m.lora_dropout.values()) == dropout
    ]


def lora_dropout_features(model) -> int:
    """Input features, summed over the LoRA-wrapped modules of a PEFT ``model`` whose
    ``lora_dropout`` is a real dropout: for SmolLM2-135M with q_proj/v_proj that is 30 x 2 x 576 =
    34,560; with all seven linear layers 30 x (6 x 576 + 1,536) = 149,760."""
    return sum(int(getattr(m, "in_features", 0) or 0) for m in _lora_layers(model, dropout=True))


def lora_input_features(model) -> int:
    """Input features a token, summed over the distinct inputs that the no-dropout LoRA branches of a
    PEFT ``model`` read, less one hidden size a layer (the q/k/v input that the calibration of
    :func:`activation_bytes_per_token` already holds); 0 when that is all. Layers that share an
    input (q/k/v, gate/up) count it once, so it is found by running the model on 4 tokens with a hook
    on each wrapped layer, not from the names: for SmolLM2-135M on every linear layer 30 x (2 x 576 +
    1,536) = 80,640 (o_proj's, gate/up's and down_proj's inputs); on q/v 0. Costs one tiny forward;
    works on the meta-device skeleton too (0.3 s for SmolLM2), which is how the LoRA tab's estimate
    gets it before any weights are loaded."""
    import torch

    wrapped = _lora_layers(model, dropout=False)
    if not wrapped:
        return 0
    # the inputs themselves are held, so that no freed one's address (or id) is reused by a later
    # input; a meta tensor has no address, so there the tensor object is the key (q/k/v and gate/up
    # are handed the same one)
    seen: dict[int, torch.Tensor] = {}

    def note(mod, args):
        if args and isinstance(args[0], torch.Tensor):
            x = args[0]
            seen.setdefault(id(x) if x.is_meta else x.data_ptr(), x)

    hooks = [m.register_forward_pre_hook(note) for m in wrapped]
    try:
        device = next(p.device for p in model.parameters())
        with torch.no_grad():
            model(input_ids=torch.zeros(1, 4, dtype=torch.long, device=device))
    except Exception:  # an estimate: a model this forward cannot run gets the calibrated constant alone
        return 0
    finally:
        for h in hooks:
            h.remove()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return max(0, sum(int(x.shape[-1]) for x in seen.values()) - cfg.num_hidden_layers * cfg.hidden_size)


@dataclass
class StepPlan:
    """What the Trainer gets: ``per_device_train_batch_size`` rows per forward,
    ``gradient_accumulation_steps`` forwards per optimizer step; ``message`` says why."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    merged: bool
    message: str


def plan_step(
    lengths: list[int],
    batch: int,
    accumulation: int,
    *,
    device: str,
    merge: bool,
    bytes_per_token: int,
    free_bytes: int,
    packed: bool = True,
) -> StepPlan:
    """Choose the micro-batch for ``batch x accumulation`` rows per optimizer step: the fewest
    forwards (1, then 2, ... up to ``accumulation``; each forward the same number of rows, at least
    ``batch``) whose worst case fits.

    ``lengths``: tokens per training row. Merges only on CPU or CUDA and only when ``merge``. The
    worst case of a forward of n rows is the n longest rows together, at ``bytes_per_token``; it must
    fit in ``RAM_SHARE`` (CPU: of the free RAM) or ``GPU_SHARE`` (CUDA: of the GPU's free memory) of
    ``free_bytes``. Fewer, bigger forwards are faster because each forward and backward reads every
    base weight once whatever its rows: SmolLM2-135M, all-linear LoRA, float32 capped to AVX2,
    16 rows a step: 1 x 16 rows 2.39 s/step, 2 x 8 2.78 s, 4 x 4 3.39 s, at peak RSS 2,650, 2,008 and
    1,697 MiB (bench/RESULTS.md, session 8). So a machine short of memory for one forward of 16 rows
    gets two of 8 before it gets four of 4.
    ``packed``: whether rows are packed; when not, every row of a forward is padded to the
    longest, so the worst case is the number of rows times the longest row.
    """
    keep = StepPlan(batch, accumulation, False, f"{accumulation} micro-batches of {batch} rows per step")
    if accumulation == 1 or not merge:
        return keep
    if device not in ("cpu", "cuda"):
        return StepPlan(batch, accumulation, False, keep.message + f" (kept: no memory estimate on {device})")
    rows = batch * accumulation
    ordered = sorted(lengths, reverse=True)

    def worst(n: int) -> int:
        top = ordered[:n]
        return (sum(top) if packed else n * max(top, default=0)) * bytes_per_token

    share, where = (RAM_SHARE, "a third") if device == "cpu" else (GPU_SHARE, "half")
    gpu = " on the GPU" if device == "cuda" else ""
    over = (
        f"one forward of {rows} rows could need {worst(rows) / 2**30:.1f} GiB, over {where} of the "
        f"{free_bytes / 2**30:.1f} GiB free{gpu}"
    )
    for forwards in (d for d in range(1, accumulation) if rows % d == 0):
        n = rows // forwards
        if worst(n) > free_bytes * share:
            continue
        if forwards == 1:
            return StepPlan(
                rows,
                1,
                True,
                f"one forward of {rows} rows per step (the {accumulation} accumulation "
                f"micro-batches merged: same rows, same gradient, faster; at most "
                f"{worst(rows) / 2**30:.1f} GiB of activations{gpu})",
            )
        return StepPlan(
            n,
            forwards,
            True,
            f"{forwards} forwards of {n} rows per step (the {accumulation} accumulation micro-batches "
            f"merged into {forwards}: same rows, same gradient, faster; at most {worst(n) / 2**30:.1f} GiB "
            f"of activations{gpu}; {over})",
        )
    return StepPlan(batch, accumulation, False, keep.message + f" (kept: {over})")


def free_memory_bytes(device: str = "cpu") -> int:
    """Free memory now where the activations will live: the GPU's free memory
    (``torch.cuda.mem_get_info``) on CUDA, else the available RAM (psutil), the figure the OOM
    killer cares about, capped by what a container's memory limit leaves (:mod:`lora_app.container`)."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    from .container import ram

    return ram()[1]


def padded_row_tokens(lengths: list[float], rows_per_forward: int, max_length: int, samples: int = 256) -> float:
    """Tokens a padded row costs on average: each forward of ``rows_per_forward`` rows, drawn at random
    from rows of ``lengths`` tokens, is padded to its longest row (text.PaddingCollator; the Trainer's
    sampler draws a random permutation, no length grouping), at most ``max_length``. The expected
    maximum of a draw, from ``samples`` seeded draws: on the example quotes 2.5x the mean row at 16
    rows a forward (27.8 tokens a row, 70 padded), which the time estimate had left out (a run with
    packing off computes them all)."""
    import numpy as np

    n = len(lengths)
    if n == 0:
        return float(max_length)
    rng = np.random.default_rng(0)
    arr = np.minimum(np.asarray(lengths, dtype=np.float64), max_length)
    if n > 10_000:  # each draw permutes the rows: a sample of them keeps it at ~30 ms
        arr, n = arr[rng.choice(n, 10_000, replace=False)], 10_000
    k = max(1, min(rows_per_forward, n))
    if k == 1:
        return float(arr.mean())
    return float(np.mean([arr[rng.choice(n, k, replace=False)].max() for _ in range(samples)]))

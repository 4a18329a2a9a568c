"""The LM head and the causal-LM loss in chunks of positions, so the ``tokens x vocabulary`` logits
are never held at once (``training.chunked_loss``).

Why: the stock path (``model(**inputs, labels=...)``, transformers' ``ForCausalLMLoss``) keeps the
whole logits tensor, its float32 copy, the log-softmax for the backward pass and the logits'
gradient: about 4 x tokens x vocabulary x 4 bytes. With SmolLM2's 49,152-word vocabulary and one
merged micro-batch of 16 quotes (~512 positions) that is ~400 MB, the largest single item at the
step's memory peak on CPU. Here the loss *and* the gradient of the hidden states are computed chunk
by chunk in the forward pass (the LM head is frozen in LoRA, so no weight gradient is needed), and
only that gradient (tokens x hidden, ~1 MB) is kept for the backward pass. The arithmetic is the
same (one head matmul forward, one backward), so the loss equals the stock loss to float rounding
(tests/test_chunked_loss.py). The idea is Liger-Kernel's fused linear cross-entropy (Hsu et al. 2024,
arXiv:2410.10989, https://github.com/linkedin/Liger-Kernel), which needs Triton (CUDA); this is the
plain-torch form of it, for CPU and any device where Liger is not used.

Used only when it is known to give the model's own loss: one process (a DDP/FSDP-wrapped model must
be called through its wrapper), a frozen LM head (``modules_to_save`` may train it), and an
architecture whose logits are ``lm_head(last hidden state)`` with nothing after it (:data:`ARCHS`,
each tested against the model's own loss).
"""

from __future__ import annotations

from typing import Any

#: model_type -> logits are exactly ``get_output_embeddings()(base model's last_hidden_state)``,
#: read in each model's ``*ForCausalLM.forward`` (transformers 5.24). Not here: models that scale
#: or soft-cap the logits afterwards (gemma2/3: final_logit_softcapping, cohere: logit_scale,
#: granite: logits_scaling), which would need their own rule.
ARCHS = frozenset({"llama", "mistral", "qwen2", "qwen3", "opt", "gpt2", "phi3", "smollm3"})

#: Logit elements computed at once: 8 Mi (32 MiB in float32). Chunks of fewer positions cost
#: more matmul calls; larger ones hold more memory. 170 positions of SmolLM2's vocabulary.
CHUNK_ELEMENTS = 1 << 23


def _function():
    import torch

    class ChunkedLinearCrossEntropy(torch.autograd.Function):
        """Summed cross-entropy of ``hidden @ weight.T`` against ``targets``, in chunks of rows.

        forward(hidden [N, d], weight [V, d] (frozen), targets [N] int64 with -100 = ignored,
        chunk int) -> scalar float32 sum of -log p(target) over the rows whose target is not -100.
        The logits are computed in ``weight``'s dtype (as the stock head under autocast) and the
        softmax in float32 (as transformers' loss upcasts them). Backward returns d loss / d hidden;
        none for ``weight``.
        """

        @staticmethod
        def forward(ctx, hidden, weight, targets, chunk):
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad = torch.empty(hidden.shape, dtype=weight.dtype, device=hidden.device)
            for s in range(0, hidden.shape[0], chunk):
                t = targets[s : s + chunk]
                keep = t != -100
                logits = (hidden[s : s + chunk].to(weight.dtype) @ weight.t()).float()  # [c, V]
                lse = torch.logsumexp(logits, dim=-1)
                safe = t.clamp(min=0)[:, None]
                total += ((lse - logits.gather(1, safe).squeeze(1)) * keep).sum()
                p = logits.sub_(lse[:, None]).exp_()  # softmax in place: no second [c, V] tensor
                p.scatter_add_(1, safe, -keep[:, None].to(p.dtype))  # softmax - one_hot(target)
                p.mul_(keep[:, None])
                grad[s : s + chunk] = p.to(weight.dtype) @ weight
            ctx.save_for_backward(grad)
            ctx.hidden_dtype = hidden.dtype
            return total

        @staticmethod
        def backward(ctx, g):
            (grad,) = ctx.saved_tensors
            return (grad * g).to(ctx.hidden_dtype), None, None, None

    return ChunkedLinearCrossEntropy


def why_not(model: Any, world_size: int, liger: bool) -> str | None:
    """None when the chunked loss gives this model's own loss here; else why not (one line).

    ``model``: the PEFT-wrapped (or plain) causal LM as the Trainer will get it."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = causal.get_output_embeddings()
    trained = head is None or any(p.requires_grad for p in head.parameters())
    return why_not_here(getattr(causal.config, "model_type", None), world_size, liger, trained)


def why_not_here(model_type: str | None, world_size: int, liger: bool, head_trained: bool) -> str | None:
    """:func:`why_not` from what it reads: the config's ``model_type``, the process count, Liger, and
    whether the LM head is trained (or missing). The memory estimate asks it before any model loads."""
    if liger:
        return "Liger's fused loss is used instead"
    if world_size > 1:
        return "more than one process (the model must be called through its DDP/FSDP wrapper)"
    if model_type not in ARCHS:
        return f"{model_type} is not among the architectures it is tested on ({', '.join(sorted(ARCHS))})"
    if head_trained:
        return "the LM head is trained (modules_to_save)"
    return None


def causal_lm_loss(model: Any, inputs: dict, num_items_in_batch: Any = None, chunk: int | None = None):
    """The causal-LM loss of ``model`` on ``inputs`` (a collated batch with ``labels`` [B, L], or
    ``shift_labels``), as ``model(**inputs).loss`` gives it with transformers' ``ForCausalLMLoss``:
    the sum over predicted tokens divided by ``num_items_in_batch`` (the whole optimizer step's
    count, as the Trainer passes it) or, without it, by this batch's count. Position i predicts
    label i + 1; -100 is ignored. Returns a 0-dim float32 tensor with a grad_fn."""
    import torch

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(causal, causal.base_model_prefix)
    weight = causal.get_output_embeddings().weight
    inputs = dict(inputs)
    labels, shifted = inputs.pop("labels", None), inputs.pop("shift_labels", None)
    if shifted is None:  # as ForCausalLMLoss: pad, then shift left by one
        shifted = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    hidden = body(**inputs).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = shifted.reshape(-1).to(hidden.device)
    step = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    total = _function().apply(hidden, weight, targets, step)
    n = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
    if torch.is_tensor(n):
        n = n.to(total.device)
    return total / n


def trainer_class(base: type) -> type:
    """``base`` (a ``transformers.Trainer`` subclass) whose training steps use :func:`causal_lm_loss`;
    evaluation and ``return_outputs`` calls (which need logits) keep the stock path."""

    class ChunkedLossTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # As the stock path: the step's token count divides the sum only when the model takes
            # it (the Trainer then skips its own division by the accumulation steps).
            return causal_lm_loss(model, inputs, num_items_in_batch if self.model_accepts_loss_kwargs else None)

    return ChunkedLossTrainer

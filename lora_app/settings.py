"""The sections of the run configuration (data, model, lora, training, distributed): every
setting a run has, with its default, its help (``description``) and its fix (``json_schema_extra``).
:class:`lora_app.config.RunConfig` puts them together, validates them and reports problems; import
them from :mod:`lora_app.config`.

Defaults: the "fast default" preset (lora_app/presets.py; every field a preset names reads its
default from there, through ``_d``): LoRA on every linear layer without dropout, r=16, lora_alpha=32
with rsLoRA, batch 4 x accumulation 4, lr 3e-4, a warm-up of a tenth of 30 steps; the rest as in the
PEFT int8 example (bias="none"; huggingface/peft, examples/int8_training/Finetune_opt_bnb_peft.ipynb),
whose own values (q_proj/v_proj, lora_dropout=0.05, lr 2e-4, a warm-up of 100 of 200 steps) are the
"reference recipe" preset.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from .presets import WARMUP_PAIR
from .presets import default as _d
from .variants import MAX_ALPHA, LoraVariantFields

#: The bundled offline default; an adapter trained on it names this Hub id.
DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Upper bounds that only catch typos: 100 million steps is years at any speed; 65,536 rows a
#: micro-batch (or micro-batches a step) is the estimate's own cap (estimate.PLANNED_ROWS), where
#: 2**63 passed Check and failed in the DataLoader. lora_alpha's: variants.MAX_ALPHA.
MAX_STEPS = 100_000_000
MAX_ROWS_A_STEP = 65_536


def _fix(text: str) -> dict[str, JsonValue]:
    """A field's one line of advice, kept on the field (``json_schema_extra={"fix": ...}``):
    appended to its validation message so that every error names the field *and* the fix."""
    return {"fix": text}


class _Section(BaseModel):
    # allow_inf_nan=False: an infinite learning_rate or lora_alpha passed gt=0 and turned the
    # weights into NaN at the first step.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Where the training text comes from: a local file (``path``) or a Hub dataset."""

    path: str | None = Field(
        None,
        description="a local .jsonl, .json, .csv, .tsv, .parquet or .txt file",
        json_schema_extra=_fix("upload a .jsonl, .json, .csv, .tsv, .parquet or .txt file"),
    )
    dataset_id: str | None = Field(
        None, description="a Hub dataset id (owner/name)", json_schema_extra=_fix("give a Hub dataset id as owner/name")
    )
    dataset_config: str | None = Field(None, description="the Hub dataset's configuration (subset), if it has several")
    split: str = Field("train", description="the Hub dataset's split trained on")
    text_column: str | None = Field(
        None,
        description="the column trained on; empty: detected (prose before ids and labels)",
        json_schema_extra=_fix("pick one of the file's text columns"),
    )
    layout: Literal["auto", "text", "prompt_completion", "instruction", "conversation"] = Field(
        "auto",
        description="auto: detect it from the columns (messages/conversations, instruction/output, "
        "prompt/completion, question/answer, input/output, else text); lora_app.layouts",
        json_schema_extra=_fix("choose auto, text, prompt_completion, instruction or conversation"),
    )
    # LLaMA-Factory's name and default (train_on_prompt: false), one switch for every layout; TRL
    # splits it in two (completion_only_loss, assistant_only_loss) with opposite defaults.
    train_on_prompt: bool = Field(
        False,
        description="false: loss on the completion / assistant turns only; true: on every token",
        json_schema_extra=_fix("set train_on_prompt to true or false"),
    )
    max_rows: int | None = Field(
        None,
        ge=1,
        le=10**12,  # 2**63 reached itertools.islice and came back as a problem of data.split
        description="read at most this many rows (a Hub dataset is streamed)",
        json_schema_extra=_fix("set max_rows to a whole number from 1 to 10**12, or leave it empty for all rows"),
    )
    source_name: str | None = Field(None, description="display name of an uploaded file")
    eval_path: str | None = Field(None, description="a second file whose rows are the held-out set")
    eval_source_name: str | None = Field(None, description="display name of the uploaded eval file")
    eval_split: str | None = Field(None, description="a split of the Hub dataset used as the held-out set")


class ModelConfig(_Section):
    """The base model and how it is loaded."""

    base_model_name_or_path: str = Field(
        DEFAULT_BASE_MODEL,
        description="a Hub id (owner/name) or a local model folder; the default, SmolLM2-135M-Instruct, is "
        "bundled for offline use",
        json_schema_extra=_fix("give a Hub id such as owner/name or a local model folder"),
    )
    quantization: Literal["auto", "none", "8bit", "4bit"] = Field(
        "auto",
        description="the base model's weights through bitsandbytes: auto = 8bit on a CUDA GPU (the reference "
        "recipe), none elsewhere; 8bit/4bit also run on a CPU (less memory, slower steps)",
        json_schema_extra=_fix("choose auto, none, 8bit or 4bit"),
    )
    # Here, not in training: it sets the dtype the base weights are loaded in (as quantization does),
    # and generation, which builds a ModelConfig too, then makes the same choice (lora_app.precision).
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="auto: bfloat16 on a GPU with bf16 or a CPU with avx512_bf16/amx_bf16 where a measured "
        "check says it is faster, else float32; LoRA weights stay float32",
        json_schema_extra=_fix("choose auto, float32 or bfloat16"),
    )
    attn_implementation: Literal["auto", "sdpa", "eager"] = Field(
        "auto",
        description="attention kernel for training: auto = on a CPU the faster of sdpa and eager for this "
        "max_length and precision, timed once per machine (eager only up to 1024 tokens), sdpa elsewhere",
        json_schema_extra=_fix("choose auto, sdpa or eager"),
    )
    trust_remote_code: bool = Field(
        False, description="run the model repository's own Python code (only for a repository you trust)"
    )

    @field_validator("base_model_name_or_path")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()


class LoraSettings(_Section, LoraVariantFields):
    """LoRA hyper-parameters, named as in ``peft.LoraConfig``; PEFT's variants (rsLoRA, DoRA, ...) come
    from :class:`lora_app.variants.LoraVariantFields` (listed first in a dump)."""

    r: int = Field(
        _d("lora", "r"),
        ge=1,
        strict=True,
        description="rank of the low-rank update B @ A (trainable parameters grow linearly with r)",
        json_schema_extra=_fix("set r to a whole number >= 1 (8 or 16 are common)"),
    )
    lora_alpha: float = Field(
        _d("lora", "lora_alpha"),
        gt=0,
        le=MAX_ALPHA,
        description="the update is scaled by lora_alpha / r (Hu et al. 2021, section 4.1), or by "
        "lora_alpha / sqrt(r) with use_rslora (on in the fast default preset)",
        json_schema_extra=_fix(f"set lora_alpha in (0, {MAX_ALPHA:,}] (usually 2 x r, e.g. 32 for r=16)"),
    )
    lora_dropout: float = Field(
        _d("lora", "lora_dropout"),
        ge=0,
        lt=1,
        description="dropout on the LoRA branch's input while training",
        json_schema_extra=_fix("set lora_dropout in [0, 1), e.g. 0.05"),
    )
    target_modules: list[str] | None = Field(
        _d("lora", "target_modules"),
        description="module names that get LoRA, comma-separated (e.g. q_proj,v_proj), or all-linear; "
        "empty: the architecture's default",
        json_schema_extra=_fix("list module names such as q_proj,v_proj, or all-linear"),
    )
    bias: Literal["none", "all", "lora_only"] = Field(
        "none",
        description="which biases train too: none, all, or those of the LoRA-wrapped modules",
        json_schema_extra=_fix("choose none, all or lora_only"),
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.replace(";", ",").split(",")]
        # Only a list of scalars is joined into names: str() of a nested list (YAML aliases nest
        # them tenfold a level) grew 510 bytes of YAML toward 8 GB; pydantic refuses the rest.
        if isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v):
            v = [p for p in (str(x).strip() for x in v) if p] or None
        return v


class TrainingSettings(_Section):
    """Trainer settings, named as in ``transformers.TrainingArguments``."""

    max_steps: int = Field(
        _d("training", "max_steps"),
        ge=1,
        # 10**20 steps was accepted: a run that could never end, whose remaining time the UI printed
        # as trillions of hours. 100 million steps is years at any speed; above it is a typo.
        le=MAX_STEPS,
        strict=True,
        description="optimizer steps to train (each sees batch x accumulation rows)",
        json_schema_extra=_fix(f"set max_steps to a whole number from 1 to {MAX_STEPS:,}"),
    )
    learning_rate: float = Field(
        _d("training", "learning_rate"),
        gt=0,
        le=1,  # AdamW moves each weight by about lr a step: above 1 is a typo, not a schedule
        description="peak learning rate of AdamW, reached after the warm-up",
        json_schema_extra=_fix("set learning_rate in (0, 1], e.g. 3e-4 (2e-4 in the reference recipe)"),
    )
    per_device_train_batch_size: int = Field(
        _d("training", "per_device_train_batch_size"),
        ge=1,
        le=MAX_ROWS_A_STEP,
        strict=True,
        description="rows per micro-batch",
        json_schema_extra=_fix(f"set per_device_train_batch_size to a whole number from 1 to {MAX_ROWS_A_STEP:,}"),
    )
    gradient_accumulation_steps: int = Field(
        _d("training", "gradient_accumulation_steps"),
        ge=1,
        le=MAX_ROWS_A_STEP,
        strict=True,
        description="micro-batches per optimizer step",
        json_schema_extra=_fix(f"set gradient_accumulation_steps to a whole number from 1 to {MAX_ROWS_A_STEP:,}"),
    )
    warmup_steps: int = Field(
        _d("training", "warmup_steps"),
        ge=0,
        le=MAX_STEPS,  # 10**400 passed and overflowed the scheduler's float at the start
        strict=True,
        description="steps over which the learning rate rises linearly from 0; above 0 it wins over "
        "warmup_ratio (as in transformers), so a warmup_steps given empties warmup_ratio",
        json_schema_extra=_fix(f"set warmup_steps to a whole number from 0 to {MAX_STEPS:,}"),
    )
    warmup_ratio: float | None = Field(
        _d("training", "warmup_ratio"),
        ge=0,
        lt=1,
        description="warm up for this share of max_steps, rounded up (follows max_steps); used when "
        "warmup_steps is 0 (empty: use warmup_steps)",
        json_schema_extra=_fix("set warmup_ratio in [0, 1), e.g. 0.1, or leave it empty to use warmup_steps"),
    )
    max_length: int = Field(
        256,
        ge=8,
        strict=True,
        description="tokens per training row; longer rows are cut, keeping their EOS",
        json_schema_extra=_fix("set max_length to a whole number >= 8 (tokens per training row)"),
    )
    # transformers' set_seed seeds numpy too, whose seeds are 0 .. 2**32 - 1: a seed outside that
    # passed Check and failed the run ("Seed must be between 0 and 2**32 - 1").
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        strict=True,
        description="seed of the data order, the held-out split and the LoRA init",
        json_schema_extra=_fix(f"set seed to a whole number from 0 to {2**32 - 1}"),
    )
    logging_steps: int = Field(
        1,
        ge=1,
        le=MAX_STEPS,
        strict=True,
        description="write the loss to the log every logging_steps steps",
        json_schema_extra=_fix(f"set logging_steps to a whole number from 1 to {MAX_STEPS:,}"),
    )
    save_steps: int = Field(
        50,
        ge=1,
        le=MAX_STEPS,
        strict=True,  # YAML's `yes` was taken as 1: a checkpoint every step
        json_schema_extra=_fix(f"set save_steps to a whole number from 1 to {MAX_STEPS:,}, e.g. 50"),
        description="save a checkpoint (and the adapter so far) every save_steps steps; Stop and "
        "resume continue from the last one",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~30% slower steps"
    )
    packing: bool = Field(
        True,
        description="pack rows into bins of max_length tokens; rows never attend "
        "to each other (models that ignore packed position ids, e.g. OPT, are padded)",
    )
    merge_accumulation: bool = Field(
        True,
        description="run a step's accumulation micro-batches as one "
        "forward when memory allows (same rows and gradient, faster)",
    )
    chunked_loss: bool = Field(
        True,
        description="compute the LM head and the loss a chunk of positions at a time, never all "
        "tokens x vocabulary logits at once (same loss; ~400 MB less at 16 rows of 128 tokens on "
        "SmolLM2); used in one process with a frozen LM head, else the log says why not",
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant_with_warmup"] = Field(
        "linear", description="the learning rate after the warm-up: linear or cosine decay to 0, or constant"
    )
    eval_fraction: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="share of the rows held out for evaluation (when no second file or split is given)",
        json_schema_extra=_fix("set eval_fraction in [0, 1), e.g. 0.05 (0 turns held-out evaluation off)"),
    )
    eval_max_rows: int = Field(
        200,
        ge=1,
        strict=True,
        description="at most this many held-out rows",
        json_schema_extra=_fix("set eval_max_rows to a whole number >= 1, e.g. 200"),
    )
    eval_rows: int | None = Field(
        None,
        ge=1,
        strict=True,
        description="exactly this many held-out rows (instead of eval_fraction)",
        json_schema_extra=_fix("set eval_rows to a whole number >= 1, or leave it empty to use eval_fraction"),
    )
    eval_steps: int = Field(
        50,
        ge=1,
        strict=True,
        description="evaluate every eval_steps steps, and at the end",
        json_schema_extra=_fix("set eval_steps to a whole number >= 1, e.g. 50"),
    )
    cap_warmup: bool = Field(
        False,
        description="when warmup_steps >= max_steps, warm up for a tenth of the run "
        "instead (else the learning rate only rises; the preflight warns)",
    )
    use_liger_kernel: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, and a linear cross-entropy "
        "that never builds the full logits): auto = on when training on a CUDA GPU and liger-kernel is "
        "installed, else off (the log says which); on = required (an error names the fix); off = never",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile each decoder layer (CUDA only; the first "
        "step pays a compile of some seconds, later steps run faster)",
    )

    hub_checkpoints: bool = Field(
        False,
        description="keep checkpoints on the Hub: every save_steps the Trainer pushes its checkpoint "
        "(last-checkpoint/) and the run's config.yaml to a private repo of yours (hub_model_id), in the "
        "background; a failed push is a warning, retried at the next save. Needs a write token",
    )
    hub_model_id: str | None = Field(
        None,
        description="the repo of hub_checkpoints, owner/name (empty: <you>/<base>-lora-<data>-ckpt-<time>)",
        json_schema_extra=_fix("write it as owner/name, e.g. alice/my-run-checkpoints, or leave it empty"),
    )

    @field_validator("hub_model_id", mode="before")
    @classmethod
    def _hub_model_id(cls, v: Any) -> Any:
        v = v.strip() if isinstance(v, str) else v
        if v and (v.count("/") != 1 or not all(v.split("/"))):
            raise ValueError(f"'{v}' is not a Hub repo id (owner/name)")
        return v or None

    def warmup(self) -> int:
        """The warm-up in optimizer steps: ``warmup_steps`` when above 0 (it wins, as in transformers'
        ``TrainingArguments.get_warmup_steps``), else ``warmup_ratio`` of ``max_steps`` rounded up."""
        if self.warmup_steps > 0 or self.warmup_ratio is None:
            return self.warmup_steps
        return math.ceil(self.max_steps * self.warmup_ratio)

    @field_validator("use_liger_kernel", mode="before")
    @classmethod
    def _liger_yaml_bool(cls, v: Any) -> Any:
        # YAML 1.1 (yaml.safe_load) reads a bare on/off as True/False
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="before")
    @classmethod
    def _one_warmup(cls, raw: Any) -> Any:
        # One warm-up, whichever way it came (form, API, YAML, --set): a warmup_steps above 0 wins over
        # warmup_ratio, as in transformers, and a warmup_steps given alone (0 included) means those
        # steps. The ratio it beats is dropped, so config.yaml, the card and the Runs tab show the
        # warm-up that runs. (An API call that sets warmup_steps=10 also sends the form's default
        # ratio 0.1: before, that ratio won and the steps were silently unused.) Then cap_warmup,
        # applied to the raw values too.
        if not isinstance(raw, dict):
            return raw
        steps, ratio = WARMUP_PAIR
        w = raw.get(steps)
        if steps in raw and (ratio not in raw or (isinstance(w, int) and w > 0)):
            raw = {**raw, ratio: None}
        if raw.get("cap_warmup") is True:
            fields = cls.model_fields
            w = raw.get(steps, fields[steps].default)
            m = raw.get("max_steps", fields["max_steps"].default)
            if type(w) is int and type(m) is int and m >= 1 and w >= m:
                raw = {**raw, steps: m // 10}
        return raw


class DistributedConfig(_Section):
    """How many processes train the run and how they share the model, as accelerate names it.

    ``num_processes`` > 1: the run is started with ``accelerate launch`` (torchrun underneath, one
    process per GPU; on a CPU, processes on the gloo backend). ``ddp``: every process holds the
    whole model and averages gradients (the LoRA weights are all that is synced). ``fsdp``: the
    base weights are sharded across the processes (for bases too big for one GPU): FSDP2, one unit
    per decoder layer, each parameter sharded on its own so frozen and LoRA weights mix freely
    (transformers ``TrainingArguments.fsdp``; see :func:`lora_app.launch.trainer_args`). The global batch is per_device_train_batch_size x
    gradient_accumulation_steps x num_processes.
    """

    num_processes: int = Field(
        1,
        ge=1,
        strict=True,
        description="training processes (one per GPU); 1 = a plain process, more = accelerate launch",
        json_schema_extra=_fix("set num_processes to a whole number >= 1 (at most the number of GPUs)"),
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: each process holds the whole model; fsdp: the base weights are sharded across GPUs",
        json_schema_extra=_fix("choose ddp or fsdp"),
    )
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="auto: what model.precision chose (bf16 where fast, else none); no/bf16/fp16 force it",
        json_schema_extra=_fix("choose auto, no, bf16 or fp16"),
    )

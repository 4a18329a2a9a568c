"""Preflight: every check a run needs before a model's weights are loaded, reported together.

:func:`check_and_submit` is the one way a run gets started: the Start button and
``python -m lora_app train --config`` both call it, so both report the same problems, and a
run folder is only created once everything passed. It costs about a second (the data file
is read and the model is built on the meta device; no weights).

"Together" means together: settings that do not validate (``lora.r: 0``) do not hide a bad
data file or an unknown model; each section that parses on its own is checked on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import count, models, presets, speedups, variants
from .config import (
    ConfigError,
    DataConfig,
    DistributedConfig,
    LoraSettings,
    ModelConfig,
    RunConfig,
    TrainingSettings,
)
from .data import TextData, load_text
from .model_folder import adapter_base_problem, folder_problems
from .repo_id import on_disk

if TYPE_CHECKING:
    from .jobs import JobManager

#: Rows longer than this many characters per max_length token are surely cut.
_CHARS_PER_TOKEN = 4


@dataclass
class Preflight:
    """What the checks found: the data, the LoRA targets and the parameter counts.

    ``notes``: things worth knowing that do not stop the run (empty rows skipped, long rows cut).
    """

    data: TextData | None
    targets: list[str]
    available_modules: list[str]
    trainable: int
    total: int
    device: str
    quantization: str
    notes: list[str] = field(default_factory=list)
    #: features per token the LoRA branches keep (models.LoraCount), for the memory estimate
    dropout_features: int = 0
    input_features: int = 0

    @property
    def trainable_line(self) -> str:
        return models.trainable_line(self.trainable, self.total)


def _section(cls, raw: dict, name: str):
    """One section validated alone (None if it has problems: RunConfig.build reports them)."""
    try:
        return cls.model_validate(raw.get(name) or {})
    except Exception:
        return None


def preflight(
    config: RunConfig | dict[str, Any], token: str | None = None, check_data: bool = True
) -> tuple[RunConfig, Preflight]:
    """Validate the settings, read the data, check the model and the LoRA targets, together.

    ``config``: a RunConfig or the nested dict a form or a YAML file gives. Raises
    ConfigError with *all* problems found, each naming the field and the fix; returns the
    validated config and a :class:`Preflight` otherwise. Loads no weights, writes nothing.
    """
    problems: list[str] = []
    cfg: RunConfig | None = None
    if isinstance(config, RunConfig):
        cfg, raw = config, {}
    elif not isinstance(config, dict):
        raise ConfigError(["config: expected a mapping with data/model/lora/training"])
    else:
        raw = config
        try:
            cfg = RunConfig.build(raw)
        except ConfigError as err:
            problems += err.problems
            try:  # the sections below are checked with the preset's values, as build saw them
                raw = presets.apply(raw)
            except ValueError:
                pass
    data = cfg.data if cfg else _section(DataConfig, raw, "data")
    model = cfg.model if cfg else _section(ModelConfig, raw, "model")
    lora = cfg.lora if cfg else _section(LoraSettings, raw, "lora")
    training = cfg.training if cfg else _section(TrainingSettings, raw, "training")
    if lora is None:  # r or alpha is bad: still check the target names
        lora = _section(
            LoraSettings,
            {"lora": {"target_modules": (raw.get("lora") or {}).get("target_modules")}}
            if isinstance(raw.get("lora"), dict)
            else {},
            "lora",
        )

    td, notes = None, []
    if check_data and data is not None:
        try:
            td = load_text(data, token=token)
        except ConfigError as err:
            problems += err.problems
        else:
            notes += td.notes  # the encoding, the delimiter, rows read differently: said at Check and Start
            if td.skipped_empty:
                where = td.skipped_line().split(" skipped", 1)[1]
                notes.append(
                    f"{count(td.skipped_empty, 'empty row')} {'is' if td.skipped_empty == 1 else 'are'} skipped{where}."
                )
            if td.layout != "text":
                from .layouts import describe

                notes.append(
                    f"Layout {describe(td.layout, td.layout_columns)}: loss on "
                    f"{'every token' if data.train_on_prompt else 'the answers only'} (the Data tab shows each row's tokens)."
                )
            if training is not None and model is not None and td.layout != "text":
                from .lint import preflight_notes

                try:  # the answers max_length cuts, the fallback template: said before Start
                    notes += preflight_notes(
                        td,
                        model.base_model_name_or_path,
                        training.max_length,
                        data.train_on_prompt,
                        trust_remote_code=model.trust_remote_code,
                        token=token,
                    )
                except ValueError as err:  # ConfigError (a template that cannot render), or no EOS token
                    problems += getattr(err, "problems", [str(err)])
            if training is not None:
                from .layouts import flat_text

                sizes = [len(flat_text(t)) for t in td.texts]
                longest = max(sizes)
                if longest > training.max_length * _CHARS_PER_TOKEN:
                    n = sum(x > training.max_length * _CHARS_PER_TOKEN for x in sizes)
                    notes.append(
                        f"{count(n, 'row')} {'is' if n == 1 else 'are'} longer than max_length ({training.max_length} tokens; the longest "
                        f"has {longest:,} characters): each is cut to its first {training.max_length} tokens."
                    )
            if training is not None:
                from .heldout import split as heldout_split

                try:  # the held-out set: said on the page before Start (or why there is none)
                    col = td.text_column if td.layout == "text" else None
                    notes.append(heldout_split(td.texts, data, training, col, token, layout=td.layout).note)
                except ConfigError as err:
                    problems += err.problems

    if training is not None:
        w = warmup_note(training)
        if w:
            notes.insert(0, w)
        if training.learning_rate > HIGH_LR:  # allowed (up to 1), but rarely meant
            notes.insert(
                0,
                f"training.learning_rate {training.learning_rate:g} is far above what LoRA is trained with "
                f"(1e-4 to 1e-3; the reference recipe 2e-4): the loss may diverge. Fix: lower it unless you "
                "mean it.",
            )
    device = models.device_kind()
    if training is not None:  # "on" without a GPU or liger_kernel: said here, not after the run is queued
        try:
            speedups.resolve_liger(training.use_liger_kernel, device)
        except ValueError as err:
            problems.append(str(err))
    targets, available, counted = [], [], models.LoraCount(0, 0, 0, 0)
    dist = cfg.distributed if cfg else _section(DistributedConfig, raw, "distributed")
    if model is not None and dist is not None:
        problems += distributed_problems(dist, models.effective_quantization(model, device), device)
    if model is not None:
        q = models.quantization_problem(model, device)
        if q:
            problems.append(q)
        try:
            base = model.base_model_name_or_path
            gone = adapter_base_problem(base, from_adapter=False)  # "./models/mine": no Hub id to look up
            if gone:
                raise ConfigError([gone.replace("base model:", f"{models.FIELD}:", 1)])
            local = folder_problems(base)  # no config.json / weights / tokenizer in a local folder
            if local and (on_disk(base, "file") or not on_disk(Path(base).expanduser() / "config.json", "file")):
                raise ConfigError(local)  # before AutoConfig: a file it would read, a folder it cannot name
            mc = models.load_model_config(model, token=token)  # (not a causal LM: said first)
            problems += local
            if training is not None:
                problems += position_problems(mc, training.max_length, model.base_model_name_or_path)
            skel = models.skeleton(mc, model.trust_remote_code)
            available = models.linear_module_names(skel)
            if lora is not None:
                targets = models.expand_target_modules(
                    lora.target_modules or models.default_target_modules(mc.model_type, available),
                    available,
                    lora.modules_to_save,
                )
                bad = models.check_target_modules(targets, available)
                if not bad:  # rank_pattern keys, modules_to_save, PiSSA on a quantized base, ...
                    quant = models.effective_quantization(model, device)
                    bad = variants.problems(lora, [n for n, _ in skel.named_modules()], targets, quant, device)
                    bad += variants.rank_problems(lora.r, lora.rank_pattern, skel, targets)
                problems += bad
                if not bad and not problems and cfg is not None:
                    try:
                        counted = models.count_parameters(mc, cfg.lora, targets)
                    except Exception as err:  # PEFT's own refusal of a combination not checked above
                        # (modules_to_save: ["layers"] gave NoMatchingPeftModuleError), as a message
                        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
                        raise ConfigError(
                            [
                                f"lora: PEFT cannot apply these LoRA settings to {model.base_model_name_or_path} "
                                f"({type(err).__name__}: {first}). Fix: check target_modules and modules_to_save "
                                "(modules_to_save names whole modules such as lm_head, not containers such as "
                                "layers)."
                            ]
                        ) from None
                    if device == "cpu" and counted.total:  # a run that would surely not fit this machine's RAM
                        from .estimate import cpu_memory_problem

                        try:
                            problems += [p for p in [cpu_memory_problem(mc, cfg, counted, td)] if p]
                        except Exception:  # a guard only: a config the estimate cannot size still runs
                            pass
        except ConfigError as err:
            problems += err.problems
    if problems or cfg is None:  # (cfg is None only with problems)
        raise ConfigError(problems)
    return cfg, Preflight(
        td,
        targets,
        available,
        counted.trainable,
        counted.total,
        device,
        models.effective_quantization(cfg.model, device),
        notes,
        counted.dropout_features,
        counted.input_features,
    )


def distributed_problems(d: DistributedConfig, quantization: str, device: str) -> list[str]:
    """What the ``distributed`` section cannot do here: FSDP on a quantized base (bitsandbytes'
    8-bit/4-bit weights cannot be sharded by FSDP with these settings: DDP only) or without CUDA
    (accelerate's AcceleratorState takes the FSDP plugin for GPU-type devices only: on CPUs the
    ranks would silently run DDP); more processes than GPUs (unless already under a launcher, which decided); fp16 without CUDA;
    more processes than CPU cores on a CPU; several processes on a device that is neither CUDA nor a CPU."""
    import os

    out = []
    if d.strategy == "fsdp" and quantization in ("8bit", "4bit"):
        out.append(
            f"distributed.strategy: fsdp cannot shard a {quantization} base (bitsandbytes' quantized weights "
            "train with DDP only). Fix: set distributed.strategy: ddp, or model.quantization: none."
        )
    elif d.strategy == "fsdp" and d.num_processes > 1 and device != "cuda":
        out.append(
            f"distributed.strategy: fsdp shards the base across CUDA GPUs (accelerate applies FSDP on GPUs only); "
            f"this machine has none ({device}). Fix: set distributed.strategy: ddp."
        )
    if d.num_processes > 1 and device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        import torch

        n = torch.cuda.device_count()
        if d.num_processes > n:
            out.append(
                f"distributed.num_processes: {d.num_processes} processes need as many GPUs; this machine has {n}. "
                f"Fix: set num_processes to at most {n} (or run the multi-node command on a cluster)."
            )
    from .container import usable_cores

    cores = usable_cores()  # a container's CPU quota, not the host's cores
    if d.num_processes > cores and device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # Each rank is a process with its own copy of the model: 1000 of them on a shared server's
        # CPUs would exhaust its memory long before a step (found by the breaker).
        out.append(
            f"distributed.num_processes: {d.num_processes} processes on the CPU need as many cores; this machine "
            f"has {cores}. Fix: set num_processes to at most {cores} (or run the multi-node command on a cluster)."
        )
    if d.num_processes > 1 and device not in ("cuda", "cpu"):
        out.append(f"distributed.num_processes: several processes run on CUDA GPUs or CPUs, not {device}. Fix: set 1.")
    if d.mixed_precision == "fp16" and device != "cuda":
        out.append(
            f"distributed.mixed_precision: fp16 needs a CUDA GPU (here: {device}). Fix: choose auto, no or bf16."
        )
    return out


def warmup_note(t: TrainingSettings) -> str | None:
    """A warning when the warm-up is not shorter than the run: the schedule that really runs. (A
    warmup_steps above 0 wins over warmup_ratio and empties it: lora_app.settings.TrainingSettings.)

    transformers' warm-up (linear, cosine and constant_with_warmup alike) scales the learning
    rate by ``step / warmup_steps`` at optimizer step ``step`` = 0, 1, ..., so a run of
    ``max_steps`` ends at ``(max_steps - 1) / warmup_steps`` of ``learning_rate`` and never decays
    (source: transformers.optimization, ``_get_linear_schedule_with_warmup_lr_lambda``).
    """
    if not t.warmup_steps or t.warmup_steps < t.max_steps:
        return None
    peak = (t.max_steps - 1) / t.warmup_steps
    return (
        f"Warning: training.warmup_steps ({t.warmup_steps}) is not shorter than the run (max_steps {t.max_steps}): "
        f"the learning rate only rises, from 0 to {peak:.0%} of learning_rate ({t.learning_rate * peak:.2g} instead "
        f"of {t.learning_rate:g}) at the last step, and never decays. Fix: set warmup_steps below max_steps "
        f"(e.g. {t.max_steps // 10}, a tenth of the run), or set training.cap_warmup: true to cap it there."
    )


def position_problems(mc, max_length: int, name: str) -> list[str]:
    """``max_length`` above the model's position limit (``max_position_embeddings`` of its text
    config, via ``get_text_config()``: multimodal configs nest it): the run would die with
    "index out of range" at its first long batch."""
    tc = mc.get_text_config() if hasattr(mc, "get_text_config") else mc
    limit = getattr(tc, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0 or max_length <= limit:
        return []
    return [
        f"training.max_length: {max_length} tokens is above the position limit of '{name}' ({limit} positions, "
        f"max_position_embeddings in its config). Fix: set max_length to at most {limit}."
    ]


#: Above this a learning rate gets a note at Check: LoRA recipes use 1e-4 to 1e-3 (PEFT's examples, the
#: QLoRA paper's 2e-4/1e-4); 1e-2 is ten times the top of that.
HIGH_LR = 1e-2


def validate(cfg: RunConfig, token: str | None = None, check_data: bool = True) -> Preflight:
    """:func:`preflight` for a RunConfig; returns only the :class:`Preflight`."""
    return preflight(cfg, token=token, check_data=check_data)[1]


def check_and_submit(
    jobs: JobManager | Callable[[], JobManager],
    config: RunConfig | dict[str, Any],
    owner: str = "local",
    token: str | None = None,
    env: dict | None = None,
) -> tuple[str, Preflight]:
    """Preflight, then queue the run: what Start and the CLI do. Raises ConfigError (listing
    every problem; :class:`lora_app.jobs.QueueFull` when ``owner`` has as many runs waiting as one
    person may; the Hub push preflight's problems for ``training.hub_checkpoints``) before anything
    is written, before any GPU time; returns ``(run_id, preflight)``. ``jobs``: the
    job manager, or a function that makes it, called only once the preflight passed (the CLI:
    a refused config leaves no runs folder behind)."""
    if not callable(jobs):  # the per-person limit of waiting runs: said before a second of preflight
        jobs.check_room(owner)
    try:
        cfg, pre = preflight(config, token=token)
    except ConfigError as err:  # a run that would push: its Hub problems are reported with the rest
        raise ConfigError(err.problems + _hub_problems(config, token)) from None
    from .hub_resume import with_checkpoint_repo  # training.hub_checkpoints: token, namespace, repo state

    cfg = with_checkpoint_repo(cfg, token)
    jm = jobs() if callable(jobs) else jobs
    return jm.submit(cfg, owner=owner, env=env), pre


def _hub_problems(config: RunConfig | dict[str, Any], token: str | None) -> list[str]:
    """The checkpoint push preflight's problems of a config that has other problems too."""
    from .hub_resume import checkpoint_repo

    raw = config.model_dump() if isinstance(config, RunConfig) else config
    t = _section(TrainingSettings, raw, "training")
    if t is None or not t.hub_checkpoints:
        return []
    base = str((raw.get("model") or {}).get("base_model_name_or_path") or "base")
    try:
        checkpoint_repo(t, base, "data", token)
    except ConfigError as err:
        return err.problems
    return []

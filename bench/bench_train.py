"""Training speed: the reference LoRA recipe vs lora_app's own training path, side by side.

    python bench/bench_train.py [--repeats 3] [--examples 256] [--device cpu|cuda]
                                [--model PATH_OR_ID] [--quant none|8bit|4bit] [--levers]

Variants (each run in its own subprocess, so peak RSS is per variant; repeats alternate the order):

- ``reference``: the recipe as people copy it (PEFT int8 notebook shape): ``datasets`` map with
  ``tokenizer(text, truncation=True, max_length=L)`` one example per row, ``pad_token = eos_token``,
  ``DataCollatorForLanguageModeling(mlm=False)`` padding each batch to its longest row,
  ``transformers.Trainer`` + PEFT LoRA (r=16, alpha=32, q_proj,v_proj, dropout 0.05), batch 4 x
  accumulation 4, lr 2e-4; float32 on CPU (bf16 / 8-bit / 4-bit on CUDA, with
  ``prepare_model_for_kbit_training`` defaults for a quantized base, as in the notebook).
- ``app``: the real ``lora_app.train.train(RUN_DIR)``: a run folder with config.yaml
  (``preset: reference recipe``, so the same r, lora_alpha, plain LoRA scaling and learning rate as the
  reference variant, not the app's faster default recipe; the app's own training path otherwise:
  packing on, EOS appended and trained, etc.), events.jsonl, adapter saved. max_steps, warmup_steps,
  learning_rate, max_length, batch and the data file are set explicitly, the same for both variants.

Both variants see the same training rows (the app's reading of the file, last ``--holdout`` rows
held out) in the same order (Trainer's seeded sampler, seed 42), the same number of optimizer steps
and examples. Timing comes from hooks on ``Trainer.training_step`` and the callback handler,
installed identically in both subprocesses. ``--levers`` runs the app path once per lever, each
changed alone (see LEVERS). Results: a table on stdout and bench/results/train-*.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_PROCESS_START = time.time()
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCH, ACCUM, LR = 4, 4, 2e-4  # the reference recipe (lora_app.presets.REFERENCE; the app's default is faster)
WARMUP_SKIP = 2  # optimizer steps left out of the per-step medians

# One lever at a time, applied to the app's default path (name -> overrides).
LEVERS: dict[str, dict] = {
    "app default": {},
    "packing off (padding)": {"packing": False},
    "LM head on labelled positions only": {"labels_only_head": True},
    "padding + LM head on labelled only": {"packing": False, "labels_only_head": True},
    "accumulation kept (4 micro-batches of 4)": {"merge_accumulation": False},
    # merge_accumulation off: with it on, plan_step would merge these two back into one forward of 16
    # (the session 2 measurement of this lever ran 16 x 1 twice)
    "merged in two (2 micro-batches of 8)": {"batch": BATCH * 2, "accum": ACCUM // 2, "merge_accumulation": False},
    "bf16 autocast": {"bf16": True},
    "precision float32": {"precision": "float32"},
    "precision bfloat16": {"precision": "bfloat16"},
    "attention sdpa": {"set": {"model.attn_implementation": "sdpa"}},
    "attention eager": {"set": {"model.attn_implementation": "eager"}},
    "chunked loss off": {"set": {"training.chunked_loss": False}},
    "lora_dropout=0": {"lora_dropout": 0.0},
    "1 torch thread": {"threads": 1},
    "gradient checkpointing on": {"gradient_checkpointing": True},
    # the training process on glibc's malloc instead of the allocator the app preloads (lora_app/allocator.py)
    "system allocator (glibc malloc)": {"malloc": "system"},
}


# =============================================================================================
# worker side (one variant, one subprocess)
# =============================================================================================
class Instrument:
    """Per micro-batch (training_step) and per optimizer step (on_step_end) timings and counts."""

    def __init__(self, device: str, profile_steps: int = 0):
        self.device = device
        self.profile_steps = profile_steps  # optimizer steps to profile (torch.profiler), after the warm-up ones
        self.prof = None
        self.prof_t0 = 0.0
        self.profiled: set[int] = set()  # 1-based step numbers run under the profiler (left out of the medians)
        self.profile: dict | None = None
        self.micro: list[dict] = []
        self.steps: list[tuple[float, float]] = []  # (perf_counter, process_time) at each on_step_end
        self.begin: tuple[float, float] | None = None
        self.begin_wall: float | None = None
        self.trainer = None

    def _sync(self):
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def install(self) -> None:
        from transformers import Trainer
        from transformers.trainer_callback import CallbackHandler

        ins = self
        orig_init, orig_step = Trainer.__init__, Trainer.training_step
        orig_begin, orig_end = CallbackHandler.on_train_begin, CallbackHandler.on_step_end

        def __init__(self, *a, **k):
            orig_init(self, *a, **k)
            ins.trainer = self

        def training_step(self, model, inputs, *a, **k):
            t0 = time.perf_counter()
            out = orig_step(self, model, inputs, *a, **k)
            ins.micro.append({"t0": t0, "t1": time.perf_counter(), **_batch_counts(inputs)})
            return out

        def on_train_begin(self, *a, **k):
            ins._sync()
            ins.begin = (time.perf_counter(), time.process_time())
            ins.begin_wall = time.time()
            return orig_begin(self, *a, **k)

        def on_step_end(self, *a, **k):
            ins._sync()
            ins.steps.append((time.perf_counter(), time.process_time()))
            ins._profile_tick()
            return orig_end(self, *a, **k)

        Trainer.__init__, Trainer.training_step = __init__, training_step
        CallbackHandler.on_train_begin, CallbackHandler.on_step_end = on_train_begin, on_step_end

    def _profile_tick(self) -> None:
        """Profile optimizer steps WARMUP_SKIP + 2 ... (+ profile_steps - 1): started at the end of the
        step before, stopped at the end of the last one."""
        n = len(self.steps)
        start = WARMUP_SKIP + 1
        # A profiler problem (only CUDA's side cannot be tried on CPU) must not cost the run: it is recorded.
        try:
            if self.profile_steps and n == start and self.prof is None:
                import torch

                acts = [torch.profiler.ProfilerActivity.CPU]
                if self.device == "cuda":
                    acts.append(torch.profiler.ProfilerActivity.CUDA)
                self.prof = torch.profiler.profile(activities=acts)
                self.prof.start()
                self.prof_t0 = time.perf_counter()
            elif self.prof is not None and n == start + self.profile_steps:
                self.prof.stop()
                wall = time.perf_counter() - self.prof_t0
                self.profiled = set(range(start + 1, n + 1))
                self.profile = profile_summary(self.prof, wall, self.profile_steps)
                self.prof = None
        except Exception as err:
            self.profile = {"error": f"{type(err).__name__}: {err}"[:500]}
            self.prof, self.profile_steps = None, 0

    def per_step(self) -> list[dict]:
        out, prev = [], self.begin
        for k, (t, c) in enumerate(self.steps):
            mbs = [m for m in self.micro if prev[0] <= m["t0"] < t]
            row = {"step": k + 1, "s": t - prev[0], "cpu_s": c - prev[1]}
            for key in ("tokens", "positions", "targets", "rows", "attn_pairs", "text_tokens"):
                row[key] = sum(m[key] for m in mbs)
            row["micro_batches"] = len(mbs)
            row["profiled"] = k + 1 in self.profiled
            out.append(row)
            prev = (t, c)
        return out


def profile_summary(prof, wall_s: float, steps: int, top: int = 20) -> dict:
    """What a torch.profiler run of ``steps`` optimizer steps says about where the time goes.

    ``device_busy``: GPU kernel time / wall time (kernel time summed as torch's own profiler table
    does: over the events whose device is the GPU): well under 1 means the GPU waited for the CPU
    (Python, launches, host<->device syncs). ``syncs``: calls that can make the CPU wait for the GPU
    (item/.cpu()/synchronize, allocations), with their CPU time. ``top_device``: the kernels with the
    most GPU time; ``top_cpu``: the ops with the most self CPU time (microseconds, all steps together).
    """
    from torch.autograd import DeviceType

    rows = []
    for e in prof.key_averages():
        on_device = getattr(e, "device_type", DeviceType.CPU) != DeviceType.CPU
        dev = getattr(e, "self_device_time_total", None)
        if dev is None:
            dev = getattr(e, "self_cuda_time_total", 0)
        rows.append(
            {
                "op": e.key,
                "count": e.count,
                "self_cpu_us": round(e.self_cpu_time_total),
                "self_device_us": round(dev or 0) if on_device else 0,
                "on_device": on_device,
            }
        )
    dev_total = sum(r["self_device_us"] for r in rows)
    cpu_total = sum(r["self_cpu_us"] for r in rows if not r["on_device"])
    sync_ops = (
        "aten::item",
        "aten::_local_scalar_dense",
        "cudaStreamSynchronize",
        "cudaDeviceSynchronize",
        "cudaMemcpyAsync",
        "cudaHostAlloc",
        "cudaMalloc",
        "cudaFree",
    )
    return {
        "steps": steps,
        "wall_s": round(wall_s, 4),
        "wall_s_per_step": round(wall_s / steps, 4),
        "device_s_per_step": round(dev_total / 1e6 / steps, 4),
        "device_busy": round(dev_total / 1e6 / wall_s, 3) if wall_s > 0 and dev_total else None,  # None: CPU run
        "self_cpu_s_per_step": round(cpu_total / 1e6 / steps, 4),
        "syncs": [r for r in rows if r["op"] in sync_ops],
        "top_device": sorted(rows, key=lambda r: -r["self_device_us"])[:top],
        "top_cpu": sorted(rows, key=lambda r: -r["self_cpu_us"])[:top],
    }


def _batch_counts(inputs) -> dict:
    """Real (non-padding) tokens, fed positions, loss targets, rows and causal attention pairs."""
    ids = inputs["input_ids"]
    am = inputs.get("attention_mask")
    if am is not None:  # padded batch: one row per example
        lens = am.sum(1).tolist()
        ends = None
    elif "position_ids" in inputs:  # packed bins: rows restart at position 0; padding is a pseudo-row
        pos = inputs["position_ids"].reshape(-1).tolist()
        lab = inputs["labels"].reshape(-1).tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        # a real row has a target after its first token; the padding pseudo-row has none
        segs = [(a, b) for a, b in zip(starts, starts[1:]) if any(x != -100 for x in lab[a + 1 : b])]
        lens = [b - a for a, b in segs]
        ends = [b - 1 for _, b in segs]
    else:
        lens = [ids.shape[1]] * ids.shape[0]
        ends = None
    if "shift_labels" in inputs:
        targets = int((inputs["shift_labels"] != -100).sum())
    else:
        targets = int((inputs["labels"][..., 1:] != -100).sum())
    return {
        "tokens": int(sum(lens)),
        "positions": int(ids.numel()),
        "targets": targets,
        "rows": len(lens),
        "attn_pairs": int(sum(n * (n + 1) // 2 for n in lens)),
        # tokens minus a trailing EOS per row: equal in both variants <=> same examples seen
        "text_tokens": int(sum(lens)) - _eos_count(inputs, lens, ends),
    }


_EOS_ID: list[int] = []


def _eos_count(inputs, lens, ends) -> int:
    if not _EOS_ID:
        return 0
    if ends is not None:  # packed: the last token of each real row
        flat = inputs["input_ids"].reshape(-1).tolist()
        return sum(flat[e] == _EOS_ID[0] for e in ends)
    out = 0
    for row, L in zip(inputs["input_ids"].tolist(), lens):
        out += int(L > 0 and row[L - 1] == _EOS_ID[0])
    return out


def _apply_app_patches(lv: dict) -> None:
    """Levers that are not RunConfig fields, applied around the unchanged lora_app.train code."""
    import transformers

    from lora_app import text

    if lv.get("labels_only_head"):
        orig_pack, orig_pad = text.packing_collator, text.PaddingCollator
        text.packing_collator = lambda *a, **k: common.labels_only_head(orig_pack(*a, **k))
        text.PaddingCollator = lambda *a, **k: common.labels_only_head(orig_pad(*a, **k))
    if lv.get("bf16"):
        base = transformers.TrainingArguments

        class BF16Args(base):  # CPU autocast to bf16 (train.py only turns it on for CUDA)
            def __post_init__(self):
                self.bf16 = True
                super().__post_init__()

        BF16Args.__name__ = "TrainingArguments"
        transformers.TrainingArguments = BF16Args


def app_config(spec: dict):
    """The app variant's RunConfig for a run ``spec`` (its steps, warm-up, batch, levers, --set): the
    reference recipe's values, those of :func:`run_reference`, not the app's default recipe."""
    from lora_app.config import RunConfig

    lv = spec["levers"]
    t = {
        "max_steps": spec["steps"],
        "warmup_steps": spec["warmup"],
        "learning_rate": LR,
        "max_length": spec["max_length"],
        "logging_steps": 1,
        "save_steps": 10**6,
        "per_device_train_batch_size": spec["batch"],
        "gradient_accumulation_steps": spec["accum"],
        # The bench holds out its own rows (the same for both recipes): the app's own split would
        # train it on 5% fewer rows and add evaluation time.
        "eval_fraction": 0.0,
    }
    for k_cfg, k_lv in (
        ("packing", "packing"),
        ("gradient_checkpointing", "gradient_checkpointing"),
        ("per_device_train_batch_size", "batch"),
        ("gradient_accumulation_steps", "accum"),
        ("merge_accumulation", "merge_accumulation"),
    ):
        if k_lv in lv:
            t[k_cfg] = lv[k_lv]
    lora = {"lora_dropout": lv["lora_dropout"]} if "lora_dropout" in lv else {}
    raw = {
        # The reference recipe's values (r 16, lora_alpha 32, no rsLoRA, lr 2e-4), as run_reference has
        # them, not the app's default recipe: this bench compares training paths on one recipe.
        "preset": "reference recipe",
        "data": {"path": spec["train_file"]},
        "model": {
            "base_model_name_or_path": spec["model"],
            "quantization": spec["quant"],
            **({"precision": lv["precision"]} if "precision" in lv else {}),
        },
        "lora": lora,
        "training": t,
    }
    # --set section.field=value (any RunConfig field), then the lever's own settings
    for key, value in {**(spec.get("set") or {}), **lv.get("set", {})}.items():
        section, field = key.split(".", 1)
        raw.setdefault(section, {})[field] = value
    return RunConfig.build(raw)


def run_app(spec: dict, ins: Instrument) -> tuple:
    from lora_app.events import read_events

    lv = spec["levers"]
    cfg = app_config(spec)
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.yaml")
    _apply_app_patches(lv)
    from lora_app.train import train

    rc = train(run_dir)
    events, _ = read_events(run_dir)
    if rc != 0:
        raise RuntimeError(f"lora_app.train failed: {[e for e in events if e['type'] == 'status'][-1]}")
    tr = ins.trainer
    from lora_app import models

    tok = models.load_tokenizer(models.resolve_model(spec["model"]).load_path)
    losses = [e["loss"] for e in events if e["type"] == "log"]
    infos = [e["message"] for e in events if e["type"] == "info"]
    return tr.model, tok, losses, {"run_dir": str(run_dir), "config": cfg.model_dump(mode="json"), "app_info": infos}


def run_reference(spec: dict, ins: Instrument) -> tuple:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )

    from lora_app import models

    path = models.resolve_model(spec["model"]).load_path
    cuda = spec["device"] == "cuda"
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.eos_token
    texts = [json.loads(ln)["quote"] for ln in open(spec["train_file"], encoding="utf-8")]
    # What the recipe's `Dataset.from_dict(...).map(tokenizer(..., truncation=True), batched=True)` yields,
    # as a plain list of rows (Trainer takes any map-style dataset): the same rows, and the GPU machine
    # has no `datasets`.
    enc = tokenizer(texts, truncation=True, max_length=spec["max_length"])
    data = [{"input_ids": ids, "attention_mask": am} for ids, am in zip(enc["input_ids"], enc["attention_mask"])]
    kw: dict = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if spec["quant"] in ("8bit", "4bit"):
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if spec["quant"] == "8bit"
            else BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        )
        kw["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kw)
    if spec["quant"] in ("8bit", "4bit"):
        model = prepare_model_for_kbit_training(model)  # notebook: gradient checkpointing on (default)
    elif cuda:
        model.to("cuda")
    model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=["q_proj", "v_proj"],
            lora_dropout=0.05,
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=spec["run_dir"],
        per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=spec["accum"],
        warmup_steps=spec["warmup"],
        max_steps=spec["steps"],
        learning_rate=LR,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=42,
        bf16=cuda,
        use_cpu=not cuda,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model, train_dataset=data, args=args, data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)
    )
    model.config.use_cache = False
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return model, tokenizer, losses, {}


def worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    threads = spec["levers"].get("threads") or spec.get("threads")
    if threads:
        torch.set_num_threads(threads)
    from lora_app import models

    ins = Instrument(spec["device"], spec.get("profile_steps", 0))
    ins.install()
    mm_before = common.matmul_gflops(spec["device"], n=1024, reps=5)
    load_before = common.loadavg()
    tok0 = models.load_tokenizer(models.resolve_model(spec["model"]).load_path)
    _EOS_ID.append(tok0.eos_token_id)
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run = run_app if spec["variant"] == "app" else run_reference
    model, tok, losses, extra = run(spec, ins)
    t_done = time.time()
    peak_rss = common.peak_rss_mib()
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if spec["device"] == "cuda" else None
    steps = ins.per_step()
    fm = common.flop_model(model)
    ev = common.heldout_loss(model, tok, spec["heldout"], spec["max_length"])
    mm_after = common.matmul_gflops(spec["device"], n=1024, reps=5)
    res = {
        "variant": spec["variant"],
        "levers": spec["levers"],
        "repeat": spec.get("repeat"),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "flop_model": fm,
        "train_loop_s": ins.steps[-1][0] - ins.begin[0],
        "train_loop_cpu_s": ins.steps[-1][1] - ins.begin[1],
        "load_s": ins.begin_wall - T_PROCESS_START,
        "end_to_end_s": t_done - T_PROCESS_START,
        "peak_rss_mib": round(peak_rss, 1),
        "gpu_peak_mib": gpu_peak,
        "train_losses": losses,
        "heldout": ev,
        "matmul_1024_before": mm_before,
        "matmul_1024_after": mm_after,
        "loadavg_before": load_before,
        "loadavg_after": common.loadavg(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "gradient_checkpointing": _checkpointing(model),
        "param_dtypes": _param_dtypes(model),
        "allocator": allocator_in_use(),
        "dynamo": _dynamo_stats(),
        "profile": ins.profile,
        **extra,
    }
    Path(spec["out"]).write_text(json.dumps(res, default=str))
    return 0


def _dynamo_stats() -> dict | None:
    """torch.compile's own counters (graphs compiled, recompiles), when anything was compiled."""
    import sys as _sys

    if "torch._dynamo" not in _sys.modules:
        return None
    try:
        from torch._dynamo.utils import counters

        return {k: dict(v) for k, v in counters.items() if k in ("stats", "frames", "recompiles", "graph_break")}
    except Exception as err:  # private API: its absence must not lose the run's numbers
        return {"error": repr(err)}


def _checkpointing(model) -> bool:
    base = getattr(model, "get_base_model", lambda: model)()
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # the new name first (5.2x)
        if hasattr(type(base), name):
            return bool(getattr(base, name))
    return False


def _param_dtypes(model) -> dict:
    """Parameter count per (trainable?, dtype): e.g. frozen bfloat16 base, trainable float32 LoRA."""
    out: dict = {}
    for p in model.parameters():
        k = f"{'trainable' if p.requires_grad else 'frozen'} {str(p.dtype).removeprefix('torch.')}"
        out[k] = out.get(k, 0) + p.numel()
    return out


def worker_base_eval(spec_path: str) -> int:
    """Held-out loss of the base model alone (no adapter), the starting point of both variants."""
    spec = json.loads(Path(spec_path).read_text())
    if spec["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from lora_app import models
    from lora_app.config import ModelConfig

    rm = models.resolve_model(spec["model"])
    tok = models.load_tokenizer(rm.load_path)
    model = models.load_base_model(
        ModelConfig(base_model_name_or_path=spec["model"]), rm.load_path, models.device_kind(), for_training=False
    )
    Path(spec["out"]).write_text(json.dumps(common.heldout_loss(model, tok, spec["heldout"], spec["max_length"])))
    return 0


# =============================================================================================
# parent side
# =============================================================================================
def summarize(res: dict, peak_gflops: float, nominal_gflops: float | None = None) -> dict:
    """One run's numbers: medians over optimizer steps after WARMUP_SKIP, and run totals.

    MFU is against ``peak_gflops`` (the matmul peak measured in the same run) and, when given,
    against ``nominal_gflops`` (a GPU's data-sheet dense peak) as ``mfu_useful_nominal``."""
    st = res["steps"]
    body = st[WARMUP_SKIP:] if len(st) > WARMUP_SKIP + 2 else st
    body = [s for s in body if not s.get("profiled")] or body  # the profiler slows the steps it watches
    fm = res["flop_model"]
    tps = [s["tokens"] / s["s"] for s in body]
    fl = [common.train_flops(fm, s["tokens"], s["targets"], s["attn_pairs"]) / s["s"] for s in body]
    hw = [common.train_flops(fm, s["positions"], s["positions"], s["attn_pairs"]) / s["s"] for s in body]
    tot = {k: sum(s[k] for s in st) for k in ("tokens", "positions", "targets", "rows", "text_tokens")}
    med = statistics.median(s["s"] for s in body)
    head = st[:WARMUP_SKIP] if body is not st else []
    return {
        # the first steps' time beyond the steady state: torch.compile, Triton JIT, allocator growth
        "warmup_extra_s": sum(s["s"] for s in head) - med * len(head) if head else None,
        "tokens_per_s": statistics.median(tps),
        "best_step_tokens_per_s": max(tps),
        "tokens_per_cpu_s": statistics.median(s["tokens"] / s["cpu_s"] for s in body),
        "examples_per_s": statistics.median(s["rows"] / s["s"] for s in body),
        "s_per_step": statistics.median(s["s"] for s in body),
        "cpu_s_per_step": statistics.median(s["cpu_s"] for s in body),
        "train_loop_s": res["train_loop_s"],
        "end_to_end_s": res["end_to_end_s"],
        "load_s": res["load_s"],
        "peak_rss_mib": res["peak_rss_mib"],
        "allocator": res.get("allocator"),
        "gpu_peak_mib": res["gpu_peak_mib"],
        "heldout_loss": res["heldout"]["loss"],
        "heldout_loss_text_only": res["heldout"]["loss_text_only"],
        "last_train_loss": res["train_losses"][-1] if res["train_losses"] else None,
        "mfu_useful": statistics.median(fl) / (peak_gflops * 1e9),
        "mfu_hardware": statistics.median(hw) / (peak_gflops * 1e9),
        "mfu_useful_nominal": statistics.median(fl) / (nominal_gflops * 1e9) if nominal_gflops else None,
        "useful_tflops": statistics.median(fl) / 1e12,
        "padding_share": 1 - tot["tokens"] / tot["positions"],
        **{f"total_{k}": v for k, v in tot.items()},
        "matmul_1024_median_gflops": res["matmul_1024_before"]["median_gflops"],
        "loadavg": res["loadavg_before"],
    }


_QUIET = 0.0
_MALLOC = "app"


def allocator_in_use() -> str:
    from lora_app import allocator

    return allocator.in_use()


def _worker_env(env: dict[str, str], spec: dict) -> dict[str, str]:
    """The allocator of a timed run (``--malloc``): "app" gives the app variant what the app's job
    manager gives its training process (lora_app/allocator.py) and the reference the system's, as the
    PEFT example runs; "all" gives both the app's, "none" both the system's. A lever's "malloc" wins."""
    from lora_app import allocator

    setting = (spec.get("levers") or {}).get("malloc")
    if setting is None and (_MALLOC == "all" or (_MALLOC == "app" and spec.get("variant") == "app")):
        setting = "auto"
    return allocator.child_env(env, setting or "system")[0]


def _wait_quiet() -> None:
    """On a shared machine: give other people's jobs a chance to finish before a timed run."""
    t0 = time.time()
    while _QUIET and (common.loadavg() or 0) > _QUIET and time.time() - t0 < 180:
        time.sleep(5)


def spawn(spec: dict, tmp: Path, name: str, mode: str = "--_worker", timeout: int = 1800) -> dict:
    _wait_quiet()
    spec = dict(spec, out=str(tmp / f"{name}.out.json"), run_dir=str(tmp / name))
    sp = tmp / f"{name}.spec.json"
    sp.write_text(json.dumps(spec))
    # the repo first, then what the caller had (run_gpu.sh puts its wheels' folder there)
    pp = os.pathsep.join([str(common.REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = {
        **os.environ,
        "PYTHONPATH": pp,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
    }
    t0 = time.time()
    p = subprocess.run(
        [sys.executable, __file__, mode, str(sp)],
        cwd=common.REPO,
        env=_worker_env(env, spec),
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if p.returncode != 0 or not Path(spec["out"]).exists():
        sys.stderr.write(p.stdout[-3000:] + p.stderr[-6000:])
        raise RuntimeError(f"worker {name} failed (exit {p.returncode})")
    res = json.loads(Path(spec["out"]).read_text())
    res["subprocess_wall_s"] = time.time() - t0
    return res


def startup_latency(model: str, train_file: str, tmp: Path, repeats: int = 2) -> list[dict]:
    """JobManager.submit -> the child's first events: 'loading' (process up, config read) and
    'training' (data tokenized, model loaded, first step starting); then the run is cancelled."""
    from lora_app.config import RunConfig
    from lora_app.events import read_events
    from lora_app.jobs import JobManager

    out = []
    jm = JobManager(tmp / "jobs", poll_s=0.05)
    try:
        for i in range(repeats):
            cfg = RunConfig.build(
                {
                    "data": {"path": train_file, "max_rows": 64},
                    "model": {"base_model_name_or_path": model, "quantization": "none"},
                    "training": {"max_steps": 1, "warmup_steps": 0, "max_length": 128, "save_steps": 10**6},
                }
            )
            t0 = time.time()
            rid = jm.submit(cfg)
            seen: dict[str, float] = {}
            while time.time() - t0 < 300:
                events, _ = read_events(jm.run_dir(rid))
                for e in events:
                    key = e.get("status") if e["type"] == "status" else e["type"]
                    if key not in seen:
                        seen[key] = e["time"] - t0
                if any(k in seen for k in ("training", "finished", "failed", "stopped")):
                    break
                time.sleep(0.01)
            out.append({"repeat": i, **{f"submit_to_{k}_s": round(v, 3) for k, v in seen.items()}})
            jm.cancel(rid, grace_s=2)  # model loaded and the first step started: enough
    finally:
        jm.close()
    return out


def _agg(vals: list[float]) -> dict:
    vals = [v for v in vals if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


METRICS = [
    ("tokens_per_s", "non-pad tok/s", "{:.0f}"),
    ("examples_per_s", "examples/s", "{:.2f}"),
    ("best_step_tokens_per_s", "best-step tok/s", "{:.0f}"),
    ("tokens_per_cpu_s", "tok per CPU-s", "{:.0f}"),
    ("s_per_step", "s/opt step", "{:.2f}"),
    ("cpu_s_per_step", "CPU s/step", "{:.2f}"),
    ("train_loop_s", "train wall s", "{:.1f}"),
    ("end_to_end_s", "process wall s", "{:.1f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
    ("gpu_peak_mib", "GPU peak MiB", "{:.0f}"),
    ("heldout_loss", "held-out loss", "{:.4f}"),
    ("heldout_loss_text_only", "held-out (no EOS)", "{:.4f}"),
    ("mfu_useful", "MFU useful", "{:.1%}"),
    ("mfu_hardware", "MFU hw", "{:.1%}"),
    ("mfu_useful_nominal", "MFU useful vs nominal", "{:.1%}"),
    ("useful_tflops", "useful TFLOP/s", "{:.1f}"),
    ("padding_share", "padding", "{:.1%}"),
    ("warmup_extra_s", "first-steps extra s", "{:.1f}"),
]


def cell(a: dict, fmt: str) -> str:
    if a["median"] is None:
        return "-"
    s = fmt.format(a["median"])
    if a["n"] > 1 and a["min"] != a["max"]:
        s += f" ({fmt.format(a['min'])}-{fmt.format(a['max'])})"
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=256, help="training examples per variant (16 per optimizer step)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default=None, help="Hub id or folder (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--quant", choices=["none", "8bit", "4bit"], default="none")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--holdout", type=int, default=200)
    ap.add_argument("--data", type=Path, default=common.DATA, help="JSONL of quotes (default: examples/quotes.jsonl)")
    ap.add_argument("--batch", type=int, default=BATCH, help="per_device_train_batch_size of both variants")
    ap.add_argument("--accum", type=int, default=ACCUM, help="gradient_accumulation_steps of both variants")
    ap.add_argument(
        "--keep-adapter",
        type=Path,
        default=common.RESULTS / "runs" / "last_app_adapter",
        help="where the last app run's adapter is copied (for bench_generate.py)",
    )
    ap.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="run this many optimizer steps (after the first 3) under torch.profiler; they are left "
        "out of the medians and summarized in each run's 'profile'",
    )
    ap.add_argument(
        "--nominal-peak-tflops",
        type=float,
        default=989.0,
        help="CUDA only: the GPU's dense bf16 peak for a second MFU figure (989: H100/H200 SXM)",
    )
    ap.add_argument("--warmup", type=int, default=None, help="warmup steps (default: 10%% of the steps)")
    ap.add_argument("--variants", default="reference,app")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="app variant: a RunConfig field (YAML value), e.g. training.use_liger_kernel=off; repeatable",
    )
    ap.add_argument(
        "--repeat-data",
        type=int,
        default=1,
        metavar="N",
        help="repeat the training rows N times (a big batch needs more rows than the file has)",
    )
    ap.add_argument("--levers", action="store_true", help="run the app path once per lever instead (LEVERS)")
    ap.add_argument("--only-levers", default=None, help="comma-separated lever names (with --levers)")
    ap.add_argument("--no-startup", action="store_true", help="skip the submit -> first event measurement")
    ap.add_argument("--no-base-eval", action="store_true")
    ap.add_argument("--tag", default=None, help="suffix for the JSON file name")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the run folders (printed path)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in the workers (default: torch's)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="LOAD",
        help="before each run wait (at most 180 s) until the 1-minute load average is below LOAD",
    )
    ap.add_argument(
        "--malloc",
        choices=["app", "all", "none"],
        default="app",
        help="memory allocator of the runs: app = the app variant on the app's (lora_app/allocator.py), the "
        "reference on the system's; all = both on the app's; none = both on the system's",
    )
    a = ap.parse_args(argv)
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    from lora_app import models

    model = a.model or str(models.bundled_model_dir())
    rows_per_step = a.batch * a.accum
    steps = max(1, math.ceil(a.examples / rows_per_step))
    warmup = a.warmup if a.warmup is not None else max(1, steps // 10)
    train, held = common.split_quotes(a.data, holdout=a.holdout)
    train = train * a.repeat_data
    import yaml

    overrides = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            ap.error(f"--set {item!r}: expected SECTION.FIELD=VALUE, e.g. training.torch_compile=true")
        overrides[key.strip()] = yaml.safe_load(value)
    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    if a.keep_tmp:
        print(f"# run folders in {tmp}")
    train_file = tmp / "train.jsonl"
    train_file.write_text("".join(json.dumps({"quote": t}, ensure_ascii=False) + "\n" for t in train), "utf-8")
    global _QUIET, _MALLOC
    _MALLOC = a.malloc
    if a.wait_quiet:
        _QUIET = a.wait_quiet
    base = {
        "threads": a.threads,
        "device": a.device,
        "model": model,
        "quant": a.quant,
        "steps": steps,
        "warmup": warmup,
        "max_length": a.max_length,
        "train_file": str(train_file),
        "heldout": held,
        "batch": a.batch,
        "accum": a.accum,
        "set": overrides,
        "profile_steps": a.profile_steps,
    }

    if a.threads:  # the peak (and the header) with the workers' thread count
        import torch

        torch.set_num_threads(a.threads)
    # MFU is taken against the dtype the run computes in: float32 on CPU, bf16 on CUDA.
    peak = (
        common.matmul_gflops("cpu", n=2048, reps=10)
        if a.device == "cpu"
        else common.matmul_gflops("cuda", n=8192, reps=20, dtype="bfloat16")
    )
    info = common.machine_info(a.device)
    nominal = a.nominal_peak_tflops * 1e3 if a.device == "cuda" else None
    stem = (
        f"train-{'levers-' if a.levers else ''}{a.device}-{a.quant}-{time.strftime('%Y%m%d-%H%M%S')}"
        + (f"-{a.tag}" if a.tag else "")
        + ".json"
    )

    def write_partial():  # after every run: a step killed by its time limit still leaves what it measured
        common.write_json(
            {
                "kind": "partial",
                "args": vars(a),
                "model": model,
                "machine": info,
                "matmul_peak": peak,
                "summaries": {
                    x["label"] + f"#{i}": summarize(x, peak["best_gflops"], nominal) for i, x in enumerate(runs)
                },
            },
            stem,
        )

    print(
        f"# {info.get('cpu', '')} {info.get('gpu', '')} | torch {info['torch']} | threads {info['torch_threads']} | "
        f"matmul peak {peak['best_gflops']} GFLOP/s ({peak['dtype']} {peak['n']}^2; median {peak['median_gflops']})"
    )
    print(
        f"# {len(train)} training rows, {len(held)} held out; {steps} optimizer steps x {a.batch} x {a.accum} = "
        f"{steps * rows_per_step} examples per variant; warmup {warmup}; max_length {a.max_length}",
        flush=True,
    )

    runs: list[dict] = []
    if a.levers:
        names = [n.strip() for n in a.only_levers.split(",")] if a.only_levers else list(LEVERS)
        plan = [(r, n) for r in range(a.repeats) for n in (names if r % 2 == 0 else names[::-1])]
        for r, n in plan:
            res = spawn({**base, "variant": "app", "levers": LEVERS[n], "repeat": r}, tmp, f"lever{r}_{len(runs)}")
            res["label"] = n
            runs.append(res)
            write_partial()
            s = summarize(res, peak["best_gflops"], nominal)
            print(
                f"  [{r}] {n}: {s['tokens_per_s']:.0f} tok/s, {s['s_per_step']:.2f} s/step, "
                f"loss {s['heldout_loss']:.4f}, RSS {s['peak_rss_mib']:.0f} MiB ({s['allocator']}), load {s['loadavg']}",
                flush=True,
            )
        labels = names
    else:
        variants = a.variants.split(",")
        for r in range(a.repeats):
            for v in variants if r % 2 == 0 else variants[::-1]:
                res = spawn({**base, "variant": v, "levers": {}, "repeat": r}, tmp, f"{v}{r}")
                res["label"] = v
                runs.append(res)
                write_partial()
                s = summarize(res, peak["best_gflops"], nominal)
                print(
                    f"  [{r}] {v}: {s['tokens_per_s']:.0f} tok/s, {s['s_per_step']:.2f} s/step, "
                    f"train {s['train_loop_s']:.1f} s, loss {s['heldout_loss']:.4f}, "
                    f"RSS {s['peak_rss_mib']:.0f} MiB ({s['allocator']}), load {s['loadavg']}",
                    flush=True,
                )
        labels = variants
        if "app" in variants:  # keep the last app adapter for bench_generate.py (ignored by git: runs/)
            import shutil

            keep = a.keep_adapter
            shutil.rmtree(keep, ignore_errors=True)
            last = [x for x in runs if x["label"] == "app"][-1]
            shutil.copytree(Path(last["run_dir"]) / "adapter", keep)

    base_eval = None
    if not a.no_base_eval:
        base_eval = spawn(base, tmp, "base_eval", mode="--_base_eval")
    startup = None
    if not a.no_startup and not a.levers:
        startup = startup_latency(model, str(train_file), tmp)

    summaries = {lab: [summarize(x, peak["best_gflops"], nominal) for x in runs if x["label"] == lab] for lab in labels}
    agg = {
        lab: {m: _agg([s[m] for s in ss]) for m, _, _ in METRICS + [("load_s", "", ""), ("total_text_tokens", "", "")]}
        for lab, ss in summaries.items()
    }
    headers = ["metric"] + labels
    rows = [
        [title] + [cell(agg[lab][m], fmt) for lab in labels]
        for m, title, fmt in METRICS
        if any(agg[lab][m]["median"] is not None for lab in labels)
    ]
    ref_lab = "reference" if "reference" in labels else labels[0]
    ratio_rows = []
    for lab in labels:
        if lab == ref_lab:
            continue
        r = agg[lab]["tokens_per_s"]["median"] / agg[ref_lab]["tokens_per_s"]["median"]
        w = agg[ref_lab]["train_loop_s"]["median"] / agg[lab]["train_loop_s"]["median"]
        ratio_rows.append(
            [
                lab,
                f"{r:.2f}x",
                f"{w:.2f}x",
                f"{agg[lab]['heldout_loss']['median'] - agg[ref_lab]['heldout_loss']['median']:+.4f}",
                f"{agg[lab]['peak_rss_mib']['median'] - agg[ref_lab]['peak_rss_mib']['median']:+.0f}",
            ]
        )
    print()
    print(
        "median over repeats (min-max); per-step values are medians over steps after the first "
        f"{WARMUP_SKIP}; {a.repeats} repeat(s)"
    )
    print(common.fmt_table(headers, rows))
    print()
    print(
        common.fmt_table(
            [f"vs {ref_lab}", "tok/s ratio", "wall-time speedup", "held-out loss diff", "peak RSS diff MiB"], ratio_rows
        )
    )
    if base_eval:
        print(
            f"\nbase model (no adapter) held-out loss {base_eval['loss']:.4f} (no EOS {base_eval['loss_text_only']:.4f})"
        )
    if startup:
        print(
            "submit -> first events (s): "
            + "; ".join(
                ", ".join(f"{k[10:-2]} {v}" for k, v in s.items() if k.startswith("submit_to_")) for s in startup
            )
        )
    out = {
        "kind": "levers" if a.levers else "train",
        "args": vars(a),
        "model": model,
        "steps": steps,
        "examples": steps * rows_per_step,
        "warmup": warmup,
        "machine": info,
        "matmul_peak": peak,
        "flops_counting": common.train_flops.__doc__,
        "aggregate": agg,
        "summaries": summaries,
        "base_model_heldout": base_eval,
        "startup": startup,
        "runs": [{k: v for k, v in x.items() if k != "heldout_texts"} for x in runs],
    }
    path = common.write_json(out, stem)
    print(f"\nwrote {path}")
    if not a.keep_tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_worker":
        sys.exit(worker(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "--_base_eval":
        sys.exit(worker_base_eval(sys.argv[2]))
    sys.exit(main())

"""Helpers shared by the benchmarks: machine peak, memory, FLOP counting, held-out loss, data.

Imported by bench_train.py and bench_generate.py (both put this folder on sys.path).
Nothing here is used by the app itself.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# BENCH_RESULTS: where JSON results go (bench/run_gpu.sh points it at the folder that comes back).
RESULTS = Path(os.environ.get("BENCH_RESULTS") or REPO / "bench" / "results")
# The example quotes shipped with the repo (1,000 rows): a fresh clone, or the GPU machine, has
# nothing beside the repo. LORA_APP_BENCH_DATA names another .jsonl (CPU results in RESULTS.md
# before 2026-12-01 used a 2,508-row copy).
DATA = Path(os.environ.get("LORA_APP_BENCH_DATA") or REPO / "examples" / "quotes.jsonl")
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# -- machine -------------------------------------------------------------------------------
def matmul_gflops(device: str = "cpu", n: int = 2048, reps: int = 8, dtype: str = "float32") -> dict:
    """torch.matmul n x n rate in GFLOP/s: best and median of ``reps`` timed calls after warm-up.

    Best-of is the attainable peak (contention from other processes only ever slows a call);
    the median says how busy the machine was at that moment.
    """
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t)
    flop = 2 * n**3
    return {
        "n": n,
        "dtype": dtype,
        "device": device,
        "best_gflops": round(flop / min(times) / 1e9, 1),
        "median_gflops": round(flop / statistics.median(times) / 1e9, 1),
        "reps": reps,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def machine_info(device: str) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "loadavg_1m": loadavg(),
    }
    for pkg in ("transformers", "peft", "accelerate", "huggingface_hub", "bitsandbytes"):  # not imported: ~3 s saved
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:  # bitsandbytes missing: the 8-bit and 4-bit runs fail, and say why
            info[pkg] = None
    try:
        flags = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "")
        info["cpu"] = model
        info["cpu_flags"] = sorted(
            {f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f" {f}" in flags}
        )
    except OSError:
        pass
    # The kernel level torch really uses: the flags above can be capped (ATEN_CPU_CAPABILITY=avx2,
    # ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2 make an AVX-512 CPU compute as an AVX2 one).
    info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    caps = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
    info["cpu_caps"] = {k: os.environ[k] for k in caps if k in os.environ}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


# -- data ----------------------------------------------------------------------------------
def split_quotes(path: Path = DATA, holdout: int = 200) -> tuple[list[str], list[str]]:
    """The app's reading of the file (lora_app.data.load_text: text column detected = 'quote'),
    split into (train, held-out last ``holdout`` rows)."""
    from lora_app.config import DataConfig
    from lora_app.data import load_text

    texts = load_text(DataConfig(path=str(path))).texts
    return texts[:-holdout], texts[-holdout:]


# -- FLOPs -----------------------------------------------------------------------------------
def flop_model(model) -> dict:
    """Parameter counts that set the training FLOPs of a LoRA model, read off the modules.

    - ``linear``: weights of the frozen Linear layers inside the decoder (q,k,v,o,gate,up,down),
      i.e. the non-embedding parameters that do matmuls;
    - ``head``: the LM head (vocab x hidden), counted even when tied to the embedding;
    - ``lora``: the trainable adapter parameters;
    - ``attn_width``: heads x head_dim, ``layers``: decoder layers (for the QK^T and AV terms).
    """
    import torch

    head = model.get_output_embeddings()
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    linear = 0
    for name, mod in model.named_modules():
        if mod is head or "lora_" in name:
            continue
        w = getattr(mod, "weight", None)
        if isinstance(mod, torch.nn.Linear) or type(mod).__name__ in ("Linear8bitLt", "Linear4bit"):
            linear += int(getattr(w, "numel", lambda: 0)()) * (2 if type(mod).__name__ == "Linear4bit" else 1)
    cfg = model.config
    layers = cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {
        "linear": linear,
        "head": cfg.vocab_size * cfg.hidden_size,
        "lora": lora,
        "attn_width": heads * head_dim,
        "layers": layers,
    }


def train_flops(fm: dict, tokens: int, targets: int, attn_pairs: int) -> float:
    """Useful training FLOPs for LoRA on a frozen base.

    Per token: forward 2 x (frozen linear weights), backward 2 x (gradients w.r.t. activations only:
    frozen weights need no weight gradient) -> 4 x linear; the LM head the same 4 x head, but only at
    positions that have a target; LoRA weights 6 x (forward, input grad, weight grad). Attention:
    QK^T and AV cost 4 x attn_width per (query, key) pair per layer forward, x3 with backward.
    """
    return (
        4 * fm["linear"] * tokens
        + 4 * fm["head"] * targets
        + 6 * fm["lora"] * tokens
        + 3 * 4 * fm["attn_width"] * fm["layers"] * attn_pairs
    )


# -- held-out loss ----------------------------------------------------------------------------
def heldout_loss(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 16) -> dict:
    """Mean token NLL on ``texts`` tokenized as the app does (EOS appended and kept as a target,
    padding never counted), in eval mode without gradients. Also the same mean without the EOS
    targets ("text only"), since the reference recipe never trains on EOS."""
    import torch

    from lora_app.text import PaddingCollator, pad_id_of, tokenize_rows

    rows = sorted(tokenize_rows(texts, tokenizer, max_length), key=len)
    collate = PaddingCollator(pad_id_of(tokenizer))
    eos = tokenizer.eos_token_id
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    tot, n, tot_text, n_text = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            b = collate([{"input_ids": r} for r in chunk])
            logits = model(input_ids=b["input_ids"].to(dev), attention_mask=b["attention_mask"].to(dev)).logits
            logits = logits[:, :-1].float()
            labels = b["labels"][:, 1:].to(dev)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
            ).view(labels.shape)
            valid = labels != -100
            is_eos = torch.zeros_like(valid)
            for j, r in enumerate(chunk):  # the EOS target is the last real position of each row
                if len(r) >= 2:
                    is_eos[j, len(r) - 2] = r[-1] == eos
            tot += float(nll[valid].sum())
            n += int(valid.sum())
            text = valid & ~is_eos
            tot_text += float(nll[text].sum())
            n_text += int(text.sum())
    model.train(was)
    return {"loss": tot / n, "loss_text_only": tot_text / n_text, "targets": n, "rows": len(rows)}


def labels_only_head(collator):
    """Collator wrapper: compute the LM head only where a loss target exists.

    Adds ``logits_to_keep`` (bool, batch x seq: position p is kept when labels[p+1] != -100) and
    ``shift_labels`` (the targets of the kept positions, flattened), which transformers 5.x passes
    to ``slice_logits_to_keep`` and ``ForCausalLMLoss``. The Trainer counts ``shift_labels`` for
    ``num_items_in_batch``, so the loss value is unchanged.
    """
    import torch

    def wrapped(features):
        b = collator(features)
        labels = b["labels"]
        nxt = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
        keep = nxt != -100
        b["logits_to_keep"] = keep
        b["shift_labels"] = nxt[keep]
        return b

    return wrapped


def write_json(obj: dict, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    return path


def fmt_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = [
        "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells[0])) + " |",
        "|" + "|".join("-" * (x + 2) for x in w) + "|",
    ]
    out += ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in cells[1:]]
    return "\n".join(out)

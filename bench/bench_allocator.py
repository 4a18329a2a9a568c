"""Peak RSS and seconds per step of one LoRA training step under each memory allocator.

The same step (the bundled SmolLM2-135M, LoRA r 16 on every linear layer, rsLoRA, no dropout,
AdamW; ROWS x TOKENS random tokens; the loss is the mean square of the last hidden state, so the
LM head's logits do not swamp what the decoder keeps) runs in a fresh process per allocator, the
allocators interleaved over ``--rounds``: glibc's malloc, glibc with a fixed mmap threshold
(``MALLOC_MMAP_THRESHOLD_``), tcmalloc and jemalloc, where installed (lora_app/allocator.py).

    .venv/bin/python bench/bench_allocator.py --rounds 2 [--rows 16 --tokens 128] [--bf16]

Prints one line per run and the medians; peak RSS is the process's ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def step_worker(rows: int, tokens: int, steps: int, bf16: bool) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lora_app import allocator
    from lora_app.bundled import bundled_model_dir

    torch.manual_seed(0)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(bundled_model_dir(), dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, use_rslora=True, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.data = p.data.float()
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (rows, tokens))
    decoder = model.base_model.model.model
    model.train()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = decoder(input_ids=ids).last_hidden_state
        loss = (hidden.float() ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        return loss.item()

    step()  # the first step's extra costs (kernel choice, lazy inits) are left out of the times
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        last = step()
        times.append(time.perf_counter() - t0)
    return {
        "allocator": allocator.in_use(),
        "s_per_step": statistics.median(times),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "last_loss": last,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per run, after one untimed")
    ap.add_argument("--bf16", action="store_true", help="bf16 base weights and autocast (else float32)")
    ap.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._worker:
        print(json.dumps(step_worker(a.rows, a.tokens, a.steps, a.bf16)))
        return 0

    sys.path.insert(0, str(REPO))
    from lora_app import allocator

    sys.path.insert(0, str(REPO / "bench"))
    import common

    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    setups = {"glibc": base, "glibc, MALLOC_MMAP_THRESHOLD_=4 MiB": {**base, "MALLOC_MMAP_THRESHOLD_": str(4 << 20)}}
    for name in ("tcmalloc", "jemalloc"):
        if allocator.find(name):
            setups[name] = allocator.child_env(base, name)[0]
    info = common.machine_info("cpu")
    print(f"# {info.get('cpu', '')} | flags {info.get('cpu_flags', '')} | torch {info['torch']}")
    print(f"# {a.rows} x {a.tokens} tokens, {'bf16' if a.bf16 else 'float32'}, {a.steps} timed steps a run")
    results: dict[str, list[dict]] = {k: [] for k in setups}
    names = list(setups)
    for r in range(a.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            cmd = [sys.executable, __file__, "--_worker", "--rows", str(a.rows), "--tokens", str(a.tokens)]
            cmd += ["--steps", str(a.steps)] + (["--bf16"] if a.bf16 else [])
            out = subprocess.run(cmd, env=setups[name], capture_output=True, text=True, timeout=1800)
            if out.returncode:
                sys.stderr.write(out.stderr[-3000:])
                return 1
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["loadavg"] = common.loadavg()
            results[name].append(res)
            print(
                f"  [{r}] {name}: {res['s_per_step']:.2f} s/step, peak RSS {res['peak_rss_mib']:.0f} MiB "
                f"(in use: {res['allocator']}), loss {res['last_loss']:.5f}, load {res['loadavg']}",
                flush=True,
            )
    print("| allocator | s/step (median) | peak RSS MiB (median) |\n|---|---:|---:|")
    for name, runs in results.items():
        s = statistics.median(x["s_per_step"] for x in runs)
        m = statistics.median(x["peak_rss_mib"] for x in runs)
        print(f"| {name} | {s:.2f} | {m:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

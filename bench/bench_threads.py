"""Torch threads under a container's CPU quota: a LoRA training step at each thread count, side by side.

    sudo .venv/bin/python bench/bench_threads.py [--quotas 1.0,1.5] [--steps 3] [--rounds 2]

Why: a CPU quota (``docker run --cpus``, a pod's limit) leaves the host's cores visible, and torch
starts one thread per core; lora_app.container gives a run the quota rounded (half up) instead. This
measures that choice: for each quota (a cgroup made here, v1 or v2; needs root and a writable
/sys/fs/cgroup) and with no quota, a child process moves itself into the cgroup, sets its thread
count, and runs LoRA steps (a SmolLM2-135M-shaped Llama with random weights, LoRA r16 on every
linear layer, AdamW, float32, 4 rows x 128 tokens): seconds per step over ``--steps`` steps after
one warm-up step, per (quota, threads), the rounds interleaved so machine noise hits every cell alike. The CPU model and
its flags are printed with the results (results from different machines are never compared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common

CHILD = r"""
import json, os, sys, time
for p in sys.argv[3:]:
    open(p, "w").write(str(os.getpid()))
import torch
torch.set_num_threads(int(sys.argv[1]))
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
cfg = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)
model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
x = torch.randint(0, 49152, (4, 128))
def step():
    model(input_ids=x, labels=x).loss.backward(); opt.step(); opt.zero_grad()
step()
n = int(sys.argv[2])
t = time.perf_counter()
for _ in range(n):
    step()
print(json.dumps({"s_per_step": (time.perf_counter() - t) / n, "threads": torch.get_num_threads()}))
"""


def make_cgroup(quota: float) -> tuple[list[Path], list[str]]:
    """A cgroup with a CFS quota of ``quota`` CPUs: (its directories, the procs files to join)."""
    name = f"lora_app_bench_{uuid.uuid4().hex[:8]}"
    base = Path("/sys/fs/cgroup")
    period = 100_000
    if (base / "cgroup.controllers").is_file():
        d = base / name
        d.mkdir()
        (d / "cpu.max").write_text(f"{int(quota * period)} {period}")
        return [d], [str(d / "cgroup.procs")]
    d = base / "cpu" / name
    d.mkdir()
    (d / "cpu.cfs_period_us").write_text(str(period))
    (d / "cpu.cfs_quota_us").write_text(str(int(quota * period)))
    return [d], [str(d / "cgroup.procs")]


def run(threads: int, steps: int, procs: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(steps), *procs],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quotas", default="1.0,1.5", help="CPU quotas to make, comma-separated")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    info = common.machine_info("cpu")
    print(json.dumps({k: info.get(k) for k in ("cpu", "cpu_flags", "cpu_count", "torch", "loadavg_1m")}))
    quotas = [float(q) for q in a.quotas.split(",") if q]
    cells = [(None, t) for t in sorted({1, cores})]
    cells += [(q, t) for q in quotas for t in sorted({1, max(1, int(q + 0.5)), cores})]
    made = {q: make_cgroup(q) for q in quotas}
    res: dict[tuple, list[float]] = {c: [] for c in cells}
    try:
        for r in range(a.rounds):
            for q, t in cells:
                procs = made[q][1] if q is not None else []
                res[(q, t)].append(run(t, a.steps, procs)["s_per_step"])
                print(f"round {r + 1}: quota {q or 'none'}, {t} threads: {res[(q, t)][-1]:.2f} s/step", flush=True)
    finally:
        for dirs, _ in made.values():
            for d in dirs:
                d.rmdir()
    rows = []
    for q, t in cells:
        chosen = "<- lora_app" if (q is not None and t == max(1, int(q + 0.5))) or (q is None and t == cores) else ""
        v = res[(q, t)]
        rows.append([q or "none", t, ", ".join(f"{x:.2f}" for x in v), f"{statistics.median(v):.2f}", chosen])
    print(common.fmt_table(["CPU quota", "threads", "s/step (rounds)", "median", ""], rows))


if __name__ == "__main__":
    main()

"""The LoRA tab's CPU time estimate against a real run of the same settings on this machine.

    PYTHONPATH=. .venv/bin/python bench/bench_estimate.py [--preset "fast default"] [--set training.packing=false]

Prints the estimate's CPU row (time, rows per forward) and the run's measured phases from its event log:
loading, the base model's held-out evaluation, the training steps (the estimate's "time" counts these
only), the final evaluation, and the whole run. Run it on an idle machine: a busy CPU makes the run
slower, not the estimate (it measures the CPU's matmul speed once, at the first Check).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="fast default")
    ap.add_argument("--data", default="examples/quotes.jsonl")
    ap.add_argument("--set", nargs="*", default=[], help="SECTION.FIELD=VALUE, as the CLI's --set")
    a = ap.parse_args()

    from lora_app import estimate, precision
    from lora_app.config import RunConfig
    from lora_app.validate import preflight

    raw = RunConfig.build({"preset": a.preset, "data": {"path": a.data}}).model_dump()
    for kv in a.set:
        key, value = kv.split("=", 1)
        sec, name = key.split(".", 1)
        raw[sec][name] = value
    cfg, pre = preflight(raw)
    est = estimate.for_preflight(cfg, pre)
    cpu = est.rows[0]
    model, flags = precision.cpu_info()
    shown = sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})
    print(f"CPU: {model}; flags: {', '.join(shown) or 'none of avx2/avx512/amx'}")
    print(f"estimate: {cpu['time']} of training, {cpu['rows per forward']} rows per forward ({cpu['hardware']})")

    runs = Path(tempfile.mkdtemp(prefix="bench_estimate_"))
    t0 = time.time()
    sets = [f"data.path={a.data}", *a.set]
    subprocess.run(
        [sys.executable, "-m", "lora_app", "train", "--preset", a.preset, "--runs", str(runs), "--set", *sets],
        check=True,
        capture_output=True,
    )
    wall = time.time() - t0
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    ev = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    start = ev[0]["time"]

    def at(pred) -> float | None:
        return next((e["time"] - start for e in ev if pred(e)), None)

    training = at(lambda e: e.get("status") == "training")
    last_log = max((e["time"] - start for e in ev if e["type"] == "log"), default=None)
    evaluating = at(lambda e: e.get("status") == "evaluating")
    finished = at(lambda e: e.get("status") in ("finished", "failed"))
    print(f"measured: loading {evaluating or training:.1f} s", end="")
    if evaluating is not None and training is not None:
        print(f", base evaluation {training - evaluating:.1f} s", end="")
    if training is not None and last_log is not None:
        print(f", training steps {last_log - training:.1f} s", end="")
    if last_log is not None and finished is not None:
        print(f", final evaluation and save {finished - last_log:.1f} s", end="")
    print(f"; whole run {finished:.1f} s (process wall {wall:.1f} s)")


if __name__ == "__main__":
    main()

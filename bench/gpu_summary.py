"""One table of a bench/run_gpu.sh run: every train-*.json and generate-*.json written since it began.

    python bench/gpu_summary.py RESULTS_DIR [--since UNIX_TIME]

Per training variant: non-padding tokens/s, s per optimizer step, MFU (useful FLOPs against the
matmul peak measured in the run, and against the nominal peak when the JSON has it), peak GPU memory
(``torch.cuda.max_memory_allocated``), held-out loss; then lora_app / reference and the issue's GPU
targets (>= 2x the reference's tokens/s; >= 35% MFU on the 1B+ model). Generation: tokens/s per variant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

METRICS = [("tokens_per_s", "tok/s", "{:.0f}"), ("s_per_step", "s/step", "{:.3f}"),
           ("mfu_useful", "MFU (measured peak)", "{:.1%}"), ("mfu_useful_nominal", "MFU (nominal)", "{:.1%}"),
           ("useful_tflops", "TFLOP/s", "{:.1f}"), ("gpu_peak_mib", "GPU peak MiB", "{:.0f}"),
           ("peak_rss_mib", "RSS MiB", "{:.0f}"), ("heldout_loss", "held-out loss", "{:.3f}"),
           ("padding_share", "padding", "{:.1%}")]


def _fmt(v, f):
    return "-" if v is None else f.format(v)


def summarize(folder: Path, since: float = 0.0) -> str:
    """The summary text; raises nothing for a missing or partial JSON (it is listed as such)."""
    lines: list[str] = []
    for p in sorted(folder.glob("*.json"), key=lambda q: q.stat().st_mtime):
        if p.stat().st_mtime < since:
            continue
        try:
            d = json.loads(p.read_text())
        except ValueError as err:
            lines.append(f"{p.name}: unreadable ({err})")
            continue
        if d.get("kind") == "partial":
            lines.append(f"{p.name}: PARTIAL (the step stopped early): " + "; ".join(
                f"{k} {_fmt(v.get('tokens_per_s'), '{:.0f}')} tok/s" for k, v in d.get("summaries", {}).items()))
            continue
        if d.get("kind") == "train":
            a = d["args"]
            pk = d["matmul_peak"]
            lines.append(f"\n{p.name}: quant {a['quant']}, {d['steps']} steps x {a['batch']} x {a['accum']} rows, "
                         f"matmul peak {pk['best_gflops'] / 1e3:.0f} TFLOP/s ({pk['dtype']} {pk['n']}^2)")
            agg = d["aggregate"]
            labs = list(agg)
            rows = [[t] + [_fmt(agg[lab].get(m, {}).get("median"), f) for lab in labs] for m, t, f in METRICS]
            lines.append(common.fmt_table(["metric"] + labs, rows))
            if "reference" in agg and "app" in agg:
                r = agg["app"]["tokens_per_s"]["median"] / agg["reference"]["tokens_per_s"]["median"]
                lines.append(f"app / reference tokens/s: {r:.2f}x (target >= 2x: {'met' if r >= 2 else 'NOT met'})")
            for lab in labs:
                m = agg[lab].get("mfu_useful_nominal", {}).get("median")
                if m is not None and a["quant"] == "none":
                    lines.append(f"{lab} MFU vs nominal {m:.1%} (target >= 35%: {'met' if m >= 0.35 else 'NOT met'})")
        elif d.get("kind") == "generate":
            lines.append(f"\n{p.name}: {d['args']['new_tokens']} new tokens, greedy")
            lines.append(common.fmt_table(["variant", "tok/s", "vs base", "TTFT ms"], [
                [n, f"{v['tok_per_s']['median']:.1f}", f"{v['vs_base_tok_per_s']:.2f}x",
                 f"{v['ttft_s']['median'] * 1e3:.0f}"] for n, v in d["aggregate"].items()]))
    return "\n".join(lines) if lines else f"no results in {folder}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--since", type=float, default=0.0)
    a = ap.parse_args(argv)
    print(summarize(a.folder, a.since))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One table of a bench/run_gpu.sh run: every train-*.json and generate-*.json written since it began.

    python bench/gpu_summary.py RESULTS_DIR [--since UNIX_TIME] [--mfu]

--mfu (bench/run_gpu.sh --mfu): one table with the lora_app variants side by side (files tagged mfu-*):
tokens/s, s per step, MFU against the measured and the nominal peak, GPU peak, held-out loss, the first
steps' extra seconds (torch.compile, Triton JIT), and what the app's log said about Liger and compile.

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
import common

METRICS = [
    ("tokens_per_s", "tok/s", "{:.0f}"),
    ("s_per_step", "s/step", "{:.3f}"),
    ("mfu_useful", "MFU (measured peak)", "{:.1%}"),
    ("mfu_useful_nominal", "MFU (nominal)", "{:.1%}"),
    ("useful_tflops", "TFLOP/s", "{:.1f}"),
    ("gpu_peak_mib", "GPU peak MiB", "{:.0f}"),
    ("peak_rss_mib", "RSS MiB", "{:.0f}"),
    ("heldout_loss", "held-out loss", "{:.3f}"),
    ("padding_share", "padding", "{:.1%}"),
]


def _fmt(v, f):
    return "-" if v is None else f.format(v)


def _profile_lines(label: str, pr: dict) -> str:
    if "error" in pr:
        return f"profile {label}: failed ({pr['error']})"
    busy = pr.get("device_busy")
    out = [
        f"profile {label} ({pr['steps']} steps): wall {pr['wall_s_per_step']:.3f} s/step, GPU kernels "
        f"{pr['device_s_per_step']:.3f} s/step (busy {'-' if busy is None else f'{busy:.0%}'}), "
        f"self CPU {pr['self_cpu_s_per_step']:.3f} s/step"
    ]
    if pr.get("syncs"):
        out.append(
            "  waits/allocs: "
            + ", ".join(f"{r['op']} x{r['count']} {r['self_cpu_us'] / 1e3:.0f} ms" for r in pr["syncs"])
        )
    out.append(
        "  top GPU: "
        + "; ".join(
            f"{r['op'][:60]} {r['self_device_us'] / 1e3:.1f} ms" for r in pr["top_device"][:6] if r["self_device_us"]
        )
    )
    out.append("  top CPU: " + "; ".join(f"{r['op'][:40]} {r['self_cpu_us'] / 1e3:.1f} ms" for r in pr["top_cpu"][:6]))
    return "\n".join(out)


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
            lines.append(
                f"{p.name}: PARTIAL (the step stopped early): "
                + "; ".join(
                    f"{k} {_fmt(v.get('tokens_per_s'), '{:.0f}')} tok/s" for k, v in d.get("summaries", {}).items()
                )
            )
            continue
        if d.get("kind") == "train":
            a = d["args"]
            pk = d["matmul_peak"]
            lines.append(
                f"\n{p.name}: quant {a['quant']}, {d['steps']} steps x {a['batch']} x {a['accum']} rows, "
                f"matmul peak {pk['best_gflops'] / 1e3:.0f} TFLOP/s ({pk['dtype']} {pk['n']}^2)"
            )
            agg = d["aggregate"]
            labs = list(agg)
            rows = [[t] + [_fmt(agg[lab].get(m, {}).get("median"), f) for lab in labs] for m, t, f in METRICS]
            lines.append(common.fmt_table(["metric"] + labs, rows))
            if "reference" in agg and "app" in agg:
                r = agg["app"]["tokens_per_s"]["median"] / agg["reference"]["tokens_per_s"]["median"]
                lines.append(f"app / reference tokens/s: {r:.2f}x (target >= 2x: {'met' if r >= 2 else 'NOT met'})")
            for run in d.get("runs", []):
                pr = run.get("profile")
                if pr:
                    lines.append(_profile_lines(run["label"], pr))
            for lab in labs:
                m = agg[lab].get("mfu_useful_nominal", {}).get("median")
                if m is not None and a["quant"] == "none":
                    lines.append(f"{lab} MFU vs nominal {m:.1%} (target >= 35%: {'met' if m >= 0.35 else 'NOT met'})")
        elif d.get("kind") == "generate":
            lines.append(f"\n{p.name}: {d['args']['new_tokens']} new tokens, greedy")
            lines.append(
                common.fmt_table(
                    ["variant", "tok/s", "vs base", "TTFT ms"],
                    [
                        [
                            n,
                            f"{v['tok_per_s']['median']:.1f}",
                            f"{v['vs_base_tok_per_s']:.2f}x",
                            f"{v['ttft_s']['median'] * 1e3:.0f}",
                        ]
                        for n, v in d["aggregate"].items()
                    ],
                )
            )
    return "\n".join(lines) if lines else f"no results in {folder}"


MFU_ROWS = [
    ("tokens_per_s", "tok/s", "{:.0f}"),
    ("s_per_step", "s/step", "{:.3f}"),
    ("mfu_useful", "MFU (measured peak)", "{:.1%}"),
    ("mfu_useful_nominal", "MFU (nominal 989)", "{:.1%}"),
    ("useful_tflops", "useful TFLOP/s", "{:.1f}"),
    ("gpu_peak_mib", "GPU peak MiB", "{:.0f}"),
    ("heldout_loss", "held-out loss", "{:.4f}"),
    ("warmup_extra_s", "compile/warm-up s", "{:.1f}"),
    ("padding_share", "padding", "{:.1%}"),
]


def summarize_mfu(folder: Path, since: float = 0.0) -> str:
    """The MFU variants of one run side by side, in the order they ran; a variant that left only a
    partial JSON or none is named as such. Raises nothing for a missing or unreadable file."""
    cols: list[tuple[str, dict | None, str]] = []  # (variant, summary, note)
    notes: list[str] = []
    for p in sorted(folder.glob("train-*-mfu-*.json"), key=lambda q: q.stat().st_mtime):
        if p.stat().st_mtime < since:
            continue
        name = p.stem.split("-mfu-", 1)[1]
        try:
            d = json.loads(p.read_text())
        except ValueError as err:
            cols.append((name, None, f"unreadable ({err})"))
            continue
        if d.get("kind") != "train":
            cols.append((name, None, "PARTIAL (stopped before the end)"))
            continue
        s = d["summaries"]["app"][0]
        run = d["runs"][0]
        a = d["args"]
        rows_step = a["batch"] * a["accum"]
        s = {
            **s,
            "shape": f"{a['batch']}x{a['accum']} rows @{a['max_length']}",
            "tokens_step": s["total_tokens"] / max(1, len(run["steps"])),
            "forwards": run["steps"][-1]["micro_batches"] if run["steps"] else None,
        }
        cols.append((name, s, ""))
        said = [m for m in run.get("app_info", []) if m.startswith(("Liger", "torch.compile", "batching"))]
        notes.append(f"{name}: {rows_step} rows/step; " + " | ".join(said))
        if run.get("dynamo"):
            notes.append(f"{name}: dynamo {json.dumps(run['dynamo'])[:400]}")
    if not cols:
        return f"no mfu-* results in {folder}"
    ok = [(n, s) for n, s, _ in cols if s]
    rows = [
        ["rows per step", *[s["shape"] if s else "-" for _, s, _ in cols]],
        ["tokens/step", *[f"{s['tokens_step']:.0f}" if s else "-" for _, s, _ in cols]],
        ["forwards/step", *[str(s["forwards"]) if s else "-" for _, s, _ in cols]],
    ]
    rows += [[t, *[_fmt(s.get(m), f) if s else "-" for _, s, _ in cols]] for m, t, f in MFU_ROWS]
    base = dict(ok).get("base")
    if base:
        rows.append(
            ["tok/s vs base", *[f"{s['tokens_per_s'] / base['tokens_per_s']:.2f}x" if s else "-" for _, s, _ in cols]]
        )
    lines = [
        "lora_app MFU variants (bf16, one process each; medians over steps after the first 2)",
        common.fmt_table(["metric"] + [n for n, _, _ in cols], rows),
    ]
    lines += [f"{n}: {note}" for n, s, note in cols if note]
    lines += notes
    if ok:
        best = max(ok, key=lambda x: x[1].get("mfu_useful_nominal") or x[1]["mfu_useful"])
        m = best[1].get("mfu_useful_nominal")
        if m is not None:
            lines.append(
                f"best: {best[0]} at {m:.1%} of the nominal peak (target >= 35%: {'met' if m >= 0.35 else 'NOT met'})"
            )
        else:
            lines.append(f"best: {best[0]} at {best[1]['mfu_useful']:.1%} of the measured peak (CPU: no nominal peak)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--since", type=float, default=0.0)
    ap.add_argument("--mfu", action="store_true", help="the MFU variants' table (bench/run_gpu.sh --mfu)")
    a = ap.parse_args(argv)
    print(summarize_mfu(a.folder, a.since) if a.mfu else summarize(a.folder, a.since))
    return 0


if __name__ == "__main__":
    sys.exit(main())

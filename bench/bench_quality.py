"""Quality per minute: held-out perplexity against training time, reference recipe vs faster recipes.

    python bench/bench_quality.py [--budget-s 240] [--recipes "reference recipe,fast default"]
                                  [--variants no-rslora,dora] [--candidates training.learning_rate=2e-3,...]
                                  [--eval-every 10] [--holdout 200]
                                  [--model PATH_OR_ID] [--tag NAME] [--dry-run]

Each recipe is a preset of lora_app/presets.py run by the app itself (``python -m lora_app train
RUN_DIR``, its own process, so one recipe's memory and threads never touch the next), on the bundled
model and the repo's example quotes (``examples/quotes.jsonl``; ``LORA_APP_BENCH_DATA`` names another
file), the last ``--holdout`` quotes held out for all recipes alike (``data.eval_path``). The app
evaluates every ``--eval-every`` optimizer steps; the training time of an evaluation at step s is the
run's elapsed time at the end of step s minus the time spent in earlier evaluations (evaluation is
not training time). A recipe stops at its max_steps or when its training time passes ``--budget-s``
(SIGTERM: the app's Stop, the step in progress finishes).

``--variants no-rslora,dora`` also runs the fast default with ``use_rslora`` off (plain LoRA scaling) /
``use_dora`` on, side by side (``rslora``, kept for the runs recorded with it, is the fast default
itself since rsLoRA became part of it). The summary says, for each recipe, when it first reached the
reference's last held-out perplexity and what fraction of the reference's training time that is
(issue 14, section 3: at most a quarter). The CPU model and flags and the load average (at the start and end of every recipe) are
recorded with the results: bench/results/quality-*.json.

``--dry-run``: 4 steps per recipe, 32 training rows, 16 held out, on ``--model`` (a tiny model in the
tests: tests/test_bench_quality.py): the same code path in seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import yaml

from lora_app.presets import FAST, PRESETS, REFERENCE

VARIANTS = {
    "no-rslora": {"lora": {"use_rslora": False}},
    "rslora": {"lora": {"use_rslora": True}},
    "dora": {"lora": {"use_dora": True}},
}


def parse_pairs(pairs: list[str]) -> dict[str, dict]:
    """``["training.learning_rate=2e-3", ...]`` -> ``{"training": {"learning_rate": 0.002}}`` (YAML values).
    Raises ValueError for a pair that is not SECTION.FIELD=VALUE."""
    out: dict[str, dict] = {}
    for pair in pairs:
        key, eq, val = pair.partition("=")
        section, dot, field = key.strip().partition(".")
        if not (eq and dot and section and field):
            raise ValueError(f"{pair!r}: expected SECTION.FIELD=VALUE, e.g. training.learning_rate=2e-3")
        v = yaml.safe_load(val)
        if isinstance(v, str):  # YAML 1.1 reads 2e-3 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        out.setdefault(section, {})[field] = v
    return out


def curve(events: list[dict]) -> list[dict]:
    """(step, train_s, perplexity, eval_loss) of every evaluation after step 0, from a run's events.
    ``train_s``: elapsed time at the end of that step (the ``progress`` event) minus the runtime of the
    evaluations before it."""
    elapsed = {e["step"]: e["elapsed_s"] for e in events if e["type"] == "progress"}
    out, spent = [], 0.0
    for e in (e for e in events if e["type"] == "eval"):
        if e.get("base"):
            continue
        if e["step"] in elapsed:
            out.append(
                {
                    "step": e["step"],
                    "train_s": round(elapsed[e["step"]] - spent, 2),
                    "perplexity": round(e["perplexity"], 3),
                    "eval_loss": round(e["eval_loss"], 5),
                }
            )
        spent += e.get("runtime_s") or 0.0
    return out


def first_reaching(points: list[dict], target: float) -> dict | None:
    return next((p for p in points if p["perplexity"] <= target), None)


def run_recipe(name: str, raw: dict, root: Path, budget_s: float) -> dict:
    """Train one recipe in its own process until it finishes or its training time passes budget_s."""
    from lora_app.config import RunConfig
    from lora_app.events import read_events

    cfg = RunConfig.build(raw)
    rd = root / name.replace(" ", "-").replace("+", "")
    rd.mkdir(parents=True)
    cfg.save(rd / "config.yaml")
    load0 = common.loadavg()
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lora_app", "train", str(rd)],
        cwd=common.REPO,
        stdout=subprocess.DEVNULL,
        stderr=open(rd / "stderr.log", "w"),
    )
    stopped = False
    try:
        while proc.poll() is None:
            time.sleep(0.5)
            events = read_events(rd)[0] if (rd / "events.jsonl").exists() else []
            prog = [e for e in events if e["type"] == "progress"]
            spent = sum(e.get("runtime_s") or 0 for e in events if e["type"] == "eval" and not e.get("base"))
            if not stopped and prog and prog[-1]["elapsed_s"] - spent > budget_s:
                proc.send_signal(signal.SIGTERM)  # the app's Stop: ends after the current step
                stopped = True
    except BaseException:  # Ctrl-C / kill of the bench: its training process goes too
        proc.kill()
        raise
    events = read_events(rd)[0]
    last = [e for e in events if e["type"] == "status"][-1]
    base = next((e["perplexity"] for e in events if e["type"] == "eval" and e.get("base")), None)
    info = " | ".join(e["message"] for e in events if e["type"] == "info" and "precision" in e)
    return {
        "recipe": name,
        "config": {"lora": cfg.lora.model_dump(mode="json"), "training": cfg.training.model_dump(mode="json")},
        "status": last.get("status"),
        "message": last.get("message"),
        "stopped_by_budget": stopped,
        "steps_done": last.get("step"),
        "base_perplexity": base,
        "curve": curve(events),
        "process_wall_s": round(time.time() - t0, 1),
        "precision": info,
        "loadavg_start": load0,
        "loadavg_end": common.loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=240.0, help="training seconds per recipe at most")
    ap.add_argument(
        "--recipes", default=f"{REFERENCE},{FAST}", help="presets, comma-separated; the first is the reference"
    )
    ap.add_argument(
        "--variants", default="", help="comma-separated: no-rslora, rslora, dora (each on the fast default)"
    )
    ap.add_argument("--eval-every", type=int, default=10, help="optimizer steps between evaluations")
    ap.add_argument("--holdout", type=int, default=200, help="last quotes held out")
    ap.add_argument("--model", default=None, help="base model (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE", help="for every recipe")
    ap.add_argument(
        "--candidates",
        nargs="*",
        default=[],
        metavar="PAIRS",
        help="more recipes: the fast default with SECTION.FIELD=VALUE pairs, comma-separated, one argument each "
        "(e.g. training.learning_rate=2e-3,training.max_steps=40)",
    )
    ap.add_argument("--tag", default="")
    ap.add_argument("--dry-run", action="store_true", help="4 steps a recipe on few rows (tests)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (printed) instead of removing them")
    a = ap.parse_args(argv)

    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    for r in recipes:
        if r not in PRESETS:
            ap.error(f"--recipes: {r!r} is not a preset ({', '.join(PRESETS)})")
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
    holdout = 16 if a.dry_run else a.holdout
    train_texts, eval_texts = common.split_quotes(holdout=holdout)
    if a.dry_run:
        train_texts = train_texts[:32]
    root = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    print(f"run folders: {root}")
    for fname, texts in (("train.jsonl", train_texts), ("heldout.jsonl", eval_texts)):
        with open(root / fname, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"quote": t}) + "\n" for t in texts)
    try:
        extra = parse_pairs(a.set)
        cands = [(f"{FAST} + {c}", FAST, parse_pairs(c.split(","))) for c in a.candidates]
    except ValueError as err:
        ap.error(str(err))
    runs: list[tuple[str, str, dict]] = [(r, r, {}) for r in recipes]
    runs += [(f"{FAST} + {v}", FAST, VARIANTS[v]) for v in variants] + cands
    machine = common.machine_info("cpu")
    print(f"CPU: {machine.get('cpu')} flags {','.join(machine.get('cpu_flags', []))}; load {common.loadavg()}")
    results = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a TERM of the bench ends its run too (above)
    for name, preset, over in runs:
        t = {
            "eval_steps": 2 if a.dry_run else a.eval_every,
            "eval_max_rows": holdout,
            "save_steps": 10**6,
            "logging_steps": 1,
            **({"max_steps": 4, "warmup_ratio": 0.25, "max_length": 48} if a.dry_run else {}),
        }
        raw: dict = {
            "preset": preset,
            "data": {"path": str(root / "train.jsonl"), "eval_path": str(root / "heldout.jsonl")},
            "model": {"base_model_name_or_path": a.model or "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "lora": {},
            "training": t,
        }
        for layer in (extra, over):  # --set for all, then the recipe's own changes
            for section, values in layer.items():
                raw.setdefault(section, {}).update(values)
        res = run_recipe(name, raw, root, a.budget_s)
        results.append(res)
        pts = ", ".join(f"{p['step']}:{p['train_s']:.0f}s/{p['perplexity']:.2f}" for p in res["curve"])
        print(f"{name}: {res['status']} at step {res['steps_done']}, load {res['loadavg_start']}->{res['loadavg_end']}")
        print(f"  step:train_s/perplexity  {pts}", flush=True)

    ref = results[0]
    target = ref["curve"][-1] if ref["curve"] else None
    rows = []
    for res in results:
        last = res["curve"][-1] if res["curve"] else None
        hit = first_reaching(res["curve"], target["perplexity"]) if target else None
        rows.append(
            [
                res["recipe"],
                res["steps_done"],
                f"{last['perplexity']:.2f} @ {last['train_s']:.0f} s" if last else "n/a",
                f"step {hit['step']}, {hit['train_s']:.0f} s" if hit else "not reached",
                f"{hit['train_s'] / target['train_s']:.2f}" if hit and target and target["train_s"] > 0 else "n/a",
                f"{res['loadavg_start']}-{res['loadavg_end']}",
            ]
        )
        res["reaches_reference"] = hit
    if target:
        done = "" if not ref["stopped_by_budget"] else " (stopped by the budget before its max_steps)"
        print(f"\nreference: {ref['recipe']}, perplexity {target['perplexity']:.2f} at step {target['step']}{done}")
    print(
        common.fmt_table(
            ["recipe", "steps", "last perplexity", "first at or below the reference", "time / reference's", "load"],
            rows,
        )
    )
    finite = all(math.isfinite(p["perplexity"]) for r in results for p in r["curve"])
    out = {
        "bench": "quality",
        "machine": machine,
        "data": str(common.DATA.relative_to(common.REPO)) if common.DATA.is_relative_to(common.REPO) else "custom",
        "train_rows": len(train_texts),
        "heldout_rows": len(eval_texts),
        "budget_s": a.budget_s,
        "dry_run": a.dry_run,
        "reference_target": target,
        "results": results,
    }
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = common.write_json(out, f"quality-cpu-{stamp}{'-' + a.tag if a.tag else ''}.json")
    print(f"\nJSON: {path}")
    return 0 if finite and all(r["status"] in ("finished", "stopped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""How long a training event takes to reach the browser (issue 5: "within 1 s of being written").

    .venv/bin/python bench/bench_ui_latency.py [--steps 80] [--accum 16] [--repeats 1] [--tag TAG]

Builds a tiny local Llama (tests/tiny.py), launches the full app in this process (as
tests/test_browser.py does: JobManager(poll_s=0.1), demo.queue().launch on a free port) and drives
it in headless /usr/bin/chromium with Playwright the way a person does: Data tab "Use the example
quotes", LoRA tab (base model = the tiny model's folder, max_steps, accumulation), Train tab
"Start training". The trainer subprocess appends to RUN_DIR/events.jsonl, each event stamped with
``time`` (time.time() at emit); the Train tab's generator re-reads that file every POLL_S.

In the page, an init script records (Date.now(), highest "step N/" in the text) every time the
#train-log textarea gets a new value. A MutationObserver cannot see that: Gradio sets the
textarea's ``value`` *property*, which is no DOM mutation, so the script wraps the
HTMLTextAreaElement value setter instead. It also stamps the next animation frame after each
set (about when it is painted). The progress bar (#train-progress, an HTML component whose DOM
is replaced) is watched with a MutationObserver. Browser, app and trainer share one clock.

Per "log" event: latency = first browser observation showing that step - event["time"]; same for
"progress" events vs the progress text. To split a latency, the Train tab's ``follow`` generator
is wrapped (in this process only, lora_app is not changed) to stamp each yield: event -> server
yield (file poll) and server yield -> browser (Gradio queue, SSE, Svelte update).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO / "tests"))  # tiny.py (no conftest: that starts a fake Hub)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
STEP_RE = re.compile(r"step (\d+)/")

# Runs before the app's own scripts: hook the textarea value setter (see the docstring).
INIT_JS = r"""(() => {
  window.__log = []; window.__prog = [];
  const d = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
  Object.defineProperty(HTMLTextAreaElement.prototype, 'value', {
    configurable: true, enumerable: d.enumerable,
    get() { return d.get.call(this); },
    set(v) {
      d.set.call(this, v);
      if (!this.closest || !this.closest('#train-log')) return;
      const steps = [...String(v).matchAll(/step (\d+)\//g)].map(m => +m[1]);
      const o = [Date.now(), steps.length ? Math.max(...steps) : -1, null];
      window.__log.push(o);
      requestAnimationFrame(() => { o[2] = Date.now(); });
    }
  });
})()"""
WATCH_PROGRESS_JS = r"""() => {
  const el = document.querySelector('#train-progress');
  if (!el || el.dataset.watched) return !!el;
  el.dataset.watched = '1';
  new MutationObserver(() => {
    const m = /step (\d+)\//.exec(el.textContent || '');
    window.__prog.push([Date.now(), m ? +m[1] : -1]);
  }).observe(el, {subtree: true, childList: true, characterData: true});
  return true;
}"""


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "median": round(pct(xs, 50), 3),
        "p90": round(pct(xs, 90), 3),
        "max": round(max(xs), 3),
        "min": round(min(xs), 3),
    }


def first_seen(obs: list, step: int) -> float | None:
    """Time (s) of the first observation whose highest step is >= ``step`` (steps only grow)."""
    return next((t / 1000 for t, s, *_ in obs if s >= step), None)


def one_run(page, ctx, args, yields: list) -> dict:
    from lora_app.events import read_events

    page.evaluate("() => { window.__log.length = 0; window.__prog.length = 0; }")
    yields.clear()
    before = {r.id for r in ctx.jobs.list()}
    t0 = time.time()
    page.get_by_role("button", name="Start training", exact=True).click()
    deadline = t0 + 60
    while not (new := [r for r in ctx.jobs.list() if r.id not in before]):
        if time.time() > deadline:
            raise SystemExit(f"no run started; status: {page.locator('#train-status').inner_text()}")
        time.sleep(0.2)
    run_id = new[0].id
    # Poll the job index (not the page: polling the page would add CPU load to what we measure).
    while ctx.jobs.get(run_id).status in ("queued", "running"):
        if time.time() > t0 + args.timeout:
            raise SystemExit(f"run {run_id} did not end in {args.timeout} s")
        time.sleep(1)
    status = ctx.jobs.get(run_id).status
    page.locator("#train-status").get_by_text(re.compile(rf"{status}")).first.wait_for(timeout=30_000)
    page.wait_for_timeout(1000)  # the last update and its animation frame
    log_obs = page.evaluate("() => window.__log")
    prog_obs = page.evaluate("() => window.__prog")
    events, _ = read_events(ctx.jobs.run_dir(run_id))
    logs = [e for e in events if e.get("type") == "log" and "step" in e]
    progs = [e for e in events if e.get("type") == "progress" and "step" in e]
    lat, poll, transport, frame, missed = [], [], [], [], []
    for e in logs:
        seen = first_seen(log_obs, e["step"])
        if seen is None:
            missed.append(e["step"])
            continue
        lat.append(seen - e["time"])
        o = next(o for o in log_obs if o[1] >= e["step"])
        if o[2] is not None:
            frame.append(o[2] / 1000 - seen)
        served = next((t for t, s in yields if s >= e["step"]), None)
        if served is not None:
            poll.append(served - e["time"])
            transport.append(seen - served)
    prog_lat = [s - e["time"] for e in progs if (s := first_seen(prog_obs, e["step"])) is not None]
    steps = [e["time"] for e in logs]
    return {
        "run_id": run_id,
        "status": status,
        "wall_s": round(time.time() - t0, 1),
        "log_events": len(logs),
        "matched": len(lat),
        "missed_steps": missed,
        "s_per_step": round((steps[-1] - steps[0]) / max(1, len(steps) - 1), 3) if steps else None,
        "latency_s": summary(lat),
        "event_to_server_yield_s": summary(poll),
        "server_yield_to_browser_s": summary(transport),
        "set_to_next_frame_s": summary(frame),
        "progress_latency_s": summary(prog_lat),
        "browser_updates": len(log_obs),
        "server_yields": len(yields),
        "loadavg_end": common.loadavg(),
        "per_event": [
            {
                "step": e["step"],
                "time": e["time"],
                "latency_s": None if (s := first_seen(log_obs, e["step"])) is None else round(s - e["time"], 3),
            }
            for e in logs
        ],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=80, help="max_steps of the run")
    ap.add_argument("--accum", type=int, default=16, help="gradient_accumulation_steps (sets seconds per step)")
    ap.add_argument("--repeats", type=int, default=1, help="runs, one after another, in the same page")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per run")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_ui_latency_"))
    # Everything the app or the trainer writes goes to the temp folder; nothing needs the network.
    os.environ.setdefault("LORA_APP_HOME", str(tmp / "home"))
    os.environ.update({"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    from playwright.sync_api import sync_playwright
    from tiny import build_tiny_model

    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import CSS, build_app, train_tab
    from lora_app.ui.common import AppContext

    # hidden 128 x 4 layers: a step costs tens of ms per micro-batch, --accum scales it.
    model = build_tiny_model(tmp / "llama", hidden=128, layers=4)
    yields: list[tuple[float, int]] = []
    orig_follow = train_tab.follow

    def traced_follow(ctx, run_id, wanted=None):  # on_start looks `follow` up in the module at call time
        for out in orig_follow(ctx, run_id, wanted):
            if out is not None:  # None: the page moved on to another run
                yields.append((time.time(), max(map(int, STEP_RE.findall(out[3] or "")), default=-1)))
            yield out

    train_tab.follow = traced_follow
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = AppContext(JobManager(tmp / "runs", poll_s=0.1), Generator(), frozenset())
    demo = build_app(ctx)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, css=CSS, quiet=True)
    load0, runs = common.loadavg(), []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.set_default_timeout(60_000)
            page.add_init_script(INIT_JS)
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("button", name="Use the example quotes (1,000 rows)", exact=True).click()
            page.get_by_text(re.compile(r"rows from")).wait_for()
            page.get_by_role("tab", name="2. LoRA", exact=True).click()
            for label, value in [
                ("Base model (Hub id or local folder)", model),
                ("max_steps", a.steps),
                ("warmup_steps", 0),
                ("max_length (tokens per row)", 64),
                ("per_device_train_batch_size", 4),
                ("gradient_accumulation_steps", a.accum),
                ("save_steps", 100_000),
            ]:
                field = page.get_by_label(label, exact=label != "Base model (Hub id or local folder)")
                field.fill(str(value))
                field.press("Tab")  # blur: Gradio commits the value
            page.get_by_role("tab", name="3. Train", exact=True).click()
            page.wait_for_function(WATCH_PROGRESS_JS)
            for r in range(a.repeats):
                runs.append(one_run(page, ctx, a, yields))
                print(f"run {r + 1}/{a.repeats}: {runs[-1]['status']}, {runs[-1]['wall_s']} s", flush=True)
            browser.close()
    finally:
        ctx.jobs.shutdown(grace_s=5)
        demo.close()
        train_tab.follow = orig_follow
        shutil.rmtree(tmp, ignore_errors=True)  # the tiny model and the run folders

    def cell(d):
        return f"{d['median']:.3f} / {d['p90']:.3f} / {d['max']:.3f}" if d.get("n") else "-"

    rows = [
        [
            i + 1,
            r["status"],
            f"{r['matched']}/{r['log_events']}",
            r["s_per_step"],
            cell(r["latency_s"]),
            cell(r["event_to_server_yield_s"]),
            cell(r["server_yield_to_browser_s"]),
            cell(r["progress_latency_s"]),
            r["wall_s"],
        ]
        for i, r in enumerate(runs)
    ]
    info = common.machine_info("cpu")
    print(
        f"# {info.get('cpu', '')} | POLL_S {train_tab.POLL_S} s | load avg {load0} -> {common.loadavg()} | "
        f"{a.steps} steps, accum {a.accum}, tiny llama 128x4"
    )
    print(
        common.fmt_table(
            [
                "run",
                "status",
                "log events matched",
                "s/step",
                "event->browser s med/p90/max",
                "event->server yield",
                "server yield->browser",
                "progress event->bar",
                "wall s",
            ],
            rows,
        )
    )
    every = [x["latency_s"] for r in runs for x in r["per_event"] if x["latency_s"] is not None]
    total = summary(every)
    if total["n"]:
        print(
            f"all runs: {total['n']} events, median {total['median']} s, p90 {total['p90']} s, "
            f"max {total['max']} s; target <= 1 s: {'met' if total['max'] <= 1 else 'NOT met'} (max)"
        )
    out = {
        "kind": "ui-latency",
        "args": vars(a),
        "poll_s": train_tab.POLL_S,
        "machine": info,
        "loadavg_start": load0,
        "latency_s": total,
        "runs": runs,
    }
    name = f"ui-latency-cpu-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{a.tag}" if a.tag else "")
    path = common.write_json(out, name + ".json")
    print(f"wrote {path.relative_to(common.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Many visitors at once: N gradio_client sessions refresh the Runs tab (``/runs``) together,
with and without a run training; prints p50 / p95 / max of one refresh.

    .venv/bin/python bench/bench_many_visitors.py [--sessions 20] [--calls 5] [--limit 8]

Loopback only (the app is launched in this process on 127.0.0.1), bounded (sessions x calls
requests). Each session first loads the page's identity (the private ``on_load`` endpoint, as a
browser does). "a run training" starts one run of the tiny local Llama (tests/tiny.py) that
trains while the sessions refresh. ``--limit``: the workers of the read-only group
(lora_app.ui.common.READ_ONLY, 8 in the app; 1 is Gradio's default of one call per event).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO / "tests"))


def _serve(root: Path):
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    ctx = AppContext(JobManager(root, poll_s=0.1), Generator(), frozenset())
    demo = build_app(ctx)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    return demo, ctx


def _session(url: str):
    from gradio_client import Client

    c = Client(url, verbose=False, download_files=False)
    for ep in c.endpoints.values():
        ep.is_valid = True  # on_load is private; a browser calls it on every page load
    on_load = next(d.get("id", i) for i, d in enumerate(c.config["dependencies"]) if d.get("api_name") == "on_load")
    c.predict(None, fn_index=on_load)
    return c


def measure(url: str, sessions: int, calls: int) -> list[float]:
    clients = [_session(url) for _ in range(sessions)]
    times: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(sessions)

    def visitor(c):
        start.wait()
        for _ in range(calls):
            t0 = time.perf_counter()
            c.predict(None, api_name="/runs")
            with lock:
                times.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=visitor, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="read-only workers (default: the app's)")
    args = ap.parse_args()
    from lora_app.ui import common as ui_common

    if args.limit is not None:
        ui_common.READ_ONLY["concurrency_limit"] = args.limit
    print(f"read-only workers: {ui_common.READ_ONLY['concurrency_limit']}")
    from tiny import build_tiny_model

    from lora_app.config import RunConfig

    tmp = Path(tempfile.mkdtemp(prefix="lora_app_bench_visitors_"))
    model = build_tiny_model(tmp / "tiny")
    demo, ctx = _serve(tmp / "runs")
    url = demo.local_url
    rows = []
    try:
        one = measure(url, 1, args.calls)
        rows.append(["1 session, idle", *_stats(one)])
        idle = measure(url, args.sessions, args.calls)
        rows.append([f"{args.sessions} sessions, idle", *_stats(idle)])
        cfg = RunConfig.build(
            {
                "data": {"path": str(common.REPO / "examples" / "quotes.jsonl")},
                "model": {"base_model_name_or_path": str(model)},
                "training": {"max_steps": 100_000, "warmup_steps": 0, "max_length": 32, "save_steps": 100_000},
            }
        )
        run = ctx.jobs.submit(cfg, owner="bench")
        while ctx.jobs.view(run).status != "training":
            time.sleep(0.2)
        busy = measure(url, args.sessions, args.calls)
        rows.append([f"{args.sessions} sessions, a run training", *_stats(busy)])
    finally:
        for r in ctx.jobs.list():
            if r.status in ("running", "queued"):
                ctx.jobs.cancel(r.id, grace_s=5)
        ctx.jobs.close()
        demo.close()
    print(common.fmt_table(["case", "p50 s", "p95 s", "max s", "calls"], rows))


def _stats(times: list[float]) -> list:
    q = statistics.quantiles(times, n=20) if len(times) > 1 else times * 19
    return [f"{statistics.median(times):.3f}", f"{q[18]:.3f}", f"{max(times):.3f}", len(times)]


if __name__ == "__main__":
    main()

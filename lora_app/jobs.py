"""Training jobs: one device, a FIFO queue, one process group per run, cancel, run index.

The web server only ever talks to :class:`JobManager`; training happens in a child process
(``python -m lora_app train RUN_DIR``) in its own session/process group, so a crash, an OOM
kill or a cancel never touches the server, and cancel can end every process the run made.

Run index: ``runs.sqlite`` beside the run folders (stdlib sqlite3). A run's *status* there
is the scheduler's view (queued/running/finished/stopped/failed); its events file is the
trainer's view. Both live in the run folder's parent, so an app restart finds them again.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig
from .events import EventWriter, read_events

STOP_GRACE_S = 30.0  # time for the trainer to finish its step and save before SIGKILL
_SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, owner TEXT, status TEXT, created REAL, started REAL, ended REAL,
  pid INTEGER, base_model TEXT, data TEXT, final_loss REAL, message TEXT, resume INTEGER DEFAULT 0)"""


@dataclass
class RunInfo:
    """One row of the run index."""

    id: str
    owner: str
    status: str
    created: float
    started: float | None
    ended: float | None
    pid: int | None
    base_model: str
    data: str
    final_loss: float | None
    message: str
    resume: int = 0

    @property
    def duration_s(self) -> float | None:
        if not self.started:
            return None
        return (self.ended or time.time()) - self.started


class JobManager:
    """Queue and run training jobs under ``root`` (one folder per run, ``root/runs.sqlite``).

    ``max_running`` is the number of runs the device takes at once (1: the one GPU/CPU).
    ``env`` is added to each child's environment (never written to disk).
    """

    def __init__(self, root: str | Path, max_running: int = 1, poll_s: float = 0.25):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_running = max_running
        self.poll_s = poll_s
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._envs: dict[str, dict] = {}
        self._db = sqlite3.connect(self.root / "runs.sqlite", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._recover()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="lora_app-scheduler", daemon=True)
        self._thread.start()

    # -- submit / query -------------------------------------------------------------------
    def submit(self, cfg: RunConfig, owner: str = "local", env: dict | None = None) -> str:
        """Create the run folder (config + a private copy of the data) and queue the run.

        The data file is copied into the run folder now, so a cleaned upload cache or a
        closed browser tab cannot take it away mid-run. Returns the run id.
        """
        run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        tmp = self.root / f".{run_id}.tmp"
        tmp.mkdir(parents=True)
        cfg = cfg.model_copy(deep=True)
        if cfg.data.path:
            src = Path(cfg.data.path)
            (tmp / "data").mkdir()
            dst = tmp / "data" / ("train" + src.suffix.lower())
            shutil.copyfile(src, dst)
            cfg.data.source_name = cfg.data.source_name or src.name
            cfg.data.path = str(self.root / run_id / "data" / dst.name)
        cfg.save(tmp / "config.yaml")
        EventWriter(tmp).emit("status", status="queued", message=f"run {run_id} queued")
        os.rename(tmp, self.root / run_id)  # the folder appears whole or not at all
        data = cfg.data.dataset_id or cfg.data.source_name or ""
        with self._lock:
            self._db.execute("INSERT INTO runs (id, owner, status, created, base_model, data, message) "
                             "VALUES (?,?,?,?,?,?,?)",
                             (run_id, owner, "queued", time.time(), cfg.model.base_model_name_or_path, data, ""))
            if env:
                self._envs[run_id] = dict(env)
        self._wake.set()
        return run_id

    def get(self, run_id: str) -> RunInfo | None:
        row = self._db.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
        return RunInfo(*row) if row else None

    def list(self, owner: str | None = None) -> list[RunInfo]:
        """Newest first; all runs when ``owner`` is None."""
        q = "SELECT * FROM runs" + (" WHERE owner=?" if owner is not None else "") + " ORDER BY created DESC"
        return [RunInfo(*r) for r in self._db.execute(q, (owner,) if owner is not None else ())]

    def queue_position(self, run_id: str) -> int | None:
        """0 = running or next; None if the run is not waiting or running."""
        active = [r.id for r in sorted(self.list(), key=lambda r: r.created) if r.status in ("running", "queued")]
        active.sort(key=lambda i: 0 if self.get(i).status == "running" else 1)
        return active.index(run_id) if run_id in active else None

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    # -- cancel / delete / resume ---------------------------------------------------------
    def cancel(self, run_id: str, grace_s: float = STOP_GRACE_S) -> str:
        """Stop a run: a queued one never starts; a running one gets SIGTERM (finish the step,
        save the adapter), then SIGKILL to the whole process group after ``grace_s``.
        Returns once the process group is gone, with a sentence saying what happened."""
        with self._lock:
            info = self.get(run_id)
            if info is None:
                return f"No run {run_id}."
            if info.status == "queued":
                self._finish(run_id, "stopped", "cancelled before it started")
                return f"Run {run_id} was cancelled before it started."
            proc = self._procs.get(run_id)
        if info.status != "running" or not info.pid:
            return f"Run {run_id} is {info.status}; nothing to stop."
        t0 = time.time()
        _signal_group(info.pid, signal.SIGTERM)
        if not _wait_gone(info.pid, proc, grace_s):
            _signal_group(info.pid, signal.SIGKILL)
            _wait_gone(info.pid, proc, 10)
        self._reap(run_id, stopping=True)
        return f"Run {run_id} stopped: process {info.pid} and its group are gone after {time.time() - t0:.1f} s."

    def delete(self, run_id: str) -> None:
        """Remove a finished, stopped or failed run and its folder (a running one is stopped first)."""
        info = self.get(run_id)
        if info and info.status in ("running", "queued"):
            self.cancel(run_id)
        with self._lock:
            self._db.execute("DELETE FROM runs WHERE id=?", (run_id,))
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def resume(self, run_id: str, env: dict | None = None) -> None:
        """Queue a stopped or failed run again; it continues from its last checkpoint."""
        with self._lock:
            self._db.execute("UPDATE runs SET status='queued', ended=NULL, resume=1, message='resuming' WHERE id=?",
                             (run_id,))
            if env:
                self._envs[run_id] = dict(env)
        EventWriter(self.run_dir(run_id)).emit("status", status="queued", message="resume queued")
        self._wake.set()

    def close(self) -> None:
        """Stop the scheduler thread (running children are left alone)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    # -- scheduler ------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed:
            try:
                self._tick()
            except Exception as err:  # the scheduler must outlive any one bad run
                print(f"lora_app scheduler: {err!r}", file=sys.stderr)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        with self._lock:
            for run_id, proc in list(self._procs.items()):
                if proc.poll() is not None:
                    self._reap(run_id)
            running = self._db.execute("SELECT COUNT(*) FROM runs WHERE status='running'").fetchone()[0]
            if running >= self.max_running:
                return
            nxt = self._db.execute("SELECT id, resume FROM runs WHERE status='queued' ORDER BY created LIMIT 1").fetchone()
            if nxt:
                self._start(*nxt)

    def _start(self, run_id: str, resume: int) -> None:
        rd = self.run_dir(run_id)
        cmd = [sys.executable, "-m", "lora_app", "train", str(rd)] + (["--resume"] if resume else [])
        env = {**os.environ, **self._envs.pop(run_id, {}), "PYTHONUNBUFFERED": "1"}
        log = open(rd / "train.log", "ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # own process group: cancel kills all of it
        log.close()
        self._procs[run_id] = proc
        self._db.execute("UPDATE runs SET status='running', started=?, pid=? WHERE id=?", (time.time(), proc.pid, run_id))

    def _reap(self, run_id: str, stopping: bool = False) -> None:
        """Record how a run ended, from its event log; a silent death becomes 'failed'."""
        with self._lock:
            proc = self._procs.pop(run_id, None)
            info = self.get(run_id)
            if info is None or info.status not in ("running",):
                return
            code = proc.wait() if proc else None
            last = _last_status(self.run_dir(run_id))
            if last and last.get("status") in ("finished", "stopped", "failed"):
                self._finish(run_id, last["status"], last.get("message", ""), last.get("final_loss"), write=False)
            elif stopping:
                self._finish(run_id, "stopped", "stopped (killed before it could save)")
            else:
                why = f"the training process ended with exit code {code}"
                if code is not None and code < 0:
                    why += f" (killed by signal {signal.Signals(-code).name}; out of memory is the usual cause)"
                tail = _tail(self.run_dir(run_id) / "train.log")
                self._finish(run_id, "failed", why + (f". Last output: {tail}" if tail else ""))

    def _finish(self, run_id: str, status: str, message: str, final_loss=None, write: bool = True) -> None:
        self._db.execute("UPDATE runs SET status=?, ended=?, message=?, final_loss=? WHERE id=?",
                         (status, time.time(), message, final_loss, run_id))
        if write:
            EventWriter(self.run_dir(run_id)).emit("status", status=status, message=message)

    def _recover(self) -> None:
        """After an app restart: a 'running' run whose process is gone is marked failed."""
        for info in self.list():
            if info.status == "running" and not (info.pid and _alive(info.pid)):
                self._finish(info.id, "failed", "the app restarted while this run was going")
            elif info.status == "running":
                self._db.execute("UPDATE runs SET status='failed', message=? WHERE id=?",
                                 ("orphaned by an app restart; process left running", info.id))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # pid == pgid: started with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _wait_gone(pid: int, proc, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None:
            proc.poll()
        if (proc is None or proc.returncode is not None) and not _group_alive(pid):
            return True
        if proc is not None and proc.returncode is not None:
            # The leader has exited and been reaped; remaining group members may still linger.
            if not _group_alive(pid):
                return True
        time.sleep(0.05)
    return False


def _last_status(run_dir: Path) -> dict | None:
    events, _ = read_events(run_dir)
    st = [e for e in events if e.get("type") == "status"]
    return st[-1] if st else None


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-800:]


def gpu_memory_used_mib() -> list[int] | None:
    """Per-GPU memory in use (MiB) from nvidia-smi, without touching CUDA in this process."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5).stdout
        return [int(x) for x in out.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def run_config_json(run_dir: Path) -> dict:
    """The run's config as a dict (for the Runs tab)."""
    return json.loads(json.dumps(RunConfig.load(run_dir / "config.yaml").model_dump(mode="json")))

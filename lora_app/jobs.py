"""Training jobs: one device, a queue fair between people, one process group per run, cancel, run index.

The web server only ever talks to :class:`JobManager`; training happens in a child process
(``python -m lora_app train RUN_DIR``) in its own session/process group, so a crash, an OOM
kill or a cancel never touches the server, and cancel can end every process the run made.

Run index: ``runs.sqlite`` beside the run folders (stdlib sqlite3). A run's *status* there
is the scheduler's view (queued/running/finished/stopped/failed); its events file is the
trainer's view. Both live in the run folder's parent, so an app restart finds them again:
a queued run is started by the new app, a run still going is adopted (followed by its pid
until it exits), and one whose process died while the app was down gets its end from its
event log.

Process groups and /proc: :mod:`lora_app.procs`. The queue's order (round robin between
owners, oldest first within an owner) and the per-person limit of waiting runs:
:mod:`lora_app.fair_queue`.

Who may do what: every run has an ``owner`` string (``hf:<user>`` with a Hub login, else the
browser's server-signed id; see :mod:`lora_app.identity`, which decides who is asking). :meth:`JobManager.cancel`, :meth:`delete` and :meth:`resume` take the
caller's ``owner`` and raise :class:`NotYourRun` for someone else's run; ``owner=None`` is a
trusted local caller (CLI, tests), and the admins (``ADMIN_USERS``) may act on every run.
"""

from __future__ import annotations

import builtins
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from . import allocator, container, fair_queue, launch, procs
from .config import RunConfig
from .events import EventWriter, RunView, read_events
from .identity import admin_owners
from .run_folder import checkpoint_step, create_folder, kept_line, new_run_id
from .run_index import _SCHEMA, ACTIVE, NotYourRun, QueueFull, RunInfo  # re-exported: the UI imports them from here

STOP_GRACE_S = 30.0  # time for the trainer to finish its step and save before SIGKILL
START_TIMEOUT_S = 60.0  # a run claimed by a manager that never got a pid within this is failed


class JobManager:
    """Queue and run training jobs under ``root`` (one folder per run, ``root/runs.sqlite``).

    ``max_running`` is the number of runs the device takes at once (1: the one GPU/CPU); it
    holds across every JobManager on the same ``root``, in this process or another (the
    CLI), because a run is claimed in the index before it is started. ``admins``: owners who
    may act on every run (default: from ``ADMIN_USERS``). ``env`` given to :meth:`submit` is
    added to that run's environment (never written to disk). ``max_waiting``: waiting runs per
    owner (default: ``LORA_APP_MAX_WAITING_PER_PERSON``, 3; 0: no limit).
    """

    def __init__(
        self,
        root: str | Path,
        max_running: int = 1,
        poll_s: float = 0.25,
        admins: frozenset[str] | None = None,
        max_waiting: int | None = None,
    ):
        self.root = Path(root).resolve()
        self.max_waiting = fair_queue.max_waiting_per_person() if max_waiting is None else max_waiting
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_running = max_running
        self.poll_s = poll_s
        self.admins = admin_owners() if admins is None else frozenset(admins)
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}
        self._envs: dict[str, dict] = {}
        self._stopping: set[str] = set()
        self._views: dict[str, RunView] = {}
        self._db = sqlite3.connect(self.root / "runs.sqlite", check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._wake = threading.Event()
        self._closed = False
        self._recover()
        self._thread = threading.Thread(target=self._loop, name="lora_app-scheduler", daemon=True)
        self._thread.start()

    # -- index access (one connection, used from the scheduler and the request threads) -----
    def _sql(self, q: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(q, args).fetchall()

    def _runs(self, where: str = "", args: tuple = ()) -> list[RunInfo]:
        return [RunInfo(*r) for r in self._sql(f"SELECT * FROM runs {where}", args)]

    # -- submit / query -------------------------------------------------------------------
    def submit(
        self,
        cfg: RunConfig,
        owner: str = "local",
        env: dict | None = None,
        checkpoint: Path | None = None,
        history: builtins.list[dict] | None = None,
    ) -> str:
        """Create the run folder (:func:`lora_app.run_folder.create_folder`: config + a private
        copy of the data, appearing whole or not at all) and queue the run. Returns the run id. Validate first (:func:`lora_app.validate.check_and_submit`).
        Raises :class:`QueueFull` when ``owner`` already has ``max_waiting`` runs waiting.
        ``checkpoint`` (a ``checkpoint-<step>`` folder) and ``history`` (earlier events): the run
        starts as a resume of them (:func:`lora_app.hub_resume.resume_from_hub`).
        """
        self.check_room(owner)
        run_id = new_run_id()
        cfg = create_folder(self.root, run_id, cfg, checkpoint, history)
        data = cfg.data.dataset_id or cfg.data.source_name or ""
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (id, owner, status, created, base_model, data, message, resume) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    owner,
                    "queued",
                    time.time(),
                    cfg.model.base_model_name_or_path,
                    data,
                    "",
                    int(bool(checkpoint)),
                ),
            )
            if env:
                self._envs[run_id] = dict(env)
        self._wake.set()
        return run_id

    def get(self, run_id: str) -> RunInfo | None:
        rows = self._runs("WHERE id=?", (run_id,))
        return rows[0] if rows else None

    def list(self, owner: str | None = None) -> list[RunInfo]:
        """Newest first; all runs when ``owner`` is None."""
        if owner is None:
            return self._runs("ORDER BY created DESC, rowid DESC")
        return self._runs("WHERE owner=? ORDER BY created DESC, rowid DESC", (owner,))

    def is_admin(self, owner: str | None) -> bool:
        return owner is not None and owner in self.admins

    def visible(self, owner: str | None, admin: bool = False) -> builtins.list[RunInfo]:  # (list: a method here)
        """The runs ``owner`` may see: their own, or all of them for an admin."""
        return self.list(None if admin or self.is_admin(owner) else (owner or "anonymous"))

    def _check_owner(self, info: RunInfo, owner: str | None, admin: bool) -> None:
        if not (owner is None or admin or self.is_admin(owner) or info.owner == owner):
            raise NotYourRun(f"Run {info.id} belongs to someone else: you can see and stop only your own runs.")

    def check_room(self, owner: str) -> None:
        """Raise :class:`QueueFull` (a ConfigError: one line naming the setting and the fix) when
        ``owner`` has ``max_waiting`` runs waiting already; a running run does not count."""
        n = self._sql("SELECT COUNT(*) FROM runs WHERE owner=? AND status='queued'", (owner,))[0][0]
        if self.max_waiting > 0 and n >= self.max_waiting:
            raise QueueFull([fair_queue.full_line(n, self.max_waiting)])

    def line(self) -> builtins.list[RunInfo]:
        """The waiting runs in the order they will start (:func:`lora_app.fair_queue.fair_order`)."""
        rows = self._runs("WHERE status='queued' ORDER BY created, rowid")
        last = dict(self._sql("SELECT owner, MAX(started) FROM runs WHERE started IS NOT NULL GROUP BY owner"))
        by_id = {r.id: r for r in rows}
        return [
            by_id[i] for i in fair_queue.fair_order([fair_queue.Waiting(r.id, r.owner, r.created) for r in rows], last)
        ]

    def queue_position(self, run_id: str) -> int | None:
        """0 = running or next; None if the run is not waiting or running. Waiting runs count
        from the number running, in the fair order :meth:`line`."""
        ids = [r.id for r in self.running()] + [r.id for r in self.line()]
        return ids.index(run_id) if run_id in ids else None

    def running(self) -> builtins.list[RunInfo]:
        """The runs holding the device now, oldest first."""
        return self._runs("WHERE status='running' ORDER BY started")

    def view(self, run_id: str) -> RunView:
        """The run's events folded into a :class:`RunView`, read incrementally and cached."""
        with self._lock:
            v = self._views.setdefault(run_id, RunView())
            v.update(self.run_dir(run_id))
            return v

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    # -- cancel / delete / resume ---------------------------------------------------------
    def cancel(
        self, run_id: str, owner: str | None = None, *, admin: bool = False, grace_s: float = STOP_GRACE_S
    ) -> str:
        """Stop a run: a queued one never starts; a running one gets SIGTERM (finish the step,
        save the adapter and a checkpoint; a run of several processes: its ranks, not their
        launcher, see :func:`lora_app.procs.signal_group`), then SIGKILL to all its process groups after
        ``grace_s``. Returns once the process group is gone, with a sentence saying what
        happened (device memory before/after on CUDA). Raises :class:`NotYourRun`."""
        with self._lock:
            info = self.get(run_id)
            if info is None:
                return f"No run {run_id}."
            self._check_owner(info, owner, admin)
            if info.status == "queued":
                self._finish(run_id, "stopped", "cancelled before it started")
                return f"Run {run_id} was cancelled before it started."
            if info.status != "running":
                return f"Run {run_id} is {info.status}; nothing to stop."
            proc = self._procs.get(run_id)
            self._stopping.add(run_id)
        try:
            pid = info.pid
            deadline = time.time() + START_TIMEOUT_S
            while not pid and time.time() < deadline:  # claimed by another manager, not spawned yet
                time.sleep(0.1)
                pid = (self.get(run_id) or info).pid
            mem_before = procs.gpu_memory_used_mib()
            t0 = time.time()
            killed = False
            if pid:
                procs.signal_group(pid, signal.SIGTERM, ranks_first=True)
                if not procs.wait_gone(pid, proc, grace_s):
                    killed = True
                    procs.signal_group(pid, signal.SIGKILL)
                    procs.wait_gone(pid, proc, 10)
            gone = not pid or not procs.group_alive(pid)
            self._reap(run_id, stopping=True)
            mem_after = procs.gpu_memory_used_mib()
        finally:
            with self._lock:
                self._stopping.discard(run_id)
        self._wake.set()
        return procs.stop_report(run_id, pid, gone, killed, time.time() - t0, mem_before, mem_after) + kept_line(
            self.run_dir(run_id)
        )

    def delete(self, run_id: str, owner: str | None = None, *, admin: bool = False) -> str:
        """Remove a run and its folder (a queued or running one is stopped first).
        Raises :class:`NotYourRun`."""
        info = self.get(run_id)
        if info is None:
            return f"No run {run_id}."
        self._check_owner(info, owner, admin)
        if info.status in ACTIVE:
            self.cancel(run_id, owner, admin=admin)
        with self._lock:
            self._db.execute("DELETE FROM runs WHERE id=?", (run_id,))
            self._views.pop(run_id, None)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)
        return f"Run {run_id} and its folder were deleted."

    def resume(self, run_id: str, owner: str | None = None, *, admin: bool = False, env: dict | None = None) -> str:
        """Queue a stopped or failed run again; it continues from its last checkpoint, with
        the step count going on from there. Raises :class:`NotYourRun`."""
        info = self.get(run_id)
        if info is None:
            return f"No run {run_id}."
        self._check_owner(info, owner, admin)
        ck = checkpoint_step(self.run_dir(run_id))
        with self._lock:
            n = self._db.execute(
                "UPDATE runs SET status='queued', ended=NULL, resume=1, message='resuming' "
                "WHERE id=? AND status IN ('stopped','failed')",
                (run_id,),
            ).rowcount
            if not n:
                return f"Run {run_id} is {info.status}: only a stopped or failed run can be resumed."
            if env:
                self._envs[run_id] = dict(env)
        where = f"from its checkpoint at step {ck}" if ck is not None else "from step 0 (it had no checkpoint)"
        EventWriter(self.run_dir(run_id)).emit("status", status="queued", message=f"resume queued, {where}")
        self._wake.set()
        return f"Run {run_id} is queued again and resumes {where}."

    def close(self) -> None:
        """Stop the scheduler thread (running children are left alone: a new JobManager on
        the same root adopts them)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Cancel every queued or running run (``grace_s`` seconds to save before SIGKILL), then
        :meth:`close`: the teardown of tests and benches, which must leave no process behind."""
        for info in self.list():
            if info.status in ACTIVE:
                self.cancel(info.id, grace_s=grace_s)
        self.close()

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
                if proc.poll() is not None and run_id not in self._stopping:
                    self._reap(run_id)
            # Runs this manager did not start (an earlier app process, the CLI): follow their pid.
            for info in self._runs("WHERE status='running'"):
                if info.id in self._procs or info.id in self._stopping:
                    continue
                if info.pid is None:
                    if time.time() - (info.started or 0) > START_TIMEOUT_S:
                        self._reap(info.id)
                elif not procs.run_alive(info.pid, self.run_dir(info.id)):
                    self._reap(info.id)
            while self._start_next():
                pass

    def _start_next(self) -> bool:
        line = self.line()  # fair between owners; another manager may claim first: the claim checks
        if not line:
            return False
        run_id, resume = line[0].id, line[0].resume
        # Claim it in one statement: no other manager on this root starts it, or goes over max_running.
        # A resumed run keeps its first start time; claim and pid are then one transaction, so that no
        # manager sees it running with no pid and an old start, and fails it as never started.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            return self._claim_and_spawn(run_id, resume)
        finally:
            self._db.execute("COMMIT")

    def _claim_and_spawn(self, run_id: str, resume: int) -> bool:
        claimed = self._db.execute(
            "UPDATE runs SET status='running', started=COALESCE(started, ?), pid=NULL, message='' WHERE id=? "
            "AND status='queued' AND (SELECT COUNT(*) FROM runs WHERE status='running') < ?",
            (time.time(), run_id, self.max_running),
        ).rowcount
        if not claimed:
            return False
        rd = self.run_dir(run_id)
        env, _ = allocator.child_env({**os.environ, **self._envs.pop(run_id, {}), "PYTHONUNBUFFERED": "1"})
        try:  # accelerate launch when distributed.num_processes > 1; its ranks: see procs.signal_group
            cfg = RunConfig.load(rd / "config.yaml")
            env = container.thread_env(env, cfg.distributed.num_processes)  # the cores a container's quota allows
            cmd = launch.train_command(rd, cfg, bool(resume))
            launch.clear_rank_errors(rd)  # a resumed run's failure is this attempt's
            with open(rd / "train.log", "ab") as log:
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
                )  # own group: cancel kills all of it
        except (OSError, ValueError) as err:  # (ConfigError is a ValueError)
            self._finish(run_id, "failed", f"could not start the training process: {err}")
            return True
        self._procs[run_id] = proc
        self._db.execute("UPDATE runs SET pid=? WHERE id=?", (proc.pid, run_id))
        return True

    def _reap(self, run_id: str, stopping: bool = False) -> None:
        """Record how a run ended, from its event log; a silent death becomes 'failed'."""
        with self._lock:
            proc = self._procs.pop(run_id, None)
            info = self.get(run_id)
            if info is None or info.status != "running":
                return
            code = proc.wait() if proc else None
            if self._end_from_log(run_id):
                return
            ranks = launch.rank_failure(self.run_dir(run_id))  # a rank's own reason beats an exit code
            if stopping or run_id in self._stopping:
                self._finish(run_id, "stopped", "stopped (killed before it could save)")
            elif ranks:
                self._finish(run_id, "failed", ranks)
            else:
                if proc is None:
                    why = (
                        "the training process is gone without reporting why (it was started by an earlier "
                        "app process, or killed)"
                    )
                else:
                    why = f"the training process ended with exit code {code}"
                    if code is not None and code < 0:
                        why += (
                            f" (killed by signal {signal.Signals(-code).name}: the system's out-of-memory "
                            "killer is the usual cause, if nobody killed it)"
                        )
                tail = procs.tail(self.run_dir(run_id) / "train.log")
                self._finish(run_id, "failed", why + (f". Last output: {tail}" if tail else ""))

    def _finish(self, run_id: str, status: str, message: str, final_loss=None, write: bool = True) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET status=?, ended=?, message=?, final_loss=? WHERE id=?",
                (status, time.time(), message, final_loss, run_id),
            )
        if write:
            EventWriter(self.run_dir(run_id)).emit("status", status=status, message=message)

    def _end_from_log(self, run_id: str) -> bool:
        """Record the end the trainer wrote in its event log (finished, stopped or failed, with its
        message and final loss); False when the log has no end (the process died silently)."""
        events, _ = read_events(self.run_dir(run_id))
        last = next((e for e in reversed(events) if e.get("type") == "status"), None)
        if not last or last.get("status") not in ("finished", "stopped", "failed"):
            return False
        self._finish(run_id, last["status"], last.get("message", ""), last.get("final_loss"), write=False)
        return True

    def _recover(self) -> None:
        """After an app restart: a run whose process still goes is adopted (the scheduler
        follows its pid); one whose process is gone gets its end from its event log."""
        for info in self._runs("WHERE status='running'"):
            if info.pid and procs.run_alive(info.pid, self.run_dir(info.id)):
                continue
            if not self._end_from_log(info.id) and (info.pid or time.time() - (info.started or 0) > START_TIMEOUT_S):
                self._finish(
                    info.id,
                    "failed",
                    "the app restarted while this run was going, and its "
                    "process is gone. Resume it to go on from its last checkpoint.",
                )

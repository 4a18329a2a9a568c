"""Processes of a run, as the operating system sees them: is a pid alive (and still the run's),
signal or wait for a whole process group, GPU memory in use, a log's last lines.

A run's trainer is started with ``start_new_session=True``, so its pid is also its process
group id; cancel signals the group, and "gone" means no live member of the group is left.
A run of several processes is led by ``accelerate launch`` (torchrun's agent), which starts each
rank in a session of its own (torch.distributed.elastic's SubprocessHandler: ``start_new_session``);
so "the run's group" here is the leader's group *plus* the groups of every descendant of its
members, remembered once seen (a rank orphaned by a killed agent is still found and signalled).
Where /proc is missing (macOS) the checks fall back to what ``kill(0)`` can tell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """The process ``pid`` exists and is not a zombie (a zombie child still answers kill(0))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def run_alive(pid: int, run_dir: Path) -> bool:
    """The run's process is alive, and that pid is still the run's (not a reused pid)."""
    if not alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return str(run_dir).encode() in cmdline


#: Leader pid -> process groups seen in its run (its own and its ranks'), for signal and wait.
_SEEN: dict[int, set[int]] = {}


def _table() -> dict[int, tuple[str, int, int]] | None:
    """pid -> (state, ppid, pgrp) of every process, from /proc; None where /proc is missing."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(") ", 1)[1].split()
            out[int(d.name)] = (fields[0], int(fields[1]), int(fields[2]))
        except (OSError, IndexError, ValueError):
            continue
    return out


def run_groups(pgid: int) -> set[int]:
    """The process groups of the run led by ``pgid``: its own, and the group of every live
    descendant of its members (the ranks torchrun started in sessions of their own), together
    with those seen earlier for this leader."""
    seen = _SEEN.setdefault(pgid, {pgid})
    table = _table()
    if table is None:
        return set(seen)
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid, (_, _, pg) in table.items() if pg in seen]
    visited: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in visited:
            continue
        visited.add(pid)
        for c in children.get(pid, []):
            if table[c][2] not in seen:
                seen.add(table[c][2])
                todo += [p for p, (_, _, pg) in table.items() if pg == table[c][2]]
            todo.append(c)
    return set(seen)


def _is_launcher(pid: int) -> bool:
    """``pid`` runs ``accelerate launch`` (:func:`lora_app.launch.train_command`); False where
    /proc cannot tell."""
    try:
        return b"accelerate.commands.launch" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def signal_group(pid: int, sig: int, *, ranks_first: bool = False) -> None:
    """Send ``sig`` to the process group led by ``pid`` and to the groups of its run's other
    processes (:func:`run_groups`); a group already gone is not an error.

    ``ranks_first``: where ``pid`` is a launcher (``accelerate launch``) that has started rank
    groups, signal those alone, not the launcher. A graceful stop then takes the launcher's
    everyday road: its ranks save and exit 0, and it exits as after a finished run. Signalled
    itself, torchrun's agent takes its shutdown road instead (SIGTERM to every rank again, SIGKILL
    after its own 30 s, an error exit), one more party racing the ranks' save; once in CI a
    two-process stop was killed after the 30 s grace with nothing saved (not seen here in 20
    tries, so the cause is not known). With no rank started yet, the launcher is signalled."""
    groups = run_groups(pid)
    if ranks_first and len(groups) > 1 and _is_launcher(pid):
        groups.discard(pid)
    for g in groups:
        try:
            os.killpg(g, sig)  # pid == pgid: started with start_new_session
        except (ProcessLookupError, PermissionError):
            pass


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes in process group ``pgid``; None where /proc is missing."""
    table = _table()
    if table is None:
        return None
    return [pid for pid, (st, _, pg) in table.items() if st != "Z" and pg == pgid]


def _one_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = group_members(pgid)  # killpg also answers for a group of zombies
    return True if members is None else bool(members)


def group_alive(pgid: int) -> bool:
    """Some process of the run led by ``pgid`` is alive: of its group, or of a rank's group seen
    in it (:func:`run_groups`); zombies do not count where /proc exists."""
    alive_now = any(_one_group_alive(g) for g in run_groups(pgid))
    if not alive_now:
        _SEEN.pop(pgid, None)
    return alive_now


def wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the leader ``pid`` (reaped through ``proc`` when this
    process started it) and its whole group to be gone; True if they are."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None:
            proc.poll()  # reap the leader as soon as it exits
        if (proc is None or proc.returncode is not None) and not group_alive(pid):
            return True
        time.sleep(0.05)
    return False


def die_with_parent(sig: int = 9) -> None:
    """Ask Linux to send ``sig`` (default SIGKILL) to this process when its parent dies
    (``prctl(PR_SET_PDEATHSIG)``): a rank whose launcher was killed must not train on alone.
    A no-op elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def tail(path: Path, n: int = 5) -> str:
    """The last ``n`` lines of a log file joined by " | " (at most 800 characters); "" if unreadable."""
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
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout
        return [int(x) for x in out.split()]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def stop_report(
    run_id: str,
    pid: int | None,
    gone: bool,
    killed: bool,
    took_s: float,
    mem_before: list[int] | None,
    mem_after: list[int] | None,
) -> str:
    """The sentence Stop answers with: how long it took (seconds), whether the process group
    ``pid`` is gone, whether SIGKILL was needed, and each GPU's memory in use (MiB) before and
    after (None: a CPU run)."""
    # "stopped after 6.9 s" read as the run's length, beside three other durations (the newcomer)
    text = f"Run {run_id} stopped (stopping took {took_s:.1f} s)"
    text += (
        f": process {pid} and its process group are gone"
        if gone
        else f": process group {pid} is STILL ALIVE after SIGKILL"
    )
    text += " (killed after the grace period)." if killed else "."
    if mem_before is not None and mem_after is not None:
        pairs = zip(mem_before, mem_after, strict=False)
        return (
            text
            + " GPU memory in use: "
            + ", ".join(f"GPU{i} {b:,} MiB before, {a:,} MiB after" for i, (b, a) in enumerate(pairs))
            + "."
        )
    return text + " (A CPU run: no GPU memory to report.)"

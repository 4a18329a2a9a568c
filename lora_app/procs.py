"""Processes of a run, as the operating system sees them: is a pid alive (and still the run's),
signal or wait for a whole process group, GPU memory in use, a log's last lines.

A run's trainer is started with ``start_new_session=True``, so its pid is also its process
group id; cancel signals the group, and "gone" means no live member of the group is left.
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


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid``; a group already gone is not an error."""
    try:
        os.killpg(pid, sig)  # pid == pgid: started with start_new_session
    except (ProcessLookupError, PermissionError):
        pass


def group_members(pgid: int) -> list[int] | None:
    """Live (non-zombie) processes in process group ``pgid``; None where /proc is missing."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    out = []
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def group_alive(pgid: int) -> bool:
    """Some process of group ``pgid`` is alive (zombies do not count where /proc exists)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    members = group_members(pgid)  # killpg also answers for a group of zombies
    return True if members is None else bool(members)


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
    text = f"Run {run_id} stopped after {took_s:.1f} s"
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
    return text + " CPU run: no device memory to report; the process is gone."

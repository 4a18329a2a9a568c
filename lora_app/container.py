"""What a container lets this process use: the cgroup's CPU quota and memory limit.

Why: under ``docker run --cpus 2 --memory 16g``, a Kubernetes pod's limits or a Space's hardware
tier, ``os.cpu_count()``, torch's default thread count and psutil's RAM are the *host's*. A CPU
quota is CFS bandwidth, not affinity: a run that starts one thread per host core gets throttled
every period (llama.cpp and ollama measured 4x-45x slowdowns: ollama/ollama#17916,
llmmanorg/llmman#322). A memory limit below the host's free RAM lets the batching plan merge a
step that the kernel's OOM killer then ends. So the thread count and the memory figures here are
the smaller of the host's and the cgroup's.

Files read (kernel documentation, ``admin-guide/cgroup-v2.rst`` and ``cgroup-v1/memory.rst``):
v2 ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"), ``memory.max`` (bytes or "max"),
``memory.current``, ``memory.stat`` (``inactive_file``); v1 ``cpu/cpu.cfs_quota_us`` (-1: none),
``cpu/cpu.cfs_period_us``, ``memory/memory.limit_in_bytes`` (about 2**63: none),
``memory/memory.usage_in_bytes``, ``memory/memory.stat`` (``total_inactive_file``). Usage counts the
page cache; inactive file pages are reclaimed before the OOM killer acts, so they are taken off
(as ``docker stats`` does). Each level from the process's own cgroup up to the mount's root is
read, and the tightest limit wins: a parent's limit binds its children.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
#: v1 writes "no limit" as the largest page-aligned 63-bit number; anything this large is none.
_V1_UNLIMITED = 2**62


@dataclass(frozen=True)
class MemoryLimit:
    """A cgroup memory limit: ``limit`` bytes, the smallest of every level, and ``available`` bytes,
    the least room left under any level (page cache that is inactive counts as room)."""

    limit: int
    available: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, ValueError):
        return None


def _own_paths(proc_cgroup: Path) -> tuple[str, dict[str, str]]:
    """This process's cgroup: the v2 path ("0::/a/b") and the v1 path of each controller."""
    v2, v1 = "/", {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2] or "/"
        for controller in parts[1].split(","):
            if controller:
                v1[controller] = parts[2] or "/"
    return v2, v1


def _levels(mount: Path, own: str) -> list[Path]:
    """The directories from the process's cgroup up to ``mount`` that exist. In a container with
    its own cgroup namespace (or a bind mount of its cgroup) ``own`` is not below the mount:
    then the mount itself is the container's cgroup."""
    rel = [p for p in own.strip("/").split("/") if p and p != ".."]
    out = [mount.joinpath(*rel[:i]) for i in range(len(rel), -1, -1)]
    return [d for d in out if d.is_dir()]


def _v1_mount(root: Path, controller: str) -> Path:
    """Where v1 mounts ``controller``: ``root/cpu``, or a joint mount such as ``root/cpu,cpuacct``
    (systemd links ``cpu`` to it; a container may have only the joint name)."""
    if (root / controller).is_dir():
        return root / controller
    try:
        joint = [d for d in root.iterdir() if controller in d.name.split(",") and d.is_dir()]
    except OSError:
        joint = []
    return joint[0] if joint else root / controller


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CFS quota in CPUs (e.g. 2.0 for ``--cpus 2``), the tightest of every level; None when
    no level sets one (or there is no cgroup file system: macOS, Windows)."""
    v2, v1 = _own_paths(proc_cgroup)
    found: list[float] = []
    for d in _levels(root, v2):
        text = _read(d / "cpu.max")
        if text and not text.startswith("max"):
            quota, _, period = text.partition(" ")
            try:
                if int(period or 100_000) > 0 and int(quota) > 0:
                    found.append(int(quota) / int(period or 100_000))
            except ValueError:
                pass
    for d in _levels(_v1_mount(root, "cpu"), v1.get("cpu", "/")):
        quota_s, period_s = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        try:
            if quota_s and period_s and int(quota_s) > 0 and int(period_s) > 0:
                found.append(int(quota_s) / int(period_s))
        except ValueError:
            pass
    return min(found) if found else None


def _stat(text: str | None, key: str) -> int:
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> MemoryLimit | None:
    """The tightest cgroup memory limit over every level, with that level's usage; None when no
    level sets one."""
    v2, v1 = _own_paths(proc_cgroup)
    found: list[MemoryLimit] = []
    for d in _levels(root, v2):
        limit = _read(d / "memory.max")
        used = _read(d / "memory.current")
        if limit and limit.isdigit() and used and used.isdigit():
            inactive = _stat(_read(d / "memory.stat"), "inactive_file")
            found.append(MemoryLimit(int(limit), max(0, int(limit) - int(used) + inactive)))
    for d in _levels(_v1_mount(root, "memory"), v1.get("memory", "/")):
        limit = _read(d / "memory.limit_in_bytes")
        used = _read(d / "memory.usage_in_bytes")
        if limit and limit.isdigit() and int(limit) < _V1_UNLIMITED and used and used.isdigit():
            stat = _read(d / "memory.stat")
            inactive = _stat(stat, "total_inactive_file") or _stat(stat, "inactive_file")
            found.append(MemoryLimit(int(limit), max(0, int(limit) - int(used) + inactive)))
    # a child's limit may be below its parent's while the parent, shared with others, has less room
    # left: each figure is the tightest of its own kind (found by the breaker)
    return MemoryLimit(min(m.limit for m in found), min(m.available for m in found)) if found else None


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process may keep busy: its affinity mask, capped by the cgroup's quota rounded to
    the nearest whole CPU (half up); at least 1. Measured here (bench/bench_threads.py, a LoRA step,
    2-core EPYC): quota 1.0, 1 thread 4.04 s/step vs 2 threads 5.00; quota 1.5, 2 threads 3.25 vs 1
    thread 3.93. Far more threads than the quota get the group throttled every period (llmman#322,
    vllm#34462 round down; a half CPU more measured faster here)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota + 0.5)))
    return max(1, cores)


def ram(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> tuple[int, int]:
    """``(total, available)`` bytes of RAM for this process: psutil's (the host's or the VM's),
    each capped by the cgroup's limit and what is left under it."""
    import psutil

    vm = psutil.virtual_memory()
    total, available = int(vm.total), int(vm.available)
    lim = memory_limit(root, proc_cgroup)
    if lim is not None:
        total, available = min(total, lim.limit), min(available, lim.available)
    return total, available


def thread_env(env: dict[str, str], processes: int = 1, cores: int | None = None) -> dict[str, str]:
    """``env`` for a training process of ``processes`` ranks on this machine, with ``OMP_NUM_THREADS``
    = the usable cores / ``processes`` (at least 1) unless ``env`` already sets it to a count (the
    person's choice wins; a value that is no count is replaced). torch sizes its intra-op pool from it; ``accelerate launch`` passes it on to each
    rank as ``--num_cpu_threads_per_process`` (its default would be 1 thread a rank on a many-core
    machine: accelerate.commands.launch reads OMP_NUM_THREADS, else 1, unless ``--use_cpu``)."""
    if _threads_set(env.get("OMP_NUM_THREADS")):
        return env
    per = max(1, (cores or usable_cores()) // max(1, processes))
    return {**env, "OMP_NUM_THREADS": str(per)}


def _threads_set(value: str | None) -> bool:
    """Whether OMP_NUM_THREADS holds a count a person chose: a whole number of at least 1. "0", "abc"
    or "" are replaced (accelerate's launcher died on "abc"; libgomp ignores "0" and starts a thread
    per host core: found by the breaker)."""
    return value is not None and value.strip().isdigit() and int(value) >= 1


def threads_line() -> str:
    """One log line: the CPU threads torch uses here and why (the cores and quota this process has)."""
    import torch

    quota = cpu_quota()
    return (
        f"{torch.get_num_threads()} CPU threads (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS') or 'unset'}; "
        f"{usable_cores()} usable cores of {os.cpu_count()}"
        + (f", cgroup CPU quota {quota:g}" if quota is not None else "")
        + ")"
    )


@functools.cache  # once a process: the quota does not change while it runs
def cap_torch_threads() -> None:
    """In this process (the web server's generation): no more torch threads than usable cores,
    unless OMP_NUM_THREADS says otherwise."""
    import torch

    if not _threads_set(os.environ.get("OMP_NUM_THREADS")) and torch.get_num_threads() > usable_cores():
        torch.set_num_threads(usable_cores())


def process_info() -> dict:
    """The training process's "info" event about how it runs: ``message`` (the memory allocator's line,
    :func:`lora_app.allocator.report`, and :func:`threads_line`), ``allocator`` and ``threads``."""
    import torch

    from . import allocator

    return {
        "message": f"{allocator.report()}; {threads_line()}",
        "allocator": allocator.in_use(),
        "threads": torch.get_num_threads(),
    }

"""A container's CPU quota and memory limit (lora_app/container.py): read from cgroup v2 and v1 files
as the kernel writes them (trees built here in the kernel's formats), and, where this machine lets a
test make a cgroup (root, a writable v1 or v2 hierarchy), from the real kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from lora_app import container
from lora_app.container import MemoryLimit, cpu_quota, memory_limit, thread_env, usable_cores

GiB = 2**30
V1_NONE = "9223372036854771712"  # what v1 writes for "no limit" (2**63 rounded down to a page)


def tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    return root


def proc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "proc_self_cgroup"
    p.write_text(text)
    return p


def test_cgroup_v2_in_its_own_namespace(tmp_path):
    """Docker on cgroup v2: /proc/self/cgroup says 0::/ and the mount is the container's cgroup."""
    root = tree(
        tmp_path / "cg",
        {
            "cpu.max": "200000 100000",
            "memory.max": str(16 * GiB),
            "memory.current": str(5 * GiB),
            "memory.stat": f"anon {3 * GiB}\nfile {2 * GiB}\nactive_file {GiB // 2}\ninactive_file {3 * GiB // 2}",
        },
    )
    p = proc(tmp_path, "0::/\n")
    assert cpu_quota(root, p) == 2.0
    lim = memory_limit(root, p)
    assert lim == MemoryLimit(16 * GiB, 16 * GiB - 7 * GiB // 2)  # reclaimable page cache is room
    assert usable_cores(root, p) == min(2, len(os.sched_getaffinity(0)))


def test_cgroup_v2_a_parents_limit_binds_its_child(tmp_path):
    """Without a namespace the process sits below the mount; the tightest level wins (a pod's limit
    set on its parent, "max" on the leaf)."""
    root = tree(
        tmp_path / "cg",
        {
            "kubepods/cpu.max": "150000 100000",
            "kubepods/memory.max": str(4 * GiB),
            "kubepods/memory.current": str(GiB),
            "kubepods/pod1/cpu.max": "max 100000",
            "kubepods/pod1/memory.max": "max",
            "kubepods/pod1/memory.current": str(GiB),
        },
    )
    p = proc(tmp_path, "0::/kubepods/pod1\n")
    assert cpu_quota(root, p) == 1.5
    assert memory_limit(root, p) == MemoryLimit(4 * GiB, 3 * GiB)
    # 1.5 rounds to 2 (measured: 3.25 s a LoRA step with 2 threads vs 3.93 with 1; bench_threads.py)
    assert usable_cores(root, p) == min(2, len(os.sched_getaffinity(0)))


def test_the_smallest_limit_and_the_least_room_come_from_different_levels(tmp_path):
    """A slice of 8 GiB with 6 used holds an app cgroup of 4 GiB with 1 used: the app may use 4 GiB
    at most and has 2 left. Taking both from the level with the least room gave a limit of 8 GiB
    (found by the breaker)."""
    root = tree(
        tmp_path / "cg",
        {
            "slice/memory.max": str(8 * GiB),
            "slice/memory.current": str(6 * GiB),
            "slice/app/memory.max": str(4 * GiB),
            "slice/app/memory.current": str(GiB),
        },
    )
    assert memory_limit(root, proc(tmp_path, "0::/slice/app\n")) == MemoryLimit(4 * GiB, 2 * GiB)


def test_cgroup_v1_limits_and_none(tmp_path):
    """v1: -1 quota and the 2**63 limit mean none; a bind-mounted container cgroup (the path in
    /proc/self/cgroup is not below the mount) is read at the mount."""
    p = proc(tmp_path, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    unlimited = tree(
        tmp_path / "none",
        {
            "memory/memory.limit_in_bytes": V1_NONE,
            "memory/memory.usage_in_bytes": str(GiB),
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
        },
    )
    assert (cpu_quota(unlimited, p), memory_limit(unlimited, p)) == (None, None)
    limited = tree(
        tmp_path / "lim",
        {
            "memory/memory.limit_in_bytes": str(3 * GiB),
            "memory/memory.usage_in_bytes": str(2 * GiB),
            "memory/memory.stat": f"cache {GiB}\ninactive_file 5\ntotal_inactive_file {GiB}",
            "cpu/cpu.cfs_quota_us": "50000",
            "cpu/cpu.cfs_period_us": "100000",
        },
    )
    assert cpu_quota(limited, p) == 0.5
    assert memory_limit(limited, p) == MemoryLimit(3 * GiB, 2 * GiB)
    assert usable_cores(limited, p) == 1  # never 0


def test_no_cgroup_or_unreadable_files_change_nothing(tmp_path):
    """No cgroup file system (macOS), or files that do not parse: the host's figures stand."""
    p = proc(tmp_path, "garbage\n")
    bad = tree(tmp_path / "bad", {"cpu.max": "lots 100000", "memory.max": "12G", "memory.current": "1"})
    for root in (tmp_path / "absent", bad):
        assert (cpu_quota(root, p), memory_limit(root, p)) == (None, None)
        assert usable_cores(root, p) == len(os.sched_getaffinity(0))
    total, available = container.ram(tmp_path / "absent", p)
    import psutil

    assert total == psutil.virtual_memory().total and 0 < available <= total


def test_a_memory_limit_caps_ram_and_the_batching_budget(tmp_path):
    root = tree(tmp_path / "cg", {"memory.max": str(GiB), "memory.current": str(GiB // 4)})
    p = proc(tmp_path, "0::/\n")
    assert container.ram(root, p) == (GiB, 3 * GiB // 4)


def test_thread_env_splits_the_usable_cores_between_ranks_and_keeps_a_persons_choice():
    assert thread_env({"PATH": "/bin"}, 1, cores=8) == {"PATH": "/bin", "OMP_NUM_THREADS": "8"}
    assert thread_env({}, 2, cores=8)["OMP_NUM_THREADS"] == "4"  # accelerate's default would be 1 a rank
    assert thread_env({}, 4, cores=2)["OMP_NUM_THREADS"] == "1"
    assert thread_env({"OMP_NUM_THREADS": "3"}, 2, cores=8) == {"OMP_NUM_THREADS": "3"}
    # a value that is no count is replaced: accelerate's launcher died on "abc", libgomp ignores "0"
    for bad in ("0", "abc", "-1", " ", "2.5"):
        assert thread_env({"OMP_NUM_THREADS": bad}, 2, cores=8) == {"OMP_NUM_THREADS": "4"}, bad


def test_a_joint_v1_cpu_mount_is_found(tmp_path):
    """v1 may mount cpu and cpuacct together as cpu,cpuacct with no cpu link (found by the breaker)."""
    root = tree(tmp_path / "cg", {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cpu_quota(root, proc(tmp_path, "3:cpu,cpuacct:/\n")) == 2.5


PROBE = (
    "import json, torch; from lora_app import container as c; c.cap_torch_threads(); "
    "print(json.dumps([c.cpu_quota(), c.usable_cores(), c.ram()[0], torch.get_num_threads()]))"
)


def _make_cgroup() -> tuple[Path, Path, str] | None:
    """A fresh cgroup with a 1-CPU quota and a 3 GiB memory limit on this machine's real kernel
    (v2, or v1's cpu and memory hierarchies): (cpu dir, memory dir, procs file name), or None."""
    name = f"lora_app_test_{uuid.uuid4().hex[:8]}"
    base = Path("/sys/fs/cgroup")
    try:
        if (base / "cgroup.controllers").is_file():  # v2
            d = base / name
            d.mkdir()
            (d / "cpu.max").write_text("100000 100000")
            (d / "memory.max").write_text(str(3 * GiB))
            return d, d, "cgroup.procs"
        cpu, mem = base / "cpu" / name, base / "memory" / name
        cpu.mkdir()
        mem.mkdir()
        (cpu / "cpu.cfs_quota_us").write_text("100000")
        (mem / "memory.limit_in_bytes").write_text(str(3 * GiB))
        return cpu, mem, "cgroup.procs"
    except OSError:
        for d in (base / name, base / "cpu" / name, base / "memory" / name):
            if d.is_dir():
                d.rmdir()
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_real_cgroups_quota_and_limit_reach_torch_and_the_ram_figures():
    """Where a test may make a cgroup (root on a writable hierarchy, as on this project's machines):
    a process moved into one with a 1-CPU quota and 3 GiB reads both, and torch runs 1 thread."""
    made = _make_cgroup()
    if made is None:
        pytest.skip("no writable cgroup hierarchy here (not root, or a read-only /sys/fs/cgroup)")
    cpu, mem, procs = made
    try:
        # the child moves itself in before torch starts its thread pool
        code = f"import os; [open(p, 'w').write(str(os.getpid())) for p in {[str(cpu / procs), str(mem / procs)]!r}]; {PROBE}"
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        quota, cores, total, threads = json.loads(out.stdout.strip().splitlines()[-1])
        assert (quota, cores, total, threads) == (1.0, 1, 3 * GiB, 1)
    finally:
        for d in {cpu, mem}:
            d.rmdir()

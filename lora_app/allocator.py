"""Which memory allocator a training process runs on: ``LORA_APP_MALLOC`` (auto | tcmalloc | jemalloc | system).

Why: a CPU training step allocates and frees tensors of a few MB thousands of times. glibc's malloc
serves them from its heap once its dynamic mmap threshold has grown (up to 32 MiB after the first
large frees: ``man mallopt``, M_MMAP_THRESHOLD) and returns little of it, so the process's peak RSS
is far above what torch holds. Measured (bench/RESULTS.md "Session 9"): SmolLM2-135M, LoRA on every
linear layer, float32, 16 x 128 tokens: peak RSS 5.3-5.6 GiB with glibc, 3.4 GiB with tcmalloc or
jemalloc; s/step 9.3-10.7 glibc, 7.9-8.8 tcmalloc, 9.6-10.5 jemalloc. A fixed glibc threshold
(``MALLOC_MMAP_THRESHOLD_``) gives the same memory at 1.5x the time (a page fault for every page of
every new tensor), so it is not offered.

``auto`` takes tcmalloc (faster and smaller), else jemalloc (smaller), else glibc. It works by
``LD_PRELOAD`` of the library into the training process when the job manager starts it (the web
server itself is not changed), the practice of PyTorch's own CPU launcher
(``torch.backends.xeon.run_cpu --enable-tcmalloc``; PyTorch's CPU performance tuning guide). The
libraries come from the system: Debian/Ubuntu ``libtcmalloc-minimal4`` or ``libjemalloc2``
(``packages.txt`` on a Space). Without them everything works as before, on glibc.
"""

from __future__ import annotations

import glob
import os
import platform
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ENV = "LORA_APP_MALLOC"
CHOICES = ("auto", "tcmalloc", "jemalloc", "system")
#: The library names each allocator ships as, best first (gperftools' minimal build has no profiler).
LIBS = {"tcmalloc": ("tcmalloc_minimal", "tcmalloc"), "jemalloc": ("jemalloc",)}


@dataclass(frozen=True)
class Plan:
    """``name``: "tcmalloc", "jemalloc" or "system"; ``library``: what goes into ``LD_PRELOAD``
    (the library's path), None for the system's; ``reason``: one line."""

    name: str
    library: str | None
    reason: str


def _lib_dirs() -> list[str]:
    # Where the dynamic loader and PyTorch's launcher look (torch.backends.xeon.run_cpu globs these
    # too), without running ldconfig: a subprocess per Start, and one a test's stub of Popen breaks.
    arch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    dirs += [str(Path(p) / "lib") for p in (os.environ.get("CONDA_PREFIX"), sys.prefix, sys.base_prefix) if p]
    dirs += [
        "/usr/local/lib",
        "/usr/local/lib64",
        f"/usr/lib/{arch}",
        f"/lib/{arch}",
        "/usr/lib64",
        "/usr/lib",
        "/lib64",
    ]
    return list(dict.fromkeys(dirs))


def find(name: str) -> str | None:
    """The path of allocator ``name``'s library ("tcmalloc" or "jemalloc") on this machine, or None:
    the first ``lib<name>.so*`` in ``LD_LIBRARY_PATH``, this Python's (or conda's) lib folder, then
    the system's library folders (Debian's multiarch one included)."""
    for lib in LIBS[name]:
        for d in _lib_dirs():
            hits = sorted(glob.glob(os.path.join(glob.escape(d), f"lib{lib}.so*")))
            if hits:
                return hits[0]
    return None


def plan(setting: str | None = None) -> Plan:
    """What the next training process gets, from ``setting`` (default: ``$LORA_APP_MALLOC``, else
    "auto"). An unknown setting, or a named allocator not installed, falls back to the system's
    with the reason saying so; nothing raises."""
    setting = (setting if setting is not None else os.environ.get(ENV, "") or "auto").strip().lower()
    if setting not in CHOICES:
        return Plan(
            "system", None, f"memory allocator: the system's ({ENV}={setting!r} is not one of {', '.join(CHOICES)})"
        )
    if setting == "system":
        return Plan("system", None, f"memory allocator: the system's ({ENV}=system)")
    for name in ("tcmalloc", "jemalloc") if setting == "auto" else (setting,):
        lib = find(name)
        if lib:
            why = "auto: tcmalloc first, the faster" if setting == "auto" else f"{ENV}={setting}"
            return Plan(name, lib, f"memory allocator: {name} ({lib}; {why})")
    missing = "neither tcmalloc nor jemalloc is installed" if setting == "auto" else f"{setting} is not installed"
    return Plan(
        "system",
        None,
        f"memory allocator: the system's ({missing}: peak memory can be ~1.6x; apt-get install "
        "libtcmalloc-minimal4, or libjemalloc2)",
    )


def child_env(env: dict[str, str], setting: str | None = None) -> tuple[dict[str, str], Plan]:
    """``env`` for a training process with the planned allocator preloaded (a copy; ``env`` is not
    changed). An ``LD_PRELOAD`` already naming an allocator is left as the user set it."""
    p = plan(setting if setting is not None else env.get(ENV))
    preload = env.get("LD_PRELOAD", "")
    if p.library is None:
        return dict(env), p
    if any(k in preload for k in ("tcmalloc", "jemalloc", "mimalloc")):
        return dict(env), Plan(p.name, None, f"memory allocator: as LD_PRELOAD sets it ({preload})")
    out = {**env, "LD_PRELOAD": f"{p.library} {preload}".strip()}
    if p.name == "tcmalloc":  # else it writes "tcmalloc: large alloc ..." to the log for each >= 1 GiB
        out.setdefault("TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", str(1 << 62))
    return out, p


def in_use(maps: str | Path = "/proc/self/maps") -> str:
    """The allocator this process runs on, read from its mapped libraries: "tcmalloc", "jemalloc",
    "mimalloc" or "system" (also where ``maps`` cannot be read, e.g. not Linux)."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return "system"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if f"lib{name}" in text:
            return name
    return "system"


def report() -> str:
    """The training log's line: the allocator this process really runs on, and why."""
    name, p = in_use(), plan()
    if name == p.name:
        return p.reason
    if name != "system":
        return f"memory allocator: {name} (LD_PRELOAD)"
    return f"memory allocator: the system's ({p.name} is installed but this process was not started with it)"

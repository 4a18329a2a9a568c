"""The training process's memory allocator (lora_app/allocator.py): what is planned is what a child
started by the job manager really runs on, and every setting ends in a plan with its reason."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

from lora_app import allocator

PROBE = "from lora_app import allocator; print(allocator.in_use()); print(allocator.report())"


def child(env: dict[str, str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_every_setting_gives_a_plan_and_a_reason():
    assert allocator.plan("system") == allocator.Plan("system", None, "memory allocator: the system's (LORA_APP_MALLOC=system)")
    bad = allocator.plan("tcmaloc")
    assert bad.name == "system" and bad.library is None
    assert "LORA_APP_MALLOC='tcmaloc' is not one of auto, tcmalloc, jemalloc, system" in bad.reason
    for setting in ("auto", "AUTO ", "tcmalloc", "jemalloc"):
        p = allocator.plan(setting)
        assert p.name in ("tcmalloc", "jemalloc", "system") and p.reason.startswith("memory allocator: ")
        assert (p.library is None) == (p.name == "system")
        if p.name == "system":  # not installed here: the line says how to get it
            assert "apt-get install libtcmalloc-minimal4" in p.reason
    # auto prefers tcmalloc (faster, bench/RESULTS.md) whenever it is installed
    assert allocator.plan("auto").name == ("tcmalloc" if allocator.find("tcmalloc") else allocator.plan("jemalloc").name)


def test_an_unreadable_maps_file_means_the_systems(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("7f0 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert allocator.in_use(maps) == "jemalloc"
    assert allocator.in_use(tmp_path / "missing") == "system"


@pytest.mark.skipif(not allocator.find("tcmalloc"), reason="tcmalloc not installed (apt-get install libtcmalloc-minimal4)")
def test_a_child_started_with_child_env_runs_on_tcmalloc_and_system_means_glibc():
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    env, p = allocator.child_env(base)
    assert p.name == "tcmalloc" and env["LD_PRELOAD"].split()[0] == p.library and "LD_PRELOAD" not in base
    assert env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] == str(1 << 62)  # no "large alloc" lines in train.log
    assert child(env) == ["tcmalloc", f"memory allocator: tcmalloc ({p.library}; auto: tcmalloc first, the faster)"]
    # The same environment without the preload (how the app ran before): glibc, and the log says why
    assert child(base) == [
        "system",
        "memory allocator: the system's (tcmalloc is installed but this process was not started with it)",
    ]
    env, p = allocator.child_env({**base, allocator.ENV: "system"})
    assert "LD_PRELOAD" not in env and p.name == "system"
    assert child(env) == ["system", "memory allocator: the system's (LORA_APP_MALLOC=system)"]


@pytest.mark.skipif(not allocator.find("jemalloc"), reason="jemalloc not installed (apt-get install libjemalloc2)")
def test_a_users_own_preload_is_kept():
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", allocator.ENV)}
    mine = {**base, "LD_PRELOAD": allocator.find("jemalloc") or ""}
    env, p = allocator.child_env(mine)
    assert env["LD_PRELOAD"] == mine["LD_PRELOAD"] and p.library is None and "as LD_PRELOAD sets it" in p.reason
    assert child(env)[0] == "jemalloc"

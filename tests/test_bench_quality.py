"""bench/bench_quality.py works before it is run for real: its --dry-run (a tiny model, 4 steps a
recipe, the app's own training process) gives a held-out perplexity curve for the reference recipe,
the fast default and the rsLoRA / DoRA variants, with the machine and the load recorded."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_bench_quality_dry_run(tmp_path, tiny_model):
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path / "results"), "TMPDIR": str(tmp_path)}
    cmd = [sys.executable, "bench/bench_quality.py", "--dry-run", "--model", str(tiny_model)]
    cmd += ["--recipes", "reference recipe", "--variants", "dora"]  # two training processes: ~1 min
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out,) = (tmp_path / "results").glob("quality-cpu-*.json")
    res = json.loads(out.read_text())
    assert res["dry_run"] and res["heldout_rows"] == 16 and res["train_rows"] == 32
    assert res["machine"]["cpu_flags"] and "loadavg_1m" in res["machine"]
    assert [r["recipe"] for r in res["results"]] == ["reference recipe", "fast default + dora"]
    for r in res["results"]:
        assert r["status"] == "finished" and r["steps_done"] == 4
        assert [p["step"] for p in r["curve"]] == [2, 4]  # evaluated every 2 steps and at the end
        assert all(math.isfinite(p["perplexity"]) and p["perplexity"] < r["base_perplexity"] for p in r["curve"])
        assert 0 < r["curve"][0]["train_s"] < r["curve"][1]["train_s"] < r["process_wall_s"]
        assert r["loadavg_start"] is not None
    ref, dora = res["results"]
    assert ref["config"]["training"]["learning_rate"] == 2e-4 and dora["config"]["training"]["learning_rate"] == 3e-4
    assert dora["config"]["lora"]["use_dora"] is True and ref["config"]["lora"]["use_dora"] is False
    assert res["reference_target"] == ref["curve"][-1]
    assert "first at or below the reference" in proc.stdout
    assert not list(tmp_path.glob("bench-quality-*"))  # run folders removed


def test_candidates_and_set_pairs_parse_as_yaml_values():
    sys.path.insert(0, str(REPO / "bench"))
    from bench_quality import parse_pairs

    got = parse_pairs("training.learning_rate=2e-3,training.max_steps=40,lora.use_dora=true".split(","))
    assert got == {"training": {"learning_rate": 2e-3, "max_steps": 40}, "lora": {"use_dora": True}}
    with pytest.raises(ValueError, match="expected SECTION.FIELD=VALUE"):
        parse_pairs(["learning_rate=2e-3"])

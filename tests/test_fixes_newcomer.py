"""Bugs found by a newcomer tester (one test per bug, named after the behaviour)."""

import subprocess
import sys

import pytest

from conftest import EXAMPLE_QUOTES, REPO


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lora_app", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    """A run folder trained to its end (2 steps) on the tiny model."""
    from lora_app.config import RunConfig
    from lora_app.train import train

    rd = tmp_path_factory.mktemp("finished") / "run"
    rd.mkdir()
    RunConfig.build({"data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
                     "model": {"base_model_name_or_path": str(tiny_model)},
                     "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                     "training": {"max_steps": 2, "save_steps": 2, "max_length": 32,
                                  "per_device_train_batch_size": 4}}).save(rd / "config.yaml")
    assert train(rd) == 0
    return rd


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


# -- bug 2
def test_cli_resume_of_a_finished_run_is_refused_and_writes_nothing(finished_run):
    before = _snapshot(finished_run)
    r = _cli("train", str(finished_run), "--resume")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "only a stopped or failed run can be resumed" in r.stderr
    assert "Traceback" not in r.stderr
    assert _snapshot(finished_run) == before


# -- bug 8
def test_cli_train_on_a_folder_that_is_not_a_run_says_so_and_writes_nothing(tmp_path):
    missing = tmp_path / "nope"
    r = _cli("train", str(missing))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "does not exist" in r.stderr and not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = _cli("train", str(empty))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "is not a run folder (it holds no config.yaml)" in r.stderr
    assert list(empty.iterdir()) == []

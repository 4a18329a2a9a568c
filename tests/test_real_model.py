"""End to end on the real bundled SmolLM2-135M-Instruct and the real quotes, through the job
queue and the training subprocess, exactly as the Start button runs it."""

import json
import time

import pytest

from lora_app.config import RunConfig
from lora_app.heldout import perplexity

HELD_OUT = 150  # the last quotes of the file; never trained on


@pytest.mark.slow
def test_real_run_lowers_held_out_perplexity(tmp_path, jobs, bundled_model):
    import torch
    from conftest import QUOTES
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_app.generate import Generator

    rows = [json.loads(line) for line in QUOTES.read_text(encoding="utf-8").splitlines() if line.strip()]
    train_rows, held = rows[:-HELD_OUT], [r["quote"] for r in rows[-HELD_OUT:]]
    assert not set(held) & {r["quote"] for r in train_rows}
    data = tmp_path / "quotes_train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train_rows), encoding="utf-8")

    cfg = RunConfig.build(
        {
            "data": {"path": str(data)},  # default model: HuggingFaceTB/SmolLM2-135M-Instruct (bundled)
            "training": {
                "max_steps": 40,
                "warmup_steps": 4,
                "learning_rate": 1e-3,
                "max_length": 96,
                "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "save_steps": 20,
                "eval_max_rows": 40,
            },
        }
    )  # the run's own held-out set: 40 rows keep its two evaluations short
    t0 = time.time()
    run_id = jobs.submit(cfg, owner="test")
    while jobs.get(run_id).status in ("queued", "running"):
        assert time.time() - t0 < 900, "real run took over 15 minutes"
        time.sleep(1)
    info = jobs.get(run_id)
    assert info.status == "finished", (info.message, (jobs.run_dir(run_id) / "train.log").read_text()[-3000:])
    events = [json.loads(x) for x in (jobs.run_dir(run_id) / "events.jsonl").read_text().splitlines()]
    logs = [e for e in events if e["type"] == "log"]
    progress = [e for e in events if e["type"] == "progress"]
    train_s = progress[-1]["elapsed_s"]

    ad = jobs.run_dir(run_id) / "adapter"
    adapter_cfg = json.loads((ad / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in (ad / "README.md").read_text()

    tok = AutoTokenizer.from_pretrained(bundled_model)
    base = AutoModelForCausalLM.from_pretrained(bundled_model, dtype=torch.float32)
    before = perplexity(base, tok, held, max_length=96)
    tuned = PeftModel.from_pretrained(base, ad)
    after = perplexity(tuned, tok, held, max_length=96)
    print(
        f"\nREAL RUN: 40 steps x batch 4 (max_length 96, packing, lr 1e-3, r=16/alpha 32 with rsLoRA, q_proj,v_proj) "
        f"in {train_s:.1f} s = {train_s / 40:.2f} s/step, {logs[-1]['tokens']} label tokens; "
        f"first loss {logs[0]['loss']:.3f} -> last {logs[-1]['loss']:.3f}; "
        f"held-out perplexity ({HELD_OUT} quotes) before {before:.2f} -> after {after:.2f}"
    )
    assert after < 0.85 * before
    # The run's own held-out evaluation (5% of the rows, the Trainer's evaluation): base, then lower.
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[0]["base"] and evals[0]["step"] == 0 and evals[-1]["step"] == 40, evals
    assert evals[-1]["perplexity"] < 0.9 * evals[0]["perplexity"], evals
    assert "held-out perplexity" in info.message, info.message
    print(f"RUN'S OWN EVAL: {[(e['step'], round(e['perplexity'], 2)) for e in evals]}")

    gen = Generator()
    text = list(gen.stream("Two things are infinite: ", adapter=str(ad), max_new_tokens=24))[-1]
    print(f"COMPLETION: Two things are infinite: {text!r}")
    assert len(text.strip()) > 5

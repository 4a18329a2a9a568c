"""Held-out evaluation: the split, the Trainer's own evaluation (token-weighted), the numbers in
the log, the Runs view, the model card; bad inputs at preflight."""

import json
import math

import pytest
import yaml
from tiny import sample_texts

from lora_app.config import ConfigError, DataConfig, RunConfig, TrainingSettings
from lora_app.events import RunView, read_events
from lora_app.heldout import perplexity, split
from lora_app.train import train


def test_split_fraction_cap_seed_and_too_small():
    texts = [f"row {i}" for i in range(400)]
    ho = split(texts, DataConfig(path="x.jsonl"), TrainingSettings(), "text")
    assert len(ho.eval) == 20 and len(ho.train) == 380 and not set(ho.eval) & set(ho.train)
    assert ho.eval == split(texts, DataConfig(path="x.jsonl"), TrainingSettings(), "text").eval  # seeded
    assert "20 rows (5% of 400 rows)" in ho.note
    big = split([f"r{i}" for i in range(10_000)], DataConfig(path="x"), TrainingSettings(), "text")
    assert len(big.eval) == 200 and "capped at 200" in big.note
    small = split(texts[:32], DataConfig(path="x"), TrainingSettings(), "text")
    assert small.eval == [] and small.train == texts[:32]
    assert small.note.startswith("No held-out evaluation: 5% of 32 rows is 1 row, fewer than the 5")
    off = split(texts, DataConfig(path="x"), TrainingSettings(eval_fraction=0), "text")
    assert off.eval == [] and "off" in off.note
    exact = split(texts, DataConfig(path="x"), TrainingSettings(eval_rows=7), "text")
    assert len(exact.eval) == 7 and len(exact.train) == 393


def test_eval_rows_larger_than_the_data_is_a_preflight_problem(tiny_model):
    from conftest import EXAMPLE_QUOTES

    from lora_app.validate import preflight

    raw = {
        "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 32},
        "model": {"base_model_name_or_path": str(tiny_model)},
        "training": {"eval_rows": 40},
    }
    with pytest.raises(ConfigError) as err:
        preflight(raw)
    assert err.value.problems == [
        "training.eval_rows: 40 held-out rows asked, but the data has only 32 rows (at least one must remain to "
        "train on). Fix: set eval_rows below 32, or leave it empty to hold out eval_fraction (0.05)."
    ]
    raw["training"] = {}
    _, pre = preflight(raw)  # too small for 5%: no problem, but the page says so
    assert any(n.startswith("No held-out evaluation: 5% of 32 rows is 1 row") for n in pre.notes)


def test_second_file_as_the_held_out_set(tmp_path, tiny_model):
    from conftest import EXAMPLE_QUOTES

    from lora_app.validate import preflight

    ev = tmp_path / "held.csv"
    ev.write_text("quote\n" + "".join(f'"held {i}"\n' for i in range(12)), encoding="utf-8")
    raw = {
        "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 50, "eval_path": str(ev)},
        "model": {"base_model_name_or_path": str(tiny_model)},
    }
    _, pre = preflight(raw)
    assert "Held-out evaluation on 12 rows of the file 'held.csv'." in pre.notes
    raw["data"]["eval_path"] = str(tmp_path / "missing.csv")
    with pytest.raises(ConfigError) as err:
        preflight(raw)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("data.eval_path: ")
    assert "data.path" not in err.value.problems[0] and "Fix:" in err.value.problems[0]
    raw["data"] = {"path": str(EXAMPLE_QUOTES), "eval_split": "validation"}
    with pytest.raises(ConfigError) as err:
        preflight(raw)
    assert err.value.problems == [
        "data.eval_split: 'validation' names a split of a Hub dataset, but the data is a "
        "file. Fix: give the held-out rows as a second file (data.eval_path), or leave it empty."
    ]


@pytest.mark.parametrize(
    "packing,accumulation", [(True, 1), (False, 1), (True, 2)], ids=["packed", "padded", "packed-merged-microbatches"]
)
def test_run_reports_held_out_loss_perplexity_before_during_after(tmp_path, tiny_model, packing, accumulation):
    """Base perplexity at step 0, then every eval_steps and at the end; the number is exp of the
    token-weighted held-out loss, equal to a plain no-grad loop over the same rows, packed or not."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"quote": t}) + "\n" for t in sample_texts(100)), encoding="utf-8")
    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(data)},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "lora": {
                "r": 8,
                "lora_alpha": 16,
                "lora_dropout": 0.0,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            },
            "training": {
                "max_steps": 12,
                "warmup_steps": 0,
                "learning_rate": 3e-2,
                "max_length": 48,
                "per_device_train_batch_size": 8 // accumulation,
                "gradient_accumulation_steps": accumulation,
                "save_steps": 12,
                "eval_fraction": 0.1,
                "eval_steps": 5,
                "packing": packing,
            },
        }
    ).save(rd / "config.yaml")
    keep = {}
    assert train(rd, keep=keep) == 0
    events, _ = read_events(rd)
    evals = [e for e in events if e["type"] == "eval"]
    assert [(e["step"], e["base"]) for e in evals] == [(0, True), (5, False), (10, False), (12, False)]
    ppl = [e["perplexity"] for e in evals]
    assert ppl[0] > ppl[1] > ppl[-1] and ppl[-1] < 0.95 * ppl[0], ppl
    for e in evals:
        assert e["perplexity"] == pytest.approx(math.exp(e["eval_loss"]), rel=1e-9)

    plan = next(e for e in events if e["type"] == "info" and "merged" in e)
    assert plan["merged"] == (accumulation > 1)  # on CPU the 2 micro-batches run as one forward of 8 rows
    info = next(e for e in events if e["type"] == "info" and "eval_rows" in e)
    assert info["eval_rows"] == 10 and "10 rows (10% of 100 rows)" in info["message"]
    ho = split(sample_texts(100), DataConfig(path=str(data)), TrainingSettings(eval_fraction=0.1), "quote")
    want = perplexity(keep["model"], keep["tokenizer"], ho.eval, max_length=48)
    assert abs(ppl[-1] - want) < 1e-3 * want, (ppl[-1], want)  # token-weighted, packing or not

    final = [e for e in events if e["type"] == "status"][-1]
    assert final["status"] == "finished"
    assert f"held-out perplexity {ppl[0]:.1f} -> {ppl[-1]:.1f}" in final["message"]
    assert final["perplexity"] == ppl[-1]
    # Training tokens per step are not inflated by the held-out rows.
    assert [e for e in events if e["type"] == "log"][-1]["tokens"] < 12 * 8 * 48

    view = RunView()
    view.update(rd)
    assert view.evals[0] == (0, evals[0]["eval_loss"]) and len(view.evals) == 4
    assert any("held-out (base model, before training): eval_loss" in line for line in view.lines)

    readme = (rd / "adapter" / "README.md").read_text()
    meta = yaml.safe_load(readme.split("---")[1])
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "perplexity", "value": round(ppl[-1], 4), "name": "held-out perplexity"}
    assert f"| base model (before training) | {ppl[0]:.2f} |" in readme


def test_loss_frame_and_runs_cells(tmp_path):
    from lora_app.ui.common import loss_frame

    df = loss_frame([(1, 3.0), (2, 2.5)], [(0, 3.2), (2, 2.7)])
    assert list(df["series"]) == ["training", "training", "held-out", "held-out"]
    assert list(df["loss"]) == [3.0, 2.5, 3.2, 2.7]


def test_hub_split_as_the_held_out_set(hub_server):
    """data/train.jsonl + data/validation.jsonl on the (fake) Hub: the validation split is the
    held-out set; an unknown split is a problem named data.eval_split."""
    import datasets  # noqa: F401  (conftest turns off the parquet-export lookup once imported)
    from conftest import EXAMPLE_QUOTES

    from lora_app.data import load_text

    lines = EXAMPLE_QUOTES.read_text().splitlines()
    hub_server.add_file("dataset", "alice/q", "data/train.jsonl", "\n".join(lines[:30]) + "\n")
    hub_server.add_file("dataset", "alice/q", "data/validation.jsonl", "\n".join(lines[30:42]) + "\n")
    data = DataConfig(dataset_id="alice/q", eval_split="validation")
    td = load_text(data)
    ho = split(td.texts, data, TrainingSettings(), td.text_column)
    assert ho.train == td.texts and len(td.texts) == 30
    assert ho.eval == [json.loads(x)["quote"] for x in lines[30:42]]
    assert ho.note == "Held-out evaluation on 12 rows of the split 'validation'."
    with pytest.raises(ConfigError) as err:
        split(td.texts, DataConfig(dataset_id="alice/q", eval_split="test"), TrainingSettings(), td.text_column)
    assert err.value.problems[0].startswith("data.eval_split: ") and "data.split" not in err.value.problems[0]
    assert "Fix:" in err.value.problems[0]


def test_evaluating_does_not_change_the_training(tmp_path, tiny_model):
    """The same run evaluated every step and evaluated only at its end trains the same adapter, bit
    for bit, with dropout on (each evaluation's DataLoader drew a seed from torch's random state, so
    the dropout masks after it, and the run, followed ``eval_steps``: 51.3 vs 59.0 held-out perplexity
    at step 10 of the fast default on SmolLM2, evaluated every 10 vs every 5 steps)."""
    import torch
    from safetensors.torch import load_file
    from test_train import make_run

    weights = []
    for every in (1, 100):
        (tmp_path / str(every)).mkdir()
        rd = make_run(tmp_path / str(every), tiny_model, max_steps=4, save_steps=4, eval_fraction=0.2, eval_steps=every)
        cfg = RunConfig.load(rd / "config.yaml")
        cfg.lora.lora_dropout = 0.1
        cfg.save(rd / "config.yaml")
        assert train(rd) == 0
        evals = [e for e in read_events(rd)[0] if e["type"] == "eval"]
        assert len(evals) == (5 if every == 1 else 2)  # the base model's, then each of 4 steps' / the last's
        weights.append(load_file(str(rd / "adapter" / "adapter_model.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

"""Merge and export: merge_and_unload into the base (float32, and a 4-bit-trained adapter into the
unquantized base), verified against base + adapter, sharded safetensors that plain transformers
reloads; bad inputs; push of the merged model to the local fake Hub."""

import json
import shutil
from collections import namedtuple

import pytest
import torch
import yaml
from test_train import make_run

from lora_app import merge
from lora_app.config import ConfigError
from lora_app.train import train


def _trained(tmp_path, base, quant=None):
    rd = make_run(tmp_path, base, max_steps=6, save_steps=6)
    if quant:
        cfg = yaml.safe_load((rd / "config.yaml").read_text())
        cfg["model"]["quantization"] = quant
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert train(rd) == 0
    return rd


def _complete(folder, prompt="Two things are infinite: "):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    return model, out[0, ids.shape[1] :]


@pytest.mark.parametrize("quant", [None, "4bit"], ids=["float32-base", "4bit-trained"])
def test_merge_matches_base_plus_adapter_and_reloads_plainly(tmp_path, tiny_model, monkeypatch, quant):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(merge, "MAX_SHARD", "150KB")  # the tiny model (~0.4 MB) then has several shards
    rd = _trained(tmp_path, tiny_model, quant)
    lines = []
    res = merge.merge_run(rd, progress=lines.append)
    assert res.ok and res.tokens_equal == res.prompts == 3 and res.dtype == "float32"
    assert res.max_logit_diff < 1e-4, res.max_logit_diff
    assert [l.split(" ")[0] for l in lines] == ["loading", "merging", "saving", "checking:", "done"]
    assert (quant is not None) == (merge.QUANTIZED_NOTE in res.notes)

    out = rd / "merged"
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    for f in ("config.json", "generation_config.json", "tokenizer.json", "README.md", "merge_check.json"):
        assert (out / f).is_file(), f
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # merged into full-precision weights, never into 4-bit ones
    card = (out / "README.md").read_text()
    assert str(tiny_model.resolve()) in card and f"lora_app run `{rd.name}`" in card
    assert ("trained on a 4bit base" in card) == (quant == "4bit")

    merged, new = _complete(out)  # plain transformers, no PEFT
    assert len(new) == 8
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_model)
        base_logits = base(input_ids=ids).logits
        want = PeftModel.from_pretrained(base, rd / "adapter")(input_ids=ids).logits
        got = merged(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-4
    assert (got - base_logits).abs().max().item() > 1e-3  # the adapter is really in there


def test_merge_refuses_a_failed_run_without_adapter_and_a_bad_dtype(tmp_path, tiny_model):
    rd = make_run(tmp_path, tiny_model)
    (rd / "events.jsonl").write_text(
        json.dumps({"type": "status", "time": 0, "status": "failed", "message": "boom"}) + "\n"
    )
    with pytest.raises(ConfigError) as err:
        merge.merge_run(rd, dtype="int8")
    assert err.value.problems == [
        "merge.dtype: 'int8' is not one of bfloat16, float16, float32. Fix: pick one of them.",
        f"merge: run '{rd.name}' has no saved adapter (its status: failed), so there is nothing to merge. "
        "Fix: pick a run that finished, or was stopped after its first save.",
    ]
    assert not (rd / "merged").exists()


def test_merge_checks_disk_space_before_loading(tmp_path, tiny_model, monkeypatch):
    rd = _trained(tmp_path, tiny_model)
    real = shutil.disk_usage
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(merge.shutil, "disk_usage", lambda p: Usage(real(p).total, real(p).total, 10_000_000))
    loaded = []
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **k: loaded.append(a))
    with pytest.raises(ConfigError) as err:
        merge.merge_run(rd)
    need = merge.estimate_bytes(__import__("transformers").AutoConfig.from_pretrained(tiny_model), "float32")
    assert err.value.problems[0].startswith(f"merge: the merged model needs about {need / 1e9:.2f} GB (float32) in ")
    assert "only 0.01 GB is free" in err.value.problems[0] and not loaded and not (rd / "merged").exists()


def test_estimate_bytes_is_the_parameter_count(tiny_model):
    from transformers import AutoConfig, AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model)
    n = sum(p.numel() for p in m.parameters())  # parameters() yields a tied weight once
    mc = AutoConfig.from_pretrained(tiny_model)
    assert merge.estimate_bytes(mc, "float32") == 4 * n and merge.estimate_bytes(mc, "bfloat16") == 2 * n


def test_cli_merge_then_push_to_the_hub_and_load_back(hub_server, tmp_path, tiny_model, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM

    from lora_app.__main__ import main
    from lora_app.hub_client import HubError
    from lora_app.models import HUB_ID_FILE

    base = tmp_path / "tiny-llama"
    shutil.copytree(tiny_model, base)
    (base / HUB_ID_FILE).write_text("lora-app-test/tiny-llama")
    rd = _trained(tmp_path, base)
    monkeypatch.setenv("LORA_APP_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("HF_TOKEN", "hf_alice")
    assert main(["merge", str(rd), "--dtype", "float32", "--push", "alice/tiny-merged"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "uploading" in out and " GB, to alice/tiny-merged" in out
    model = AutoModelForCausalLM.from_pretrained("alice/tiny-merged", token="hf_alice")
    local = AutoModelForCausalLM.from_pretrained(rd / "merged")
    ids = torch.tensor([[5, 17, 42]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, local(input_ids=ids).logits)
    from huggingface_hub import hf_hub_download

    card = open(hf_hub_download("alice/tiny-merged", "README.md", token="hf_alice")).read()
    assert "base_model: lora-app-test/tiny-llama" in card and 'from_pretrained("alice/tiny-merged")' in card

    check = json.loads((rd / "merged" / "merge_check.json").read_text())
    (rd / "merged" / "merge_check.json").write_text(json.dumps({**check, "ok": False}))
    with pytest.raises(HubError) as err:
        merge.push_merged(rd, "alice/tiny-merged-2", token="hf_alice", progress=lambda s: None)
    assert "failed its check" in err.value.problems[0] and "not pushed" in err.value.problems[0]
    with pytest.raises(HubError) as err:  # the adapter push's Hub checks: someone else's namespace
        (rd / "merged" / "merge_check.json").write_text(json.dumps(check))
        merge.push_merged(rd, "bob/x", token="hf_alice", progress=lambda s: None)
    assert err.value.problems[0].startswith("hub.repo_id: you cannot push to 'bob/x'")


def test_runs_tab_merge_button_runs_the_merge_process_for_the_owner_only(tmp_path, tiny_model, jobs):
    import time

    from test_train import make_run

    from lora_app.config import RunConfig
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    cfg = RunConfig.load(make_run(tmp_path, tiny_model, max_steps=4, save_steps=4) / "config.yaml")
    from lora_app import identity

    me, _ = identity.issue(identity.signing_key(jobs.root))  # a visitor's server-issued id
    someone_else, _ = identity.issue(identity.signing_key(jobs.root))
    run_id = jobs.submit(cfg, owner=me)
    t0 = time.time()
    while jobs.get(run_id).status in ("queued", "running"):
        assert time.time() - t0 < 300
        time.sleep(0.5)
    assert jobs.get(run_id).status == "finished"
    demo = build_app(AppContext(jobs, None, frozenset()))
    on_merge = next(bf.fn for bf in demo.fns.values() if bf.fn is not None and bf.fn.__name__ == "on_merge")
    (refused,) = on_merge(run_id, someone_else, "default", "", True)
    assert refused.startswith(f"No run `{run_id}` of yours.")
    outs = list(on_merge(run_id, me, "float32", "", True))
    text = outs[-1]
    assert text.endswith("**Done.**"), text
    for phase in (
        "loading the base model",
        "merging (merge_and_unload)",
        "saving sharded safetensors",
        "checking: reloading",
        "verified",
    ):
        assert phase in text, (phase, text)
    assert merge.merge_check(jobs.run_dir(run_id))["ok"]

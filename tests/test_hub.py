"""The Hub side of the app against the local fake Hub (tests/hub_server.py): push a trained adapter
and load it back, Hub datasets, every failure's message, the adapter left untouched, Try from the
Hub, side by side, left-padded batches, and no token ever written to disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path

import datasets  # noqa: F401  (imported early so conftest can turn off the parquet-export lookup)
import pytest
import torch
import yaml

from lora_app import hub, hub_client
from lora_app.bundled import HUB_ID_FILE
from lora_app.config import ConfigError, DataConfig, RunConfig

ALICE, BOB, ALICE_READ = "hf_alice", "hf_bob", "hf_alice_read"
TOKENS = (ALICE, BOB, ALICE_READ, "hf_wrong_token_123")
BASE_ID = "lora-app-test/tiny-llama"
T0 = time.time()


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub_model(tiny_model, tmp_path_factory) -> Path:
    """A copy of the tiny model folder that knows its Hub id (models.HUB_ID_FILE)."""
    dst = tmp_path_factory.mktemp("hubmodel") / "tiny-llama"
    shutil.copytree(tiny_model, dst)
    (dst / HUB_ID_FILE).write_text(BASE_ID)
    return dst


@pytest.fixture(scope="module")
def run_dir(hub_model, tmp_path_factory) -> Path:
    """One finished run (4 steps on the example quotes) shared by the tests of this module."""
    from test_train import make_run

    from lora_app.train import train

    rd = make_run(tmp_path_factory.mktemp("hubrun"), hub_model, max_steps=4, save_steps=4)
    assert train(rd) == 0
    return rd


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def card_meta(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---", 2)[1])


def upload_base(hub_server, folder: Path, repo_id: str = BASE_ID) -> None:
    for p in folder.iterdir():
        if p.is_file() and p.name != HUB_ID_FILE:
            hub_server.add_file("model", repo_id, p.name, p.read_bytes())


def calls(hub_server, since: int = 0) -> list[str]:
    return [f"{m} {p}" for m, p in hub_server.requests[since:]]


# -- push and load back ----------------------------------------------------------------------------
def test_push_round_trip_and_load_back(hub_server, run_dir, hub_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ad = run_dir / "adapter"
    before = snapshot(run_dir / "adapter")
    repo_id = hub.default_repo_id("alice", run_dir)
    assert repo_id == "alice/tiny-llama-lora-quotes"

    res = hub.push_adapter(run_dir, repo_id, private=True, token=ALICE)
    assert res.url == f"{hub_server.url}/{repo_id}" and res.created and res.private
    push_calls = calls(hub_server)
    stored = hub_server.files("model", repo_id)
    assert set(stored) == {".gitattributes", "adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert stored["adapter_model.safetensors"] == (ad / "adapter_model.safetensors").read_bytes()
    assert json.loads(stored["adapter_config.json"])["base_model_name_or_path"] == BASE_ID
    assert hub_server.repos[("model", repo_id)].private

    card = stored["README.md"].decode()
    meta = card_meta(card)
    assert meta["base_model"] == BASE_ID and meta["library_name"] == "peft"
    assert meta["pipeline_tag"] == "text-generation" and {"lora", "peft", "text-generation"} <= set(meta["tags"])
    assert "datasets" not in meta  # the data was an uploaded file
    for needle in (
        "## LoRA settings",
        "| r | 8 |",
        "## Training settings",
        "final training loss",
        f'PeftModel.from_pretrained(base, "{repo_id}")',
        "quotes.jsonl",
        "text column `quote`",
    ):
        assert needle in card, needle
    assert snapshot(ad) == before  # the local adapter is only read

    # Load it back from the Hub: same logits as the local adapter.
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        base_logits = AutoModelForCausalLM.from_pretrained(hub_model)(input_ids=ids).logits
        local = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hub_model), ad).eval()
        n = len(hub_server.requests)
        remote = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hub_model), repo_id, token=ALICE).eval()
        load_calls = calls(hub_server, n)
        want, got = local(input_ids=ids).logits, remote(input_ids=ids).logits
    assert (got - want).abs().max().item() < 1e-5
    assert (got - base_logits).abs().max().item() > 1e-4

    # Pushing again (a retry, or after training more) is a new commit in the same repo, not an error.
    n = len(hub_server.requests)
    again = hub.push_adapter(run_dir, repo_id, private=True, token=ALICE)
    assert not again.created and again.unchanged and again.url == res.url and "nothing changed" in again.markdown()
    assert hub.last_push(run_dir)["repo_id"] == repo_id
    print(
        "\nHub calls, push:",
        *push_calls,
        "\nHub calls, PeftModel.from_pretrained:",
        *load_calls,
        "\nHub calls, second push:",
        *calls(hub_server, n),
        sep="\n  ",
    )
    assert push_calls[0] == "GET /api/whoami-v2"
    assert "POST /api/validate-yaml" in push_calls and "POST /api/repos/create" in push_calls
    assert push_calls[-1] == f"POST /api/models/{repo_id}/commit/main"


def test_local_base_folder_is_refused_then_fixed_by_giving_the_hub_id(hub_server, run_dir, tiny_model, tmp_path):
    rd = tmp_path / "run"
    shutil.copytree(run_dir, rd)
    cfg_path = rd / "adapter" / "adapter_config.json"
    ac = json.loads(cfg_path.read_text())
    ac["base_model_name_or_path"] = str(tiny_model)
    cfg_path.write_text(json.dumps(ac))
    before = snapshot(rd / "adapter")

    with pytest.raises(hub.HubError) as e:
        hub.push_adapter(rd, "alice/local-base", token=ALICE)
    assert "names the local folder" in str(e.value) and "Base model Hub id" in str(e.value)
    assert hub_server.requests == []  # refused before any Hub call
    with pytest.raises(hub.HubError, match="not a Hub model id"):
        hub.push_adapter(rd, "alice/local-base", token=ALICE, base_model_id="/some/folder")

    hub.push_adapter(rd, "alice/local-base", token=ALICE, base_model_id=BASE_ID)
    stored = hub_server.files("model", "alice/local-base")
    assert json.loads(stored["adapter_config.json"])["base_model_name_or_path"] == BASE_ID
    assert card_meta(stored["README.md"].decode())["base_model"] == BASE_ID
    assert snapshot(rd / "adapter") == before  # only the uploaded copy names the Hub id


@pytest.mark.parametrize(
    "case", ["no-token", "bad-token", "read-only", "other-namespace", "bad-repo-id", "server-down"]
)
def test_push_failures_say_what_to_fix_and_leave_the_adapter_alone(hub_server, run_dir, case):
    ad = run_dir / "adapter"
    before = snapshot(ad)
    repo_id, token, expect = "alice/tiny-lora", ALICE, None
    if case == "no-token":
        token, expect = None, "not logged in"
    elif case == "bad-token":
        token, expect = "hf_wrong_token_123", "rejected your token (401"
    elif case == "read-only":
        token, expect = ALICE_READ, "read-only"
    elif case == "other-namespace":
        hub_server.create_repo("model", "bob/tiny-lora")
        repo_id, expect = "bob/tiny-lora", "you cannot push to 'bob/tiny-lora'"
    elif case == "bad-repo-id":
        repo_id, expect = "alice/tiny lora", "not a valid repo id"
    elif case == "server-down":
        hub_client.forget_cached(ALICE)
        hub_server.stop()
        expect = "could not reach the Hub"
    t = time.time()
    with pytest.raises(hub.HubError) as e:
        hub.push_adapter(run_dir, repo_id, token=token)
    msg = str(e.value)
    assert expect in msg and "Fix:" in msg, msg
    assert time.time() - t < 10  # no long retry loops
    for tok in TOKENS:
        assert tok not in msg
    assert snapshot(ad) == before
    if case != "server-down":
        assert ("model", "alice/tiny-lora") not in hub_server.repos
        assert not any(p.endswith("/commit/main") for _, p in hub_server.requests)
    hub_server.start()
    # fixed: the same push goes through, no retraining
    res = hub.push_adapter(run_dir, "alice/tiny-lora", token=ALICE)
    assert res.url.endswith("/alice/tiny-lora") and snapshot(ad) == before
    if case == "other-namespace":
        assert "adapter_config.json" not in hub_server.files("model", "bob/tiny-lora")


def test_hub_side_refusals_and_network_loss_during_upload(hub_server, run_dir, monkeypatch):
    """What preflight cannot know (an org role, the network dropping mid-push) still ends in a
    clear message, with the adapter untouched, and a retry works."""
    from huggingface_hub import HfApi

    ad = run_dir / "adapter"
    before = snapshot(ad)
    hub_server.create_repo("model", "bob/shared")
    real_whoami = hub.whoami
    monkeypatch.setattr(
        hub, "whoami", lambda token, use_cache=True: hub.User("alice", role="write", orgs={"bob": "write"})
    )
    with pytest.raises(hub.HubError) as e:  # the Hub answers 403 to the commit
        hub.push_adapter(run_dir, "bob/shared", token=ALICE)
    assert "403" in str(e.value) and "Fix:" in str(e.value) and snapshot(ad) == before
    monkeypatch.setattr(hub, "whoami", real_whoami)

    real_upload = HfApi.upload_folder

    def drop_network(self, **kw):
        hub_server.stop()
        return real_upload(self, **kw)

    monkeypatch.setattr(HfApi, "upload_folder", drop_network)
    t = time.time()
    with pytest.raises(hub.HubError) as e:
        hub.push_adapter(run_dir, "alice/midway", token=ALICE)
    print(f"\nnetwork loss during upload -> {time.time() - t:.1f} s: {e.value}")
    assert "could not reach the Hub" in str(e.value) and snapshot(ad) == before
    monkeypatch.setattr(HfApi, "upload_folder", real_upload)
    hub_server.start()
    assert hub.push_adapter(run_dir, "alice/midway", token=ALICE).repo_id == "alice/midway"
    assert set(hub_server.files("model", "alice/midway")) >= {"adapter_model.safetensors", "README.md"}


def test_cli_push(hub_server, run_dir, monkeypatch, tmp_path, capsys):
    from lora_app.__main__ import main

    monkeypatch.setenv("LORA_APP_ENV_FILE", str(tmp_path / "no.env"))
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push", str(run_dir)]) == 1
    assert "not logged in" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", ALICE)
    assert main(["push", str(run_dir), "--private"]) == 0
    out = capsys.readouterr()
    assert f"pushed to {hub_server.url}/alice/tiny-llama-lora-quotes" in out.out and ALICE not in out.out + out.err
    assert hub_server.repos[("model", "alice/tiny-llama-lora-quotes")].private


def test_error_messages_for_each_status():
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    def err(status, msg="nope"):
        req = httpx2.Request("POST", "http://hub.test/api/repos/create")
        resp = httpx2.Response(status, request=req, headers={"X-Error-Message": msg})
        return HfHubHTTPError(f"{status} error", response=resp)

    assert "401" in hub.explain(err(401), "push") and "settings/tokens" in hub.explain(err(401), "push")
    assert "403" in hub.explain(err(403, "no rights"), "push", "bob/x") and "no rights" in hub.explain(
        err(403, "no rights"), "push"
    )
    m409 = hub.explain(err(409, "You already created this model repo"), "create the repo", "alice/x")
    assert "409" in m409 and "another repo name" in m409
    assert "try again" in hub.explain(err(503), "push")
    assert "could not reach the Hub" in hub.explain(httpx2.ConnectError("refused"), "push")
    # a file of this machine that vanished is no network error (a checkpoint push's FileNotFoundError
    # was "could not reach the Hub ... check your internet connection")
    gone = hub.explain(FileNotFoundError(2, "No such file or directory", "/run/checkpoints/x"), "push")
    assert gone == (
        "hub: a local file could not be read while trying to push (FileNotFoundError: [Errno 2] No such file or "
        "directory: '/run/checkpoints/x'). Fix: keep the folder unchanged while it uploads, then try again."
    )


def test_offline_mode_is_named_as_the_reason(monkeypatch):
    """With HF_HUB_OFFLINE set, "check your internet connection" pointed at the wrong fix (found
    by the newcomer): the message names offline mode. (huggingface_hub reads the variable once,
    at import, into constants.HF_HUB_OFFLINE: set there as the variable would.)"""
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    said = hub.explain(OfflineModeIsEnabled("offline"), "load the adapter", "alice/x")
    assert said.startswith("hub: offline mode is on (HF_HUB_OFFLINE is set)") and "internet" not in said, said
    assert "Fix: unset HF_HUB_OFFLINE" in said


def test_card_problems_are_reported(tmp_path, run_dir, hub_server):
    ad = tmp_path / "adapter"  # a bare adapter folder (no run around it): its own README is used
    shutil.copytree(run_dir / "adapter", ad)
    (ad / "README.md").write_text("---\nbase_model: [oops\n---\n# card\n")
    with pytest.raises(hub.HubError, match="YAML metadata does not parse"):
        hub.push_adapter(ad, "alice/x", token=ALICE)
    (ad / "README.md").write_text("---\nbase_model: someone/else\nlibrary_name: transformers\n---\n# card\n")
    with pytest.raises(hub.HubError) as e:
        hub.push_adapter(ad, "alice/x", token=ALICE)
    assert f"set base_model: {BASE_ID}" in str(e.value) and "library_name: peft" in str(e.value)
    (ad / "README.md").write_text(
        f"---\nbase_model: {BASE_ID}\nlibrary_name: peft\n---\n# card\n\n"
        'PeftModel.from_pretrained(base, "<this repo id>")\n'
    )
    hub.push_adapter(ad, "alice/x", token=ALICE)
    assert 'from_pretrained(base, "alice/x")' in hub_server.files("model", "alice/x")["README.md"].decode()


def test_repo_ids():
    assert hub.check_repo_id("alice/SmolLM2-135M-Instruct-lora-quotes") == []
    for bad in ("", "alice", "a/b/c", "alice/-x", "alice/x.git", "alice/a--b", "alice/é"):
        assert hub.check_repo_id(bad) and "Fix:" in hub.check_repo_id(bad)[0], bad
    for s in ("quotes (1).jsonl", "a b//c..d--e", "-x.", "ü/ö"):
        name = hub.sanitize(s)
        assert hub.check_repo_id(f"alice/{name}") == [] or name == "", (s, name)
    # a repo page's address pasted whole, and accented letters: the suggestion is the id meant (the
    # breaker got your-name/https-huggingface.co-alice-x and alice/n)
    for url in ("https://huggingface.co/alice/x", "hf.co/alice/x/tree/main", "https://www.huggingface.co/alice/x?y"):
        assert hub.check_repo_id(url) == [
            f"hub.repo_id: '{url}' is a web address, not a repo id. Fix: write only its owner/name part, e.g. alice/x."
        ]
    assert hub.check_repo_id("alice/ünï")[0].endswith("Fix: e.g. alice/uni.")
    assert hub.sanitize("Café Crème") == "Cafe-Creme"
    assert hub.is_hub_id("gpt2") and hub.is_hub_id(BASE_ID)
    assert not any(hub.is_hub_id(p) for p in ("/tmp/model", "./model", "~/m", "a/b/c", "C:\\models\\x"))


# -- Hub datasets ----------------------------------------------------------------------------------
def _seed_quotes(hub_server, n=24):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import EXAMPLE_QUOTES

    rows = [json.loads(line) for line in EXAMPLE_QUOTES.read_text().splitlines()[:n]]
    rows = [{"quote": r["quote"], "author": r.get("author", "")} for r in rows]
    hub_server.add_file(
        "dataset", "alice/quotes-jsonl", "data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
    )
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    hub_server.add_file("dataset", "alice/quotes-parquet", "data/train-00000-of-00001.parquet", buf.getvalue())
    return rows


def test_hub_dataset_jsonl_and_parquet_train_and_push(hub_server, hub_model, tmp_path):
    from lora_app.data import load_text
    from lora_app.train import train

    rows = _seed_quotes(hub_server)
    for ds_id in ("alice/quotes-jsonl", "alice/quotes-parquet"):
        n = len(hub_server.requests)
        td = load_text(DataConfig(dataset_id=ds_id))
        print(f"\nHub calls, load_dataset('{ds_id}'):", *calls(hub_server, n), sep="\n  ")
        assert td.text_column == "quote" and td.texts == [r["quote"] for r in rows] and td.source == ds_id

    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"dataset_id": "alice/quotes-parquet", "max_rows": 16},
            "model": {"base_model_name_or_path": str(hub_model)},
            "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "training": {
                "max_steps": 2,
                "warmup_steps": 0,
                "max_length": 32,
                "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "save_steps": 2,
            },
        }
    ).save(rd / "config.yaml")
    assert train(rd) == 0
    local_meta = card_meta((rd / "adapter" / "README.md").read_text())
    assert local_meta["datasets"] == ["alice/quotes-parquet"]
    assert hub.default_repo_id("alice", rd) == "alice/tiny-llama-lora-quotes-parquet"
    hub.push_adapter(rd, "alice/tiny-llama-lora-quotes-parquet", token=ALICE)
    card = hub_server.files("model", "alice/tiny-llama-lora-quotes-parquet")["README.md"].decode()
    assert card_meta(card)["datasets"] == ["alice/quotes-parquet"]
    assert "the Hub dataset [`alice/quotes-parquet`]" in card and "text column `quote`" in card


def test_hub_dataset_problems_are_plain(hub_server, monkeypatch):
    from hub_server import HubError as ServerError
    from hub_server import _Handler

    from lora_app.data import load_text

    _seed_quotes(hub_server, 4)
    hub_server.create_repo("dataset", "alice/private-quotes", private=True)
    hub_server.add_file("dataset", "alice/private-quotes", "train.jsonl", '{"quote": "secret"}\n')
    hub_server.add_file("dataset", "alice/numbers", "train.jsonl", '{"a": 1, "b": 2}\n{"a": 3, "b": 4}\n')
    hub_server.add_file("dataset", "alice/gated-quotes", "train.jsonl", '{"quote": "gated"}\n')
    real_resolve = _Handler._resolve

    def gated_resolve(self, hub_, repo, rev, path):  # the Hub's answer for a gated repo not yet accepted
        if repo.repo_id == "alice/gated-quotes":
            raise ServerError(401 if self.user is None else 403, "Access to this repo is restricted.", "GatedRepo")
        return real_resolve(self, hub_, repo, rev, path)

    monkeypatch.setattr(_Handler, "_resolve", gated_resolve)

    def problem(ds_id, token=None, **kw):
        with pytest.raises(ConfigError) as e:
            load_text(DataConfig(dataset_id=ds_id, **kw), token=token)
        msg = str(e.value)
        assert "Fix:" in msg and msg.startswith("data."), msg
        return msg

    assert "was not found, or is private" in problem("alice/nothing-here")
    assert "you are not logged in" in problem("alice/private-quotes")
    assert "was not found, or is private" in problem("alice/private-quotes", BOB)
    assert load_text(DataConfig(dataset_id="alice/private-quotes"), token=ALICE).texts == ["secret"]
    assert "is gated" in problem("alice/gated-quotes", BOB)
    hub_server.add_file("dataset", "alice/never-loaded", "train.jsonl", '{"quote": "x"}\n')  # not in the cache
    assert "rejected your token" in problem("alice/never-loaded", "hf_wrong_token_123")
    assert "no column holds text" in problem("alice/numbers")
    assert "not a dataset id" in problem("not a/valid id")
    assert "split" in problem("alice/quotes-jsonl", split="validation").lower()
    hub_server.stop()
    t = time.time()
    assert "cannot reach the Hub" in problem("alice/quotes-jsonl")
    assert time.time() - t < 5


# -- Try from the Hub, side by side, batches -----------------------------------------------------
def test_try_adapter_from_hub_side_by_side_and_misfits(hub_server, run_dir, hub_model, tmp_path):
    from tiny import build_tiny_model

    from lora_app.generate import Generator

    upload_base(hub_server, hub_model)
    hub.push_adapter(run_dir, "alice/try-me", token=ALICE)
    gen = Generator()
    loaded = gen.load("alice/try-me", token=ALICE)
    assert loaded.base_id == BASE_ID and "adapter alice/try-me" in loaded.description
    kw = dict(max_new_tokens=8, temperature=0.0, seed=3, token=ALICE)
    prompt = "Two things are infinite: "
    *_, (base_text, adapter_text) = gen.compare(prompt, "alice/try-me", **kw)
    assert base_text == list(gen.stream(prompt, "alice/try-me", use_adapter=False, **kw))[-1]
    assert adapter_text == list(gen.stream(prompt, "alice/try-me", **kw))[-1]
    sampled = dict(kw, temperature=1.0)
    *_, (b1, a1) = gen.compare(prompt, "alice/try-me", **sampled)
    *_, (b2, a2) = gen.compare(prompt, "alice/try-me", **sampled)
    assert (b1, a1) == (b2, a2)  # same seed, same texts

    with pytest.raises(ConfigError, match="there is no Hub repo 'alice/nope'"):
        Generator().load("alice/nope", token=ALICE)
    opt = build_tiny_model(tmp_path / "opt", arch="opt")
    with pytest.raises(ConfigError) as e:
        Generator().load("alice/try-me", base=str(opt), token=ALICE)
    assert "does not fit the base model" in str(e.value) and "o_proj" in str(e.value) and BASE_ID in str(e.value)
    big = build_tiny_model(tmp_path / "big", hidden=128)
    with pytest.raises(ConfigError, match="weight shapes differ"):
        Generator().load("alice/try-me", base=str(big), token=ALICE)


PROMPTS = ["Two things are infinite: ", "Be yourself;", "The only way to do great work is to love what you"]


def test_a_private_hub_adapter_in_the_servers_cache_is_not_served_to_another_visitor(hub_server, run_dir, hub_model):
    """huggingface_hub answers a refused request (401/404) from its cache when the file is there:
    once alice has loaded her private adapter on a shared server, bob and an anonymous visitor
    naming it must still be refused, by the Hub, not served from the cache. Same for a private base
    model in the preflight and for the Try tab's layout probe."""
    from lora_app.chat import adapter_layout
    from lora_app.config import ModelConfig
    from lora_app.generate import Generator
    from lora_app.models import load_model_config

    upload_base(hub_server, hub_model)
    hub.push_adapter(run_dir, "alice/secret", private=True, token=ALICE)
    assert Generator().load("alice/secret", token=ALICE).adapter == "alice/secret"  # now in the cache
    for who in (BOB, None):
        with pytest.raises(ConfigError, match="there is no Hub repo 'alice/secret', or it is private"):
            Generator().load("alice/secret", token=who)
    gen = Generator()
    gen.load("alice/secret", token=ALICE)
    with pytest.raises(ConfigError, match="private"):  # the same Generator, its loaded model cached too
        gen.load("alice/secret", token=BOB)
    with pytest.raises(ConfigError, match="'alice/secret' is private or does not exist"):
        hub_client.check_readable("alice/secret", None)
    assert adapter_layout("alice/secret", token=BOB) == "text"  # refused: the completion box, nothing read

    hub_server.create_repo("model", "alice/private-base", private=True)
    upload_base(hub_server, hub_model, "alice/private-base")
    assert load_model_config(ModelConfig(base_model_name_or_path="alice/private-base"), token=ALICE)
    with pytest.raises(ConfigError, match="private"):
        load_model_config(ModelConfig(base_model_name_or_path="alice/private-base"), token=BOB)


def test_batch_pads_left_and_matches_one_at_a_time(run_dir, hub_model):
    from lora_app.generate import Generator

    gen = Generator(precision="float32")  # bf16 rounding may tip a near-tie: see the next test
    kw = dict(adapter=str(run_dir / "adapter"), base=str(hub_model), max_new_tokens=10)
    loaded = gen.load(kw["adapter"], kw["base"])
    tok = loaded.tokenizer
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}  # also where auto picks bf16
    enc = tok(["ab", "a b c d"], padding=True)  # the loaded tokenizer pads on the left, masked
    short, long_ = enc["input_ids"]
    assert len(short) == len(long_) and short[0] == tok.pad_token_id and enc["attention_mask"][0][0] == 0
    assert enc["attention_mask"][0][-1] == 1 and short[-1] != tok.pad_token_id
    for use_adapter in (False, True):
        batch = gen.complete_batch(PROMPTS, use_adapter=use_adapter, **kw)
        single = [gen.complete_batch([p], use_adapter=use_adapter, **kw)[0] for p in PROMPTS]
        assert batch == single
    assert list(gen.stream(PROMPTS[1], **kw))[-1] == single[1]


@pytest.mark.slow
def test_batch_matches_one_at_a_time_on_the_real_small_model(bundled_model):
    """The same on SmolLM2-135M (real text, so a padding mistake would show as other words).

    In float32: in bfloat16 (auto on a CPU with fast bf16) one prompt's greedy words changed with
    its batch on the CI machine ('infinite sum' alone, 'infinite geometric' in the batch), a
    near-tie that rounding decides, not padding."""
    from lora_app.generate import Generator

    gen = Generator(precision="float32")
    batch = gen.complete_batch(PROMPTS, base=str(bundled_model), max_new_tokens=8)
    single = [gen.complete_batch([p], base=str(bundled_model), max_new_tokens=8)[0] for p in PROMPTS]
    print("\n", batch)
    assert batch == single and len(set(batch)) == 3 and all(len(t.split()) >= 2 for t in batch)


# -- tokens: where they come from, and that they go nowhere -------------------------------------
def test_token_resolution(monkeypatch, tmp_path):
    import gradio as gr

    from lora_app.ui import hub_tab

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "SPACE_ID", "LORA_APP_MAX_UPLOAD_MB"):
        monkeypatch.setenv(var, "")  # records the old state, so that what load_dotenv sets is undone
        monkeypatch.delenv(var)
    env = tmp_path / ".env"
    env.write_text(
        "# settings\nexport HF_TOKEN='hf_from_dotenv'\nLORA_APP_MAX_UPLOAD_MB=50 # comment\n\nADMIN_USERS=\n"
    )
    monkeypatch.setenv("LORA_APP_ENV_FILE", str(env))
    assert hub_client.load_dotenv() == {"HF_TOKEN": "hf_from_dotenv", "LORA_APP_MAX_UPLOAD_MB": "50"}
    assert hub_client.env_token() == "hf_from_dotenv" and os.environ["LORA_APP_MAX_UPLOAD_MB"] == "50"

    req = gr.Request(session_hash="s1")
    assert hub_tab.request_token(req) == "hf_from_dotenv"
    hub_tab.remember_token(req, "hf_typed")
    assert hub_tab.request_token(req) == "hf_typed"
    assert hub_tab.request_token(gr.Request(session_hash="s2")) == "hf_from_dotenv"  # per browser session
    hub_tab.forget_token(req)
    assert hub_tab.request_token(req) == "hf_from_dotenv"

    class FakeHttp:  # what a signed-in request carries (Gradio's SessionMiddleware)
        scope = {"session": {"oauth_info": {"access_token": "hf_oauth_abc", "expires_at": time.time() + 60}}}

    signed_in = gr.Request(FakeHttp(), session_hash="s3")
    assert hub_tab.request_token(signed_in) == "hf_oauth_abc"
    FakeHttp.scope["session"]["oauth_info"]["expires_at"] = time.time() - 1
    assert hub_tab.request_token(signed_in) == "hf_from_dotenv"  # expired login: logged out
    FakeHttp.scope["session"]["oauth_info"].update(
        access_token=hub_client.MOCK_OAUTH_TOKEN, expires_at=time.time() + 60
    )
    assert hub_tab.request_token(signed_in) == "hf_from_dotenv"  # local mock login = the local token

    monkeypatch.setenv("SPACE_ID", "owner/space")  # on a Space the owner's HF_TOKEN never pushes for visitors
    assert hub_tab.request_token(req) == "hf_from_dotenv"
    assert hub_tab.request_token(req, write=True) is None
    assert hub_client.resolve_token(oauth="hf_visitor", write=True) == "hf_visitor"


def test_whoami_line_and_hub_tab_builds(hub_server, monkeypatch, tmp_path):
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    assert hub_client.whoami(ALICE).describe().startswith("Logged in as **alice**")
    assert "read-only" in hub.whoami(ALICE_READ).describe()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert not hub_client.oauth_login_available()  # no local token: no LoginButton (Gradio's mock would fail)
    monkeypatch.setenv("LORA_APP_LOGIN_BUTTON", "1")
    monkeypatch.setenv("HF_TOKEN", ALICE)
    demo = build_app(AppContext(JobManager(tmp_path / "runs"), Generator(), frozenset()))
    assert any(type(b).__name__ == "LoginButton" for b in demo.blocks.values())
    assert demo.expects_oauth
    demo.lora_ctx.jobs.close()


def test_no_token_was_written_anywhere(tmp_path_factory):
    """Every file the app wrote during these tests (run folders, pushes' temporary copies, the HF
    cache with everything downloaded) is free of every token used."""
    roots = [tmp_path_factory.getbasetemp(), Path(os.environ["HF_HOME"])]
    scanned = 0
    for root in roots:
        for p in root.rglob("*"):
            if p.is_file() and not p.is_symlink():
                data = p.read_bytes()
                scanned += 1
                for tok in TOKENS + ("hf_typed", "hf_oauth_abc", "hf_from_dotenv"):
                    if p.name == ".env":
                        continue  # the test's own .env file holds a token on purpose
                    assert tok.encode() not in data, f"{tok} found in {p}"
    assert scanned > 20
    import tempfile

    leftovers = [p for p in Path(tempfile.gettempdir()).glob("lora_app_push_*") if p.stat().st_mtime >= T0]
    assert leftovers == []  # push staging copies are removed


def test_a_token_with_a_character_no_token_has_is_named_without_echoing_it(hub_server):
    """A pasted token with a line break or NUL inside was "could not reach the Hub ... check your
    internet connection" (httpx refuses the header); with a non-ASCII letter, a UnicodeEncodeError
    (found by the breaker). The Hub is not asked, and the message never holds the token."""
    n = len(hub_server.requests)
    for token, where in (("hf_sec\nret", 7), ("hf_secret\x00", 10), ("hf_sécret", 5), ("hf_se cret", 6)):
        with pytest.raises(hub_client.HubError) as err:
            hub_client.whoami(token, use_cache=False)
        assert err.value.problems == [
            "hub: the token has a character a Hugging Face token cannot have (a space, a line break or a "
            f"non-ASCII letter, character {where} of {len(token)}). Fix: copy the token again from "
            f"{hub_client.TOKENS_URL} and paste only it (hf_...)."
        ]
    assert len(hub_server.requests) == n
    assert hub_client.whoami(ALICE, use_cache=False).name == "alice"


def test_offline_a_shared_server_serves_from_its_cache_only_what_the_hub_called_public(
    hub_server, run_dir, hub_model, tmp_path, monkeypatch
):
    """Offline (HF_HUB_OFFLINE, or the Hub unreachable) huggingface_hub serves its cache to anyone:
    alice's private adapter or base model, once loaded, went to every visitor of a shared server
    (refusal() could not ask, so it let the cache answer). Now a shared server serves them offline only
    when the Hub last called them public; a one-person server (its owner's cache) serves everything, as
    before; a repo made private since is forgotten."""
    from huggingface_hub import constants

    from lora_app import lint, models, public_repos
    from lora_app.config import ModelConfig
    from lora_app.data import load_text
    from lora_app.generate import Generator
    from lora_app.models import load_model_config

    monkeypatch.setenv("LORA_APP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(public_repos.ENV, "1")
    upload_base(hub_server, hub_model)
    hub_server.create_repo("model", "alice/private-base", private=True)
    upload_base(hub_server, hub_model, "alice/private-base")
    hub.push_adapter(run_dir, "alice/open", token=ALICE)
    hub.push_adapter(run_dir, "alice/secret", private=True, token=ALICE)
    hub.push_adapter(run_dir, "alice/soon-private", token=ALICE)
    for repo in ("alice/open", "alice/secret", "alice/soon-private"):
        assert Generator().load(repo, token=ALICE).adapter == repo  # each now in the cache
    base = ModelConfig(base_model_name_or_path="alice/private-base")
    assert load_model_config(base, token=ALICE).model_type == "llama"
    assert public_repos.known_public("alice/open") and public_repos.known_public(BASE_ID)
    assert not public_repos.known_public("alice/secret") and not public_repos.known_public("alice/private-base")
    hub_server.repos[("model", "alice/soon-private")].private = True
    assert hub_client.refusal("alice/soon-private", None) is not None  # the Hub refuses: forgotten
    assert not public_repos.known_public("alice/soon-private")

    def refused(repo: str, field: str) -> list[str]:
        return [
            f"{field}: the Hub cannot be reached to check that you may read '{repo}', and this shared server has "
            "not seen it public (a copy of a private repo is served only to those the Hub lets read it). Fix: try "
            "again when the Hub can be reached."
        ]

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert Generator().load("alice/open", token=None).adapter == "alice/open"  # public: the cache serves
    for repo in ("alice/secret", "alice/soon-private"):
        for who in (None, BOB, ALICE):  # nobody can be told apart without the Hub
            with pytest.raises(ConfigError) as e:
                Generator().load(repo, token=who)
            assert e.value.problems == refused(repo, "adapter")
    with pytest.raises(hub_client.HubError) as e:
        hub_client.check_readable("alice/secret", ALICE)
    assert e.value.problems == refused("alice/secret", "hub")
    assert hub_client.refusal("/not/a/repo id", None) is None  # a path: its loader explains it
    monkeypatch.setenv(public_repos.ENV, "0")  # one person's server: their own cache serves
    assert Generator().load("alice/secret", token=None).adapter == "alice/secret"

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv(public_repos.ENV, "1")
    hub_server.stop()  # unreachable: transformers falls back to its cache on a connection error
    try:
        with pytest.raises(ConfigError) as e:
            load_model_config(base, token=ALICE)
        assert e.value.problems == refused("alice/private-base", "model.base_model_name_or_path")
        # The Try tab said "... this server's Hub cache has no copy" for a repo never loaded, and "cannot
        # check" for a cached private one: who had loaded what (the breaker). One answer now.
        for repo in ("alice/secret", "nobody/never-loaded"):
            with pytest.raises(ConfigError) as e:
                Generator().load(repo, token=None)
            assert e.value.problems == refused(repo, "adapter")
        # Check read the private base's cached tokenizer (its chat template in an error) before the model
        # check refused it (the breaker): no tokenizer is read for a repo this caller may not read.
        read = []
        real = models.load_tokenizer
        monkeypatch.setattr(models, "load_tokenizer", lambda p, **kw: read.append(p) or real(p, **kw))
        chat = tmp_path / "chat.jsonl"
        chat.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n')
        td = load_text(DataConfig(path=str(chat)))
        assert lint.preflight_notes(td, "alice/private-base", 32, False, token=None) == [] and read == []
        monkeypatch.setenv(public_repos.ENV, "0")
        assert load_model_config(base, token=None).model_type == "llama"
    finally:
        hub_server.start()


@pytest.mark.parametrize(
    ("preset", "server_name", "share", "shared"),
    [
        ("", "127.0.0.1", False, False),
        ("", "localhost", False, False),
        ("", "0.0.0.0", False, True),
        ("", "127.0.0.1", True, True),
        ("0", "0.0.0.0", True, False),  # the person's setting wins
        ("1", "127.0.0.1", False, True),
    ],
)
def test_a_server_is_shared_when_others_can_reach_it(monkeypatch, preset, server_name, share, shared):
    from lora_app import public_repos

    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv(public_repos.ENV, preset)
    public_repos.mark_shared(server_name, share)
    assert public_repos.shared_server() is shared
    monkeypatch.setenv(public_repos.ENV, "")
    monkeypatch.setenv("SPACE_ID", "alice/lora")
    assert public_repos.shared_server() is True

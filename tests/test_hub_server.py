"""The fake Hub (tests/hub_server.py) driven through the real, unmodified libraries.

The environment (HF_ENDPOINT -> the fake Hub, isolated HF_HOME, HF_HUB_DISABLE_XET=1) is set in
conftest.py before these imports. Tokens are always passed explicitly.
"""

from __future__ import annotations

import io
import json

import datasets
import httpx2
import pytest
import torch
from hub_server import HubServer
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file

ALICE, BOB, ALICE_READ = "hf_alice", "hf_bob", "hf_alice_read"
README = "---\nlicense: mit\ntags:\n- lora\n---\n# Tiny\nA test card.\n"


def _api() -> HfApi:
    return HfApi()  # endpoint from HF_ENDPOINT (set by conftest), as in the app


def test_endpoint_points_at_fake_hub(hub_server):
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub_server.url
    assert constants.HF_HUB_DISABLE_XET


def test_whoami(hub_server):
    me = _api().whoami(token=ALICE)
    assert me["name"] == "alice" and me["type"] == "user"
    assert me["auth"] == {"type": "access_token", "accessToken": {"displayName": "test-token", "role": "write"}}
    assert _api().whoami(token=ALICE_READ)["auth"]["accessToken"]["role"] == "read"
    assert _api().whoami(token="mock-oauth-token-for-local-dev")["name"] == "alice"
    assert hub_server.requests == [("GET", "/api/whoami-v2")] * 3


def test_upload_folder_then_download(hub_server, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    save_file({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, folder / "model.safetensors")
    (folder / "README.md").write_text(README)
    (folder / "sub").mkdir()
    (folder / "sub" / "config.json").write_text(json.dumps({"a": 1}))

    url = _api().create_repo("alice/tiny", token=ALICE)
    assert url == f"{hub_server.url}/alice/tiny" and url.repo_id == "alice/tiny"
    info = _api().upload_folder(repo_id="alice/tiny", folder_path=folder, token=ALICE, commit_message="up")
    assert info.oid == _api().model_info("alice/tiny", token=ALICE).sha

    calls = [c for c in hub_server.requests if c[0] != "GET"]
    assert ("POST", "/api/validate-yaml") in calls
    assert ("POST", "/api/models/alice/tiny/preupload/main") in calls
    assert ("POST", "/alice/tiny.git/info/lfs/objects/batch") in calls  # LFS path for .safetensors
    assert any(m == "PUT" for m, _ in calls) and calls[-1] == ("POST", "/api/models/alice/tiny/commit/main")

    stored = hub_server.files("model", "alice/tiny")
    assert set(stored) == {".gitattributes", "README.md", "model.safetensors", "sub/config.json"}
    for name in ("model.safetensors", "README.md", "sub/config.json"):
        local = hf_hub_download("alice/tiny", name, token=ALICE)
        assert open(local, "rb").read() == (folder / name).read_bytes() == stored[name]

    info = _api().model_info("alice/tiny")
    assert sorted(s.rfilename for s in info.siblings) == sorted(stored)
    tree = {f.path: f for f in _api().list_repo_tree("alice/tiny", recursive=True)}
    assert tree["model.safetensors"].lfs.size == (folder / "model.safetensors").stat().st_size
    assert "sub" in tree and tree["README.md"].lfs is None

    with pytest.raises(ValueError, match="Invalid metadata"):  # validate-yaml rejects a broken card
        _api().upload_file(
            path_or_fileobj=b"---\ntags: [oops\n---\n", path_in_repo="README.md", repo_id="alice/tiny", token=ALICE
        )

    # re-uploading identical files makes no new commit
    n = len(hub_server.requests)
    _api().upload_folder(repo_id="alice/tiny", folder_path=folder, token=ALICE)
    assert not any(p.endswith("/commit/main") for _, p in hub_server.requests[n:])


def test_snapshot_download_and_revisions(hub_server, tmp_path):
    first = hub_server.add_file("model", "alice/snap", "a.txt", b"one")
    hub_server.add_file("model", "alice/snap", "nested/deep/b.bin", b"\0\1\2" * 100)
    hub_server.add_file("model", "alice/snap", "a.txt", b"two")
    path = snapshot_download("alice/snap", cache_dir=tmp_path / "c")
    assert open(f"{path}/a.txt", "rb").read() == b"two"
    assert open(f"{path}/nested/deep/b.bin", "rb").read() == b"\0\1\2" * 100
    old = hf_hub_download("alice/snap", "a.txt", revision=first, cache_dir=tmp_path / "c")
    assert open(old, "rb").read() == b"one"
    from huggingface_hub import HfFileSystem

    fs = HfFileSystem()  # reads with Range requests
    assert fs.cat_file("alice/snap/nested/deep/b.bin", start=1, end=5) == (b"\0\1\2" * 100)[1:5]
    assert (
        "GET",
        "/alice/snap/resolve/" + _api().model_info("alice/snap").sha + "/nested/deep/b.bin",
    ) in hub_server.requests
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("alice/snap", "a.txt", revision="nope", cache_dir=tmp_path / "c")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("alice/snap", "missing.txt", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/nothing", "a.txt", cache_dir=tmp_path / "c")


def _tiny_base():
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def test_peft_push_to_hub_and_from_pretrained(hub_server):
    from peft import LoraConfig, PeftModel, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(1)
    local = get_peft_model(_tiny_base(), lora).eval()
    local.push_to_hub("alice/tiny-lora", token=ALICE)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(
        hub_server.files("model", "alice/tiny-lora")
    )

    remote = PeftModel.from_pretrained(_tiny_base(), "alice/tiny-lora").eval()
    ids = torch.arange(10).reshape(1, 10)
    with torch.no_grad():
        want, got = local(input_ids=ids).logits, remote(input_ids=ids).logits
    assert (want - got).abs().max().item() < 1e-5
    assert (want - _tiny_base()(input_ids=ids).logits).abs().max().item() > 1e-4  # the adapter matters


def test_load_dataset_jsonl_and_parquet(hub_server):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"quote": f"quote {i}", "author": f"a{i}"} for i in range(5)]
    hub_server.add_file("dataset", "alice/quotes", "data/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows[:3]), buf)
    hub_server.add_file("dataset", "alice/quotes-pq", "train.parquet", buf.getvalue())

    assert datasets.config.USE_PARQUET_EXPORT is False  # no datasets-server lookup (conftest)
    ds = datasets.load_dataset("alice/quotes", split="train")
    assert ds.to_list() == rows
    ds = datasets.load_dataset("alice/quotes-pq", token=ALICE)
    assert list(ds) == ["train"] and ds["train"].to_list() == rows[:3]


def test_auth_errors(hub_server):
    with pytest.raises(HfHubHTTPError) as e:
        _api().whoami(token="hf_wrong")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:
        _api().create_repo("alice/x", token="hf_wrong")
    assert e.value.response.status_code == 401 and not isinstance(e.value, RepositoryNotFoundError)
    with pytest.raises(HfHubHTTPError) as e:
        _api().create_repo("alice/x", token=ALICE_READ)
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        _api().create_repo("bob/x", token=ALICE)
    assert e.value.response.status_code == 403
    assert ("model", "bob/x") not in hub_server.repos and ("model", "alice/x") not in hub_server.repos

    _api().create_repo("alice/x", token=ALICE)
    with pytest.raises(HfHubHTTPError) as e:
        _api().create_repo("alice/x", token=ALICE)
    assert e.value.response.status_code == 409
    _api().create_repo("alice/x", token=ALICE, exist_ok=True)
    with pytest.raises(HfHubHTTPError) as e:  # exists but bob may not write: exist_ok does not hide the commit 403
        _api().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/x", token=BOB)
    assert e.value.response.status_code == 403


def test_private_repo_hidden_from_others(hub_server):
    _api().create_repo("alice/secret", token=ALICE, private=True)
    assert _api().model_info("alice/secret", token=ALICE).private
    with pytest.raises(RepositoryNotFoundError):
        _api().model_info("alice/secret", token=BOB)
    with pytest.raises(RepositoryNotFoundError):
        _api().model_info("alice/secret")


def test_server_stopped_gives_connection_error():
    hub = HubServer(users={"t": "u"})
    api = HfApi(endpoint=hub.start())
    assert api.whoami(token="t")["name"] == "u"
    hub.stop()
    with pytest.raises(httpx2.ConnectError):
        api.whoami(token="t")
    hub.start()  # same port again
    assert api.whoami(token="t")["name"] == "u"
    hub.stop()


def test_session_hub_down_then_up(hub_server):
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub_server.add_file("model", "alice/down", "a.txt", b"cached")
    hub_server.add_file("model", "alice/down", "b.txt", b"not cached")
    cached = hf_hub_download("alice/down", "a.txt")
    hub_server.stop()
    assert hf_hub_download("alice/down", "a.txt") == cached  # served from the cache, silently
    with pytest.raises(LocalEntryNotFoundError):  # NB: also an EntryNotFoundError, though the file exists
        hf_hub_download("alice/down", "b.txt")
    with pytest.raises(httpx2.ConnectError):
        _api().create_repo("alice/y", token=ALICE)
    hub_server.start()
    assert open(hf_hub_download("alice/down", "b.txt"), "rb").read() == b"not cached"

"""Hub datasets with max_rows read only what those rows need (against the local fake Hub)."""

from __future__ import annotations

import json

import datasets  # noqa: F401  (imported early so conftest can turn off the parquet-export lookup)

from lora_app.config import DataConfig

SENTENCE = "Row {i} of file {f}: the sea was calm that morning and the boats stayed in."


def _seed(hub_server, repo="alice/two-files", n=2000):
    for f in range(2):
        hub_server.add_file(
            "dataset",
            repo,
            f"data/train-{f}.jsonl",
            "".join(
                json.dumps({"id": f"r{f}-{i}", "text": SENTENCE.format(i=i, f=f), "tags": ["sea", str(i)]}) + "\n"
                for i in range(n)
            ),
        )
    return repo


def _data_gets(hub_server, since):
    return [p for m, p in hub_server.requests[since:] if m == "GET" and "/resolve/" in p and p.endswith(".jsonl")]


def test_max_rows_streams_only_the_rows_it_keeps(hub_server):
    from lora_app.data import load_text

    repo = _seed(hub_server)
    n = len(hub_server.requests)
    td = load_text(DataConfig(dataset_id=repo, max_rows=10))
    gets = _data_gets(hub_server, n)
    print("\nmax_rows=10 data GETs:", gets)
    assert td.texts == [SENTENCE.format(i=i, f=0) for i in range(10)] and td.text_column == "text"
    assert td.columns == ["id", "text", "tags"]
    assert not any("train-1.jsonl" in p for p in gets), gets  # the second file is never read

    n = len(hub_server.requests)
    full = load_text(DataConfig(dataset_id=repo))  # without max_rows: both files, all rows
    gets = _data_gets(hub_server, n)
    assert len(full.texts) == 4000 and any("train-1.jsonl" in p for p in gets)


def test_hub_list_column_reads_like_a_local_file(hub_server, tmp_path):
    from lora_app.data import load_text, preview, read_table
    from lora_app.hub_data import load_hub_frame

    repo = _seed(hub_server, "alice/small", n=3)
    local = tmp_path / "same.jsonl"
    local.write_text(
        "".join(
            json.dumps({"id": f"r0-{i}", "text": SENTENCE.format(i=i, f=0), "tags": ["sea", str(i)]}) + "\n"
            for i in range(3)
        )
    )
    hub_df = load_hub_frame(repo, max_rows=3)
    assert preview(hub_df).to_dict("records") == preview(read_table(local)).to_dict("records")
    assert preview(hub_df)["tags"][0] == '["sea", "0"]'
    tags = load_text(DataConfig(dataset_id=repo, text_column="tags", max_rows=2)).texts
    assert tags == ['["sea", "0"]', '["sea", "1"]']


def test_a_private_dataset_once_loaded_is_not_served_from_the_cache_to_others(hub_server):
    """alice loads her private dataset on a shared server; then a visitor without a token and bob
    asked for it. ``datasets`` answered their 404 from its cache ("Using the latest cached version"),
    so both saw alice's rows (found by the breaker). The Hub is asked first, as for models."""
    import pytest

    from lora_app.config import ConfigError
    from lora_app.hub_data import load_hub_frame

    repo = _seed(hub_server, "alice/private-notes", n=3)
    hub_server.repos[("dataset", repo)].private = True
    for max_rows in (None, 2):  # the full download and the stream
        assert len(load_hub_frame(repo, token="hf_alice", max_rows=max_rows)) == (max_rows or 6)
        for token in (None, "hf_bob"):
            with pytest.raises(ConfigError) as err:
                load_hub_frame(repo, token=token, max_rows=max_rows)
            assert err.value.problems == [
                f"data.dataset_id: dataset '{repo}' was not found, or is private (RepositoryNotFoundError). "
                "Fix: check the id, or "
                + (
                    "log in with a token that can read it."
                    if token
                    else "you are not logged in: log in if it is private."
                )
            ], (token, max_rows)
    assert len(load_hub_frame(repo, token="hf_alice")) == 6  # its owner still reads it


def test_hub_columns_equal_but_for_spaces_are_kept_apart_not_refused(hub_server):
    """A local file with columns "text" and "text " is refused (its owner can rename them); a Hub
    dataset's visitor cannot, and was refused whole, as data.path, even for another column (found by
    the breaker). Both names are kept as written."""
    from lora_app.data import load_text
    from lora_app.hub_data import load_hub_frame

    rows = "".join(json.dumps({"text": f"row {i}", "text ": f"other {i}", "answer": f"a{i}"}) + "\n" for i in range(3))
    hub_server.add_file("dataset", "alice/dups", "data.jsonl", rows)
    assert list(load_hub_frame("alice/dups").columns) == ["text", "text ", "answer"]
    assert load_text(DataConfig(dataset_id="alice/dups", text_column="answer")).texts == ["a0", "a1", "a2"]
    assert load_text(DataConfig(dataset_id="alice/dups", text_column="text")).texts == ["row 0", "row 1", "row 2"]


def test_offline_a_shared_server_refuses_a_dataset_the_hub_never_called_public(hub_server, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE: no one can be asked, and ``datasets`` would serve alice's private dataset from its
    cache to any visitor of a shared server; only a dataset the Hub once called public passes the check."""
    import pytest
    from huggingface_hub import constants

    from lora_app import hub_client, public_repos
    from lora_app.config import ConfigError
    from lora_app.hub_data import load_hub_frame

    monkeypatch.setenv("LORA_APP_HOME", str(tmp_path))
    monkeypatch.setenv(public_repos.ENV, "1")
    secret = _seed(hub_server, "alice/private-notes", n=3)
    hub_server.repos[("dataset", secret)].private = True
    public = _seed(hub_server, "alice/open-notes", n=3)
    assert len(load_hub_frame(secret, token="hf_alice")) == 6
    assert len(load_hub_frame(public, token=None)) == 6
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError) as err:
        load_hub_frame(secret, token="hf_alice")
    assert err.value.problems == [
        "data.dataset_id: the Hub cannot be reached to check that you may read dataset 'alice/private-notes', and "
        "this shared server has not seen it public (a copy of a private repo is served only to those the Hub lets "
        "read it). Fix: try again when the Hub can be reached."
    ]
    assert hub_client.refusal(public, None, "dataset") is None
    assert hub_client.refusal(public, None, "model") is not None  # a model of that name was never seen

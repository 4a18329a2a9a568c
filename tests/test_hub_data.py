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

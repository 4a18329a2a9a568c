"""Data layouts: detection, the rows of each layout, the loss on the answers only (labels), the
chat template (own and fallback), cutting at max_length, bad rows named by line, and runs."""

import json
from pathlib import Path

import pytest
from tiny import build_tokenizer

from lora_app.chat_rows import tokenize_data, tokenize_turns
from lora_app.chat_template import FALLBACK_CHAT_TEMPLATE
from lora_app.config import ConfigError, DataConfig
from lora_app.data import load_text
from lora_app.text import IGNORE_INDEX

CHAT = Path(__file__).parent / "data" / "quotes_chat.jsonl"
# A Zephyr-like template with different markers from the ChatML fallback.
OWN_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Who said it?"},
    {"role": "assistant", "content": "Einstein."},
    {"role": "user", "content": "And this?"},
    {"role": "assistant", "content": "Twain."},
]


def write(tmp_path, name, rows):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(p)


def learned(tok, row) -> str:
    """The text of the tokens that carry a loss, joined."""
    return tok.decode([i for i, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE_INDEX])


@pytest.mark.parametrize(
    "rows, layout, columns",
    [
        ([{"text": "a quote", "id": "1"}], "text", []),
        ([{"prompt": "2+2=", "completion": "4"}], "prompt_completion", ["prompt", "completion"]),
        ([{"question": "2+2?", "answer": "4"}], "prompt_completion", ["question", "answer"]),
        ([{"input": "2+2?", "output": "4"}], "prompt_completion", ["input", "output"]),
        ([{"instruction": "Add.", "input": "2, 2", "output": "4"}], "instruction", ["instruction", "input", "output"]),
        ([{"instruction": "Say hi.", "output": "hi"}], "instruction", ["instruction", "output"]),
        ([{"id": "c1", "messages": TURNS}], "conversation", ["messages"]),
        (
            [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}],
            "conversation",
            ["conversations"],
        ),
        (  # both styles in one file: each row read from its own column
            [
                {"messages": TURNS},
                {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hey"}]},
            ],
            "conversation",
            ["messages", "conversations"],
        ),
    ],
)
def test_layout_is_detected_with_its_columns(tmp_path, rows, layout, columns):
    td = load_text(DataConfig(path=write(tmp_path, "d.jsonl", rows)))
    assert td.layout == layout
    if layout != "text":
        assert td.layout_columns == columns
        assert td.texts[0][-1]["role"] == "assistant"
    else:
        assert td.texts == ["a quote"]


def test_sharegpt_roles_are_mapped_and_system_kept(tmp_path):
    conv = [{"from": "system", "value": "S"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]
    td = load_text(DataConfig(path=write(tmp_path, "s.jsonl", [{"conversations": conv}])))
    assert td.texts == [
        [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
        ]
    ]


def test_layout_override_reads_the_file_as_text_or_refuses_missing_columns(tmp_path):
    p = write(tmp_path, "pc.jsonl", [{"prompt": "Two plus two is", "completion": "four, they say."}])
    td = load_text(DataConfig(path=p, layout="text"))
    assert td.layout == "text" and td.text_column == "completion" and td.texts == ["four, they say."]
    with pytest.raises(ConfigError, match=r"^data.layout: 'conversation' needs a 'messages'.*Fix: choose the layout"):
        load_text(DataConfig(path=p, layout="conversation"))


def test_prompt_completion_learns_the_completion_and_eos_only():
    tok = build_tokenizer()
    rows = [[{"role": "user", "content": "Quote: "}, {"role": "assistant", "content": "So it goes."}]]
    (r,) = tokenize_turns(rows, "prompt_completion", tok, 64).rows
    n_prompt = len(tok("Quote: ")["input_ids"])
    assert r["input_ids"] == tok("Quote: ")["input_ids"] + tok("So it goes.")["input_ids"] + [tok.eos_token_id]
    assert r["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert r["labels"][n_prompt:] == r["input_ids"][n_prompt:] and r["labels"][-1] == tok.eos_token_id
    (everything,) = tokenize_turns(rows, "prompt_completion", tok, 64, train_on_prompt=True).rows
    assert everything["labels"] == everything["input_ids"]


def test_a_long_prompt_is_cut_before_the_answer_and_cut_answers_are_counted():
    tok = build_tokenizer()
    answer = "So it goes."
    n_answer = len(tok(answer)["input_ids"]) + 1
    rows = [[{"role": "user", "content": "word " * 100}, {"role": "assistant", "content": answer}]]
    out = tokenize_turns(rows, "prompt_completion", tok, 24)
    (r,) = out.rows
    assert len(r["input_ids"]) == 24 and out.answers_cut == 0
    assert r["input_ids"][-n_answer:] == tok(answer)["input_ids"] + [tok.eos_token_id]  # the whole answer kept
    long_answer = [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "word " * 100}]]
    out = tokenize_turns(long_answer, "prompt_completion", tok, 24)
    assert out.answers_cut == 1 and len(out.rows[0]["input_ids"]) == 24


@pytest.mark.parametrize("template", [None, OWN_TEMPLATE], ids=["no-template-fallback", "own-template"])
def test_a_conversation_too_long_loses_its_prompt_before_its_answer(template):
    """The user turn before the last answer gives way first (its end, next to the answer, stays):
    the answer and its end-of-turn marker are learned whole and no answer counts as cut. An answer
    longer than max_length on its own is still cut, and counted."""
    tok = build_tokenizer()
    if template:
        tok.chat_template = template
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "word " * 120 + "who said it?"},
        {"role": "assistant", "content": "Einstein."},
    ]
    out = tokenize_turns([turns], "conversation", tok, 128)  # (ChatML's markers are ~100 plain tokens here)
    (r,) = out.rows
    assert out.answers_cut == 0 and len(r["input_ids"]) <= 128
    end = "<|im_end|>" if template is None else tok.eos_token
    assert learned(tok, r).replace(" ", "") == f"Einstein.{end}".replace(" ", "")
    assert "who said it?" in tok.decode(r["input_ids"])  # the prompt's end, next to the answer, stays
    long_answer = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "word " * 120}]
    out = tokenize_turns([long_answer], "conversation", tok, 128)
    assert out.answers_cut == 1 and len(out.rows[0]["input_ids"]) == 128


@pytest.mark.parametrize("template", [None, OWN_TEMPLATE], ids=["no-template-fallback", "own-template"])
def test_conversation_learns_every_assistant_turn_with_its_end_of_turn(template):
    tok = build_tokenizer()
    tok.chat_template = template
    out = tokenize_turns([TURNS], "conversation", tok, 256)
    assert out.template_fallback == (template is None)
    (r,) = out.rows
    text = tok.decode(r["input_ids"])
    assert "Be brief." in text and "Who said it?" in text  # the system turn is kept
    end = "<|im_end|>" if template is None else tok.eos_token
    assert learned(tok, r) == f"Einstein.{end}Twain.{end}"  # both answers, each with its end of turn
    if template is None:
        assert text == tok.apply_chat_template(TURNS, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False)
    (everything,) = tokenize_turns([TURNS], "conversation", tok, 256, train_on_prompt=True).rows
    assert everything["labels"] == everything["input_ids"]


def test_smollm2_template_masks_system_user_and_keeps_im_end(bundled_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model)
    assert tok.chat_template
    (r,) = tokenize_data([TURNS], "conversation", tok, 256).rows
    assert learned(tok, r) == "Einstein.<|im_end|>Twain.<|im_end|>"
    assert tok.decode(r["input_ids"]) == tok.apply_chat_template(TURNS, tokenize=False)


def test_every_layout_writes_list_and_object_cells_as_json_as_text_does(tmp_path):
    """Was: prompt/completion and instruction wrote them as Python repr ("['a']", "{'b': 1}"),
    while the text layout and the preview write JSON (README: "shown and trained on as JSON")."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lora_app.data import preview, read_table

    pc = [{"prompt": ["a", "é"], "completion": {"b": 1, "c": None}}, {"prompt": 7, "completion": [True, 2.5]}]
    want = [('["a", "é"]', '{"b": 1, "c": null}'), ("7", "[true, 2.5]")]
    td = load_text(DataConfig(path=write(tmp_path, "pc.jsonl", pc)))
    assert td.layout == "prompt_completion"
    assert [(u["content"], a["content"]) for u, a in td.texts] == want
    # The same cells as the text layout writes them, and as the Data tab previews them.
    assert load_text(
        DataConfig(path=write(tmp_path, "t.jsonl", pc), layout="text", text_column="completion")
    ).texts == [
        '{"b": 1, "c": null}',
        "[true, 2.5]",
    ]
    shown = preview(read_table(tmp_path / "pc.jsonl")).to_dict("records")
    assert [(r["prompt"], r["completion"]) for r in shown] == want
    # Instruction (Alpaca) cells, and a Parquet list column (numpy arrays inside pandas before).
    ins = [{"instruction": ["x", "y"], "input": {"k": 2}, "output": [1, 2]}]
    ((user, answer),) = load_text(DataConfig(path=write(tmp_path, "ins.jsonl", ins))).texts
    assert '### Instruction:\n["x", "y"]\n\n### Input:\n{"k": 2}\n\n### Response:\n' in user["content"]
    assert answer["content"] == "[1, 2]"
    pq.write_table(pa.Table.from_pylist([{"question": ["q1", "q2"], "answer": ["a"]}]), tmp_path / "qa.parquet")
    ((user, answer),) = load_text(DataConfig(path=str(tmp_path / "qa.parquet"))).texts
    assert (user["content"], answer["content"]) == ('["q1", "q2"]', '["a"]')


BAD = {
    "unknown role": (
        [{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}],
        r"^data\.layout: 1 conversation in column 'messages' \(line 2\) has a turn with an unknown role \('bot'\).*Fix: give every turn a role",
    ),
    "empty assistant": (
        [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " "}]}],
        r"^data\.layout: 1 conversation in column 'messages' \(line 2\) has an empty assistant turn.*Fix: write the answer",
    ),
    "ends on user": (
        [{"messages": [{"role": "user", "content": "x"}]}],
        r"^data\.layout: 1 conversation in column 'messages' \(line 2\) ends on a user \(or system\) turn.*Fix: end every conversation",
    ),
    "tool call": (
        [{"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"}]}],
        r"^data\.layout: 1 conversation in column 'messages' \(line 2\) has a tool-call turn.*Fix: remove those rows",
    ),
    "multimodal": (
        [{"messages": [{"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": "y"}]}],
        r"^data\.layout: 1 conversation in column 'messages' \(line 2\) has a turn whose content is a list of parts.*Fix:",
    ),
    "mixed layouts": (
        [{"prompt": "p", "completion": "c"}],
        r"^data\.layout: mixed layouts in one file: the rows are conversation \(messages\), but 1 row is "
        r"prompt_completion \(prompt/completion\) \(line 2\)\. Fix: put every row in one layout",
    ),
}


def test_bad_conversations_are_counted_with_the_right_verb_column_and_fix(tmp_path):
    # Was: "data: 2 conversations (lines 1, 2) is not a list of turns (...)." (no Fix, "is", field data).
    p = write(tmp_path, "s.jsonl", [{"messages": "hello there"}, {"messages": "x y"}])
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=p))
    assert e.value.problems == [
        "data.layout: 2 rows in column 'messages' (lines 1, 2) are not lists of turns (objects with role/content "
        'or from/value). Fix: write each row\'s messages as a list of turns such as [{"role": "user", "content": '
        '"Hi"}, ...], or choose the layout text to train on the column as plain text.'
    ]
    assert load_text(DataConfig(path=p, layout="text")).texts == ["hello there", "x y"]  # that fix works
    ends = [{"role": "user", "content": "x"}]
    p = write(tmp_path, "e.jsonl", [{"conversations": [{"from": "human", "value": "x"}]}] * 2)
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=p))
    assert e.value.problems == [
        "data.layout: 2 conversations in column 'conversations' (lines 1, 2) end on a user (or system) turn: there "
        "is no answer to learn at its end. Fix: end every conversation with an assistant turn, or remove the last turn."
    ]
    p = write(tmp_path, "n.jsonl", [{"messages": ends}])
    with pytest.raises(ConfigError, match=r"^data\.layout: 1 conversation in column 'messages' \(line 1\) ends on"):
        load_text(DataConfig(path=p))


def test_an_unknown_role_is_shown_cut_short(tmp_path):
    # Was: a 4,000-character role was echoed whole (a 4 KB message); and every distinct role was listed.
    answer = {"role": "assistant", "content": "y"}
    rows = [{"messages": [{"role": "user" * 1000, "content": "x"}, answer]}]
    rows += [{"messages": [{"role": r, "content": "x"}, answer]} for r in ("bot", "human", "narrator", "ai")]
    with pytest.raises(ConfigError) as e:
        load_text(DataConfig(path=write(tmp_path, "r.jsonl", rows)))
    assert e.value.problems == [
        "data.layout: 5 conversations in column 'messages' (lines 1, 2, 3, 4, 5) have a turn with an unknown role "
        "('useruseruseruseru...eruseruseruseruser', 'bot', 'human' and 2 more). Fix: give every turn a role of "
        "system, user or assistant (ShareGPT: from system, human or gpt)."
    ]


@pytest.mark.parametrize("case", list(BAD))
def test_bad_conversation_rows_are_named_by_line_before_any_model(tmp_path, case):
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    rows, pattern = BAD[case]
    p = write(tmp_path, "bad.jsonl", [good, *rows])
    with pytest.raises(ConfigError, match=pattern):
        load_text(DataConfig(path=p))


def test_preflight_reports_the_bad_row(tmp_path, tiny_model):
    from lora_app.validate import preflight

    p = write(tmp_path, "bad.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(ConfigError) as err:
        preflight({"data": {"path": p}, "model": {"base_model_name_or_path": str(tiny_model)}})
    assert any("ends on a user" in x and "line 1" in x for x in err.value.problems)


def test_preflight_counts_the_answers_max_length_cuts(tmp_path, tiny_model):
    from lora_app.validate import preflight

    rows = [
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "word " * n}]}
        for n in (2, 80, 90)
    ]
    _, pre = preflight(
        {
            "data": {"path": write(tmp_path, "c.jsonl", rows)},
            "model": {"base_model_name_or_path": str(tiny_model)},
            "training": {"max_length": 128, "eval_fraction": 0},
        }
    )
    assert any(n.startswith("Layout conversation (column messages): loss on the answers only") for n in pre.notes)
    assert "The base model has no chat template: conversations use the documented ChatML fallback." in pre.notes
    assert any(n.startswith("2 rows lose part of the answer to max_length (128 tokens).") for n in pre.notes), pre.notes


def test_lint_marks_the_tokens_with_no_loss(bundled_model):
    from transformers import AutoTokenizer

    from lora_app.lint import LOSS, NO_LOSS, lint, merged, plain

    tok = AutoTokenizer.from_pretrained(bundled_model)
    td = load_text(DataConfig(path=str(CHAT)))
    res = lint(td, tok, 256, n=2)
    assert len(res.rows) == 2 and res.rows[0]["line"] == 1
    parts = merged(res.rows[0]["tokens"])
    assert [c for _, c in parts] == [NO_LOSS, LOSS, NO_LOSS]  # the answer, then the trailing newline
    assert parts[1][0] == td.texts[0][-1]["content"] + "<|im_end|>"
    assert res.rows[0]["n_tokens"] == len(res.rows[0]["tokens"])
    text = plain(res)
    assert text.startswith("Layout conversation (column messages): loss on the answers only.")
    assert "Chat template: the model's own." in text and "[[<|im_start|>system" in text


def _run(tmp_path, model, data, steps, lr, max_length=96, targets="all-linear", batch=8, eval_rows=16, **data_extra):
    from lora_app.config import RunConfig
    from lora_app.train import train

    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(data), **data_extra},
            "model": {"base_model_name_or_path": str(model)},
            "lora": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": targets},
            "training": {
                "max_steps": steps,
                "warmup_steps": 0,
                "learning_rate": lr,
                "max_length": max_length,
                "per_device_train_batch_size": batch,
                "gradient_accumulation_steps": 1,
                "save_steps": steps,
                "eval_rows": eval_rows,
                "eval_steps": steps,
            },
        }
    ).save(rd / "config.yaml")
    assert train(rd) == 0
    return rd


@pytest.mark.parametrize("layout_file", ["pc", "conv"])
def test_a_run_on_each_layout_learns_the_answers_and_records_the_layout(tmp_path, tiny_model, layout_file):
    from tiny import sample_texts

    from lora_app.events import read_events

    quotes = sample_texts(60)
    if layout_file == "pc":
        rows = [{"prompt": f"Quote {i}: ", "completion": q} for i, q in enumerate(quotes)]
    else:
        rows = [
            {"messages": [{"role": "user", "content": f"Quote {i}"}, {"role": "assistant", "content": q}]}
            for i, q in enumerate(quotes)
        ]
    rd = _run(tmp_path, tiny_model, write(tmp_path, "d.jsonl", rows), 10, 3e-2)
    events, _ = read_events(rd)
    info = next(e for e in events if e["type"] == "info" and "answers_cut" in e)
    assert info["layout"] == ("prompt_completion" if layout_file == "pc" else "conversation")
    evals = [e for e in events if e["type"] == "eval"]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    card = (rd / "adapter" / "README.md").read_text(encoding="utf-8")
    assert f"data_layout: {info['layout']}" in card
    if layout_file == "conv":  # the tokenizer with the template it trained with travels with the adapter
        from transformers import AutoTokenizer

        assert info["template_fallback"] is True
        assert AutoTokenizer.from_pretrained(rd / "adapter").chat_template == FALLBACK_CHAT_TEMPLATE
        # ... and with the merged model: the base (no template) would leave it unable to chat
        from lora_app.merge import MERGED_DIR, merge_run

        merge_run(rd, progress=lambda _: None)
        assert AutoTokenizer.from_pretrained(rd / MERGED_DIR).chat_template == FALLBACK_CHAT_TEMPLATE
    else:
        assert not (rd / "adapter" / "tokenizer.json").exists()


@pytest.mark.slow
def test_a_conversation_run_on_smollm2_lowers_the_held_out_loss_on_answers(tmp_path, bundled_model):
    from lora_app.events import read_events

    # 12 steps of 4 conversations: minutes on a shared 2-core CPU (44 s a step was seen under load).
    rd = _run(
        tmp_path, bundled_model, CHAT, 12, 2e-3, max_length=80, targets=["q_proj", "v_proj"], batch=4, eval_rows=8
    )
    events, _ = read_events(rd)
    info = next(e for e in events if e["type"] == "info" and "answers_cut" in e)
    assert info["layout"] == "conversation" and info["template_fallback"] is False
    evals = [e for e in events if e["type"] == "eval"]
    print(
        f"\nSmolLM2 conversation run: held-out loss on the answers {evals[0]['eval_loss']:.3f} -> {evals[-1]['eval_loss']:.3f}"
    )
    assert evals[-1]["eval_loss"] < 0.95 * evals[0]["eval_loss"], evals
    from transformers import AutoTokenizer

    assert (
        AutoTokenizer.from_pretrained(rd / "adapter").chat_template
        == AutoTokenizer.from_pretrained(bundled_model).chat_template
    )


def test_cli_data_show_prints_the_training_tokens(tmp_path, tiny_model, capsys):
    from lora_app.__main__ import main

    p = write(tmp_path, "pc.jsonl", [{"prompt": "Who said it? ", "completion": "So it goes."}] * 3)
    assert main(["data", "--show", "1", p, "--base", str(tiny_model), "--max-length", "64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Layout prompt/completion (columns prompt, completion): loss on the answers only.\n")
    assert "--- row at line 1:" in out and "--- row at line 2:" not in out
    assert "[[Who said it? ]]So it goes.<|endoftext|>" in out
    assert main(["data", "--show", "1", p, "--layout", "conversation", "--base", str(tiny_model)]) == 2
    assert "data.layout: 'conversation' needs a 'messages'" in capsys.readouterr().err


def test_a_conversation_adapter_is_pushed_with_its_tokenizer_and_layout(tmp_path, tiny_model, hub_server):
    """The contract Try it relies on: the card's ``data_layout`` and the adapter's tokenizer with
    the chat template it trained with, also in the Hub copy."""
    import shutil

    import yaml

    from lora_app import hub
    from lora_app.models import HUB_ID_FILE

    base = tmp_path / "tiny-llama"
    shutil.copytree(tiny_model, base)
    (base / HUB_ID_FILE).write_text("lora-app-test/tiny-llama")
    rows = [
        {"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": "A."}]} for i in range(12)
    ]
    rd = _run(tmp_path, base, write(tmp_path, "c.jsonl", rows), 2, 1e-3, eval_rows=None)
    ad = rd / "adapter"
    saved = {p.name for p in ad.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json"} <= saved
    hub.push_adapter(rd, "alice/chat-lora", token="hf_alice")
    stored = hub_server.files("model", "alice/chat-lora")
    assert set(stored) == {".gitattributes", *saved}
    meta = yaml.safe_load(stored["README.md"].decode().split("---", 2)[1])
    assert meta["data_layout"] == "conversation"
    assert "layout `conversation`" in stored["README.md"].decode()
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(ad).chat_template == FALLBACK_CHAT_TEMPLATE


def test_no_answer_within_max_length_is_refused_at_check_and_fails_the_run_before_the_model_loads(tmp_path, tiny_model):
    """Every row's answer past max_length (a long system prompt): all rows were dropped and the run
    failed after loading the model with torch's "num_samples should be a positive integer value,
    but got num_samples=0" (found by the breaker). Check and the run say the field and the fix."""
    from lora_app.config import ConfigError, RunConfig
    from lora_app.events import read_events
    from lora_app.train import train
    from lora_app.validate import preflight

    rows = [
        {
            "messages": [
                {"role": "system", "content": "Be brief. " * 40},
                {"role": "user", "content": f"Q{i}"},
                {"role": "assistant", "content": "An answer."},
            ]
        }
        for i in range(12)
    ]
    cfg = {
        "data": {"path": write(tmp_path, "c.jsonl", rows), "layout": "conversation"},
        "model": {"base_model_name_or_path": str(tiny_model), "precision": "float32"},
        "training": {"max_length": 48, "eval_fraction": 0, "max_steps": 1},
    }
    want = "training.max_length: no training row has an answer token within 48 tokens (12 rows dropped"
    with pytest.raises(ConfigError) as err:
        preflight(cfg)
    assert any(p.startswith(want) and "Fix: raise training.max_length" in p for p in err.value.problems), err.value
    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(cfg).save(rd / "config.yaml")
    assert train(rd) == 1
    events, _ = read_events(rd)
    assert [e["message"] for e in events if e.get("status") == "failed"][-1].startswith(want)
    assert not any("loading the weights" in str(e.get("message")) for e in events)  # refused before


def test_the_training_tokens_show_whole_characters_a_token_splits(bundled_model, tmp_path):
    """SmolLM2's byte-level BPE splits most Chinese characters over 2-3 tokens; decoded one token at a
    time, the training-tokens view showed "����时����" (found by the newcomer). Each character now goes
    whole to the token that completes it, and the row still has one entry per token."""
    from transformers import AutoTokenizer

    from lora_app.lint import lint, token_texts

    tok = AutoTokenizer.from_pretrained(bundled_model)
    text = "床前明月光，疑是地上霜。Two things are infinite."
    ids = tok(text)["input_ids"]
    pieces = token_texts(tok, ids)
    assert len(pieces) == len(ids) > len(text) // 2
    assert "".join(pieces) == tok.decode(ids) == text and "\ufffd" not in "".join(pieces)
    assert any(p == "" for p in pieces)  # some characters did take several tokens
    res = lint(load_text(DataConfig(path=write(tmp_path, "zh.jsonl", [{"text": text}]))), tok, 64, n=1)
    shown = "".join(t for t, _ in res.rows[0]["tokens"])
    assert shown.startswith(text) and "\ufffd" not in shown

"""lora_app.chat: an adapter trained on conversations, tried as a conversation (layout from its
card, the template it was trained with, prompt ids, the reply ending at the end-of-turn token),
on tiny models whose replies are known exactly (tests/chat_models.py)."""

from __future__ import annotations

import pytest
from chat_models import END_TEMPLATE, bigram_model, chatml_tokenizer, save_adapter

from lora_app import chat
from lora_app.chat_template import FALLBACK_CHAT_TEMPLATE
from lora_app.config import ConfigError
from lora_app.generate import Generator, Loaded

ALICE = "hf_alice"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def chatml(tmp_path_factory):
    """A bigram model with ChatML tokens: after "<|im_start|>assistant\\n" it says " no", then
    <|im_end|>, then (if not stopped) "zzz...". Returns (folder, tokenizer, ids)."""
    tok = chatml_tokenizer()
    ids = {
        "nl": tok.convert_tokens_to_ids("Ċ"),
        "A": tok.convert_tokens_to_ids("Ġn"),
        "B": tok.convert_tokens_to_ids("o"),
        "eot": tok.convert_tokens_to_ids("<|im_end|>"),
        "C": tok.convert_tokens_to_ids("z"),
    }
    assert len(set(ids.values())) == 5 and ids["eot"] == len(tok) - 1
    table = {ids["nl"]: ids["A"], ids["A"]: ids["B"], ids["B"]: ids["eot"], ids["eot"]: ids["C"], ids["C"]: ids["C"]}
    return bigram_model(tmp_path_factory.mktemp("chatml") / "base", tok, table), tok, ids


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A bigram model on the tiny tokenizer without a chat template or ChatML tokens: after a
    newline it says " no", then "[END]" (five plain tokens), then "zzz..."."""
    from tiny import build_tokenizer

    tok = build_tokenizer()
    seq = ["Ċ", "Ġn", "o", "[", "E", "N", "D", "]", "z"]
    ids = [tok.convert_tokens_to_ids(t) for t in seq]
    assert len(set(ids)) == len(ids) and tok.chat_template is None
    table = dict(zip(ids[:-1], ids[1:], strict=True)) | {ids[-1]: ids[-1]}
    return bigram_model(tmp_path_factory.mktemp("plain") / "base", tok, table), tok


def test_layout_is_read_from_the_adapter_card(chatml, tmp_path):
    base, _, _ = chatml
    conv = save_adapter(base, tmp_path / "conv")
    assert chat.adapter_layout(str(conv)) == "conversation"
    assert chat.adapter_layout(str(save_adapter(base, tmp_path / "pc", layout="prompt_completion"))) == (
        "prompt_completion"
    )
    older = save_adapter(base, tmp_path / "older", layout=None)  # a card from before layouts
    assert chat.adapter_layout(str(older)) == "text"
    odd = save_adapter(base, tmp_path / "odd", layout="{nonsense: 1}")
    assert chat.adapter_layout(str(odd)) == "text"
    (older / "README.md").unlink()  # no card at all
    assert chat.adapter_layout(str(older)) == "text"
    assert chat.adapter_layout(None) == chat.adapter_layout("  ") == "text"


def test_layout_and_template_of_a_hub_adapter_read_with_the_token(chatml, tmp_path, hub_server):
    base, _, ids = chatml
    folder = save_adapter(base, tmp_path / "hub", template=END_TEMPLATE)
    hub_server.create_repo("model", "alice/chatty", private=True)
    for p in folder.iterdir():
        hub_server.add_file("model", "alice/chatty", p.name, p.read_bytes())
    # private: not readable by another account (asked first: huggingface_hub answers a refused
    # request from its cache once a file of the repo is there)
    assert chat.adapter_layout("alice/chatty", token="hf_bob") == "text"
    assert chat.adapter_layout("alice/chatty", token=ALICE) == "conversation"
    assert chat.saved_chat_template("alice/chatty", token=ALICE) == END_TEMPLATE
    # a Hub adapter without a saved template: the base's own is used
    hub_server.create_repo("model", "alice/plain-card")
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        hub_server.add_file("model", "alice/plain-card", name, (folder / name).read_bytes())
    assert chat.saved_chat_template("alice/plain-card", token=ALICE) is None
    gen = Generator()
    loaded = gen.load("alice/plain-card", token=ALICE)
    assert chat.chat_template_for(loaded, ALICE)[1] == "the base model's"
    assert list(chat.stream_chat(gen, HI, loaded, 8, token=ALICE))[-1] == "no"


def test_template_order_adapter_then_base_then_fallback(chatml, plain, tmp_path):
    base, tok, _ = chatml
    with_tmpl = save_adapter(base, tmp_path / "a", template=END_TEMPLATE)
    without = save_adapter(base, tmp_path / "b")

    def pick(tokenizer, adapter):
        return chat.chat_template_for(Loaded(None, tokenizer, str(base), adapter and str(adapter), ""))

    assert pick(tok, with_tmpl) == (END_TEMPLATE, "the adapter's")
    assert pick(tok, without) == (tok.chat_template, "the base model's")
    assert pick(plain[1], without) == (FALLBACK_CHAT_TEMPLATE, "fallback (ChatML)")
    assert pick(plain[1], None) == (FALLBACK_CHAT_TEMPLATE, "fallback (ChatML)")
    # transformers 4 kept the template in tokenizer_config.json (also as a list of named ones)
    import json

    (without / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": [{"name": "default", "template": "T1"}, {"name": "tool_use", "template": "T2"}]})
    )
    assert pick(tok, without) == ("T1", "the adapter's")


def test_prompt_ids_are_apply_chat_template_s_and_keep_every_turn(chatml, plain):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "And then?"},
    ]
    for tok, tmpl in ((chatml[1], chatml[1].chat_template), (plain[1], FALLBACK_CHAT_TEMPLATE)):
        ids = chat.prompt_ids(tok, conv, tmpl)
        want = tok.apply_chat_template(conv, chat_template=tmpl, add_generation_prompt=True, tokenize=True)
        assert ids == list(want["input_ids"] if isinstance(want, dict) or hasattr(want, "keys") else want)
        assert tok.decode(ids) == (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello there<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n"
            "<|im_start|>assistant\n"
        )
    # the base template's default system turn comes when the user gives none
    assert (
        chatml[1]
        .decode(chat.prompt_ids(chatml[1], HI, chatml[1].chat_template))
        .startswith("<|im_start|>system\nYou are a tiny test model.<|im_end|>")
    )


def test_end_of_turn_is_a_token_or_a_stop_string(chatml, plain):
    tok, ids = chatml[1], chatml[2]
    assert chat.end_of_turn(tok, tok.chat_template) == ([ids["eot"]], [])
    assert chat.end_of_turn(plain[1], FALLBACK_CHAT_TEMPLATE) == ([], ["<|im_end|>"])  # plain text here
    assert chat.end_of_turn(plain[1], END_TEMPLATE) == ([], ["[END]"])
    assert chat.end_of_turn(plain[1], "{{ messages[0]['content'] }}") == ([], [])  # nothing after a turn
    glued = "{% for m in messages %}{{ m['content'] + '<|im_end|><|im_start|>' }}{% endfor %}"
    assert chat.end_of_turn(tok, glued) == ([ids["eot"]], [])  # no space after the marker
    assert chat.cut_reply(" no[END]zz", ["[END]"]) == " no"
    assert chat.cut_reply(" no[EN", ["[END]"]) == " no"  # a marker still arriving is held back
    assert chat.cut_reply(" no[x", ["[END]"]) == " no[x"


def test_the_reply_stops_at_the_end_of_turn_token_which_is_not_shown(chatml, tmp_path):
    base, _, ids = chatml
    gen = Generator()
    loaded = gen.load(str(save_adapter(base, tmp_path / "ad")))
    steps = list(chat.stream_chat(gen, HI, loaded, max_new_tokens=10))
    assert steps[-1] == "no" and "n" in steps  # streamed: " n" shown before " no"
    assert all("<|im_end|>" not in s and "z" not in s for s in steps)
    # the same model not told where the turn ends runs on past it: the stop is what ends it
    prompt = chat.prompt_ids(loaded.tokenizer, HI, loaded.tokenizer.chat_template)
    assert (
        list(gen.stream_ids(prompt, loaded, max_new_tokens=6))[-1] == " nozzz"
    )  # " n", "o", <|im_end|> (not shown), "z" x3


def test_a_plain_text_end_of_turn_stops_too(plain, tmp_path):
    """The adapter's saved template ends a turn with "[END]", five tokens of this vocabulary."""
    base, tok = plain
    gen = Generator()
    loaded = gen.load(str(save_adapter(base, tmp_path / "ad", template=END_TEMPLATE)))
    assert chat.chat_template_for(loaded) == (END_TEMPLATE, "the adapter's")
    steps = list(chat.stream_chat(gen, HI, loaded, max_new_tokens=12))
    assert steps[-1] == "no" and not any("[" in s or "z" in s for s in steps)
    prompt = chat.prompt_ids(tok, HI, END_TEMPLATE)
    assert list(gen.stream_ids(prompt, loaded, max_new_tokens=9))[-1] == " no[END]zz"


def test_side_by_side_sends_the_same_conversation_to_base_and_adapter(chatml, tmp_path):
    base, tok, ids = chatml
    ad = save_adapter(base, tmp_path / "ad", swap=(ids["nl"], ids["B"]))  # the adapter skips " n"
    gen = Generator()
    loaded = gen.load(str(ad))
    *_, (base_reply, adapter_reply) = chat.compare_chat(gen, HI, loaded, max_new_tokens=8)
    assert (base_reply, adapter_reply) == ("no", "o")
    assert list(chat.stream_chat(gen, HI, loaded, 8))[-1] == "o"  # with the adapter, as in Chat
    with pytest.raises(ConfigError, match="adapter: none chosen"):
        list(chat.compare_chat(gen, HI, gen.load(None, str(base))))


def test_bad_conversations_are_refused_before_any_model_loads():
    for msgs, want in (
        ([], "message: nothing typed"),
        ([{"role": "user", "content": "  "}], "message: nothing typed"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "message: nothing typed"),
        ([{"role": "tool", "content": "x"}, {"role": "user", "content": "Hi"}], "message 1: role 'tool'"),
        ([{"role": "user", "content": ["x"]}], "message 1: its content is not text"),
    ):
        with pytest.raises(ConfigError, match=want):
            chat.check_messages(msgs)


def test_a_template_that_fails_is_a_problem_not_a_crash(chatml, tmp_path):
    """A chat template is code from the adapter's author: one that does not parse, raises
    (``raise_exception``), reads past the messages or renders nothing is a problem naming the
    template and the fix, in the chat box's message too (found by the breaker: an uncaught
    TemplateSyntaxError / TemplateError / UndefinedError / a reshape RuntimeError)."""
    base = chatml[0]
    gen = Generator()
    for i, (tmpl, why) in enumerate(
        (
            ("{% for %}garbage {{", "Expected an expression"),
            ("{{ raise_exception('no system role') }}", "no system role"),
            ("{{ messages[5]['content'] }}", "no element 5"),
            ("{{ 1 + 'a' }}", "unsupported operand"),
            ("{# renders nothing #}", "renders no text"),
        )
    ):
        loaded = gen.load(str(save_adapter(base, tmp_path / f"ad{i}", template=tmpl)))
        with pytest.raises(ConfigError) as err:
            list(chat.stream_chat(gen, HI, loaded, max_new_tokens=4))
        (problem,) = err.value.problems
        assert problem.startswith("chat template (the adapter's): ") and why in problem, problem
        assert "Fix: correct chat_template.jinja" in problem


def test_a_template_that_never_ends_is_stopped(chatml, tmp_path):
    """A Hub adapter is anyone's: its chat_template.jinja with nested loops of range(100000)
    (the sandbox's largest) rendered for hours, holding a web worker's CPU (found by the breaker).
    Rendering now has a deadline; the problem names it."""
    import time

    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    gen = Generator()
    loaded = gen.load(str(save_adapter(chatml[0], tmp_path / "ad", template=loop + "{{ messages[0]['content'] }}")))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        list(chat.stream_chat(gen, HI, loaded, max_new_tokens=4))
    took = time.perf_counter() - t0
    assert chat.RENDER_LIMIT_S <= took < chat.RENDER_LIMIT_S + 5, took
    assert err.value.problems == [
        f"chat template (the adapter's): it did not finish rendering in {chat.RENDER_LIMIT_S:g} s. "
        "Fix: correct chat_template.jinja (or the tokenizer's chat_template) saved with the model, "
        "or try it as a completion."
    ]
    # the end of turn is looked for under the same deadline (EOS alone then)
    t0 = time.perf_counter()
    assert chat.end_of_turn(loaded.tokenizer, loop) == ([], [])
    assert time.perf_counter() - t0 < chat.RENDER_LIMIT_S + 5


def test_a_conversation_longer_than_the_model_reads_is_refused_fast(chatml, tmp_path):
    """10,000 turns (far past the model's 512 positions) were all fed to generate(): 77 s of CPU
    for a tiny model on a shared server, past the positions it was trained on. Now a problem
    naming the length and the fix, before generate(); a reply that would run past the end is cut
    to fit (found by the breaker)."""
    import time

    gen = Generator()
    loaded = gen.load(str(save_adapter(chatml[0], tmp_path / "ad")))
    long = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "no"}] * 5000 + HI
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        list(chat.stream_chat(gen, long, loaded, max_new_tokens=8))
    assert time.perf_counter() - t0 < 20
    (problem,) = err.value.problems
    n = len(chat.prompt_ids(loaded.tokenizer, long, loaded.tokenizer.chat_template))
    assert problem == (
        f"conversation: {n} tokens; this model reads at most 512, its reply included. "
        "Fix: clear the conversation (or shorten the message)."
    )
    # the same check guards a plain completion prompt
    want = r"^prompt: \d+ tokens; this model reads at most 512, its reply included\. Fix: shorten it\.$"
    with pytest.raises(ConfigError, match=want):
        list(gen.stream("Hi " * 600, adapter=loaded.adapter))
    # a prompt that fits but whose reply would not: max_new_tokens cut to what is left
    ids = [loaded.tokenizer.convert_tokens_to_ids("Ċ")] * 508
    assert list(gen.stream_ids(ids, loaded, max_new_tokens=50))[-1] == " noz"  # 4 tokens: 508 + 4 = 512 positions


def test_a_seed_torch_cannot_take_is_a_problem_not_a_crash(chatml, tmp_path):
    """The side-by-side seed box has a minimum but no maximum: a script sent 2**64 and
    torch.manual_seed raised "Overflow when unpacking long long" in the generate thread, an
    uncaught error (found by the breaker). Now a problem naming the seed's range; the largest
    seed torch takes still works."""
    gen = Generator()
    loaded = gen.load(str(save_adapter(chatml[0], tmp_path / "ad")))
    for seed in (2**64, 10**30, -1):
        with pytest.raises(ConfigError) as err:
            list(chat.compare_chat(gen, HI, loaded, max_new_tokens=4, seed=seed))
        assert err.value.problems == [f"seed: {seed} is out of range. Fix: a whole number from 0 to {2**64 - 1}."]
    assert list(chat.stream_chat(gen, HI, loaded, max_new_tokens=4, seed=2**64 - 1))[-1] == "no"


def test_the_chat_box_keeps_the_history_over_turns(chatml, tmp_path):
    """The Try tab's chat handler (as Gradio calls it): each reply is appended to the history the
    Chatbot sent, which the next turn sends back, whole, to the model."""
    import gradio as gr

    from lora_app import identity
    from lora_app.jobs import JobManager
    from lora_app.ui import chat_panel, try_tab
    from lora_app.ui.common import AppContext

    ad = save_adapter(chatml[0], tmp_path / "ad")
    jobs = JobManager(tmp_path / "runs")
    try:
        with gr.Blocks() as demo:
            parts = try_tab.build(AppContext(jobs, Generator(), frozenset()), gr.State(None), None)
        reply = next(f.fn for f in demo.fns.values() if f.name == "chat_reply")
        owner, _ = identity.issue(identity.signing_key(jobs.root))
        assert parts["detect_layout"](str(ad), owner)[0] == "Chat"
        assert parts["detect_layout"]("", owner)[0] == gr.update()
        steps = list(reply(str(ad), "Hi", [], "", 8, 0.0, owner))
        where, shown, _ = steps[-1]
        assert "chat template: the base model's" in where
        # the message box is emptied once, then left alone (what is typed meanwhile stays)
        assert steps[0][2] == "" and all(st[2] == gr.skip() for st in steps[1:])
        assert shown == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "no"}]
        # the Chatbot sends its value back as Gradio normalises it: content as a list of parts
        as_sent = [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in shown]
        *_, (where, shown2, _) = reply(str(ad), "More?", as_sent, "Be brief.", 8, 0.0, owner)
        assert shown2 == shown + [{"role": "user", "content": "More?"}, {"role": "assistant", "content": "no"}]
        _, msgs = chat_panel.conversation(as_sent, "More?", "Be brief.")
        assert msgs == [{"role": "system", "content": "Be brief."}, *shown, {"role": "user", "content": "More?"}]
        # an empty message: said, the history kept, nothing generated
        where, kept, box = list(reply(str(ad), "  ", shown, "", 8, 0.0, owner))[-1]
        assert "message: nothing typed" in where and kept == shown
    finally:
        jobs.close()


def test_an_adapter_cannot_bring_another_visitors_run_as_its_base(chatml, tmp_path, monkeypatch):
    """An adapter (a Hub repo of one's own, or a folder) whose adapter_config.json names another
    visitor's run folder as its base model: Try it (chat, completion, both side by side) loaded that
    folder for anyone (found by the breaker; only the Train tab applied the base-folder rule).
    Now the folder rule of the Train tab applies to the base an adapter names too."""
    import json
    import shutil

    import gradio as gr
    from conftest import EXAMPLE_QUOTES

    from lora_app import identity
    from lora_app.config import RunConfig
    from lora_app.jobs import JobManager
    from lora_app.ui import try_tab
    from lora_app.ui.common import AppContext

    monkeypatch.delenv("SPACE_ID", raising=False)
    jobs = JobManager(tmp_path / "runs", max_running=0)  # queued runs never start
    alice, _ = identity.issue(identity.signing_key(jobs.root))
    owner, _ = identity.issue(identity.signing_key(jobs.root))
    try:
        victim = jobs.submit(
            RunConfig.build(
                {"data": {"path": str(EXAMPLE_QUOTES)}, "model": {"base_model_name_or_path": str(chatml[0])}}
            ),
            owner=alice,
        )
        secret = jobs.run_dir(victim) / "merged"  # e.g. alice's merged model
        shutil.copytree(chatml[0], secret)
        evil = save_adapter(chatml[0], tmp_path / "evil")
        conf = json.loads((evil / "adapter_config.json").read_text())
        for base in (str(secret), f"{tmp_path}/runs/../runs/{victim}/merged"):
            conf["base_model_name_or_path"] = base
            (evil / "adapter_config.json").write_text(json.dumps(conf))
            gen = Generator()
            with gr.Blocks() as demo:
                try_tab.build(AppContext(jobs, gen, frozenset()), gr.State(None), None)
            fns = {f.name: f.fn for f in demo.fns.values()}
            where, shown, box = list(fns["chat_reply"](str(evil), "Hi", [], "", 4, 0.0, owner))[-1]
            assert "of yours" in where and shown == [] and box == "Hi", where
            where, out = list(fns["generate"](str(evil), "Hi", 4, 0.0, owner))[-1]
            assert "of yours" in where and out == "", where
            where, base_out, adapted = list(fns["side_by_side"](str(evil), "Hi", 4, 0.0, 0, owner))[-1]
            assert "of yours" in where and base_out == adapted == "", where
            assert gen._loaded is None  # nothing of alice's was loaded
            # alice herself may: her own run as the base
            where, shown, _ = list(fns["chat_reply"](str(evil), "Hi", [], "", 4, 0.0, alice))[-1]
            assert shown[-1] == {"role": "assistant", "content": "no"}, where
    finally:
        jobs.close()


@pytest.mark.slow
def test_smollm2_answers_in_its_template_and_stops_at_im_end(bundled_model):
    """The bundled SmolLM2-135M-Instruct: its own template, <|im_end|> (id 2) ends the turn."""
    gen = Generator()
    loaded = gen.load(None, str(bundled_model))
    tmpl, source = chat.chat_template_for(loaded)
    assert source == "the base model's" and chat.end_of_turn(loaded.tokenizer, tmpl) == ([2], [])
    steps = list(chat.stream_chat(gen, [{"role": "user", "content": "What is the capital of France?"}], loaded, 100))
    assert "Paris" in steps[-1] and len(steps) > 3, steps  # streamed, token by token
    n = len(loaded.tokenizer(steps[-1])["input_ids"])
    assert n < 40 and "im_end" not in steps[-1], (n, steps[-1])  # ended by the turn, not by max_new_tokens

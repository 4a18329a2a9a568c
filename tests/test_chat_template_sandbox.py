"""Chat-template bombs: a template is anyone's code (a Hub model's or adapter's), rendered by the
web worker. One C-level operation (``'x' * 10**10``) or a loop building memory step by step took
the whole app down (OOM killer); now each is refused in seconds, with a message naming whose
template and the fix, while this process's memory stays put (lora_app.template_sandbox: sizes
before computing; lora_app.template_process: the render runs in a capped child process)."""

from __future__ import annotations

import html
import json
import time

import pytest
from chat_models import CHATML_WITH_SYSTEM, END_TEMPLATE, chatml_tokenizer, save_adapter

from lora_app.chat_template import FALLBACK_CHAT_TEMPLATE
from lora_app.config import ConfigError
from lora_app.template_process import MEMORY_LIMIT_MB, RENDER_LIMIT_S, apply_chat_template
from lora_app.template_sandbox import MAX_CHARS, TemplateRefused

HI = [{"role": "user", "content": "Hi"}]
LOOP = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
# (template, what the refusal says): each asks for gigabytes, or hours
BOMBS = {
    "str * int": ("{{ 'x' * 10**10 }}", "'*' of a str of length 1 by 10,000,000,000"),
    "set, then *": ("{% set s = 'x' * 10**9 %}{{ s * 100 }}", "'*' of a str of length 1 by 1,000,000,000"),
    "list * int": ("{{ [messages] * 10**10 }}", "'*' of a list of length 1 by 10,000,000,000"),
    "int ** int": ("{% set n = 10**10 %}{{ 2 ** n }}", "'**' of 2 by 10,000,000,000"),
    "printf width": ("{{ '%10000000000s' % 'x' }}", "a format width"),
    "format width": ("{{ '{:>10000000000}'.format('x') }}", "a format width"),
    "str.ljust": ("{{ 'x'.ljust(10**10) }}", "str.ljust"),
    "center filter": ("{{ 'x'|center(10**10) }}", "the center filter"),
    "tojson indent": ("{{ messages|tojson(indent=10**10) }}", "tojson's indent"),
    "doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "'+' of two sequences",
    ),
    "output loop": (
        "{% for a in range(100000) %}{% for b in range(1000) %}{{ 'x' * 64 }}{% endfor %}{% endfor %}",
        "the rendered text",
    ),
    # no single step is too big: 5 lists of 16 Mi items (640 MB) end at the child's memory cap
    "step by step": (
        "{% set s = 'x' * 16000000 %}{{ [s|list, s|list, s|list, s|list, s|list]|length }}",
        f"rendering would allocate more than {MEMORY_LIMIT_MB} MB",
    ),
    "nested loops": (LOOP, f"it did not finish rendering in {RENDER_LIMIT_S:g} s"),
}


def _peak_mb() -> float:
    """This process's peak resident memory so far (VmHWM), MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


@pytest.fixture(scope="module")
def tok():
    return chatml_tokenizer()


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_bomb_is_refused_in_seconds_without_taking_memory(tok, name):
    template, what = BOMBS[name]
    apply_chat_template(tok, HI, chat_template="{{ 'warm' }}", tokenize=False)  # the child started
    before, t0 = _peak_mb(), time.perf_counter()
    with pytest.raises(TemplateRefused) as err:
        apply_chat_template(tok, HI, chat_template=template, tokenize=False)
    took = time.perf_counter() - t0
    assert what in str(err.value), str(err.value)
    assert str(err.value).startswith("it did not finish" if name == "nested loops" else "rendering would allocate")
    assert took < RENDER_LIMIT_S + 3, took
    assert _peak_mb() - before < 200
    # the next render works (a killed child is replaced)
    assert apply_chat_template(tok, HI, chat_template=FALLBACK_CHAT_TEMPLATE, tokenize=False) == (
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_a_big_but_real_conversation_still_renders(tok):
    """The caps are far above real use: a 2 Mi-character message renders, as transformers does."""
    long = [{"role": "user", "content": "word " * 400_000}]
    want = tok.apply_chat_template(long, chat_template=CHATML_WITH_SYSTEM, tokenize=False)
    assert apply_chat_template(tok, long, chat_template=CHATML_WITH_SYSTEM, tokenize=False) == want
    assert len(want) > 2_000_000 and MAX_CHARS > 8 * len(want)


LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
QWEN_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n# Tools\\n<tools>' }}{%- for tool in tools %}"
    "{{- '\\n' + tool | tojson(indent=2, sort_keys=true) }}{%- endfor %}{{- '\\n</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- set ns = namespace(n=0) %}{%- for message in messages %}{%- set ns.n = ns.n + 1 %}"
    "{%- if message.role == 'system' and loop.first %}{{- '<|im_start|>system\\n' + message.content + ' (' + "
    "strftime_now('%Y') | length | string + ')<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content | replace('  ', ' ') + '<|im_end|>\\n' }}"
    "{%- endif %}{%- if ns.n > 50 %}{% break %}{% endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
    "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
CONVS = [
    HI,
    [
        {"role": "user", "content": "Hi  there"},
        {"role": "assistant", "content": "Yo"},
        {"role": "user", "content": "é?"},
    ],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2"}],
]


def _templates(tok, bundled):
    from transformers import AutoTokenizer

    smol = AutoTokenizer.from_pretrained(bundled)
    return smol, {
        "SmolLM2": smol.chat_template,
        "fallback": FALLBACK_CHAT_TEMPLATE,
        "chatml": CHATML_WITH_SYSTEM,
        "end": END_TEMPLATE,
        "llama3": LLAMA3,
        "mistral": MISTRAL,
        "qwen+tools": QWEN_TOOLS,
        "gemma": GEMMA,
    }


def test_real_templates_render_byte_for_byte_as_transformers(tok, bundled_model):
    smol, templates = _templates(tok, bundled_model)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": "é"}}}]
    n = 0
    for t in (tok, smol):
        for name, tmpl in templates.items():
            for conv in CONVS:
                for gen in (False, True):
                    kw = {"add_generation_prompt": gen, "tools": tools if name == "qwen+tools" else None}
                    try:
                        want = t.apply_chat_template(conv, chat_template=tmpl, tokenize=False, **kw)
                    except Exception as err:  # mistral's raise_exception on a system turn: the same error
                        with pytest.raises(Exception) as ours:
                            apply_chat_template(t, conv, chat_template=tmpl, tokenize=False, **kw)
                        assert (type(ours.value).__name__, str(ours.value)) == (type(err).__name__, str(err))
                        continue
                    got = apply_chat_template(t, conv, chat_template=tmpl, tokenize=False, **kw)
                    assert got == want, (name, conv, gen)
                    ids = apply_chat_template(t, conv, chat_template=tmpl, return_dict=True, **kw)["input_ids"]
                    assert ids == t.apply_chat_template(conv, chat_template=tmpl, return_dict=True, **kw)["input_ids"]
                    n += 1
    assert n >= 80


def test_try_it_chat_shows_the_message_for_a_bomb(tmp_path):
    """The /chat endpoint's function with an adapter whose saved chat_template.jinja is a bomb:
    the problem in the 'where' box, the history kept, nothing raised, this process's memory put."""
    import gradio as gr
    from chat_models import bigram_model

    from lora_app import identity
    from lora_app.generate import Generator
    from lora_app.jobs import JobManager
    from lora_app.ui import try_tab
    from lora_app.ui.common import AppContext

    t = chatml_tokenizer()
    nl, eot = t.convert_tokens_to_ids("Ċ"), t.convert_tokens_to_ids("<|im_end|>")
    base = bigram_model(tmp_path / "base", t, {nl: eot, eot: eot})
    jobs = JobManager(tmp_path / "runs")
    try:
        with gr.Blocks() as demo:
            try_tab.build(AppContext(jobs, Generator(), frozenset()), gr.State(None), None)
        reply = next(f.fn for f in demo.fns.values() if f.name == "chat_reply")
        owner, _ = identity.issue(identity.signing_key(jobs.root))
        for i, (bomb, what) in enumerate((BOMBS["set, then *"], BOMBS["step by step"])):
            ad = save_adapter(base, tmp_path / f"ad{i}", template=bomb)
            before, t0 = _peak_mb(), time.perf_counter()
            where, shown, box = list(reply(str(ad), "Hi", [], "", 4, 0.0, owner))[-1]
            where = html.unescape(where)
            assert time.perf_counter() - t0 < RENDER_LIMIT_S + 10 and _peak_mb() - before < 200
            assert "chat template (the adapter's): rendering would allocate more than" in where, where
            assert what in where and "Fix:" in where and shown == [] and box == "Hi"
    finally:
        jobs.close()


def test_the_data_tab_and_training_say_whose_template_it_was(tmp_path):
    """The Data tab's token view renders the data with the base model's template (as training
    does): a bomb there is the problem naming that model, not a dead app; training's
    tokenize_data raises the same ConfigError, which fails the run with it in the event log."""
    from lora_app.chat_rows import tokenize_data
    from lora_app.ui.data_tab import show_lint

    t = chatml_tokenizer()
    t.chat_template = BOMBS["str * int"][0]
    t.save_pretrained(tmp_path / "bomb-model")
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows * 3) + "\n", encoding="utf-8")
    md, spans = show_lint({"path": str(data), "layout": "conversation"}, str(tmp_path / "bomb-model"), 128)
    assert spans is None
    assert f"chat_template of {tmp_path / 'bomb-model'}: rendering would allocate more than 16 MB" in md, md
    assert "Fix: use another model or adapter" in md
    with pytest.raises(ConfigError) as err:
        tokenize_data([rows[0]["messages"]], "conversation", t, 128)
    (problem,) = err.value.problems
    assert problem.startswith("chat_template of ") and "'*' of a str of length 1 by 10,000,000,000" in problem


def test_a_bomb_in_the_base_model_s_template_fails_the_training_run(tmp_path, tiny_model):
    """The training process renders every conversation with the base model's template: a bomb
    there ends the run as failed, the message in its event log, instead of taking the machine."""
    import shutil

    from transformers import AutoTokenizer

    from lora_app.config import RunConfig
    from lora_app.events import read_events
    from lora_app.train import train

    base = shutil.copytree(tiny_model, tmp_path / "bomb-base")
    t = AutoTokenizer.from_pretrained(base)
    t.chat_template = BOMBS["step by step"][0]
    t.save_pretrained(base)
    rows = [
        {"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Yo"}]} for i in range(8)
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build(
        {
            "data": {"path": str(data), "layout": "conversation"},
            "model": {"base_model_name_or_path": str(base)},
            "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
            "training": {"max_steps": 2, "save_steps": 2, "max_length": 32, "per_device_train_batch_size": 2},
        }
    ).save(rd / "config.yaml")
    before = _peak_mb()
    assert train(rd) == 1
    assert _peak_mb() - before < 200
    events, _ = read_events(rd)
    assert events[-1]["status"] == "failed"
    assert f"chat_template of {base}: rendering would allocate more than {MEMORY_LIMIT_MB} MB" in events[-1]["message"]


def test_a_render_under_the_value_cap_but_far_longer_than_its_input_is_refused_before_this_process_tokenizes_it(tok):
    """15.6 M characters from "Hi" (under layer 1's 16 Mi per value, under the child's memory cap)
    came back to the caller, which tokenized it: 15 s and +2.9 GB in the web worker, a 6.5 M-token
    prompt for Try it (found by the breaker). The text may be at most 4x its input + 1 Mi."""
    big = "{% for i in range(100000) %}{{ 'ab cd ef gh ' * 13 }}{% endfor %}"  # 15,600,000 characters
    apply_chat_template(tok, HI, chat_template="{{ 'warm' }}", tokenize=False)
    before, t0 = _peak_mb(), time.perf_counter()
    with pytest.raises(TemplateRefused, match=r"the rendered text \(15,600,000 characters\) is far longer"):
        apply_chat_template(tok, HI, chat_template=big, tokenize=True, return_dict=True)
    assert time.perf_counter() - t0 < 3 and _peak_mb() - before < 100
    # as much as RESULT_ALLOWANCE from a short input still renders; a long input may render longer
    fits = "{% for i in range(65536) %}{{ 'abcdefgh' * 2 }}{% endfor %}"
    assert len(apply_chat_template(tok, HI, chat_template=fits, tokenize=False)) == 2**20
    long = [{"role": "user", "content": "w " * 1_000_000}]
    twice = "{% for m in messages %}{{ m.content }}{{ m.content }}{{ m.content }}{% endfor %}"
    assert len(apply_chat_template(tok, long, chat_template=twice, tokenize=False)) == 6_000_000

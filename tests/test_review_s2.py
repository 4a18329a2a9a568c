"""Review findings (session 2): packing on architectures that ignore packed position ids, and
the merge memory estimate when rows are padded."""

import pytest
import torch

from lora_app.batching import plan_step
from lora_app.events import read_events
from lora_app.text import packing_collator, packing_keeps_rows_apart

GIB = 2**30


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory):
    from tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "opt", arch="opt")


def _worst_packed_row_error(path) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    rows = [[5, 9, 11, 3, 2], [7, 8, 2]]
    batch = packing_collator(64, 0)([{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape == (1, 8)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        second = model(input_ids=torch.tensor([rows[1]]), use_cache=False).logits[0]
    return (logits[5:8] - second).abs().max().item()  # the 3-token row, packed after the 5-token row


def test_opt_packed_rows_attend_to_each_other_and_the_probe_says_so(tiny_model, tiny_opt):
    # OPT calls create_causal_mask without position_ids: no packed-sequence mask, rows leak.
    assert _worst_packed_row_error(tiny_model) < 1e-5
    assert _worst_packed_row_error(tiny_opt) > 1e-2
    from transformers import AutoModelForCausalLM

    for path, apart in ((tiny_model, True), (tiny_opt, False)):
        model = AutoModelForCausalLM.from_pretrained(path)
        model.train()
        assert packing_keeps_rows_apart(model) is apart
        assert model.training  # the probe leaves the mode as it found it


def test_an_opt_run_with_packing_on_pads_instead(tmp_path, tiny_opt):
    from lora_app.config import RunConfig
    from lora_app.train import train
    from conftest import EXAMPLE_QUOTES

    rd = tmp_path / "run"
    rd.mkdir()
    RunConfig.build({"data": {"path": str(EXAMPLE_QUOTES), "max_rows": 8},
                     "model": {"base_model_name_or_path": str(tiny_opt)},
                     "lora": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                     "training": {"max_steps": 2, "save_steps": 2, "max_length": 32, "per_device_train_batch_size": 4,
                                  "packing": True}}).save(rd / "config.yaml")
    assert train(rd) == 0
    events, _ = read_events(rd)
    off = [e for e in events if e.get("packing") is False]
    assert len(off) == 1 and "opt" in off[0]["message"]
    assert "| packing | False |" in (rd / "adapter" / "README.md").read_text(encoding="utf-8")


def test_padded_merge_estimate_counts_the_padding():
    # one long row and many short ones: a padded forward of 16 rows is 16 x 512 tokens, not 512 + 15 x 10
    lengths = [512] + [10] * 200
    kw = dict(device="cpu", merge=True, bytes_per_token=2_386_944, free_bytes=30 * GIB)
    packed = plan_step(lengths, 4, 4, packed=True, **kw)
    padded = plan_step(lengths, 4, 4, packed=False, **kw)
    assert packed.merged and "1.5 GiB" in packed.message  # 662 tokens x 2.39 MB
    # 8,192 tokens x 2.39 MB = 18.2 GiB, over a third of 30 GiB: keep the split
    assert not padded.merged and (padded.per_device_train_batch_size, padded.gradient_accumulation_steps) == (4, 4)
    assert "18.2 GiB" in padded.message


def test_activation_estimate_reads_the_text_config_of_a_multimodal_config():
    # Gemma3Config (model_type gemma3, a causal-LM type) has no hidden_size at the top: every run
    # of such a model crashed in the estimate, even on a GPU or with merge_accumulation off.
    from transformers import Gemma3Config

    from lora_app.batching import activation_bytes_per_token

    cfg = Gemma3Config()
    assert not hasattr(cfg, "hidden_size")
    text = cfg.text_config
    assert activation_bytes_per_token(cfg) == activation_bytes_per_token(text) == 4 * (
        text.num_hidden_layers * (10 * text.hidden_size + 6 * text.intermediate_size) + 3 * text.vocab_size)


def test_a_follower_stops_when_its_page_moved_on_to_another_run(tmp_path, tiny_model):
    """Start in a tab that follows an earlier run: the old follower must stop by itself, even if
    Gradio's cancel loses the race (CI once showed the other run's status in the second tab)."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.config import RunConfig
    from lora_app.jobs import JobManager
    from lora_app.ui.common import AppContext
    import threading

    from lora_app.ui.train_tab import follow

    jm = JobManager(tmp_path / "runs", max_running=0, poll_s=0.1)  # nothing starts: the run stays queued
    try:
        cfg = RunConfig.build({"data": {"path": str(EXAMPLE_QUOTES)}, "model": {"base_model_name_or_path": str(tiny_model)}})
        run_id = jm.submit(cfg, owner="me")
        ctx = AppContext(jm, None, frozenset())
        showing = {"page": run_id}
        gen = follow(ctx, run_id, lambda: showing["page"] == run_id)
        first = next(gen)
        assert run_id in first[0] and jm.get(run_id).status == "queued"
        showing["page"] = "another-run"  # this page pressed Start
        rest: list = []
        t = threading.Thread(target=lambda: rest.extend(gen), daemon=True)
        t.start()
        t.join(timeout=5)  # without the check a follower of a queued run never ends
        # it ended, while its run is still queued, with no update of its own (None: "no-op")
        assert not t.is_alive() and rest == [None]
        assert jm.get(run_id).status == "queued"
    finally:
        jm.close()


def test_every_handler_that_asks_for_the_request_gets_it(tmp_path):
    """Gradio injects ``request: gr.Request`` only where it can place it: after ``*vals`` it was
    silently None, so Start ran without the signed-in user's token or Hub identity."""
    import inspect

    from gradio.helpers import special_args

    from lora_app.jobs import JobManager
    from lora_app.ui import build_app
    from lora_app.ui.common import AppContext

    jm = JobManager(tmp_path / "runs")
    try:
        demo = build_app(AppContext(jm, None, frozenset()))
        checked = []
        for bf in demo.fns.values():
            fn = bf.fn
            if fn is None or "request" not in inspect.signature(fn).parameters:
                continue
            sentinel = object()
            n = len(bf.inputs) if isinstance(bf.inputs, list) else 1
            args, *_ = special_args(fn, [None] * n, request=sentinel)  # what Gradio calls fn with
            assert any(a is sentinel for a in args), fn.__qualname__
            checked.append(fn.__name__)
        assert {"on_start", "on_check", "reattach"} <= set(checked), checked
    finally:
        jm.close()

"""The training attention kernel (lora_app/attention.py): chosen by measurement on a CPU, cached, and
the same packed-row logits whichever is chosen."""

import json

import pytest
import torch

from lora_app import attention


class Cfg:
    num_attention_heads, num_key_value_heads, hidden_size = 4, 2, 32


def test_what_is_asked_or_known_needs_no_measurement(tmp_path):
    assert attention.choose("eager", "cpu", Cfg, 128, "float32", tmp_path)[0] == "eager"
    assert attention.choose("sdpa", "cpu", Cfg, 128, "bfloat16", tmp_path)[0] == "sdpa"
    assert attention.choose("auto", "cuda", Cfg, 128, "bfloat16", tmp_path) == (
        "sdpa",
        "attention: sdpa (auto on cuda)",
    )
    impl, why = attention.choose("auto", "cpu", Cfg, 2048, "bfloat16", tmp_path)
    assert impl == "sdpa" and "2048 > 1024" in why
    assert not (tmp_path / "attention_check.json").exists()  # nothing was timed


def test_auto_times_both_once_and_takes_eager_only_when_clearly_faster(tmp_path):
    impl, why = attention.choose("auto", "cpu", Cfg, 64, "float32", tmp_path)
    cache = json.loads((tmp_path / "attention_check.json").read_text())
    ((key, m),) = cache.items()
    assert m["eager_ms"] > 0 and m["sdpa_ms"] > 0
    assert impl == ("eager" if m["eager_ms"] * attention.MARGIN < m["sdpa_ms"] else "sdpa")
    assert f"eager {m['eager_ms']} ms, sdpa {m['sdpa_ms']} ms" in why
    # The decision reads the cache (no second timing): set the numbers and see the rule.
    for eager, sdpa, want in ((1.0, 5.0, "eager"), (1.0, 1.05, "sdpa"), (3.0, 1.0, "sdpa")):
        cache[key] = {"eager_ms": eager, "sdpa_ms": sdpa}
        (tmp_path / "attention_check.json").write_text(json.dumps(cache))
        assert attention.choose("auto", "cpu", Cfg, 64, "float32", tmp_path)[0] == want
    # Another length or precision is another measurement.
    attention.choose("auto", "cpu", Cfg, 32, "bfloat16", tmp_path)
    assert len(json.loads((tmp_path / "attention_check.json").read_text())) == 2


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_either_kernel_keeps_packed_rows_apart(tiny_model, impl):
    from transformers import AutoModelForCausalLM

    from lora_app.text import packing_keeps_rows_apart

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl
    assert packing_keeps_rows_apart(model)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]), use_cache=False).logits[0, 3:]
        alone = model(input_ids=ids[:, 3:], use_cache=False).logits[0]
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "content", ["[]", "null", "3", '"x"', "{bad", '{"KEY": {}}', '{"KEY": {"eager_ms": "1", "sdpa_ms": 2}}']
)
def test_a_malformed_cache_file_is_measured_anew_not_a_crash(tmp_path, content):
    """attention_check.json lives in the user's LORA_APP_HOME: valid JSON that is not an object
    (``[]``, ``null``) crashed the run with a TypeError, an entry without both timings with a
    KeyError (found by the breaker). Either is measured again and the file repaired."""
    good = tmp_path / "good"
    attention.choose("auto", "cpu", Cfg, 16, "float32", good)
    (key,) = json.loads((good / "attention_check.json").read_text())
    (tmp_path / "attention_check.json").write_text(content.replace("KEY", key))
    impl, why = attention.choose("auto", "cpu", Cfg, 16, "float32", tmp_path)
    m = json.loads((tmp_path / "attention_check.json").read_text())[key]
    assert impl in ("eager", "sdpa") and m["eager_ms"] > 0 and m["sdpa_ms"] > 0
    assert f"eager {m['eager_ms']} ms, sdpa {m['sdpa_ms']} ms" in why


def _no_sdpa_model(path):
    """A tiny granite_swa model saved at ``path``: an architecture transformers gives no SDPA
    attention (``_supports_sdpa = False``; ``set_attn_implementation("sdpa")`` raises)."""
    from tiny import build_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = build_tokenizer()
    eos = tok.eos_token_id
    cfg = AutoConfig.for_model(
        "granite_swa",
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        eos_token_id=eos,
        bos_token_id=eos,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    assert not model._supports_sdpa
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_a_model_without_sdpa_trains_on_auto_and_sdpa_is_refused_with_the_fix(tmp_path):
    """auto took sdpa on a GPU or above 1024 tokens without asking the model: a granite_swa /
    deepseek_v4 run crashed in set_attn_implementation (found by the breaker). auto takes eager
    there; sdpa asked by hand fails the run with the field and the fix."""
    from conftest import EXAMPLE_QUOTES

    from lora_app.config import ConfigError, RunConfig
    from lora_app.events import read_events
    from lora_app.train import train

    base = _no_sdpa_model(tmp_path / "base")
    for impl, rc in (("auto", 0), ("sdpa", 1)):
        rd = tmp_path / impl
        rd.mkdir()
        RunConfig.build(
            {
                "data": {"path": str(EXAMPLE_QUOTES), "max_rows": 16},
                "model": {"base_model_name_or_path": str(base), "precision": "float32", "attn_implementation": impl},
                "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
                "training": {"max_steps": 1, "max_length": 2048, "per_device_train_batch_size": 2},
            }
        ).save(rd / "config.yaml")
        assert train(rd) == rc
        events, _ = read_events(rd)
        if rc == 0:
            assert next(e for e in events if "attn_implementation" in e)["attn_implementation"] == "eager"
        else:
            failed = [e for e in events if e.get("status") == "failed"]
            assert (
                "model.attn_implementation: " in failed[-1]["message"]
                and "Fix: set it to auto" in failed[-1]["message"]
            )
    with pytest.raises(ConfigError, match=r"model.attn_implementation: .*Fix: set it to auto or eager"):
        attention.choose("sdpa", "cuda", Cfg, 128, "bfloat16", tmp_path, sdpa_ok=False)
    assert attention.choose("auto", "cuda", Cfg, 128, "bfloat16", tmp_path, sdpa_ok=False)[0] == "eager"

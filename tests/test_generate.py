"""lora_app.generate: completions with or without an adapter (the model-free checks)."""

import pytest

from lora_app.config import ConfigError


def test_empty_prompt_is_refused_before_any_model_loads():
    from lora_app.generate import Generator

    gen = Generator()
    for prompt in ("", "   "):
        with pytest.raises(ConfigError, match=r"prompt: nothing typed\. Fix:"):
            list(gen.stream(prompt, adapter="/no/such/adapter"))
    assert gen._loaded is None


def _adapter(tiny_model, dst):
    """A LoRA adapter (r 2 on q/v) of the tiny model, saved as PEFT saves it (safetensors)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])).save_pretrained(dst)
    return dst


def _problem(gen, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        list(gen.stream("Hello", max_new_tokens=2, **kw))
    (msg,) = err.value.problems
    assert "Fix:" in msg, msg
    return msg


def test_a_base_or_adapter_folder_that_cannot_load_is_refused_in_words(tiny_model, tmp_path):
    """Try it raised tracebacks (found by the breaker): a base folder without tokenizer files or
    without config.json (ValueError from the tokenizer loader), a base name that is no repo id
    (OSError), an adapter folder without its weights (PEFT looked for the folder's path on the Hub:
    "Repo id must be in the form ..."). Each is now a message naming what is missing and the fix."""
    import shutil

    from lora_app.generate import Generator

    gen = Generator(precision="float32")
    notok = shutil.copytree(tiny_model, tmp_path / "notok")
    for f in notok.iterdir():
        if f.name.startswith("tokenizer") or f.name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            f.unlink()
    assert _problem(gen, base=str(notok)).startswith(
        "model.base_model_name_or_path: the folder 'notok' has the model's config and weights but no tokenizer: "
        "missing tokenizer.json (or tokenizer.model, or vocab.json + merges.txt)."
    )
    (tmp_path / "empty").mkdir()
    assert _problem(gen, base=str(tmp_path / "empty")).startswith(
        "model.base_model_name_or_path: the folder 'empty' has no config.json: it is not a saved model."
    )
    assert _problem(gen, base="ü/ß").startswith("base model: 'ü/ß' cannot be loaded (")

    adapter = _adapter(tiny_model, tmp_path / "adapter")
    assert list(gen.stream("Hello", adapter=str(adapter), max_new_tokens=2))  # it loads as saved
    gen = Generator(precision="float32")
    (adapter / "adapter_model.safetensors").rename(adapter / "moved.safetensors")
    no_weights = (
        f"adapter: the folder '{adapter}' has an adapter_config.json but no adapter_model.safetensors{{}}. "
        "Fix: save the adapter there with save_pretrained (safetensors is its default), or pick a finished run's "
        "adapter folder."
    )
    assert _problem(gen, adapter=str(adapter)) == no_weights.format("")
    (adapter / "adapter_model.bin").write_bytes(b"a pickle is never opened")
    assert _problem(gen, adapter=str(adapter)) == no_weights.format(
        " (adapter_model.bin is a pickle, which this app does not load: it can run code)"
    )
    assert gen._loaded is None  # refused before any base model was loaded


def test_a_hub_adapter_without_weights_or_out_of_reach_is_said_so(tiny_model, tmp_path, hub_server):
    """A Hub repo with adapter_config.json alone was reported as "does not fit the base model ...
    Can't find weights"; a cached adapter whose weights could not be fetched with the Hub down as
    "cannot be read ... train the run again" (found by the breaker), then as "could not be reached to
    download the weights": it loads from the cache now, as with HF_HUB_OFFLINE."""
    from lora_app.generate import Generator

    adapter = _adapter(tiny_model, tmp_path / "adapter")
    hub_server.add_file(
        "model", "alice/config-only", "adapter_config.json", (adapter / "adapter_config.json").read_bytes()
    )
    assert _problem(Generator(precision="float32"), adapter="alice/config-only") == (
        "adapter: the Hub repo 'alice/config-only' has an adapter_config.json but no adapter weights "
        "(adapter_model.safetensors). Fix: push the adapter with its weights (save_pretrained writes both), or "
        "give another repo id."
    )
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        hub_server.add_file("model", "alice/whole", f, (adapter / f).read_bytes())
    assert list(Generator(precision="float32").stream("Hello", adapter="alice/whole", max_new_tokens=2))  # cached
    hub_server.stop()  # the Hub down: the cached adapter loads from the cache (PEFT alone asked the Hub first)
    assert Generator(precision="float32").load("alice/whole").adapter == "alice/whole"
    assert _problem(Generator(precision="float32"), adapter="alice/config-only") == (  # its weights never cached
        "adapter: the Hub could not be reached to download the weights of 'alice/config-only' (ConnectError). "
        "Fix: check the connection and load it again."
    )


def test_a_hub_adapter_with_the_hub_out_of_reach_is_said_so_quickly(tiny_model, tmp_path, hub_server):
    """With no network, 'nobody/nonexistent-adapter' spun 23 s, then "has no adapter_config.json,
    so it is not a PEFT adapter". Now the Hub out of reach is named at once; an adapter in the Hub
    cache still loads."""
    import time

    from huggingface_hub import constants

    from lora_app.generate import Generator

    adapter = _adapter(tiny_model, tmp_path / "adapter")
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        hub_server.add_file("model", "alice/cached", f, (adapter / f).read_bytes())
    assert Generator(precision="float32").load("alice/cached").adapter == "alice/cached"  # now in the cache
    hub_server.stop()
    try:
        t = time.time()
        assert _problem(Generator(precision="float32"), adapter="nobody/nonexistent-adapter") == (
            f"adapter: cannot reach the Hub at {constants.ENDPOINT} to load 'nobody/nonexistent-adapter', and this "
            "server's Hub cache has no copy of it. Fix: check the connection (or the Hub's status) and try again, "
            "or pick a finished run."
        )
        assert time.time() - t < 5
        assert Generator(precision="float32").load("alice/cached").adapter == "alice/cached"  # from the cache
    finally:
        hub_server.start()

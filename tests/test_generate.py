"""lora_app.generate: completions with or without an adapter (the model-free checks)."""

import pytest

from lora_app.config import ConfigError


def test_empty_prompt_is_refused_before_any_model_loads():
    from lora_app.generate import Generator

    gen = Generator()
    for prompt in ("", "   "):
        with pytest.raises(ConfigError, match=r"prompt: is empty\. Fix:"):
            list(gen.stream(prompt, adapter="/no/such/adapter"))
    assert gen._loaded is None

"""Completing a prompt with a base model, optionally with a LoRA adapter (local folder or Hub id).

The web server loads models for inference only (no training), one (base, adapter) pair at a
time: loading the bundled 135M model takes ~1 s; keeping several would cost their memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import models
from .config import ConfigError, ModelConfig


@dataclass
class Loaded:
    model: object
    tokenizer: object
    base_id: str
    adapter: str | None
    description: str


class Generator:
    """Loads and caches one model for generation; thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loaded: Loaded | None = None

    def load(self, adapter: str | None = None, base: str | None = None, token: str | None = None,
             trust_remote_code: bool = False) -> Loaded:
        """Load ``base`` (default: the base the adapter names) and apply ``adapter``.

        Raises ConfigError when the adapter cannot be found or does not fit the base model.
        """
        adapter = (adapter or "").strip() or None
        with self._lock:
            key_base = base
            if adapter:
                from peft import PeftConfig

                try:
                    pc = PeftConfig.from_pretrained(adapter, token=token)
                except Exception as err:
                    raise ConfigError([f"adapter: '{adapter}' is not a PEFT adapter folder or Hub repo "
                                       f"({type(err).__name__}). Fix: pick a finished run or an owner/name repo "
                                       "holding adapter_config.json."]) from None
                key_base = base or pc.base_model_name_or_path
            if not key_base:
                raise ConfigError(["base model: none given. Fix: give a base model or an adapter."])
            cur = self._loaded
            if cur and cur.base_id == key_base and cur.adapter == adapter:
                return cur
            self._loaded = None  # free the old one before loading the next
            rm = models.resolve_model(key_base)
            device = models.device_kind()
            mcfg = ModelConfig(base_model_name_or_path=key_base, trust_remote_code=trust_remote_code)
            tok = models.load_tokenizer(rm.load_path, trust_remote_code, token)
            model = models.load_base_model(mcfg, rm.load_path, device, for_training=False, token=token)
            desc = f"base {rm.hub_id}" + (" (bundled offline copy)" if rm.bundled else "")
            if adapter:
                from peft import PeftModel

                try:
                    model = PeftModel.from_pretrained(model, adapter, token=token)
                except (ValueError, KeyError, RuntimeError) as err:
                    raise ConfigError([f"adapter: '{adapter}' does not fit base model '{key_base}': "
                                       f"{str(err).splitlines()[0][:300]}. Fix: load it with the base model it "
                                       "was trained on."]) from None
                desc += f" + adapter {adapter}"
            model.eval()
            self._loaded = Loaded(model, tok, key_base, adapter, desc)
            return self._loaded

    def stream(self, prompt: str, adapter: str | None = None, base: str | None = None,
               max_new_tokens: int = 40, temperature: float = 0.0, top_p: float = 0.95, seed: int = 0,
               token: str | None = None, use_adapter: bool = True) -> Iterator[str]:
        """Yield the completion so far (prompt excluded) as tokens are generated.

        ``temperature`` 0 means greedy decoding. ``use_adapter=False`` generates from the base
        model of a loaded adapter (PEFT's ``disable_adapter``), for side-by-side comparison.
        """
        import contextlib

        import torch
        from transformers import TextIteratorStreamer

        loaded = self.load(adapter, base, token)
        tok, model = loaded.tokenizer, loaded.model
        inputs = tok(prompt, return_tensors="pt").to(next(model.parameters()).device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kw = dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        ctx = model.disable_adapter() if (adapter and not use_adapter) else contextlib.nullcontext()
        errors: list[BaseException] = []

        def run():
            try:
                torch.manual_seed(seed)
                with ctx, torch.inference_mode():
                    model.generate(**kw)
            except BaseException as err:  # surfaced in the caller's thread below
                errors.append(err)
                streamer.end()

        th = threading.Thread(target=run, daemon=True)
        th.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        th.join()
        if errors:
            raise errors[0]
        yield text


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()

"""Completing a prompt with a base model, optionally with a LoRA adapter (local folder or Hub id).

The web server loads models for inference only (no training), one (base, adapter) pair at a
time: loading the bundled 135M model takes ~1 s; keeping several would cost their memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub_client, models
from .adapter_load import adapter_not_found, apply_adapter, folder_problem, hub_out_of_reach, not_reachable_nor_cached
from .config import ConfigError, ModelConfig
from .repo_id import on_disk
from .sampling import check_sampling, sampling_args


@dataclass
class Loaded:
    model: Any  # a transformers PreTrainedModel, or a PeftModel around one
    tokenizer: Any  # a transformers PreTrainedTokenizerBase
    base_id: str
    adapter: str | None
    description: str


#: What a side-by-side comparison says when no adapter is given (completion and chat alike).
NO_ADAPTER = (
    "adapter: none chosen. Fix: pick a finished run or type an adapter repo id (owner/name) to compare with "
    "its base model."
)


def side_by_side(adapter: str | None, stream: Callable[[bool], Iterator[str]]) -> Iterator[tuple[str, str]]:
    """Yield ``(base text, adapter text)``: ``stream(False)`` (the adapter switched off) to its end,
    then ``stream(True)``, the same prompt, seed and settings for both, so each side is exactly what
    one plain generation with / without the adapter gives. Raises ConfigError (:data:`NO_ADAPTER`)
    when ``adapter`` is empty."""
    if not (adapter or "").strip():
        raise ConfigError([NO_ADAPTER])
    base = ""
    for base in stream(False):
        yield base, ""
    for text in stream(True):
        yield base, text


def _adapter_switch(loaded: Loaded, use_adapter: bool):
    """The context generation runs in: PEFT's ``disable_adapter()`` for the base model of a loaded
    adapter, else nothing."""
    import contextlib

    return loaded.model.disable_adapter() if loaded.adapter and not use_adapter else contextlib.nullcontext()


class Generator:
    """Loads and caches one model for generation; thread-safe.

    ``precision`` (auto | float32 | bfloat16, as ``model.precision``): auto computes as training
    does on this machine (:func:`lora_app.precision.choose`). In bfloat16 a prompt's greedy
    completion can depend on what it is batched with (other matrix shapes round differently, and a
    near-tie between two tokens goes either way); float32 makes that rare."""

    def __init__(self, precision: str = "auto"):
        self.precision = precision
        self._lock = threading.Lock()
        self._gen_lock = threading.Lock()  # one generate() at a time: disable_adapter() changes the shared model
        self._loaded: Loaded | None = None

    def load(
        self,
        adapter: str | None = None,
        base: str | None = None,
        token: str | None = None,
        trust_remote_code: bool = False,
        check_base: Callable[[str], None] | None = None,
    ) -> Loaded:
        """Load ``base`` (default: the base the adapter names) and apply ``adapter``.

        ``check_base(base)``, called before loading with the base that will load (maybe the
        adapter's own choice), raises to refuse it: a shared server's folder rule.
        Raises ConfigError when the adapter cannot be found or does not fit the base model.
        """
        from .container import cap_torch_threads

        cap_torch_threads()  # generation runs in the web server: a container's CPU quota, not the host's cores
        adapter = (adapter or "").strip() or None
        with self._lock:
            key_base = base
            if adapter:
                from peft import PeftConfig

                refused = None if on_disk(adapter, "dir") else hub_client.refusal(adapter, token)
                if refused is not None:  # asked before huggingface_hub's cache can answer for the Hub
                    raise ConfigError([adapter_not_found(adapter, refused, token)])
                if not_reachable_nor_cached(adapter):  # after refusal(): else it told who had cached what
                    raise ConfigError([hub_out_of_reach(adapter)])
                try:
                    pc = PeftConfig.from_pretrained(adapter, token=token)
                except Exception as err:
                    raise ConfigError([adapter_not_found(adapter, err, token)]) from None
                key_base = base or pc.base_model_name_or_path
            if key_base and check_base is not None:
                check_base(key_base)
            from .model_folder import adapter_base_problem, folder_problems

            bad_base = next(iter(folder_problems(key_base or "")), None) or adapter_base_problem(
                key_base, from_adapter=adapter is not None and not base
            )
            if key_base and bad_base:  # else a traceback from the tokenizer loader
                raise ConfigError([bad_base])
            no_weights = folder_problem(adapter) if adapter else None
            if no_weights:  # before a base model is loaded for nothing
                raise ConfigError([no_weights])
            if not key_base:
                raise ConfigError(["base model: none given. Fix: give a base model or an adapter."])
            cur = self._loaded
            if cur and cur.base_id == key_base and cur.adapter == adapter:
                return cur
            self._loaded = None  # free the old one before loading the next
            rm = models.resolve_model(key_base)
            if not rm.bundled and not Path(rm.load_path).is_dir():
                hub_client.check_readable(rm.load_path, token)
            device = models.device_kind()
            mcfg = ModelConfig(
                base_model_name_or_path=key_base, trust_remote_code=trust_remote_code, precision=self.precision
            )
            try:
                tok = models.load_tokenizer(rm.load_path, trust_remote_code, token)
                model = models.load_base_model(mcfg, rm.load_path, device, for_training=False, token=token)
            except ConfigError:
                raise
            except (OSError, ValueError) as err:  # a name that is no repo id, a folder that is no model, ...
                first = (str(err).strip().splitlines() or [""])[0][:300]
                raise ConfigError(
                    [
                        f"base model: '{key_base}' cannot be loaded ({type(err).__name__}: {first}). Fix: give a "
                        "causal language model's Hub id (owner/name) or a folder save_pretrained wrote."
                    ]
                ) from None
            # Batched generation pads on the left (each row's new tokens follow its own prompt);
            # a tokenizer without a pad token pads with EOS, masked out (no token is added).
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            desc = f"base {rm.hub_id}" + (" (bundled offline copy)" if rm.bundled else "")
            if adapter:
                model = apply_adapter(model, adapter, pc, key_base, token)
                desc += f" + adapter {adapter}"
            model.eval()
            self._loaded = Loaded(model, tok, key_base, adapter, desc)
            return self._loaded

    def stream(
        self,
        prompt: str,
        adapter: str | None = None,
        base: str | None = None,
        max_new_tokens: int = 40,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int = 0,
        token: str | None = None,
        use_adapter: bool = True,
    ) -> Iterator[str]:
        """Yield the completion so far (prompt excluded) as tokens are generated.

        ``temperature`` 0 means greedy decoding. ``use_adapter=False`` generates from the base
        model of a loaded adapter (PEFT's ``disable_adapter``), for side-by-side comparison.
        """
        model_prompt(prompt)  # an empty prompt is refused before a model is loaded
        check_sampling(max_new_tokens, temperature, top_p, seed)  # and so are bad settings
        loaded = self.load(adapter, base, token)
        ids = loaded.tokenizer(model_prompt(prompt))["input_ids"]
        yield from self.stream_ids(ids, loaded, max_new_tokens, temperature, top_p, seed, use_adapter)

    def stream_ids(
        self,
        input_ids: list[int],
        loaded: Loaded,
        max_new_tokens: int = 40,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int = 0,
        use_adapter: bool = True,
        stop_ids: list[int] | None = None,
        stop_strings: list[str] | None = None,
        what: str = "prompt",
    ) -> Iterator[str]:
        """Yield the text generated after ``input_ids`` (one row of token ids) so far, special
        tokens skipped. ``stop_ids`` end generation besides the model's EOS (transformers takes
        a list as ``eos_token_id``); ``stop_strings`` end it at a text that is no single token
        (transformers' StopStringCriteria); the stop string itself is still in the text.

        ConfigError (naming ``what``) when ``input_ids`` fill the model's max_position_embeddings
        (a 10,000-turn history held the generate lock for minutes); max_new_tokens cut to fit."""

        import torch
        from transformers import TextIteratorStreamer

        check_sampling(max_new_tokens, temperature, top_p, seed)
        tok, model = loaded.tokenizer, loaded.model
        max_new_tokens = _room(input_ids, model, max_new_tokens, what)
        dev = next(model.parameters()).device
        ids = torch.tensor([input_ids], dtype=torch.long, device=dev)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kw: dict[str, Any] = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            streamer=streamer,
            pad_token_id=tok.pad_token_id,  # (load() gave every tokenizer one)
            **sampling_args(temperature, top_p),
        )
        if stop_ids:
            eos = model.generation_config.eos_token_id
            eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
            kw["eos_token_id"] = list(dict.fromkeys([*eos, *stop_ids]))
        if stop_strings:
            kw.update(stop_strings=stop_strings, tokenizer=tok)
        ctx = _adapter_switch(loaded, use_adapter)
        errors: list[BaseException] = []

        def run():
            try:
                with self._gen_lock, ctx, torch.inference_mode():
                    torch.manual_seed(seed)
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

    def compare(
        self,
        prompt: str,
        adapter: str | None,
        base: str | None = None,
        max_new_tokens: int = 40,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int = 0,
        token: str | None = None,
    ) -> Iterator[tuple[str, str]]:
        """Side by side: yield ``(base_text, adapter_text)`` as both completions grow.

        The base model (the adapter switched off) and base + adapter complete the same prompt
        with the same seed and settings, one after the other, so each is exactly what a plain
        Generate with / without the adapter would give.
        """
        yield from side_by_side(
            adapter,
            lambda on: self.stream(prompt, adapter, base, max_new_tokens, temperature, top_p, seed, token, on),
        )

    def complete_batch(
        self,
        prompts: list[str],
        adapter: str | None = None,
        base: str | None = None,
        max_new_tokens: int = 40,
        temperature: float = 0.0,
        top_p: float = 0.95,
        seed: int = 0,
        token: str | None = None,
        use_adapter: bool = True,
    ) -> list[str]:
        """Complete several prompts in one batch (prompt excluded from each result).

        Prompts are padded on the *left* (the loaded tokenizer's ``padding_side``) with an
        attention mask, so every row's new tokens follow its own last prompt token directly;
        with greedy decoding in float32 a batch gives the same tokens as one prompt at a time (in
        bfloat16 a near-tie may go another way: see :class:`Generator`).
        """

        import torch

        check_sampling(max_new_tokens, temperature, top_p, seed)
        loaded = self.load(adapter, base, token)
        tok, model = loaded.tokenizer, loaded.model
        enc = tok([model_prompt(p) for p in prompts], padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        dev = next(model.parameters()).device
        kw = dict(
            input_ids=ids.to(dev),
            attention_mask=enc["attention_mask"].to(dev),
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            **sampling_args(temperature, top_p),
        )
        ctx = _adapter_switch(loaded, use_adapter)
        with self._gen_lock, ctx, torch.inference_mode():
            torch.manual_seed(seed)
            out = model.generate(**kw)
        return [tok.decode(row[ids.shape[1] :], skip_special_tokens=True) for row in out]


def _room(input_ids: list[int], model, max_new_tokens: int, what: str) -> int:
    n, context = len(input_ids), getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(context, int) or context <= 0:
        return max_new_tokens
    fix = "clear the conversation (or shorten the message)" if what == "conversation" else "shorten it"
    if n >= context:
        raise ConfigError([f"{what}: {n} tokens; this model reads at most {context}, its reply included. Fix: {fix}."])
    return min(max_new_tokens, context - n)


def model_prompt(prompt: str) -> str:
    """The prompt as the model sees it: trailing spaces removed.

    BPE vocabularies (GPT-2, Llama, SmolLM2) attach a word's space to the word (" the"), so
    a prompt ending in a bare space token is off the training distribution: SmolLM2 answers
    "Two things are infinite: " with "1 + 1 + 1 ..." and "Two things are infinite:" with a
    fluent sentence. The completion then starts with its own space.

    Raises ConfigError for an empty (or all-space) prompt: generate() cannot start from nothing.
    """
    text = (prompt or "").rstrip(" ")
    if not text.strip():
        raise ConfigError(
            ['prompt: nothing typed. Fix: type a few words for the model to continue, e.g. "Two things are infinite:".']
        )
    return text


def is_adapter_folder(path: str | Path) -> bool:
    return on_disk(Path(path) / "adapter_config.json", "file")

"""Tiny, locally built causal LMs with a locally trained tokenizer: fast stand-ins for unit tests.

Real weights are random, but every code path (tokenizer, safetensors folder, PEFT, Trainer)
is the real one. ``build_tiny_model`` returns the folder path.
"""

from __future__ import annotations

import json
from pathlib import Path

QUOTES = Path(__file__).resolve().parents[1] / "examples" / "quotes.jsonl"


def sample_texts(n: int = 400) -> list[str]:
    with open(QUOTES, encoding="utf-8") as f:
        return [json.loads(line)["quote"] for _, line in zip(range(n), f)]


def build_tokenizer(pad_token: str | None = None, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>"] + (["<pad>"] if pad_token == "<pad>" else [])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample_texts(), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token=pad_token)


def build_tiny_model(
    path: str | Path,
    arch: str = "llama",
    pad_token: str | None = "<|endoftext|>",
    hidden: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a tiny random ``arch`` ("llama" or "opt") model + tokenizer to ``path``.

    ``pad_token``: "<|endoftext|>" (pad == EOS, the classic trap), "<pad>" (a separate pad
    token) or None (no pad token at all).
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

    path = Path(path)
    tok = build_tokenizer(pad_token)
    eos = tok.eos_token_id
    common = dict(
        vocab_size=len(tok),
        eos_token_id=eos,
        bos_token_id=eos,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos,
    )
    if arch == "llama":
        cfg = LlamaConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            tie_word_embeddings=True,
            **common,
        )
    else:
        cfg = OPTConfig(
            hidden_size=hidden,
            ffn_dim=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            max_position_embeddings=512,
            word_embed_proj_dim=hidden,
            **common,
        )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path

"""Tiny chat models for the chat tests: a tokenizer with ChatML special tokens and its own chat
template, and a "bigram" Llama whose next token is a fixed function of the current one, so that
a reply, its end-of-turn token and what would follow it are known exactly.

The bigram model is a real LlamaForCausalLM with chosen weights: every layer's output projections
(``o_proj``, ``down_proj``) are zero, so the residual stream is the current token's embedding; a
token of the table has a one-hot embedding (its own dimension), the final RMSNorm makes that
``sqrt(hidden)`` on it, and ``lm_head`` maps that dimension to the wanted next token. A token
outside the table has a zero embedding: every logit 0, so id 0 (EOS) comes next.
"""

from __future__ import annotations

from pathlib import Path

from tiny import build_tokenizer

# ChatML with a default system turn, as SmolLM2's template has (so "the base model's template"
# renders differently from the fallback, which has none).
CHATML_WITH_SYSTEM = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template whose end-of-turn "[END]" is plain text to the tiny tokenizer, five distinct tokens
# (the fallback's "<|im_end|>" repeats "|", which one bigram table cannot produce in order).
END_TEMPLATE = (
    "{% for message in messages %}{{ '### ' + message['role'] + ':\n' + message['content'] + ' [END]\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}"
)


def chatml_tokenizer():
    """The tiny BPE tokenizer plus <|im_start|> and <|im_end|> special tokens and CHATML_WITH_SYSTEM."""
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML_WITH_SYSTEM
    return tok


def bigram_model(path: Path, tok, table: dict[int, int], hidden: int = 64) -> Path:
    """Save a Llama (and ``tok``) to ``path`` that, greedy, follows token ``t`` with ``table[t]``."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    assert len(table) <= hidden
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        emb.zero_()
        head.zero_()
        for slot, (cur, nxt) in enumerate(table.items()):
            emb[cur, slot] = 1.0
            head[nxt, slot] = 1.0
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return Path(path)


def save_adapter(
    base: Path,
    out: Path,
    layout: str | None = "conversation",
    template: str | None = None,
    swap: tuple[int, int] | None = None,
) -> Path:
    """A LoRA adapter (PeftModel.save_pretrained) on ``base``'s ``lm_head``, with a model card
    whose metadata has ``data_layout: <layout>`` (none when ``layout`` is None) and, given
    ``template``, the chat template it was trained with (``chat_template.jinja``).

    ``swap=(cur, nxt)``: the adapter makes ``cur`` be followed by ``nxt`` (logit 8 * 4 over the
    base's 8), else it changes nothing (PEFT's zero-initialised lora_B)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft = get_peft_model(model, LoraConfig(r=1, lora_alpha=4, target_modules=["lm_head"], lora_dropout=0.0))
    if swap is not None:
        cur, nxt = swap
        slot = int(model.model.embed_tokens.weight[cur].argmax())
        lm = peft.base_model.model.lm_head
        with torch.no_grad():
            lm.lora_A["default"].weight.zero_()
            lm.lora_A["default"].weight[0, slot] = 1.0
            lm.lora_B["default"].weight.zero_()
            lm.lora_B["default"].weight[nxt, 0] = 1.0  # delta = 4 (alpha / r) * 8 on nxt
    peft.save_pretrained(out, save_embedding_layers=False)
    meta = f"data_layout: {layout}\n" if layout else ""
    (Path(out) / "README.md").write_text(f"---\nlibrary_name: peft\n{meta}---\n\n# a test adapter\n", encoding="utf-8")
    if template is not None:
        (Path(out) / "chat_template.jinja").write_text(template, encoding="utf-8")
    return Path(out)

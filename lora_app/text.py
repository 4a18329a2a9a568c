"""Text to training tensors: tokenization with EOS, padding collation, packing.

Rules (each has a test):
- every row ends with the tokenizer's EOS token, and that EOS keeps its label, also when
  the pad token *is* the EOS token (SmolLM2, Llama, GPT-2 family): labels are masked by
  position (beyond the row's length), never by comparing ids with ``pad_token_id``;
- a row longer than ``max_length`` is cut to ``max_length - 1`` tokens and then gets its
  EOS, so the EOS survives truncation;
- padding never counts in the loss (label -100) and is masked out of attention;
- a tokenizer with no pad token pads with EOS ids; no token is added to the vocabulary.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss(ignore_index=-100), the transformers convention
# A token is rarely over 32 characters; cutting longer rows first keeps a single 1 MB row
# from costing seconds of tokenization for the max_length tokens we keep.
_CHARS_PER_TOKEN_CAP = 32


def tokenize_rows(texts: list[str], tokenizer, max_length: int) -> list[list[int]]:
    """Token ids per row, each ending with ``tokenizer.eos_token_id``, at most ``max_length`` long.

    Raises ValueError if the tokenizer has no EOS token.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("model: the tokenizer has no EOS token; pick a model whose tokenizer defines one")
    capped = [t[: max_length * _CHARS_PER_TOKEN_CAP] for t in texts]
    enc = tokenizer(capped, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    out = []
    for ids in enc:
        ids = list(ids)
        if ids and ids[-1] == eos:  # some tokenizers append EOS themselves
            ids = ids[:-1]
        out.append(ids[: max_length - 1] + [eos])
    return out


def pad_id_of(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad token, else its EOS (vocabulary unchanged)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


class PaddingCollator:
    """Pads a batch of ``{"input_ids": list[int]}`` to its longest row (right padding).

    Returns ``input_ids``, ``attention_mask``, ``labels``: LongTensors of shape
    ``(batch, longest)``; labels are -100 exactly on the padding positions.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        longest = max(lengths)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        n = len(features)
        input_ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((n, longest), dtype=torch.long)
        for i, (f, L) in enumerate(zip(features, lengths)):
            ids = torch.as_tensor(f["input_ids"], dtype=torch.long)
            input_ids[i, :L] = ids
            labels[i, :L] = ids
            attention_mask[i, :L] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def packing_collator():
    """transformers' ``DataCollatorWithFlattening``: the batch's rows concatenated into one
    row of shape ``(1, sum(lengths))`` with ``position_ids`` restarting at 0 for each row.

    transformers builds a block-diagonal causal mask from those position ids (SDPA, eager,
    flash-attention), so rows do not attend to each other, and the first label of every row
    is -100, so no row learns to predict the next row's first token. No padding at all.
    """
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


class TokenizedRows(torch.utils.data.Dataset):
    """A list of token-id rows as a map-style dataset of ``{"input_ids": list[int]}``."""

    def __init__(self, rows: list[list[int]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i]}

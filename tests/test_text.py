"""The EOS/label rules: EOS ends every row and keeps its label; padding never counts."""

import pytest
import torch

from lora_app.text import IGNORE_INDEX, PaddingCollator, packing_collator, pad_id_of, tokenize_rows
from tiny import build_tokenizer

TEXTS = ["“Be yourself; everyone else is already taken.”", "“So it goes.”", "Hi"]


@pytest.fixture(scope="module", params=["<|endoftext|>", "<pad>", None], ids=["pad=eos", "own-pad", "no-pad"])
def tok(request):
    return build_tokenizer(pad_token=request.param)


def test_every_row_ends_with_eos_and_eos_keeps_its_label(tok):
    rows = tokenize_rows(TEXTS, tok, max_length=64)
    assert all(r[-1] == tok.eos_token_id for r in rows)
    assert all(tok.eos_token_id not in r[:-1] for r in rows)
    batch = PaddingCollator(pad_id_of(tok))([{"input_ids": r} for r in rows])
    for i, r in enumerate(rows):
        L = len(r)
        assert batch["labels"][i, L - 1].item() == tok.eos_token_id  # EOS label kept, even when pad == EOS
        assert batch["labels"][i, :L].tolist() == r
        assert (batch["labels"][i, L:] == IGNORE_INDEX).all()  # padding never in the loss
        assert batch["attention_mask"][i].tolist() == [1] * L + [0] * (batch["input_ids"].shape[1] - L)


def test_truncation_keeps_the_eos(tok):
    long = " ".join(["infinite"] * 500)
    (row,) = tokenize_rows([long], tok, max_length=16)
    assert len(row) == 16 and row[-1] == tok.eos_token_id


def test_a_1mb_row_is_cut_not_fatal(tok):
    (row,) = tokenize_rows(["word " * 200_000], tok, max_length=32)
    assert len(row) == 32 and row[-1] == tok.eos_token_id


def test_no_pad_token_pads_with_eos_without_growing_the_vocab():
    tok = build_tokenizer(pad_token=None)
    n = len(tok)
    assert tok.pad_token_id is None and pad_id_of(tok) == tok.eos_token_id
    rows = tokenize_rows(TEXTS, tok, 32)
    batch = PaddingCollator(pad_id_of(tok))([{"input_ids": r} for r in rows])
    assert len(tok) == n and int(batch["input_ids"].max()) < n


def test_padding_does_not_change_the_loss(tiny_model):
    """Loss of a padded batch == token-weighted loss of its rows one by one; packing gives the same."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model.config.use_cache = False
    rows = tokenize_rows(TEXTS, tok, 64)
    with torch.no_grad():
        total, count = 0.0, 0
        for r in rows:
            ids = torch.tensor([r])
            out = model(input_ids=ids, labels=ids)
            total += out.loss.item() * (len(r) - 1)
            count += len(r) - 1
        padded = model(**PaddingCollator(pad_id_of(tok))([{"input_ids": r} for r in rows])).loss.item()
        packed_batch = packing_collator()([{"input_ids": r} for r in rows])
        assert packed_batch["input_ids"].shape == (1, sum(map(len, rows)))
        packed = model(**packed_batch).loss.item()
    assert padded == pytest.approx(total / count, abs=1e-5)
    assert packed == pytest.approx(total / count, abs=1e-5)


def test_prompt_trailing_space_is_left_to_the_model():
    from lora_app.generate import model_prompt

    assert model_prompt("Two things are infinite: ") == "Two things are infinite:"
    assert model_prompt("a\n") == "a\n" and model_prompt("x") == "x"

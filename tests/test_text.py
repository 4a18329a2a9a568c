"""The EOS/label rules: EOS ends every row and keeps its label; padding never counts."""

import pytest
import torch
from tiny import build_tokenizer

from lora_app.text import (
    IGNORE_INDEX,
    PaddingCollator,
    balanced_bins,
    pack_bins,
    packing_collator,
    packing_keeps_rows_apart,
    pad_id_of,
    tokenize_rows,
)

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
        packed_batch = packing_collator(64, pad_id_of(tok))([{"input_ids": r} for r in rows])
        assert packed_batch["input_ids"].shape == (1, sum(map(len, rows)))
        packed = model(**packed_batch).loss.item()
        # bins smaller than the rows together: several bins, padded, same loss
        cap = max(map(len, rows))
        binned_batch = packing_collator(cap, pad_id_of(tok))([{"input_ids": r} for r in rows])
        assert binned_batch["input_ids"].shape[0] > 1
        binned = model(**binned_batch).loss.item()
    assert padded == pytest.approx(total / count, abs=1e-5)
    assert packed == pytest.approx(total / count, abs=1e-5)
    assert binned == pytest.approx(total / count, abs=1e-5)


def test_packed_rows_do_not_see_each_other_or_the_padding(tiny_model):
    """Each row's logits inside a packed, padded bin equal its logits alone: no attention
    across rows or into the padding pseudo-row, positions restart per row."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model.config.use_cache = False
    rows = [[5, 9, 11, 3, 2], [7, 8, 2], [4, 4, 4, 4, 4, 4, 2], [6, 2]]
    batch = packing_collator(8, 0)([{"input_ids": r} for r in rows])
    # first-fit decreasing in bins of 8 needs 3 bins; balanced to 7 tokens: [7], [5 + 2], [3] + padding
    assert batch["input_ids"].shape == (3, 7)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        for r in rows:
            alone = model(input_ids=torch.tensor([r])).logits[0]
            hits = [
                (b, s)
                for b in range(3)
                for s in range(7 - len(r) + 1)
                if batch["input_ids"][b, s : s + len(r)].tolist() == r and batch["position_ids"][b, s] == 0
            ]
            assert hits, r
            b, s = hits[0]
            assert (logits[b, s : s + len(r)] - alone).abs().max().item() < 1e-5
    lab = batch["labels"]
    assert int((lab != IGNORE_INDEX).sum()) == sum(len(r) - 1 for r in rows)  # each row's first token unlabelled


@pytest.mark.parametrize("cap", [1, 5, 8, 64])
def test_pack_bins_uses_every_row_once_within_capacity(cap):
    import random

    rng = random.Random(cap)
    lengths = [rng.randint(1, 8) for _ in range(40)]
    bins = pack_bins(lengths, cap)
    assert sorted(i for b in bins for i in b) == list(range(40))
    assert all(len(b) == 1 or sum(lengths[i] for i in b) <= cap for b in bins)
    # first-fit decreasing: no two bins could be merged
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > cap


def test_prompt_trailing_space_is_left_to_the_model():
    from lora_app.generate import model_prompt

    assert model_prompt("Two things are infinite: ") == "Two things are infinite:"
    assert model_prompt("a\n") == "a\n" and model_prompt("x") == "x"


def test_balanced_bins_pad_less_with_as_many_bins():
    lengths = [60, 60, 60, 50, 40, 30, 20, 10]  # 330 tokens, capacity 128
    ffd, even = pack_bins(lengths, 128), balanced_bins(lengths, 128)
    assert len(ffd) == len(even) == 3
    assert sorted(i for b in even for i in b) == list(range(len(lengths)))
    loads = [sum(lengths[i] for i in b) for b in even]
    assert max(loads) == 110 and max(sum(lengths[i] for i in b) for b in ffd) == 120  # 30 fewer padded positions


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


def test_masked_prompts_give_the_same_loss_padded_packed_and_binned(tiny_model):
    """Rows whose prompt carries no loss (labels -100): padding, packing and bins all keep the
    masks and give the token-weighted loss of the answer tokens alone, row by row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lora_app.chat_rows import tokenize_turns

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    model.config.use_cache = False
    pairs = [("Who said: ", TEXTS[0]), ("Quote: ", TEXTS[1]), ("A long prompt, then a short answer: ", TEXTS[2])]
    rows = tokenize_turns(
        [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for p, a in pairs],
        "prompt_completion",
        tok,
        64,
    ).rows
    assert all(r["labels"][0] == IGNORE_INDEX and r["labels"][-1] == tok.eos_token_id for r in rows)
    with torch.no_grad():
        total, count = 0.0, 0
        for r in rows:
            out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
            n = sum(x != IGNORE_INDEX for x in r["labels"][1:])
            total, count = total + out.loss.item() * n, count + n
        padded_batch = PaddingCollator(pad_id_of(tok))(rows)
        packed_batch = packing_collator(64, pad_id_of(tok))(rows)
        binned_batch = packing_collator(max(len(r["input_ids"]) for r in rows), pad_id_of(tok))(rows)
        assert binned_batch["input_ids"].shape[0] > 1
        for b in (padded_batch, packed_batch, binned_batch):
            assert int((b["labels"] != IGNORE_INDEX).sum()) == count  # the prompts stay masked
            assert model(**b).loss.item() == pytest.approx(total / count, abs=1e-5)

"""One lever at a time on the app's training step, measured in one process, interleaved.

    python bench/bench_levers.py [--rounds 5] [--threads N] [--only NAME,NAME]

bench_train.py --levers runs the whole app path once per lever (a subprocess each, minutes per lever
on a 2-core CPU). This is the quick, noise-robust companion for a shared machine: one model, the
app's own data path (lora_app.text.tokenize_rows with EOS, packing_collator / PaddingCollator),
and one optimizer step = 4 micro-batches of 4 rows (forward, backward) + AdamW step, timed for each
lever in turn, the order rotated every round, the same 16 rows for every lever within a round
(different rows each round). AdamW runs with lr=0, so the weights never change and every lever sees
exactly the same model. Before timing, each lever runs one check step with dropout off (eval mode):
its loss and LoRA gradient are compared with the default's (an exact lever matches to rounding;
bf16 shows its error; the reference data path differs because it has no EOS).

Reported per lever: wall s/step (median and best), CPU s/step (process time; robust to other
processes only when the run uses 1 thread), non-padding tokens/s, speed-up vs the app default
(by median wall, by best wall, by median CPU time), loss difference and gradient cosine.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

# name -> settings; each differs from "app default" in one thing (the reference data path is
# the classic recipe's batches on the same model: no EOS, DataCollatorForLanguageModeling padding)
LEVERS = {
    "app default (packing, sdpa, dropout 0.05, fp32)": {},
    "packing into one long row (no bins)": {"data": "flat"},
    "reference data path (padding, no EOS)": {"data": "reference"},
    "packing off (app padding)": {"data": "pad"},
    "LM head on labelled positions only": {"labels_only": True},
    "padding + LM head on labelled only": {"data": "pad", "labels_only": True},
    "one packed micro-batch per step (16x1)": {"micro": 16},
    "bf16 autocast": {"bf16": True},
    "eager attention": {"attn": "eager"},
    "lora_dropout=0 (Identity)": {"no_dropout": True},
    "threads: 1 (2 when run with --threads 1)": {"threads": 1},
    "gradient checkpointing on": {"gc": True},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads for every lever except 'threads: 1'")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--only", default=None, help="comma-separated lever names (the default is always run)")
    ap.add_argument("--tag", default=None)
    a = ap.parse_args(argv)
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DataCollatorForLanguageModeling

    from lora_app import models
    from lora_app.text import PaddingCollator, packing_collator, pad_id_of, tokenize_rows

    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    if threads == 1:
        LEVERS["threads: 1 (2 when run with --threads 1)"] = {"threads": 2}
    names = list(LEVERS)
    if a.only:
        names = [names[0]] + [n for n in names[1:] if any(o.strip() and o.strip() in n for o in a.only.split(","))]
    path = str(models.bundled_model_dir())
    tok = models.load_tokenizer(path)
    train, _ = common.split_quotes()
    rows = tokenize_rows(train, tok, a.max_length)
    random.seed(0)
    picks = [random.sample(range(len(rows)), 16) for _ in range(a.rounds)]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    model.train()
    inner = model.base_model.model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.0)  # lr 0: identical weights for every lever
    fm = common.flop_model(model)
    pack, pad = packing_collator(a.max_length, pad_id_of(tok)), PaddingCollator(pad_id_of(tok))
    from transformers import DataCollatorWithFlattening

    flat = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
    ref = DataCollatorForLanguageModeling(tok, mlm=False)
    tok.pad_token = tok.eos_token

    def batches(lv: dict, idx: list[int]) -> list[dict]:
        micro = lv.get("micro", 4)
        out = []
        for s in range(0, 16, micro):
            sel = idx[s : s + micro]
            if lv.get("data") == "reference":
                b = ref([tok(train[i], truncation=True, max_length=a.max_length) for i in sel])
            elif lv.get("data") == "flat":
                b = flat([{"input_ids": rows[i]} for i in sel])
            elif lv.get("data") == "pad":
                b = pad([{"input_ids": rows[i]} for i in sel])
            else:
                b = pack([{"input_ids": rows[i]} for i in sel])
            if lv.get("labels_only"):
                b = common.labels_only_head(lambda _b: _b)(b)
            out.append(b)
        return out

    @contextlib.contextmanager
    def applied(lv: dict):
        saved_threads = torch.get_num_threads()
        swapped = []
        if lv.get("threads"):
            torch.set_num_threads(lv["threads"])
        if lv.get("attn"):
            inner.set_attn_implementation(lv["attn"])
        if lv.get("no_dropout"):
            for m in model.modules():
                if hasattr(m, "lora_dropout") and "default" in m.lora_dropout:
                    swapped.append((m.lora_dropout, m.lora_dropout["default"]))
                    m.lora_dropout["default"] = torch.nn.Identity()
        if lv.get("gc"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16) if lv.get("bf16") else contextlib.nullcontext():
                yield
        finally:
            torch.set_num_threads(saved_threads)
            if lv.get("attn"):
                inner.set_attn_implementation("sdpa")
            for d, mod in swapped:
                d["default"] = mod
            if lv.get("gc"):
                model.gradient_checkpointing_disable()
                model.disable_input_require_grads()

    def check(lv: dict, idx: list[int]) -> tuple[float, torch.Tensor]:
        """Loss and LoRA gradient of one step with dropout off (eval mode): an exact lever
        reproduces the default's to rounding; dropout would otherwise differ call to call."""
        model.eval()
        bs = batches(lv, idx)
        n_items = sum(
            int((b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:]).ne(-100).sum()) for b in bs
        )
        loss = 0.0
        with applied(lv):
            for b in bs:
                out = model(**b, num_items_in_batch=n_items)
                out.loss.backward()
                loss += float(out.loss.detach())
        grad = torch.cat([p.grad.reshape(-1) for p in params]).clone()
        opt.zero_grad(set_to_none=True)
        model.train()
        return loss, grad

    def one_step(lv: dict, idx: list[int]) -> dict:
        bs = batches(lv, idx)
        n_items = sum(
            int((b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:]).ne(-100).sum()) for b in bs
        )
        with applied(lv):
            t0, c0 = time.perf_counter(), time.process_time()
            loss_sum = 0.0
            for b in bs:  # as Trainer does: loss = sum over tokens / items in the whole step
                out = model(**b, num_items_in_batch=n_items)
                out.loss.backward()
                loss_sum += float(out.loss.detach())
            opt.step()
            opt.zero_grad(set_to_none=True)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        toks = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in bs)
        pos = sum(b["input_ids"].numel() for b in bs)
        tg = sum(int((b["shift_labels"] if "shift_labels" in b else b["labels"][..., 1:]).ne(-100).sum()) for b in bs)
        return {"wall_s": wall, "cpu_s": cpu, "tokens": toks, "positions": pos, "targets": tg, "loss": loss_sum}

    checks = {n: check(LEVERS[n], picks[0]) for n in names}  # also the warm-up of each lever
    peak = common.matmul_gflops("cpu", n=2048, reps=8)
    res: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(a.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            res[n].append({"round": r, **one_step(LEVERS[n], picks[r])})
        print(f"  round {r + 1}/{a.rounds} done, load {common.loadavg()}", flush=True)

    d0 = names[0]
    base_wall = statistics.median(x["wall_s"] for x in res[d0])
    base_best = min(x["wall_s"] for x in res[d0])
    base_cpu = statistics.median(x["cpu_s"] for x in res[d0])
    table, out = [], {}
    for n in names:
        xs = res[n]
        wall = statistics.median(x["wall_s"] for x in xs)
        best = min(x["wall_s"] for x in xs)
        cpu = statistics.median(x["cpu_s"] for x in xs)
        tps = statistics.median(x["tokens"] / x["wall_s"] for x in xs)
        dloss = checks[n][0] - checks[d0][0]
        cos = float(torch.nn.functional.cosine_similarity(checks[n][1], checks[d0][1], dim=0))
        useful = statistics.median(common.train_flops(fm, x["tokens"], x["targets"], 0) / x["wall_s"] for x in xs)
        out[n] = {
            "settings": LEVERS[n],
            "wall_s_median": wall,
            "wall_s_best": best,
            "cpu_s_median": cpu,
            "tokens_per_s": tps,
            "speedup_median_wall": base_wall / wall,
            "speedup_best_wall": base_best / best,
            "speedup_cpu": base_cpu / cpu,
            "loss_diff": dloss,
            "grad_cosine": cos,
            "mfu_useful": useful / (peak["best_gflops"] * 1e9),
            "padding_share": 1 - sum(x["tokens"] for x in xs) / sum(x["positions"] for x in xs),
            "check_loss": checks[n][0],
            "steps": xs,
        }
        table.append(
            [
                n,
                f"{wall:.2f}",
                f"{best:.2f}",
                f"{cpu:.2f}",
                f"{tps:.0f}",
                f"{base_wall / wall:.2f}x",
                f"{base_best / best:.2f}x",
                f"{base_cpu / cpu:.2f}x",
                f"{dloss:+.5f}",
                f"{cos:.5f}",
                f"{out[n]['mfu_useful']:.0%}",
            ]
        )
    info = common.machine_info("cpu")
    print(
        f"# {info.get('cpu', '')} | torch {info['torch']} | threads {threads} | matmul peak "
        f"{peak['best_gflops']} GFLOP/s | {a.rounds} rounds x 1 optimizer step (16 rows) per lever | "
        f"load avg now {common.loadavg()}"
    )
    print(
        common.fmt_table(
            [
                "lever (one change vs app default)",
                "wall s/step",
                "best wall",
                "CPU s/step",
                "tok/s",
                "speed-up (median)",
                "speed-up (best)",
                "speed-up (CPU)",
                "loss diff (no dropout)",
                "grad cos (no dropout)",
                "MFU",
            ],
            table,
        )
    )
    doc = {
        "kind": "levers-step",
        "args": vars(a),
        "threads": threads,
        "machine": info,
        "matmul_peak": peak,
        "levers": out,
    }
    p = common.write_json(
        doc, f"levers-step-cpu-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{a.tag}" if a.tag else "") + ".json"
    )
    print(f"wrote {p.relative_to(common.REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generation speed: base model vs base + LoRA adapter (unmerged) vs adapter merged (merge_and_unload).

    python bench/bench_generate.py [--repeats 5] [--new-tokens 64] [--device cpu|cuda]
                                   [--model PATH_OR_ID] [--adapter DIR]

Greedy decoding of exactly ``--new-tokens`` tokens (min_new_tokens = max_new_tokens, so EOS cannot
end a call early) for a few prompts. Three copies of the base are loaded the way the app loads them
(lora_app.models.load_base_model, for_training=False: float32 on CPU, bf16 on CUDA): the plain base,
PeftModel.from_pretrained(base, adapter), and the same merged with merge_and_unload(). Calls rotate
between the three so machine noise hits them alike. Reported per variant (median over calls after
one warm-up call each): new tokens/s over the whole call, decode tokens/s after the first token, and
time to first token (prompt prefill + first token, from a streamer's first put of a new token).

The adapter defaults to the one the last bench_train.py run kept (bench/results/runs/last_app_adapter);
without one, a q_proj,v_proj r=16 adapter with random (non-zero) B is made, which costs the same.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

PROMPTS = ["Two things are infinite:", "The secret of getting ahead is", "“A dream will always"]


class FirstTokenTimer:
    """A generate() streamer that timestamps the first new token (the first put is the prompt)."""

    def __init__(self, sync):
        self.sync, self.puts, self.t_first = sync, 0, None

    def put(self, value):
        self.puts += 1
        if self.puts == 2 and self.t_first is None:
            self.t_first = time.perf_counter()

    def end(self):
        pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per variant and prompt")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default=None)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--tag", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args(argv)
    import os

    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from lora_app import models
    from lora_app.config import ModelConfig

    if a.threads:
        torch.set_num_threads(a.threads)
    model_id = a.model or str(models.bundled_model_dir())
    rm = models.resolve_model(model_id)
    device = "cuda" if a.device == "cuda" else "cpu"
    tok = models.load_tokenizer(rm.load_path)

    def load():
        return models.load_base_model(
            ModelConfig(base_model_name_or_path=model_id), rm.load_path, device, for_training=False
        ).eval()

    adapter = a.adapter
    kept = common.RESULTS / "runs" / "last_app_adapter"
    if adapter is None and kept.is_dir() and a.model is None:
        adapter = str(kept)
    made = None
    if adapter is None:
        made = tempfile.mkdtemp(prefix="bench_adapter_")
        torch.manual_seed(0)
        pm = get_peft_model(
            load(),
            LoraConfig(
                r=16,
                lora_alpha=32,
                target_modules=["q_proj", "v_proj"],
                lora_dropout=0.05,
                task_type="CAUSAL_LM",
                init_lora_weights=False,
            ),
        )
        pm.save_pretrained(made)
        adapter = made
        del pm

    t0 = time.perf_counter()
    base = load()
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    unmerged = PeftModel.from_pretrained(load(), adapter).eval()
    t_unmerged = time.perf_counter() - t0
    t0 = time.perf_counter()
    merged = PeftModel.from_pretrained(load(), adapter).merge_and_unload().eval()
    t_merged = time.perf_counter() - t0
    variants = {"base": base, "adapter unmerged": unmerged, "adapter merged": merged}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def call(model, prompt):
        inputs = tok(prompt, return_tensors="pt").to(device)
        st = FirstTokenTimer(sync)
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=a.new_tokens,
                min_new_tokens=a.new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                streamer=st,
                pad_token_id=pad,
            )
        sync()
        t_end = time.perf_counter()
        n = out.shape[1] - inputs["input_ids"].shape[1]
        return {
            "new_tokens": n,
            "s": t_end - t,
            "ttft_s": st.t_first - t,
            "tok_per_s": n / (t_end - t),
            "decode_tok_per_s": (n - 1) / (t_end - st.t_first),
            "ids": out[0, inputs["input_ids"].shape[1] :].tolist(),
        }

    names = list(variants)
    for name in names:  # warm-up: the first call pays one-off costs
        call(variants[name], PROMPTS[0])
    calls: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(a.repeats):
        order = names[r % 3 :] + names[: r % 3]
        for p in PROMPTS:
            for name in order:
                calls[name].append({"prompt": p, "repeat": r, **call(variants[name], p)})

    def med(name, key):
        return statistics.median(c[key] for c in calls[name])

    same = {
        n: sum(c["ids"] == u["ids"] for c, u in zip(calls[n], calls["adapter unmerged"])) / len(calls[n]) for n in names
    }
    rows, agg = [], {}
    for n in names:
        agg[n] = {
            k: {"median": med(n, k), "min": min(c[k] for c in calls[n]), "max": max(c[k] for c in calls[n])}
            for k in ("tok_per_s", "decode_tok_per_s", "ttft_s")
        }
        agg[n]["vs_base_tok_per_s"] = agg[n]["tok_per_s"]["median"] / med("base", "tok_per_s")
        agg[n]["same_tokens_as_unmerged"] = same[n]
        rows.append(
            [
                n,
                f"{agg[n]['tok_per_s']['median']:.1f} ({agg[n]['tok_per_s']['min']:.1f}-"
                f"{agg[n]['tok_per_s']['max']:.1f})",
                f"{agg[n]['decode_tok_per_s']['median']:.1f}",
                f"{agg[n]['ttft_s']['median'] * 1000:.0f} ({agg[n]['ttft_s']['min'] * 1000:.0f}-"
                f"{agg[n]['ttft_s']['max'] * 1000:.0f})",
                f"{agg[n]['vs_base_tok_per_s']:.3f}",
                f"{same[n]:.0%}",
            ]
        )
    info = common.machine_info(device)
    print(
        f"# {info.get('cpu', '')} {info.get('gpu', '')} | torch {info['torch']} | threads {info['torch_threads']} | "
        f"load avg {info['loadavg_1m']} | {a.new_tokens} new tokens greedy, {len(PROMPTS)} prompts x "
        f"{a.repeats} repeats | adapter {adapter if not made else 'random (made here)'}"
    )
    print(
        common.fmt_table(
            [
                "variant",
                "new tok/s (min-max)",
                "decode tok/s",
                "TTFT ms (min-max)",
                "tok/s vs base",
                "same tokens as unmerged",
            ],
            rows,
        )
    )
    print(f"load: base {t_base:.1f} s, +adapter {t_unmerged:.1f} s, +adapter merged {t_merged:.1f} s")
    out = {
        "kind": "generate",
        "args": vars(a),
        "model": model_id,
        "adapter": adapter if not made else "random",
        "machine": info,
        "aggregate": agg,
        "load_s": {"base": t_base, "adapter unmerged": t_unmerged, "adapter merged": t_merged},
        "calls": {n: [{k: v for k, v in c.items() if k != "ids"} for c in cs] for n, cs in calls.items()},
    }
    name = f"generate-{a.device}-{time.strftime('%Y%m%d-%H%M%S')}" + (f"-{a.tag}" if a.tag else "")
    path = common.write_json(out, name + ".json")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

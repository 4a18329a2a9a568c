"""A model folder with random weights in the shape of a real model, for speed benchmarks offline.

    python bench/make_model.py OUT --shape smollm2-1.7b --tokenizer .gpu_assets/tokenizer [--device cuda]

Speed does not depend on the weights' values, only on the shapes, so a model built from a config
(``AutoModelForCausalLM.from_config``, transformers' own initialisation) times the same as the
trained one; the GPU machine holds no weights and reaches no network. Held-out losses of such a
model mean nothing beyond "finite". The folder gets the tokenizer files copied next to the weights
(the bundled SmolLM2 tokenizer: the same tokenizer family, vocabulary 49,152).

Shapes (LlamaConfig fields):
- ``smollm2-1.7b``: HuggingFaceTB/SmolLM2-1.7B's config.json (hidden 2048, 24 layers, 32 heads,
  32 kv heads, intermediate 8192, vocab 49,152, tied embeddings, max_position 8192; the RoPE base,
  which costs nothing, is left at the default): 1.71 B parameters, 3.4 GB in bf16.
- ``tiny``: 2 layers of width 64 with the same vocabulary, for the CPU dry run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

SHAPES = {
    "smollm2-1.7b": dict(
        hidden_size=2048,
        num_hidden_layers=24,
        num_attention_heads=32,
        num_key_value_heads=32,
        intermediate_size=8192,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=128,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
    ),
}


def make(out: Path, shape: str, tokenizer: Path, device: str = "cpu", seed: int = 0) -> dict:
    """Write ``out`` (config.json, model.safetensors, tokenizer files); returns a short summary.

    bf16 on CUDA (the dtype the GPU runs load), float32 on CPU. Raises KeyError for an unknown shape,
    FileNotFoundError when ``tokenizer`` holds no tokenizer.json.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if not (tokenizer / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tokenizer}/tokenizer.json is missing (copy the bundled model's tokenizer files)")
    t0 = time.time()
    torch.manual_seed(seed)
    cfg = LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2, **SHAPES[shape])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):  # initialise where it is fast: 1.7 B normal draws take ~1 s on a GPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    t_init = time.time() - t0
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer.iterdir():
        if f.is_file():
            shutil.copy(f, tmp / f.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    n = sum(p.numel() for p in model.parameters())
    return {
        "out": str(out),
        "shape": shape,
        "params": n,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
        "init_s": round(t_init, 1),
        "total_s": round(time.time() - t0, 1),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-1.7b")
    ap.add_argument("--tokenizer", type=Path, default=Path(".gpu_assets/tokenizer"))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    a = ap.parse_args(argv)
    s = make(a.out, a.shape, a.tokenizer, a.device)
    print(
        f"model {s['shape']}: {s['params'] / 1e9:.3f} B parameters ({s['dtype']}, random) in {s['out']}; "
        f"init {s['init_s']} s, total {s['total_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The adapter's model card (README.md with YAML metadata), as the Hub reads it.

Metadata keys follow the Hub's model-card spec (huggingface_hub ``ModelCardData``):
``base_model`` (a Hub id, never a local path), ``library_name: peft``, ``pipeline_tag``,
``tags``, ``datasets`` (only for Hub datasets). No token or local path is ever written.
"""

from __future__ import annotations

import yaml

from .config import RunConfig


def render_card(cfg: RunConfig, base_model_id: str, targets: list[str], final_loss: float | None,
                steps_done: int, trainable_line: str = "", repo_id: str | None = None) -> str:
    """The README.md text of an adapter folder. ``repo_id``: where it is pushed (the load
    snippet names it); None while the adapter only exists locally."""
    meta = {
        "base_model": base_model_id,
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "peft", "text-generation", "lora_app", f"base_model:adapter:{base_model_id}"],
    }
    if cfg.data.dataset_id:
        meta["datasets"] = [cfg.data.dataset_id]
    cfg_part = f", config `{cfg.data.dataset_config}`" if cfg.data.dataset_config else ""
    data_src = (f"the Hub dataset [`{cfg.data.dataset_id}`](https://huggingface.co/datasets/{cfg.data.dataset_id})"
                f" (split `{cfg.data.split}`{cfg_part})" if cfg.data.dataset_id else
                f"the file `{cfg.data.source_name or (cfg.data.path or 'data').replace(chr(92), '/').split('/')[-1]}`")
    rows = f", at most {cfg.data.max_rows:,} rows" if cfg.data.max_rows else ""
    repo = repo_id or "<this repo id>"
    from .hub import is_hub_id

    base_link = f"[{base_model_id}](https://huggingface.co/{base_model_id})" if is_hub_id(base_model_id) else \
        f"`{base_model_id}` (a local folder)"
    l, t = cfg.lora, cfg.training
    loss = f"{final_loss:.4f}" if final_loss is not None else "n/a"
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# LoRA adapter for {base_model_id}

A LoRA adapter for {base_link}, trained with lora_app.

## Data
Trained on {data_src}, text column `{cfg.data.text_column or 'text'}`{rows}.

## LoRA settings
| setting | value |
|---|---|
| r | {l.r} |
| lora_alpha | {l.lora_alpha:g} |
| lora_dropout | {l.lora_dropout:g} |
| target_modules | {', '.join(targets)} |
| bias | {l.bias} |

{trainable_line}

## Training settings
| setting | value |
|---|---|
| max_steps | {t.max_steps} (steps done: {steps_done}) |
| learning_rate | {t.learning_rate:g} |
| per_device_train_batch_size | {t.per_device_train_batch_size} |
| gradient_accumulation_steps | {t.gradient_accumulation_steps} |
| warmup_steps | {t.warmup_steps} |
| max_length | {t.max_length} |
| packing | {t.packing} |
| merge_accumulation (CPU) | {t.merge_accumulation} |
| final training loss | {loss} |

## How to use
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{base_model_id}")
tokenizer = AutoTokenizer.from_pretrained("{base_model_id}")
model = PeftModel.from_pretrained(base, "{repo}")
inputs = tokenizer("Two things are infinite: ", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0]))
```
"""

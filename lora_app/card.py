"""The adapter's model card (README.md with YAML metadata), written with huggingface_hub's
``ModelCard`` / ``ModelCardData`` (and read back with them in :mod:`lora_app.hub`).

Metadata keys follow the Hub's model-card spec (huggingface_hub ``ModelCardData``):
``base_model`` (a Hub id, never a local path), ``library_name: peft``, ``pipeline_tag``,
``tags``, ``datasets`` (only for Hub datasets). No token or local path is ever written.
"""

from __future__ import annotations

from typing import Any

from .config import RunConfig
from .md import cell, code, plain, py_str
from .variants import card_rows


def resolve_data(cfg: RunConfig, events: list[dict]) -> None:
    """Put into ``cfg`` the text column and layout the run's events say it really used (the saved
    config.yaml may say "detect it": text_column None, layout auto)."""
    infos = [e for e in events if e.get("type") == "info"]
    col = next((e["text_column"] for e in infos if e.get("text_column")), None)
    lay = next((e["layout"] for e in infos if e.get("layout")), None)
    if col and not cfg.data.text_column:
        cfg.data.text_column = col
    if lay and cfg.data.layout == "auto":
        cfg.data.layout = lay


def _layout_sentence(cfg: RunConfig) -> str:
    """How the rows became training text, for the card's Data section."""
    lay = cfg.data.layout
    if lay in ("auto", "text"):
        return f"text column {code(cfg.data.text_column or 'text')} (layout `text`: loss on every token)"
    what = "every token" if cfg.data.train_on_prompt else "the answers only"
    how = {
        "prompt_completion": "prompt + completion + EOS",
        "instruction": "the Stanford Alpaca prompt (instruction, optional input) + output + EOS",
        "conversation": "each conversation rendered with the chat template saved with this adapter "
        "(its tokenizer files; the base model's own, or the ChatML fallback when it has none)",
    }[lay]
    return f"layout `{lay}`: {how}; loss on {what}"


def eval_summary(events: list[dict]) -> dict | None:
    """The held-out numbers of a run from its events, or None if it was not evaluated:
    ``eval_loss``, ``perplexity`` (the last evaluation), ``base_perplexity`` (before training,
    may be None), ``step``, ``source`` (where the rows came from) and ``line``, e.g.
    "held-out perplexity 100.3 -> 61.2"."""
    evals = [e for e in events if e.get("type") == "eval"]
    base = next((e for e in evals if e.get("base")), None)
    after = [e for e in evals if not e.get("base")]
    if not after and base is None:
        return None
    last = after[-1] if after else None
    source = next((e.get("eval_source") for e in events if e.get("type") == "info" and e.get("eval_source")), "")
    bp = base["perplexity"] if base else None
    if last is None:
        line = f"held-out perplexity {bp:.1f} (base model; no step evaluated yet)"
    else:
        line = (
            f"held-out perplexity {bp:.1f} -> {last['perplexity']:.1f}"
            if bp is not None
            else f"held-out perplexity {last['perplexity']:.1f}"
        )
    return {
        "eval_loss": last["eval_loss"] if last else None,
        "perplexity": last["perplexity"] if last else None,
        "base_perplexity": bp,
        "step": last["step"] if last else 0,
        "source": source,
        "line": line,
    }


def _eval_results(data_name: str, ev: dict) -> list:
    """The held-out numbers as huggingface_hub ``EvalResult``s (the card's ``model-index``)."""
    from huggingface_hub import EvalResult

    common: dict[str, Any] = dict(
        task_type="text-generation", dataset_type=data_name, dataset_name=f"{data_name} (held-out rows)"
    )
    return [
        EvalResult(
            metric_type="perplexity",
            metric_value=round(ev["perplexity"], 4),
            metric_name="held-out perplexity",
            **common,
        ),
        EvalResult(
            metric_type="loss",
            metric_value=round(ev["eval_loss"], 6),
            metric_name="held-out loss (nats per token)",
            **common,
        ),
    ]


def render_card(
    cfg: RunConfig,
    base_model_id: str,
    targets: list[str],
    final_loss: float | None,
    steps_done: int,
    trainable_line: str = "",
    repo_id: str | None = None,
    evals: dict | None = None,
) -> str:
    """The README.md text of an adapter folder. ``repo_id``: where it is pushed (the load
    snippet names it); None while the adapter only exists locally. ``evals``: what
    :func:`eval_summary` returns (metadata ``model-index`` and an Evaluation section)."""
    from huggingface_hub import ModelCard, ModelCardData

    meta: dict[str, Any] = {
        "base_model": base_model_id,
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "tags": ["lora", "peft", "text-generation", "lora_app", f"base_model:adapter:{base_model_id}"],
    }
    if cfg.data.dataset_id:
        meta["datasets"] = [cfg.data.dataset_id]
    # The layout the run trained with (lora_app.layouts): Try it opens a chat box for "conversation".
    meta["data_layout"] = cfg.data.layout if cfg.data.layout != "auto" else "text"
    data_name = (
        cfg.data.dataset_id or cfg.data.source_name or (cfg.data.path or "data").replace(chr(92), "/").split("/")[-1]
    )
    eval_md = ""
    if evals and evals.get("perplexity") is not None:
        meta["model_name"] = (repo_id or f"{base_model_id}-lora").split("/")[-1]
        meta["eval_results"] = _eval_results(data_name, evals)
        base_row = (
            f"| base model (before training) | {evals['base_perplexity']:.2f} |\n"
            if evals.get("base_perplexity") is not None
            else ""
        )
        eval_md = (
            f"\n## Evaluation\nHeld-out rows: {evals.get('source') or 'held out from the data'}; loss in nats per "
            f"token, perplexity = exp(loss), over the held-out tokens.\n\n| model | held-out perplexity |\n"
            f"|---|---|\n{base_row}| with this adapter (step {evals['step']}) | {evals['perplexity']:.2f} |\n\n"
            f"Held-out loss after training: {evals['eval_loss']:.4f}.\n"
        )
    cfg_part = f", config {code(cfg.data.dataset_config)}" if cfg.data.dataset_config else ""
    data_src = (
        f"the Hub dataset [`{cfg.data.dataset_id}`](https://huggingface.co/datasets/{cfg.data.dataset_id})"
        f" (split {code(cfg.data.split)}{cfg_part})"
        if cfg.data.dataset_id
        else f"the file {code(cfg.data.source_name or (cfg.data.path or 'data').replace(chr(92), '/').split('/')[-1])}"
    )
    rows = f", at most {cfg.data.max_rows:,} rows" if cfg.data.max_rows else ""
    repo = repo_id or "<this repo id>"
    from .repo_id import is_hub_id

    base_link = (
        f"[{base_model_id}](https://huggingface.co/{base_model_id})"
        if is_hub_id(base_model_id)
        else f"{code(base_model_id)} (a local folder)"
    )
    lo, t = cfg.lora, cfg.training
    loss = f"{final_loss:.4f}" if final_loss is not None else "n/a"
    card_data = ModelCardData(**meta)
    return str(
        ModelCard(f"""---
{card_data.to_yaml()}
---

# LoRA adapter for {plain(base_model_id)}

A LoRA adapter for {base_link}, trained with lora_app.

## Data
Trained on {data_src}, {_layout_sentence(cfg)}{rows}.

## LoRA settings
| setting | value |
|---|---|
| r | {lo.r} |
| lora_alpha | {lo.lora_alpha:g} |
| lora_dropout | {lo.lora_dropout:g} |
| target_modules | {cell(", ".join(targets))} |
| bias | {lo.bias} |
{card_rows(lo)}

{trainable_line}

## Training settings
| setting | value |
|---|---|
| max_steps | {t.max_steps} (steps done: {steps_done}) |
| learning_rate | {t.learning_rate:g} |
| per_device_train_batch_size | {t.per_device_train_batch_size} |
| gradient_accumulation_steps | {t.gradient_accumulation_steps} |
| warmup_steps | {t.warmup()}{f" (warmup_ratio {t.warmup_ratio:g})" if t.warmup_ratio is not None else ""} |
| lr_scheduler_type | {t.lr_scheduler_type} |
| max_length | {t.max_length} |
| packing | {t.packing} |
| merge_accumulation (CPU) | {t.merge_accumulation} |
| final training loss | {loss} |
{eval_md}
## How to use
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained({py_str(base_model_id)})
tokenizer = AutoTokenizer.from_pretrained({py_str(base_model_id)})
model = PeftModel.from_pretrained(base, {py_str(repo)})
inputs = tokenizer("Two things are infinite: ", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0]))
```
""")
    )

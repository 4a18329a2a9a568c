"""Merge a run's LoRA adapter into its base model and export a standalone model.

``merge_run`` loads the base in 16 bits (float32 on CPU) -- never in 8 or 4 bits, even when the
run trained on a quantized base: ``merge_and_unload`` on bitsandbytes weights would re-quantize
W + BA and round most of the LoRA update away -- applies the adapter with PEFT's
``merge_and_unload``, and saves sharded safetensors with the tokenizer, the generation config
and a model card naming the base model and the adapter, into ``RUN_DIR/merged``.

Verified every time: the saved folder is reloaded with plain ``AutoModelForCausalLM`` and must
give the same greedy tokens as base + adapter (unmerged) on a few prompts; the largest logit
difference is reported and written to ``merge_check.json``. A merge that fails the check is
kept for inspection but :func:`push_merged` refuses it. Disk space is checked first
(``shutil.disk_usage`` against the parameter count x bytes per value).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig
from .repo_id import on_disk
from .run_folder import replace_folder

MERGED_DIR = "merged"
CHECK_FILE = "merge_check.json"
PROMPTS = ("Two things are infinite: ", "The secret of getting ahead is", "Life is")
NEW_TOKENS = 12
DTYPES = ("bfloat16", "float16", "float32")
#: Shard size of the saved weights (the transformers default is 50GB; smaller shards resume better).
MAX_SHARD = "2GB"
QUANTIZED_NOTE = (
    "The adapter is merged into the base reloaded in 16 bits (float32 on CPU), never into 8-bit or "
    "4-bit weights: rounding W + BA back to 8 or 4 bits would lose most of the LoRA update."
)


@dataclass
class MergeResult:
    """What :func:`merge_run` made: the folder, the dtype, the check's numbers and its size."""

    path: Path
    dtype: str
    ok: bool
    max_logit_diff: float
    tokens_equal: int
    prompts: int
    bytes: int
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        verdict = (
            f"**verified**: merged and base + adapter give the same greedy tokens on {self.prompts} prompts"
            if self.ok
            else f"**check failed**: greedy tokens differ on {self.prompts - self.tokens_equal} of {self.prompts} prompts "
            "(this merge will not be pushed)"
        )
        return (
            f"Merged model saved to `{self.path}` ({self.dtype}, {self.bytes / 1e9:.2f} GB) · {verdict}; "
            f"largest logit difference {self.max_logit_diff:.3g}." + "".join(f"\n\n{n}" for n in self.notes)
        )


def _adapter_problem(run_dir: Path) -> str | None:
    if not on_disk(run_dir, "dir"):
        return f"merge: the folder '{run_dir}' does not exist. Fix: give a run folder (RUNS/<run id>)."
    ad = run_dir / "adapter"
    if not ((ad / "adapter_config.json").is_file() and (ad / "adapter_model.safetensors").is_file()):
        status = ""
        try:
            from .events import read_events

            st = [e for e in read_events(run_dir)[0] if e.get("type") == "status"]
            status = f" (its status: {st[-1]['status']})" if st else ""
        except OSError:
            pass
        return (
            f"merge: run '{run_dir.name}' has no saved adapter{status}, so there is nothing to merge. "
            "Fix: pick a run that finished, or was stopped after its first save."
        )
    return None


def default_dtype(device: str) -> str:
    """float32 on CPU (CPU half precision is slow and lossy); bfloat16 on a GPU that has it, else float16."""
    if device == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def estimate_bytes(model_config, dtype: str) -> int:
    """Bytes the merged weights take: parameters of the meta skeleton x bytes per value (tied
    embeddings counted once, as safetensors stores them once)."""
    from .models import skeleton

    sk = skeleton(model_config)
    n = sum(p.numel() for p in {id(p): p for p in sk.parameters()}.values())
    return n * (4 if dtype == "float32" else 2)


def _greedy(model, tok, prompts, device):
    """Greedy continuations and the logits over prompt + continuation, per prompt."""
    import torch

    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            seq = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=tok.pad_token_id or tok.eos_token_id,
            )
            logits = model(input_ids=seq).logits.float().cpu()
        out.append((seq[0].cpu().tolist(), logits[0]))
    return out


def merge_run(
    run_dir: str | Path, dtype: str | None = None, progress: Callable[[str], None] = print, token: str | None = None
) -> MergeResult:
    """Merge ``run_dir``'s adapter into its base and save to ``run_dir/merged``.

    ``dtype``: bfloat16, float16 or float32 (None: :func:`default_dtype`). ``progress`` gets
    one line per phase (loading, merging, saving, checking). Raises ConfigError, before any
    weights are loaded, for a run without an adapter, a bad dtype, or too little disk space.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from . import models

    run_dir = Path(run_dir).resolve()
    problems = []
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"merge.dtype: '{dtype}' is not one of {', '.join(DTYPES)}. Fix: pick one of them.")
    bad = _adapter_problem(run_dir)
    if bad:
        problems.append(bad)
    if problems:
        raise ConfigError(problems)
    cfg = RunConfig.load(run_dir / "config.yaml")
    ad = run_dir / "adapter"
    adapter_cfg = json.loads((ad / "adapter_config.json").read_text())
    hub_id = adapter_cfg.get("base_model_name_or_path") or cfg.model.base_model_name_or_path
    rm = models.resolve_model(cfg.model.base_model_name_or_path)
    device = models.device_kind()
    dtype = dtype or default_dtype(device)
    mc = models.load_model_config(cfg.model, token=token)
    need = estimate_bytes(mc, dtype)
    out = run_dir / MERGED_DIR
    free = shutil.disk_usage(run_dir).free
    # The new folder is written beside any old one (tmp + rename): the need is the full size, plus 5%.
    if free < need * 1.05 + 50e6:
        raise ConfigError(
            [
                f"merge: the merged model needs about {need / 1e9:.2f} GB ({dtype}) in {run_dir}, but only "
                f"{free / 1e9:.2f} GB is free. Fix: free disk space, or merge in a 16-bit dtype "
                "(--dtype bfloat16 halves float32's size)."
            ]
        )
    quant = trained_quantization(run_dir) or models.effective_quantization(cfg.model, device)
    notes = [QUANTIZED_NOTE] if quant in ("8bit", "4bit") else []
    t0 = time.time()
    progress(f"loading the base model {hub_id} in {dtype} ({need / 1e9:.2f} GB) and the adapter")
    tdtype = getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(
        rm.load_path, dtype=tdtype, use_safetensors=True, trust_remote_code=cfg.model.trust_remote_code, token=token
    )
    tok = models.load_tokenizer(rm.load_path, cfg.model.trust_remote_code, token)
    # A conversation adapter carries the chat template it was trained with (the model's own or the
    # ChatML fallback, saved beside the weights): the merged model must chat the same way.
    from .chat import saved_chat_template

    trained_template = saved_chat_template(str(ad))
    if trained_template:
        tok.chat_template = trained_template
    dev = "cuda" if device == "cuda" else "cpu"
    base.to(dev).eval()  # type: ignore[arg-type]  # (transformers' stub of .to() omits str devices)
    model = PeftModel.from_pretrained(base, ad).eval()
    prompts = list(PROMPTS)
    want = _greedy(model, tok, prompts, dev)
    progress(f"merging (merge_and_unload) after {time.time() - t0:.1f} s")
    merged = model.merge_and_unload()
    merged.config.use_cache = True
    tmp = run_dir / f".{MERGED_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    progress("saving sharded safetensors, tokenizer, generation config and model card")
    merged.save_pretrained(tmp, safe_serialization=True, max_shard_size=MAX_SHARD)
    tok.save_pretrained(tmp)
    if merged.can_generate() and not (tmp / "generation_config.json").exists():
        merged.generation_config.save_pretrained(tmp)
    del merged, model, base
    progress("checking: reloading the saved folder with AutoModelForCausalLM and comparing greedy tokens")
    reloaded = AutoModelForCausalLM.from_pretrained(
        tmp, dtype=tdtype, use_safetensors=True, trust_remote_code=cfg.model.trust_remote_code
    )
    reloaded.to(dev).eval()  # type: ignore[arg-type]  # (transformers' stub of .to() omits str devices)
    got = _greedy(reloaded, tok, prompts, dev)
    diff, equal = 0.0, 0
    for (ws, wl), (gs, gl) in zip(want, got, strict=True):
        equal += ws == gs
        n = min(wl.shape[0], gl.shape[0])
        diff = max(diff, (wl[:n] - gl[:n]).abs().max().item())
    ok = equal == len(prompts)
    check = {
        "ok": ok,
        "dtype": dtype,
        "prompts": prompts,
        "tokens_equal": equal,
        "max_logit_diff": diff,
        "base_model": hub_id,
        "trained_quantization": quant,
        "time": time.time(),
    }
    (tmp / "README.md").write_text(render_merged_card(cfg, hub_id, run_dir, dtype, check), encoding="utf-8")
    (tmp / CHECK_FILE).write_text(json.dumps(check, indent=2) + "\n", encoding="utf-8")
    replace_folder(tmp, out)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    res = MergeResult(out, dtype, ok, diff, equal, len(prompts), size, notes)
    progress(
        f"done in {time.time() - t0:.1f} s: "
        + ("verified" if ok else "CHECK FAILED")
        + f", largest logit difference {diff:.3g}"
    )
    return res


def trained_quantization(run_dir: Path) -> str | None:
    """The quantization the run really trained with ("none", "8bit", "4bit"), from its events."""
    from .events import read_events

    info = [e for e in read_events(run_dir)[0] if e.get("type") == "info" and e.get("quantization")]
    return info[-1]["quantization"] if info else None


def merge_check(run_dir: str | Path) -> dict | None:
    """The saved ``merge_check.json`` of ``run_dir/merged``, or None if there is no merge."""
    p = Path(run_dir) / MERGED_DIR / CHECK_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def render_merged_card(
    cfg: RunConfig, base_model_id: str, run_dir: Path, dtype: str, check: dict, repo_id: str | None = None
) -> str:
    """README.md of the merged model: names the base model and the adapter (its Hub repo when
    it was pushed, else the run), the dtype and the check's result."""
    import yaml

    from .hub import last_push
    from .repo_id import is_hub_id

    pushed = last_push(run_dir)
    quant = check.get("trained_quantization") or "none"
    adapter = (
        f"[{pushed['repo_id']}](https://huggingface.co/{pushed['repo_id']})"
        if pushed
        else f"the LoRA adapter of lora_app run `{run_dir.name}`"
    )
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["lora_app", "lora", "merged", "text-generation"],
    }
    if is_hub_id(base_model_id):
        meta["base_model"] = base_model_id
    if cfg.data.dataset_id:
        meta["datasets"] = [cfg.data.dataset_id]
    lo = cfg.lora
    repo = repo_id or "<this repo id>"
    return f"""---
{yaml.safe_dump(meta, sort_keys=False).strip()}
---

# {base_model_id} with a LoRA adapter merged in

The base model `{base_model_id}` with {adapter} merged into its weights (PEFT `merge_and_unload`),
saved in {dtype}: a standalone model, no PEFT needed to load it.

- LoRA: r {lo.r}, lora_alpha {lo.lora_alpha:g}, target_modules {", ".join(lo.target_modules or ["default"])}
- Base loaded for the merge in {dtype}, not quantized ({
        "the adapter was trained on a "
        + quant
        + " base; merging into quantized weights would round the LoRA update away"
        if quant in ("8bit", "4bit")
        else "the adapter was trained on the unquantized base"
    }).
- Check: the merged model and base + adapter give {"the same" if check["ok"] else "DIFFERENT"} greedy tokens on
  {len(check["prompts"])} prompts; largest logit difference {check["max_logit_diff"]:.3g}.

## How to use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo}")
tokenizer = AutoTokenizer.from_pretrained("{repo}")
inputs = tokenizer("Two things are infinite: ", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=40)[0]))
```
"""


# -- push ---------------------------------------------------------------------------------------
@dataclass
class MergedPushPlan:
    """What :func:`push_merged` uploads: every file of ``folder`` (the README re-rendered for
    ``repo_id``), ``bytes`` in all."""

    repo_id: str
    folder: Path
    files: list[Path]
    bytes: int
    card: str
    exists: bool
    existing_private: bool | None


def push_preflight(run_dir: str | Path, repo_id: str, token: str | None) -> MergedPushPlan:
    """The merged model's push preflight: a verified merge exists, the base model is a Hub id,
    the repo id is owner/name, then the same Hub checks as the adapter push
    (:func:`lora_app.hub.check_destination`). Raises HubError listing what to fix."""
    from .hub import check_destination
    from .hub_client import HubError
    from .repo_id import check_repo_id, is_hub_id

    run_dir = Path(run_dir).resolve()
    repo_id = (repo_id or "").strip()
    check = merge_check(run_dir)
    problems = []
    if check is None:
        problems.append(
            f"merge: run '{run_dir.name}' has no merged model yet. Fix: press Merge (or run "
            f"python -m lora_app merge {run_dir}) first."
        )
    elif not check.get("ok"):
        problems.append(
            f"merge: the merged model of run '{run_dir.name}' failed its check (greedy tokens differ from "
            f"base + adapter; largest logit difference {check.get('max_logit_diff', float('nan')):.3g}), so "
            "it is not pushed. Fix: merge again in float32 (--dtype float32)."
        )
    elif not is_hub_id(check.get("base_model")):
        problems.append(
            f"merge: the base model is the local folder '{check.get('base_model')}', which the model card "
            "cannot name. Fix: train from a Hub id."
        )
    problems += check_repo_id(repo_id)
    if problems or check is None:
        raise HubError(problems)
    folder = run_dir / MERGED_DIR
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.name != "README.md")
    card = render_merged_card(
        RunConfig.load(run_dir / "config.yaml"), check["base_model"], run_dir, check["dtype"], check, repo_id=repo_id
    )
    own = {".gitattributes", "README.md", *(f.name for f in files)}
    _, exists, private, _ = check_destination(repo_id, token, card, own_files=own, marker="config.json", what="a model")
    return MergedPushPlan(repo_id, folder, files, sum(f.stat().st_size for f in files), card, exists, private)


def push_merged(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    progress: Callable[[str], None] = print,
):
    """Preflight, then upload the merged folder to ``repo_id`` in one commit. The size is
    reported (``progress``) before anything is uploaded. Returns a :class:`lora_app.hub.PushResult`;
    raises HubError with a plain message on any failure (the local folder is only read)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from .hub import PushResult
    from .hub_client import HubError, explain

    progress(f"checking the push to '{repo_id}': merge verified, repo id, token, permissions, model card")
    plan = push_preflight(run_dir, repo_id, token)
    progress(f"uploading {len(plan.files) + 1} files, {plan.bytes / 1e9:.2f} GB, to {plan.repo_id}")
    api = HfApi()
    step = f"create the repo '{plan.repo_id}'"
    try:
        url = api.create_repo(plan.repo_id, private=private, exist_ok=True, token=token, repo_type="model")
        step = f"upload the merged model to '{plan.repo_id}'"
        ops = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f)) for f in plan.files]
        ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan.card.encode("utf-8")))
        info = api.create_commit(
            plan.repo_id,
            ops,
            commit_message=f"Merged model from lora_app run {Path(run_dir).resolve().name}",
            token=token,
            repo_type="model",
        )
    except Exception as err:
        raise HubError([explain(err, step, plan.repo_id)]) from None
    progress(f"pushed to {url}")
    return PushResult(
        plan.repo_id,
        str(url),
        getattr(info, "commit_url", None),
        not plan.exists,
        plan.existing_private if plan.exists else private,
    )

"""Pushing a finished run's adapter to the Hugging Face Hub, after a preflight that says what to fix.

Tokens, whoami and error messages: :mod:`lora_app.hub_client`.

:func:`preflight` checks, before anything is uploaded: the adapter files are there, its
``base_model_name_or_path`` is a Hub id (not a local folder), the repo id is ``owner/name``,
the token works (401), may write (a read-only token: 403) and may write under that owner, an
existing repo of that name holds an adapter (not something else), and the model card's YAML
passes the Hub's ``/api/validate-yaml``. :func:`push_adapter` then uploads
``adapter_config.json``, ``adapter_model.safetensors`` and ``README.md`` from a *staging copy*,
so the run's own adapter folder is never touched, whether the push succeeds or fails; a failed
push can simply be retried.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError
from .hub_client import TOKENS_URL, HubError, User, explain, whoami
from .repo_id import check_repo_id, is_hub_id, on_disk, sanitize  # (hub.check_repo_id etc. stay importable)
from .run_folder import TOKENIZER_FILES  # a conversation adapter's tokenizer: pushed too

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")
CARD_PLACEHOLDER = "<this repo id>"


# -- repo ids made from a run ----------------------------------------------------------------
def default_repo_id(user: str | None, run_dir: str | Path) -> str:
    """``<user>/<base-name>-lora-<data-name>``, e.g. alice/SmolLM2-135M-Instruct-lora-quotes."""
    base, data = run_names(run_dir)
    name = sanitize(f"{base}-lora-{data}" if data else f"{base}-lora")
    return f"{sanitize(user or '') or 'your-name'}/{name or 'lora-adapter'}"


def run_names(run_dir: str | Path) -> tuple[str, str]:
    """(base model short name, data short name) of a run folder or adapter folder."""
    run_dir = Path(run_dir)
    ad = _adapter_dir(run_dir)
    base = ""
    try:
        base = json.loads((ad / "adapter_config.json").read_text())["base_model_name_or_path"] or ""
    except (OSError, ValueError, KeyError):
        pass
    data = ""
    cfg_path = ad.parent / "config.yaml"
    if cfg_path.is_file():
        from .config import RunConfig

        try:
            cfg = RunConfig.load(cfg_path)
            base = base or cfg.model.base_model_name_or_path
            if cfg.data.dataset_id:
                data = cfg.data.dataset_id.split("/")[-1]
            else:
                src = cfg.data.source_name or (Path(cfg.data.path).name if cfg.data.path else "")
                data = src.split(" ")[0]
                data = data.rsplit(".", 1)[0] if "." in data else data
        except (ConfigError, OSError):
            pass
    base = base.rstrip("/").replace("\\", "/").split("/")[-1]
    return base, data


# -- preflight and push -------------------------------------------------------------------------
def _adapter_dir(path: str | Path) -> Path:
    p = Path(path)
    return p / "adapter" if on_disk(p / "adapter", "dir") and not on_disk(p / "adapter_config.json") else p


@dataclass
class PushPlan:
    """What preflight found; :func:`push_adapter` uploads exactly these files."""

    repo_id: str
    adapter_dir: Path
    user: User | None  # set by check_destination
    base_model: str
    adapter_config: dict
    card: str
    exists: bool = False
    existing_private: bool | None = None
    head_sha: str | None = None


@dataclass
class PushResult:
    repo_id: str
    url: str
    commit_url: str | None
    created: bool
    private: bool | None
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False  # the repo already held exactly these files: no new commit

    def markdown(self) -> str:
        head = f"Pushed to [{self.repo_id}]({self.url})"
        head += (
            " (new repo)"
            if self.created
            else " (it already held this adapter: nothing changed)"
            if self.unchanged
            else " (new commit in the existing repo)"
        )
        if self.private is not None:
            head += ", private" if self.private else ", public"
        return head + "." + "".join(f"\n\n{n}" for n in self.notes)


def _render_card(adapter_dir: Path, base_model: str, repo_id: str) -> str:
    """The model card to upload: re-rendered from the run's config and event log when the
    adapter sits in a run folder (so it names the repo and the Hub id), else the adapter's own
    README.md with the repo id filled in."""
    run_dir = adapter_dir.parent
    if (run_dir / "config.yaml").is_file():
        try:
            return _card_from_run(run_dir, adapter_dir, base_model, repo_id)
        except (ConfigError, OSError, ValueError, KeyError):
            pass
    readme = adapter_dir / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    return text.replace(CARD_PLACEHOLDER, repo_id)


def _card_from_run(run_dir: Path, adapter_dir: Path, base_model: str, repo_id: str) -> str:
    from . import card, models
    from .config import RunConfig
    from .events import read_events

    cfg = RunConfig.load(run_dir / "config.yaml")
    ac = json.loads((adapter_dir / "adapter_config.json").read_text())
    targets = ac.get("target_modules") or []
    targets = sorted(targets) if isinstance(targets, list) else [str(targets)]
    events, _ = read_events(run_dir)
    losses = [e for e in events if e.get("type") == "log" and e.get("loss") is not None]
    final_loss = losses[-1]["loss"] if losses else None
    steps = max([e.get("step", 0) for e in events if e.get("type") in ("log", "progress", "saved")] or [0])
    info = next((e for e in reversed(events) if e.get("type") == "info" and e.get("trainable_params")), None)
    line = models.trainable_line(info["trainable_params"], info["all_params"]) if info else ""
    card.resolve_data(cfg, events)
    return card.render_card(
        cfg, base_model, targets, final_loss, steps, line, repo_id=repo_id, evals=card.eval_summary(events)
    )


def _card_problems(text: str, base_model: str) -> list[str]:
    """Local checks of a model card's YAML metadata (before the Hub's own validation), read
    with huggingface_hub's ``ModelCard`` as the Hub reads it. One line per problem, with its fix."""
    import yaml
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    if not REGEX_YAML_BLOCK.search(text):
        return [
            "model card: README.md has no YAML metadata block. Fix: train the run again with this app "
            "(it writes the card), or add a '---' block with base_model and library_name: peft."
        ]
    try:
        meta = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
    except yaml.YAMLError as err:
        return [
            f"model card: its YAML metadata does not parse ({str(err).splitlines()[0]}). "
            "Fix: correct the block between the '---' lines of README.md."
        ]
    except ValueError:  # ModelCard: "repo card metadata block should be a dict"
        return [
            "model card: its YAML metadata is not a mapping. Fix: write 'key: value' lines between the '---' lines."
        ]
    out = []
    if meta.get("base_model") != base_model:
        out.append(
            f"model card: base_model is {meta.get('base_model')!r}, not the adapter's base model "
            f"'{base_model}'. Fix: set base_model: {base_model}."
        )
    if meta.get("library_name") != "peft":
        out.append(
            "model card: library_name must be 'peft' so the Hub shows how to load the adapter. "
            "Fix: set library_name: peft."
        )
    return out


def preflight(
    run_dir: str | Path, repo_id: str, token: str | None, base_model_id: str | None = None, validate_yaml: bool = True
) -> PushPlan:
    """Check everything a push needs; raise HubError listing every problem found, each with
    its fix. Local checks come first, then (only if a token is there) the Hub ones.

    ``base_model_id``: the Hub id of the base model, needed only when the run was trained from
    a local folder with no known Hub id (the uploaded adapter_config.json and card get it).
    """
    repo_id = (repo_id or "").strip()
    ad = _adapter_dir(run_dir)
    problems: list[str] = []
    missing = [f for f in ADAPTER_FILES[:2] if not (ad / f).is_file()]
    if missing:
        raise HubError(
            [
                f"adapter: {', '.join(missing)} missing in {ad}. Fix: pick a run that finished "
                "(or was stopped after saving)."
            ]
        )
    try:
        ac = json.loads((ad / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HubError([f"adapter: adapter_config.json cannot be read ({err}). Fix: train the run again."]) from None
    recorded = ac.get("base_model_name_or_path") or ""
    override = (base_model_id or "").strip() or None
    base = recorded
    if override:
        if not is_hub_id(override):
            problems.append(
                f"hub.base_model: '{override}' is not a Hub model id. Fix: write it as owner/name, "
                "e.g. HuggingFaceTB/SmolLM2-135M-Instruct."
            )
        elif is_hub_id(recorded) and override != recorded:
            problems.append(
                f"hub.base_model: the adapter was trained on '{recorded}', not '{override}'. "
                "Fix: leave the base model field empty."
            )
        else:
            base = override
    if not override and not is_hub_id(recorded):
        problems.append(
            f"adapter: adapter_config.json names the local folder '{recorded}' as its base model, which "
            "nobody else can load. Fix: give the base model's Hub id (owner/name) in the 'Base model Hub "
            "id' field (only the uploaded copy changes), or train from a Hub id; for a converted folder, "
            "a lora_app_hub_id.txt file in it holding the Hub id makes later runs record it."
        )
    problems += check_repo_id(repo_id)
    card_text = ""
    if is_hub_id(base):
        card_text = _render_card(ad, base, repo_id or CARD_PLACEHOLDER)
        problems += _card_problems(card_text, base)
    if problems:
        raise HubError(problems)
    ac = {**ac, "base_model_name_or_path": base}

    plan = PushPlan(repo_id, ad, None, base, ac, card_text)
    plan.user, plan.exists, plan.existing_private, plan.head_sha = check_destination(
        repo_id,
        token,
        card_text,
        own_files={".gitattributes", "README.md", *ADAPTER_FILES, *TOKENIZER_FILES},
        marker="adapter_config.json",
        what="a LoRA adapter",
        validate_yaml=validate_yaml,
    )
    return plan


def check_destination(
    repo_id: str,
    token: str | None,
    card_text: str,
    own_files: set[str],
    marker: str,
    what: str,
    validate_yaml: bool = True,
) -> tuple[User, bool, bool | None, str | None]:
    """The Hub side of a push preflight (adapter or merged model): the token works, is not
    read-only and may write under the repo's owner; an existing repo of that name holds
    ``what`` (it has ``marker``, or only ``own_files``), not something else; the card's YAML
    passes the Hub's validation. Returns ``(user, exists, existing_private, head_sha)``;
    raises HubError with the fix."""
    user = whoami(token, use_cache=False)  # a push checks the token afresh (it may have been revoked)
    namespace = repo_id.split("/")[0]
    if user.read_only:
        raise HubError(
            [
                f"hub: the token of '{user.name}' is read-only, so it cannot create or push to "
                f"'{repo_id}' (it would get 403 Forbidden). Fix: create a token with the 'write' role at "
                f"{TOKENS_URL} and paste it."
            ]
        )
    if not user.can_write_to(namespace):
        orgs = [o for o in user.orgs if user.can_write_to(o)]
        where = f"'{user.name}'" + (f" or one of your organisations ({', '.join(orgs)})" if orgs else "")
        role = user.orgs.get(namespace)
        why = (
            f"you are only a '{role}' member of '{namespace}'"
            if role is not None
            else f"'{namespace}' is another account, and you are logged in as '{user.name}'"
        )
        raise HubError(
            [
                f"hub.repo_id: you cannot push to '{repo_id}': {why}. "
                f"Fix: use {where} as the owner, e.g. {user.name}/{repo_id.split('/')[1]}."
            ]
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    exists, private, sha = False, None, None
    try:
        info = HfApi().model_info(repo_id, token=token)
        exists, private = True, bool(getattr(info, "private", False))
        sha = getattr(info, "sha", None)
        files = {s.rfilename for s in (info.siblings or [])}
        foreign = sorted(f for f in files - own_files if not f.startswith(("checkpoint", "runs/", "training_args")))
        if files and marker not in files and foreign:
            raise HubError(
                [
                    f"hub.repo_id: '{repo_id}' already exists and holds other files "
                    f"({', '.join(foreign[:5])}{'…' if len(foreign) > 5 else ''}), not {what}. "
                    "Fix: pick a new repo name."
                ]
            )
    except RepositoryNotFoundError:
        pass
    except HubError:
        raise
    except Exception as err:
        raise HubError([explain(err, f"look up '{repo_id}'", repo_id)]) from None
    if validate_yaml:
        from huggingface_hub import ModelCard

        try:
            ModelCard(card_text).validate("model")  # POST /api/validate-yaml
        except ValueError as err:
            raise HubError(
                [
                    f"model card: the Hub rejects its YAML metadata ({str(err).strip()[:300]}). "
                    "Fix: correct the block between the '---' lines of README.md."
                ]
            ) from None
        except Exception as err:
            raise HubError([explain(err, "validate the model card")]) from None
    return user, exists, private, sha


def push_adapter(
    run_dir: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    base_model_id: str | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Preflight, then upload the adapter (adapter_config.json, adapter_model.safetensors,
    README.md) to ``repo_id``, creating the repo if needed. Returns where it went.

    Raises HubError with a plain message on any failure (bad repo id, 401, 403, someone
    else's namespace, 409, network down, invalid card). The local adapter folder is only ever
    read, so it is byte-identical afterwards and the push can be retried.
    """
    from huggingface_hub import HfApi

    repo_id = (repo_id or "").strip()
    plan = preflight(run_dir, repo_id, token, base_model_id)
    stage = Path(tempfile.mkdtemp(prefix="lora_app_push_"))
    try:
        shutil.copyfile(plan.adapter_dir / "adapter_model.safetensors", stage / "adapter_model.safetensors")
        (stage / "adapter_config.json").write_text(
            json.dumps(plan.adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (stage / "README.md").write_text(plan.card, encoding="utf-8")
        for name in (n for n in TOKENIZER_FILES if (plan.adapter_dir / n).is_file()):
            shutil.copyfile(plan.adapter_dir / name, stage / name)
        api = HfApi()
        step = f"create the repo '{repo_id}'"
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True, token=token, repo_type="model")
            step = f"upload the adapter to '{repo_id}'"
            run = plan.adapter_dir.parent.name if (plan.adapter_dir.parent / "config.yaml").is_file() else ""
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=stage,
                token=token,
                repo_type="model",
                allow_patterns=[*ADAPTER_FILES, *TOKENIZER_FILES],
                commit_message=commit_message or f"LoRA adapter{' from run ' + run if run else ''} (lora_app)",
            )
        except Exception as err:
            raise HubError([explain(err, step, repo_id)]) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    notes = []
    if plan.exists and plan.existing_private is not None and plan.existing_private != private:
        notes.append(
            f"The repo already existed as {'private' if plan.existing_private else 'public'}; its "
            "visibility was left as it is (change it in the repo's settings on the Hub)."
        )
    oid = getattr(info, "oid", None)
    result = PushResult(
        repo_id,
        str(url),
        getattr(info, "commit_url", None),
        not plan.exists,
        plan.existing_private if plan.exists else private,
        notes,
        unchanged=bool(plan.exists and oid and oid == plan.head_sha),
    )
    _record_push(plan.adapter_dir, result)
    return result


def _record_push(adapter_dir: Path, result: PushResult) -> None:
    """Note the push in the run's event log (repo id and URL only)."""
    run_dir = adapter_dir.parent
    if not (run_dir / "events.jsonl").is_file():
        return
    from .events import EventWriter

    ev = EventWriter(run_dir)
    try:
        ev.emit(
            "pushed",
            repo_id=result.repo_id,
            url=result.url,
            commit_url=result.commit_url,
            message=f"adapter pushed to {result.url}",
        )
    finally:
        ev.close()


def last_push(run_dir: str | Path) -> dict | None:
    """The last ``pushed`` event of a run, or None."""
    from .events import read_events

    events, _ = read_events(run_dir)
    pushed = [e for e in events if e.get("type") == "pushed"]
    return pushed[-1] if pushed else None

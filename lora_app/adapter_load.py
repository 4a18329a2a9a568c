"""Loading a LoRA adapter (a local folder or a Hub repo) onto a base model, with each way it can
fail said in plain words: no adapter there, private or gated, a folder without its weights, weights
that do not fit the base, the Hub out of reach. Used by :mod:`lora_app.generate` (Try it, chat)."""

from __future__ import annotations

from pathlib import Path

from . import models, variants
from .config import ConfigError
from .repo_id import on_disk


def adapter_not_found(adapter: str, err: BaseException, token: str | None) -> str:
    """Why ``PeftConfig.from_pretrained(adapter)`` failed, in plain words (PEFT wraps the cause)."""
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    from .public_repos import Unverified

    if isinstance(err, Unverified):
        return f"adapter: {err}"
    # PEFT wraps the Hub's error (its cause); huggingface_hub's own errors chain the HTTP error instead
    cause = err if isinstance(err, HfHubHTTPError) else (err.__cause__ or err)
    if on_disk(Path(adapter) / "adapter_config.json", "file"):  # there, but PEFT could not read it
        return (
            f"adapter: {Path(adapter) / 'adapter_config.json'} cannot be read ({type(cause).__name__}: "
            f"{str(cause).splitlines()[0][:200] if str(cause) else 'no detail'}). Fix: train the run again "
            "or copy the adapter folder anew."
        )
    if on_disk(adapter, "dir"):
        return (
            f"adapter: the folder '{adapter}' holds no adapter_config.json. Fix: pick a finished run's adapter folder."
        )
    from .hub_client import explain, is_network_error
    from .repo_id import is_hub_id

    if not is_hub_id(adapter):
        return (
            f"adapter: '{adapter}' is neither an adapter folder nor a Hub repo id. Fix: pick a finished run, "
            "or type a Hub repo id as owner/name."
        )
    if isinstance(cause, GatedRepoError):
        return (
            f"adapter: '{adapter}' is gated. Fix: accept its conditions on the Hub, then log in with that "
            "account's token."
        )
    if isinstance(cause, RepositoryNotFoundError):
        hint = "log in with a token that can read it" if token else "log in if it is private"
        return f"adapter: there is no Hub repo '{adapter}', or it is private. Fix: check the id, or {hint}."
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(cause, LocalEntryNotFoundError):  # not in the cache, and the Hub could not be asked
        return hub_out_of_reach(adapter)
    if isinstance(cause, EntryNotFoundError) and not is_network_error(cause):
        return (
            f"adapter: the Hub repo '{adapter}' has no adapter_config.json, so it is not a PEFT adapter. "
            "Fix: give the repo id of a LoRA adapter."
        )
    return explain(cause, f"read the adapter '{adapter}'", adapter).replace("hub:", "adapter:", 1)


def hub_out_of_reach(adapter: str) -> str:
    """The Hub cannot be reached and this server's Hub cache has no copy of ``adapter``."""
    from huggingface_hub import constants

    return (
        f"adapter: cannot reach the Hub at {constants.ENDPOINT} to load '{adapter}', and this server's Hub cache "
        "has no copy of it. Fix: check the connection (or the Hub's status) and try again, or pick a finished run."
    )


def _through_the_hub(adapter: str) -> bool:
    """``adapter`` is a Hub id read through the Hub: not a folder here, and HF_HUB_OFFLINE is off."""
    from huggingface_hub import constants

    from .repo_id import is_hub_id

    return not on_disk(adapter, "dir") and is_hub_id(adapter) and not constants.HF_HUB_OFFLINE


def _cache_folder(adapter: str) -> Path | None:
    """The Hub cache's snapshot folder (one revision) holding ``adapter``'s adapter_config.json, or None."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(adapter, "adapter_config.json")
    return Path(config).parent if isinstance(config, str) else None


def not_reachable_nor_cached(adapter: str) -> bool:
    """True, in ~0 s offline (one TCP probe, no retries), when ``adapter`` is a Hub id whose
    adapter_config.json is not in the Hub cache and the Hub cannot be reached: huggingface_hub
    would retry for ~25 s and end in a "no adapter_config.json" that blamed the repo. (A cached one:
    the cache may serve it; refusal() decides whether to this caller.)"""
    from .hub_client import endpoint_reachable

    return _through_the_hub(adapter) and _cache_folder(adapter) is None and not endpoint_reachable()


def cached_copy(adapter: str) -> str | None:
    """The Hub cache's folder of a Hub ``adapter`` whose config and weights are both cached, when the
    Hub cannot be reached; else None. PEFT asks the Hub whether the weights file exists before it
    reads any cache (peft.utils.save_and_load.load_peft_weights, unless HF_HUB_OFFLINE is set), so a
    cached adapter failed with "could not be reached to download the weights" (the breaker). Whether
    this caller may read the copy is refusal()'s to decide, before (public_repos)."""
    from .hub_client import endpoint_reachable

    folder = _cache_folder(adapter) if _through_the_hub(adapter) else None
    if folder is None or not (folder / "adapter_model.safetensors").is_file() or endpoint_reachable():
        return None
    return str(folder)


def apply_adapter(model, adapter: str, pc, base: str, token: str | None):
    """``PeftModel.from_pretrained`` with a plain ConfigError when the adapter does not fit
    the base: layers it adapts that the base lacks, other weight shapes, or adapter weights
    that match no layer of the base (PEFT only warns about those)."""
    import warnings

    from peft import PeftModel

    made_for = pc.base_model_name_or_path
    origin = f" It was trained on '{made_for}'." if made_for and made_for != base else ""
    fix = f" Fix: load it with the base model it was trained on{f' ({made_for})' if made_for else ''}."
    head = f"adapter: '{adapter}' does not fit the base model '{base}':"
    targets = pc.target_modules
    if isinstance(targets, (list, set, tuple)):  # (a str is a regex: PEFT itself reports no match)
        paths = [n for n, _ in model.named_modules() if n]
        missing = sorted(t for t in targets if not any(variants.selects(t, p) for p in paths))
        if missing:
            raise ConfigError(
                [
                    f"{head} it adapts layers {', '.join(missing)}, which this model does not have "
                    f"(its linear layers: {', '.join(models.linear_module_names(model))}).{origin}{fix}"
                ]
            )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = PeftModel.from_pretrained(model, cached_copy(adapter) or adapter, token=token)
    except RuntimeError as err:
        msg = str(err)
        detail = next((ln.strip() for ln in msg.splitlines() if "size mismatch" in ln), msg.splitlines()[0])
        raise ConfigError(
            [
                f"{head} its weight shapes differ from this model's, so it was made for a model of "
                f"another size or architecture ({detail[:240]}).{origin}{fix}"
            ]
        ) from None
    except (ValueError, KeyError) as err:
        if "can't find weights" in str(err).lower():  # PEFT: the repo holds no adapter_model.* file
            raise ConfigError(
                [
                    f"adapter: the Hub repo '{adapter}' has an adapter_config.json but no adapter weights "
                    "(adapter_model.safetensors). Fix: push the adapter with its weights (save_pretrained writes "
                    "both), or give another repo id."
                ]
            ) from None
        raise ConfigError([f"{head} {str(err).splitlines()[0][:300]}.{origin}{fix}"]) from None
    except Exception as err:  # a truncated or corrupt weights file (safetensors' SafetensorError, OSError)
        from .hub_client import is_network_error

        if is_network_error(err) or is_network_error(err.__cause__ or err):
            raise ConfigError(
                [
                    f"adapter: the Hub could not be reached to download the weights of '{adapter}' "
                    f"({type(err).__name__}). Fix: check the connection and load it again."
                ]
            ) from None
        where = (
            Path(adapter) / "adapter_model.safetensors" if on_disk(adapter, "dir") else f"the weights of '{adapter}'"
        )
        raise ConfigError(
            [
                f"adapter: {where} cannot be read ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200] if str(err) else 'no detail'}). Fix: train the run "
                "again or copy the adapter folder anew."
            ]
        ) from None
    if any("missing adapter keys" in str(w.message) for w in caught):
        raise ConfigError(
            [
                f"{head} its weights name layers this model does not have (another architecture), "
                f"so it would change nothing.{origin}{fix}"
            ]
        )
    return model


def folder_problem(adapter: str) -> str | None:
    """A local adapter folder without ``adapter_model.safetensors`` (PEFT would then look for it on
    the Hub under the folder's path, and say the path is no repo id), or with only the pickled
    ``adapter_model.bin``, which this app does not load (a pickle can run code). None otherwise."""
    if not on_disk(adapter, "dir") or on_disk(Path(adapter) / "adapter_model.safetensors", "file"):
        return None
    pickled = on_disk(Path(adapter) / "adapter_model.bin", "file")
    return (
        f"adapter: the folder '{adapter}' has an adapter_config.json but no adapter_model.safetensors"
        + (" (adapter_model.bin is a pickle, which this app does not load: it can run code)" if pickled else "")
        + ". Fix: save the adapter there with save_pretrained (safetensors is its default), or pick a finished "
        "run's adapter folder."
    )

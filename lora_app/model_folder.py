"""A base model named by a folder on this machine, checked before any weights load: a file given
for the folder, no safetensors weights, no tokenizer, a base path that exists only on the machine
an adapter was trained on. Each check gives lines naming the field and the fix ([] when fine);
Hub ids are left to the config check (:func:`lora_app.models.load_model_config`)."""

from __future__ import annotations

from . import models
from .repo_id import on_disk

#: Files any one of which lets AutoTokenizer load a tokenizer (fast tokenizer.json; the
#: sentencepiece/tiktoken/Mistral models; BERT's vocab.txt); vocab.json needs merges.txt.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
    "vocab.txt",
)


def weights_problems(name_or_path: str) -> list[str]:
    """A local base model that cannot load though its config reads: a file given for the folder
    (AutoConfig takes a config.json path, from_pretrained does not), or a folder without
    safetensors weights (the app loads no pickle: ``use_safetensors=True``). Hub ids and paths
    that do not exist are left to the config check, which names them."""
    from pathlib import Path

    path = Path(name_or_path).expanduser()
    if on_disk(path, "file"):
        beside = on_disk(path.parent / "config.json", "file")  # a model's file: its folder is the model
        return [
            f"{models.FIELD}: '{name_or_path}' is a file. Fix: give the folder that holds the model (config.json, "
            "the *.safetensors weights and the tokenizer files)"
            + (f", e.g. '{path.parent}'." if beside else ", or a Hub id (owner/name).")
        ]
    if not on_disk(path, "dir") or not on_disk(path / "config.json", "file"):
        return []
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:  # a folder one may read files in but not list: from_pretrained will tell
        return []
    if any(n.endswith(".safetensors") for n in names):
        return []
    pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt")))
    return [
        f"{models.FIELD}: the folder '{path.name}' has a config.json but no *.safetensors weights"
        + (f" ({', '.join(pickled[:3])} is a pickle, which this app does not load: it can run code)" if pickled else "")
        + ". Fix: save the model there with save_pretrained(folder) (safetensors is its default), or give "
        "another folder."
    ]


def tokenizer_problems(name_or_path: str) -> list[str]:
    """A local model folder with no tokenizer files: refused before queuing (else the run fails
    later, in the training process, with a message about sentencepiece). Hub ids are not checked."""
    from pathlib import Path

    folder = Path(name_or_path).expanduser()
    if not on_disk(folder, "dir"):
        return []
    names = {p.name for p in folder.iterdir()}
    if (
        names & set(_TOKENIZER_FILES)
        or any(n.endswith(".tiktoken") for n in names)
        or {"vocab.json", "merges.txt"} <= names
    ):
        return []
    missing = (
        "merges.txt (vocab.json is there)"
        if "vocab.json" in names
        else "tokenizer.json (or tokenizer.model, or vocab.json + merges.txt)"
    )
    return [
        f"{models.FIELD}: the folder '{folder.name}' has the model's config and weights but no tokenizer: "
        f"missing {missing}. Fix: copy the tokenizer files of the model it was made from into the folder "
        "(AutoTokenizer.from_pretrained(that model).save_pretrained(folder))."
    ]


def adapter_base_problem(base: str | None, from_adapter: bool = True) -> str | None:
    """A base model named by a path that does not exist here, e.g. an adapter trained on another
    machine whose ``adapter_config.json`` names that machine's folder: one line saying what to
    give instead. None when ``base`` is a Hub id or an existing folder."""
    import re

    b = (base or "").strip()
    looks_local = (
        b.startswith(("/", "~", "./", "../", "\\"))
        or "\\" in b
        or bool(re.match(r"^[A-Za-z]:[\\/]", b))
        or b.count("/") > 1
    )
    if not looks_local or on_disk(b):  # (a file there: folder_problems names it)
        return None
    if from_adapter:
        return (
            f"adapter: its adapter_config.json names the base model '{b}', a folder that is not on this machine "
            "(the adapter was trained elsewhere). Fix: give the base model's Hub id (owner/name) or a local folder "
            "holding it (CLI: --base; or set base_model_name_or_path in adapter_config.json)."
        )
    return f"base model: the folder '{b}' does not exist here. Fix: give the base model's Hub id (owner/name) or a local folder."


def folder_problems(name_or_path: str) -> list[str]:
    """Everything a local base model folder lacks, before anything loads it: no config.json (not a
    model folder at all), else :func:`weights_problems` and :func:`tokenizer_problems`. [] for Hub ids
    and paths that do not exist (:func:`adapter_base_problem` names those)."""
    from pathlib import Path

    path = Path(name_or_path).expanduser()
    if on_disk(path, "dir") and not on_disk(path / "config.json", "file"):
        return [
            f"{models.FIELD}: the folder '{path.name}' has no config.json: it is not a saved model. Fix: give the "
            "folder save_pretrained wrote (config.json, *.safetensors, tokenizer files) or a Hub id (owner/name)."
        ]
    return weights_problems(name_or_path) + tokenizer_problems(name_or_path)

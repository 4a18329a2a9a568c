"""Hub repo ids: what is one, why a given one is not, and how to make one from free text.

The rule itself is huggingface_hub's (``huggingface_hub.utils.validate_repo_id``: parts of
letters, digits, ``-``, ``_``, ``.``; at most 96 characters each; no ``--`` or ``..``; not
starting or ending with ``-`` or ``.``; not ending in ``.git``), tightened to ASCII because the
library's regex takes any Unicode letter (``\\w``) while the Hub refuses such names on create.
Here only the plain-words reason of a refusal and :func:`sanitize` are our own. Imports nothing
of the app's push code, so the training process and the model card can use it.
"""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

MAX_PART = 96  # characters of the owner or the name (huggingface_hub REPO_ID_REGEX)


def _valid(name: str) -> bool:
    """huggingface_hub's verdict, on ASCII text only."""
    if not name.isascii():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def on_disk(ref: str | Path, kind: str = "exists") -> bool:
    """Whether ``ref`` (a visitor's text: a base model, an adapter, a folder; ``~`` expanded) is
    on this machine: ``kind`` is "exists", "dir" or "file". False, not an error, for a name no file
    can have: a part over 255 bytes or a path over PATH_MAX (ENAMETOOLONG), a NUL byte, no access.
    Python 3.11's Path.exists/is_dir raise OSError for those; a 300-letter base model or adapter
    was an error page at Check, Generate, Compare and Chat."""
    try:
        path = Path(ref).expanduser()
        return {"exists": path.exists, "dir": path.is_dir, "file": path.is_file}[kind]()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: "~nosuchuser" cannot be expanded
        return False


def is_hub_id(name: str | None) -> bool:
    """True for a Hub model id ("owner/name" or a legacy one-part id such as "gpt2"), False for
    a local path ("/tmp/model", "./model", "~/m", "C:\\models\\x", "a/b/c") or None."""
    if not name or name != name.strip() or Path(name).is_absolute():
        return False
    return _valid(name)


def check_repo_id(repo_id: str | None) -> list[str]:
    """[] if ``repo_id`` is a valid ``owner/name``; else one problem line (``hub.repo_id: ...
    Fix: ...``) naming every broken rule and a valid id to use instead."""
    rid = (repo_id or "").strip()
    if not rid:
        return ["hub.repo_id: empty. Fix: write it as owner/name, e.g. alice/smollm2-lora-quotes."]
    url = re.match(r"^(?:https?://)?(?:www\.)?(?:huggingface\.co|hf\.co)/(?:models/)?([^/?#\s]+)/([^/?#\s]+)", rid)
    if url:  # a repo page's address pasted whole
        return [
            f"hub.repo_id: '{rid}' is a web address, not a repo id. Fix: write only its owner/name part, "
            f"e.g. {sanitize(url[1]) or 'your-name'}/{sanitize(url[2]) or 'my-lora'}."
        ]
    if rid.count("/") != 1:
        return [
            f"hub.repo_id: '{rid}' must have exactly one '/' (owner/name). "
            f"Fix: e.g. your-name/{sanitize(rid.replace('/', '-'))}."
        ]
    if _valid(rid):
        return []
    owner, name = rid.split("/")
    bad = []
    for part, what in ((owner, "owner"), (name, "name")):
        if not part:
            bad.append(f"the {what} is empty")
        elif len(part) > MAX_PART:
            bad.append(f"the {what} is longer than {MAX_PART} characters")
        elif not re.fullmatch(r"[\w.-]+", part, flags=re.ASCII):
            bad.append(f"the {what} '{part}' may only hold letters, digits, '-', '_' and '.'")
        elif "--" in part or ".." in part:
            bad.append(f"the {what} '{part}' may not contain '--' or '..'")
        elif part[0] in "-." or part[-1] in "-.":
            bad.append(f"the {what} '{part}' may not start or end with '-' or '.'")
    if name.endswith(".git"):
        bad.append("the name may not end with '.git'")
    reason = "; ".join(bad) or "huggingface_hub refuses it"
    return [
        f"hub.repo_id: '{rid}' is not a valid repo id: {reason}. "
        f"Fix: e.g. {sanitize(owner) or 'your-name'}/{sanitize(name.removesuffix('.git')) or 'my-lora'}."
    ]


def sanitize(text: str, max_len: int = MAX_PART) -> str:
    """``text`` as a valid repo-name part: other characters become '-', no '--'/'..', no
    leading/trailing '-' or '.'; at most ``max_len`` characters. May return ''."""
    import unicodedata

    # accented letters keep their base letter ("ünï" -> "uni"), as a person would write them
    plain = "".join(c for c in unicodedata.normalize("NFKD", text or "") if not unicodedata.combining(c))
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", plain)
    s = re.sub(r"[-.]{2,}", "-", s)  # no "--" or ".." (nor ".-" runs)
    return s.strip("-.")[:max_len].strip("-.")

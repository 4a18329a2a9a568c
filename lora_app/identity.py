"""Who is asking, and what they may do with a run: the one place that decides it, for every
tab of the UI and for the CLI.

Who: a visitor signed in with Hugging Face is ``hf:<username>``, taken from the OAuth session
Gradio keeps in its signed cookie (injected into handlers as ``gr.OAuthProfile``). Anyone
else is ``browser-<32 hex>``, an id this server issued with an HMAC signature
(:func:`issue`) and keeps in the browser's localStorage; the server checks the signature
(:func:`verify`) once per page load and from then on holds the id in the page's server-side
``gr.State``, so no handler takes an owner from the request body. A typed, forged or
unsigned string, or one shaped ``hf:<name>``, is never accepted as an owner.

What: a person sees, stops, resumes, deletes, tries and pushes their own runs; an admin
(``ADMIN_USERS``) every run; the CLI (:data:`LOCAL`) is a trusted local caller. Server folder
paths are shown to admins and the CLI only (:meth:`Identity.redact`).

The signing key is ``LORA_APP_SECRET``, else one made once and kept in the runs folder
(``.identity_key``, mode 0600). Gradio's ``BrowserState`` sends its own encryption key to the
browser, so that key is derived from the signing key one way (SHA-256) and never *is* it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ANON_PREFIX = "browser-"
_ANON_RE = re.compile(r"browser-[0-9a-f]{32}")
_TOKEN_RE = re.compile(r"(browser-[0-9a-f]{32})\.([0-9a-f]{64})")


class NotYours(PermissionError):
    """Raised when someone acts on a run they may not see."""


@dataclass(frozen=True)
class Identity:
    """One caller. ``owner``: the run-index owner string (``None``: nobody known, sees
    nothing). ``admin``: may see and act on every run. ``local``: the CLI / a trusted caller
    on this machine (acts on every run, sees paths)."""

    owner: str | None
    admin: bool = False
    local: bool = False

    @property
    def sees_paths(self) -> bool:
        return self.admin or self.local

    def may_see(self, run_owner: str | None) -> bool:
        """May this caller see (and so stop, resume, delete, try, push) a run of ``run_owner``?"""
        return self.admin or self.local or (self.owner is not None and run_owner == self.owner)

    def redact(self, text: str, *roots: str | Path) -> str:
        """``text`` with the server folders ``roots`` replaced by ``[runs]`` for visitors
        (paths inside a run folder stay readable as ``[runs]/<run id>/...``)."""
        if self.sees_paths or not text:
            return text
        for root in roots:
            text = text.replace(str(root), "[runs]")
        return text


LOCAL = Identity(owner="cli", local=True)
NOBODY = Identity(owner=None)


def admin_owners(value: str | None = None) -> frozenset[str]:
    """``ADMIN_USERS`` (comma-separated Hub user names) as owners ``hf:<name>``."""
    value = os.environ.get("ADMIN_USERS", "") if value is None else value
    return frozenset(f"hf:{u.strip().removeprefix('hf:')}" for u in value.split(",") if u.strip())


def signing_key(root: str | Path) -> bytes:
    """The server's secret: ``LORA_APP_SECRET``, else ``root/.identity_key`` (made once, 0600).
    Kept beside the runs so that an app restart still recognizes the ids it issued."""
    env = os.environ.get("LORA_APP_SECRET")
    if env:
        return hashlib.sha256(b"lora_app identity\0" + env.encode()).digest()
    path = Path(root) / ".identity_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text(encoding="utf-8").strip())


def browser_state_key(key: bytes) -> str:
    """The key ``gr.BrowserState`` encrypts localStorage with. Gradio sends it to the browser,
    so it is derived from the signing key one way and can sign nothing."""
    return hashlib.sha256(b"lora_app browser state\0" + key).hexdigest()


def _sig(key: bytes, owner: str) -> str:
    return hmac.new(key, owner.encode(), hashlib.sha256).hexdigest()


def issue(key: bytes) -> tuple[str, str]:
    """A new anonymous owner and its signed token ``"<owner>.<hmac-sha256 hex>"``."""
    owner = ANON_PREFIX + secrets.token_hex(16)
    return owner, f"{owner}.{_sig(key, owner)}"


def verify(key: bytes, token: object) -> str | None:
    """The owner a token was issued for, or None when it is not one this server signed."""
    m = _TOKEN_RE.fullmatch(token) if isinstance(token, str) else None
    if not m or not hmac.compare_digest(m.group(2), _sig(key, m.group(1))):
        return None
    return m.group(1)


def resolve(session_owner: str | None, profile=None, admins: frozenset[str] = frozenset()) -> Identity:
    """The caller of one request. ``profile``: the ``gr.OAuthProfile`` Gradio injected (None
    when not signed in); ``session_owner``: the verified anonymous id the page's server-side
    state holds. Anything not shaped like an id this module issues is ignored."""
    name = getattr(profile, "username", None)
    if name:
        owner = f"hf:{name}"
    elif isinstance(session_owner, str) and _ANON_RE.fullmatch(session_owner):
        owner = session_owner
    else:
        return NOBODY
    return Identity(owner=owner, admin=owner in admins)

"""Which Hub repos this server may serve from its cache when the Hub cannot be asked.

huggingface_hub and ``datasets`` answer from their local cache whatever was once downloaded, to
anyone, when the Hub is unreachable or ``HF_HUB_OFFLINE`` is set. Online the app asks the Hub first
(:func:`lora_app.hub_client.refusal`); offline no one can be asked, so on a server several people
use, one visitor's private model, adapter or dataset would be served to every other visitor.

The rule: each time the Hub answers that a repo is public (not private, not gated) it is recorded
here (``LORA_APP_HOME/public_repos.sqlite``, per endpoint, type and id); a refusal or a private or
gated answer removes it. When the Hub cannot be asked, a shared server serves only recorded repos
and refuses the rest with a message naming the fix; a one-person server (its owner's cache) serves
everything, as before. Shared: ``LORA_APP_SHARED`` (1/0) when set, else on a Space, else when the
web server listens beyond this machine or has a share link (:func:`mark_shared`).
"""

from __future__ import annotations

import os
import sqlite3
import time

ENV = "LORA_APP_SHARED"
FILE = "public_repos.sqlite"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Unverified(Exception):
    """The Hub cannot be asked whether this visitor may read a repo, and this shared server has never
    seen the Hub call it public. ``str()`` is one line naming the fix, for the caller to prefix with
    its field."""


def mark_shared(server_name: str | None, share: bool) -> None:
    """Record, for this process and the ones it starts, whether the web server about to launch is
    shared: ``share`` (a public link) or a ``server_name`` other than loopback (``0.0.0.0`` listens
    on every interface). ``LORA_APP_SHARED`` already set by the person wins."""
    if os.environ.get(ENV, "").strip():
        return
    os.environ[ENV] = "1" if share or (server_name or "127.0.0.1") not in _LOOPBACK else "0"


def shared_server() -> bool:
    """True when several people may use this server (see the module's docstring)."""
    v = os.environ.get(ENV, "").strip().lower()
    if v:
        return v in ("1", "true", "yes")
    return bool(os.environ.get("SPACE_ID"))


def _db() -> sqlite3.Connection:
    from . import app_home

    home = app_home()
    home.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(home / FILE, timeout=10)
    con.execute(
        "CREATE TABLE IF NOT EXISTS public (endpoint TEXT, repo_type TEXT, repo_id TEXT, seen REAL,"
        " PRIMARY KEY (endpoint, repo_type, repo_id))"
    )
    return con


def _key(repo_id: str, repo_type: str) -> tuple[str, str, str]:
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/"), repo_type, repo_id


def record(repo_id: str, repo_type: str, public: bool) -> None:
    """What the Hub just answered about ``repo_id``: ``public`` (readable by anyone, not gated), or
    not (private, gated, refused, missing). Never raises: a record that cannot be written only makes
    the offline rule stricter."""
    try:
        with _db() as con:
            if public:
                con.execute(
                    "INSERT OR REPLACE INTO public VALUES (?, ?, ?, ?)", (*_key(repo_id, repo_type), time.time())
                )
            else:
                con.execute(
                    "DELETE FROM public WHERE endpoint = ? AND repo_type = ? AND repo_id = ?", _key(repo_id, repo_type)
                )
        con.close()
    except (sqlite3.Error, OSError):
        pass


def known_public(repo_id: str, repo_type: str = "model") -> bool:
    """True when the Hub's last answer about ``repo_id`` that this server saw called it public."""
    try:
        con = _db()
        try:
            row = con.execute(
                "SELECT 1 FROM public WHERE endpoint = ? AND repo_type = ? AND repo_id = ?", _key(repo_id, repo_type)
            ).fetchone()
        finally:
            con.close()
    except (sqlite3.Error, OSError):
        return False
    return row is not None


def unverified(repo_id: str, repo_type: str = "model") -> Unverified | None:
    """The refusal for reading ``repo_id`` from the cache while the Hub cannot be asked: None on a
    one-person server, for a repo this server has seen the Hub call public, or for no repo id at
    all (a path: the caller's own loading explains it); else an :class:`Unverified`."""
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except ValueError:
        return None
    if not shared_server() or known_public(repo_id, repo_type):
        return None
    kind = "" if repo_type == "model" else f"{repo_type} "
    return Unverified(
        f"the Hub cannot be reached to check that you may read {kind}'{repo_id}', and this shared server has "
        "not seen it public (a copy of a private repo is served only to those the Hub lets read it). Fix: try "
        "again when the Hub can be reached."
    )

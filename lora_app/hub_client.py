"""Talking to the Hugging Face Hub: which token to use, who it belongs to, and what a failure means.

A token comes from (first found wins): a token typed into the Hub tab (kept in memory for
that browser session only), a "Sign in with Hugging Face" login (Gradio OAuth), ``HF_TOKEN``
from the environment or from a ``.env`` file (:func:`load_dotenv`). On a Space, ``HF_TOKEN``
is the Space owner's secret: it is used for *reading* (gated base models, private data) but
never to push on a visitor's behalf (``write=True`` in :func:`resolve_token`).

A token is never logged, echoed back, or written anywhere: not in a run folder, its config,
its event log or the model card. Error messages are built from status codes and the Hub's
own error text, which does not contain the token.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError

MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # what Gradio's local OAuth mock hands out
TOKENS_URL = "https://huggingface.co/settings/tokens"


class HubError(ConfigError):
    """A Hub action that cannot go ahead. ``problems``: one line each, naming the fix."""


# -- .env and tokens ---------------------------------------------------------------------------
def load_dotenv(path: str | Path | None = None, override: bool = False) -> dict[str, str]:
    """Read a ``.env`` file into ``os.environ`` (without overriding variables already set,
    unless ``override``) with python-dotenv. Returns the non-empty values the file holds.

    The file is ``path``, else ``LORA_APP_ENV_FILE``, else ``./.env``; a missing or unreadable
    file is no error (returns {}). An empty value (``HF_TOKEN=`` as in .env.example) sets
    nothing, so it cannot hide a variable set elsewhere. ``${VAR}`` is not expanded: a token
    holding ``$`` stays as written.
    """
    from dotenv import dotenv_values

    p = Path(path or os.environ.get("LORA_APP_ENV_FILE") or ".env")
    try:
        raw = dotenv_values(p, interpolate=False, encoding="utf-8-sig") if p.is_file() else {}
    except (OSError, UnicodeDecodeError):
        return {}
    values = {k: v for k, v in raw.items() if v}
    for k, v in values.items():
        if override or k not in os.environ:
            os.environ[k] = v
    return values


def env_token() -> str | None:
    """``HF_TOKEN`` (or the older ``HUGGING_FACE_HUB_TOKEN``) from the environment / ``.env``.

    Not ``huggingface_hub.get_token``: it also returns the token saved by ``hf auth login``,
    which Gradio uses for its local OAuth mock; taken here it would log every visitor in as the
    machine's owner (tests/test_browser_hub.py: "the token file alone logs nobody in")."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        v = (os.environ.get(var) or "").strip()
        if v:
            return v
    return None


def on_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def oauth_login_available() -> bool:
    """Whether a ``gr.LoginButton`` can work here.

    On a Space it needs ``hf_oauth: true`` in the README (which sets ``OAUTH_CLIENT_ID``);
    elsewhere Gradio mocks the login with the local token (``HF_TOKEN`` or ``hf auth login``)
    and calls ``whoami`` at launch, so it needs a token and a reachable Hub. Setting
    ``LORA_APP_LOGIN_BUTTON`` to 1/0 forces the answer (given ``gradio[oauth]`` is installed).
    """
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("itsdangerous", "authlib")):
        return False  # gradio[oauth] is not installed: Gradio would refuse to start with a LoginButton
    forced = os.environ.get("LORA_APP_LOGIN_BUTTON", "").strip().lower()
    if forced in ("1", "true", "yes", "0", "false", "no"):
        return forced in ("1", "true", "yes")
    if on_space():
        return bool(os.environ.get("OAUTH_CLIENT_ID"))
    from huggingface_hub import get_token

    try:
        if get_token() is None:
            return False
    except Exception:
        return False
    return endpoint_reachable()


def endpoint_reachable(timeout: float = 2.0) -> bool:
    """True if a TCP connection to the Hub endpoint opens (not cached: the network may come back)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    u = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_token(typed: str | None = None, oauth=None, write: bool = False) -> str | None:
    """The token to use: one typed in the Hub tab, else an OAuth login (a ``gr.OAuthToken``
    or its string), else ``HF_TOKEN`` (not for writes on a Space: that is the owner's token).

    Gradio's *local* OAuth mock hands out a placeholder token that only stands for the local
    login; it is swapped for that local token (``HF_TOKEN`` / ``hf auth login``).
    """
    typed = (typed or "").strip() or None
    if typed:
        return typed
    tok = getattr(oauth, "token", oauth)
    tok = (tok or "").strip() or None if isinstance(tok, str) or tok is None else None
    if tok == MOCK_OAUTH_TOKEN and not on_space():
        from huggingface_hub import get_token

        try:
            tok = get_token() or tok
        except Exception:
            pass
    if tok:
        return tok
    if write and on_space():
        return None
    return env_token()


# -- whoami ------------------------------------------------------------------------------------
@dataclass
class User:
    """Who a token belongs to. ``role``: the token's role ("write", "read", "fineGrained") or
    the auth type (e.g. "oauth"); ``orgs``: organisation name -> role in it."""

    name: str
    fullname: str = ""
    role: str = ""
    orgs: dict[str, str] = field(default_factory=dict)

    @property
    def read_only(self) -> bool:
        return self.role == "read"

    def can_write_to(self, namespace: str) -> bool:
        if namespace == self.name:
            return True
        role = self.orgs.get(namespace)
        return role is not None and role not in ("read",)

    def describe(self, signed_in: bool = False) -> str:
        """``signed_in``: the token came from a "Sign in with Hugging Face" login (locally, Gradio's
        mock stands for this machine's own token, whose role would otherwise be shown)."""
        kind = {
            "write": "token with write access",
            "read": "read-only token: you can load private data and models but not push",
            "fineGrained": "fine-grained token",
            "oauth": "signed in with Hugging Face",
        }
        extra = kind.get(self.role, self.role)
        if signed_in:
            extra = "signed in with Hugging Face" + ("; " + extra if self.read_only else "")
        return f"Logged in as **{self.name}**" + (f" ({extra})" if extra else "")


_WHOAMI_CACHE: dict[str, tuple[float, User]] = {}
_WHOAMI_LOCK = threading.Lock()
WHOAMI_TTL_S = 300.0  # /api/whoami-v2 is rate-limited; a token's owner does not change


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()  # the cache never holds the token itself


def whoami(token: str | None, use_cache: bool = True) -> User:
    """The user behind ``token`` (GET /api/whoami-v2). Raises HubError with a plain message
    when there is no token, the token is rejected (401) or the Hub cannot be reached."""
    if not token:
        raise HubError(
            [
                "hub: you are not logged in. Fix: sign in with Hugging Face, paste a token "
                f"(create one at {TOKENS_URL}), or set HF_TOKEN in the environment or .env."
            ]
        )
    odd = next((i for i, c in enumerate(token) if not (c.isascii() and c.isprintable()) or c.isspace()), None)
    if odd is not None:  # else "could not reach the Hub" (httpx refuses the header) or a UnicodeEncodeError
        raise HubError(
            [
                f"hub: the token has a character a Hugging Face token cannot have (a space, a line break or a "
                f"non-ASCII letter, character {odd + 1} of {len(token)}). Fix: copy the token again from "
                f"{TOKENS_URL} and paste only it (hf_...)."
            ]
        )
    if use_cache:
        with _WHOAMI_LOCK:
            hit = _WHOAMI_CACHE.get(_key(token))
        if hit and time.time() - hit[0] < WHOAMI_TTL_S:
            return hit[1]
    from huggingface_hub import HfApi

    try:
        info = HfApi().whoami(token=token)
    except Exception as err:
        raise HubError([explain(err, "check your token")]) from None
    auth = info.get("auth") or {}
    role = (auth.get("accessToken") or {}).get("role") or auth.get("type") or ""
    orgs = {o.get("name"): o.get("roleInOrg") or "" for o in info.get("orgs") or [] if o.get("name")}
    user = User(info.get("name", ""), info.get("fullname") or "", role, orgs)
    with _WHOAMI_LOCK:
        _WHOAMI_CACHE[_key(token)] = (time.time(), user)
    return user


def forget_cached(token: str | None) -> None:
    if token:
        with _WHOAMI_LOCK:
            _WHOAMI_CACHE.pop(_key(token), None)


# -- errors --------------------------------------------------------------------------------
def refusal(repo_id: str, token: str | None, repo_type: str = "model", ask: bool = True) -> Exception | None:
    """The Hub's refusal to let ``token`` (None: anonymous) read ``repo_id`` (RepositoryNotFoundError,
    GatedRepoError, or an HTTP error such as 401/403), or None when it may or when ``repo_id`` is no
    repo id at all (the caller's own loading explains that). When the Hub cannot be asked (offline
    mode, no connection, or ``ask`` False: the caller knows it is unreachable), the answer is
    :func:`lora_app.public_repos.unverified`'s: an ``Unverified`` on a shared server for a repo it has
    not seen public, else None (the cache serves).

    Why ask first: ``hf_hub_download`` answers a refused request (401/404: "private, and no or the
    wrong token") from its local cache when the file is there, so on a shared server a visitor
    could otherwise load another visitor's private adapter or model the server once downloaded.
    """
    from huggingface_hub import HfApi, constants

    from . import public_repos

    if not ask or constants.HF_HUB_OFFLINE:
        return public_repos.unverified(repo_id, repo_type)
    try:
        info = HfApi().repo_info(repo_id, repo_type=repo_type, token=token or False, timeout=10)
    except ValueError:  # huggingface_hub's HFValidationError: not a repo id
        return None
    except Exception as err:
        if is_network_error(err):
            return public_repos.unverified(repo_id, repo_type)
        public_repos.record(repo_id, repo_type, public=False)
        return err
    public_repos.record(
        repo_id, repo_type, public=not getattr(info, "private", True) and not getattr(info, "gated", True)
    )
    return None


def check_readable(repo_id: str, token: str | None, repo_type: str = "model") -> None:
    """Raise HubError (one line naming the fix) when the Hub refuses ``token`` reading ``repo_id``
    (:func:`refusal`); call it before anything of the repo is read through huggingface_hub's cache."""
    from .public_repos import Unverified

    err = refusal(repo_id, token, repo_type)
    if err is None:
        return
    if isinstance(err, Unverified):
        raise HubError([f"hub: {err}"])
    if _status(err) in (401, 404) and not token:
        raise HubError(
            [
                f"hub: '{repo_id}' is private or does not exist. Fix: sign in (or paste a token) with an "
                "account that may read it, or check the repo id."
            ]
        )
    raise HubError([explain(err, f"read {repo_id}", repo_id)])


def _status(err: BaseException) -> int | None:
    resp = getattr(err, "response", None)
    return getattr(resp, "status_code", None)


def _server_message(err: BaseException) -> str:
    resp = getattr(err, "response", None)
    msg = getattr(err, "server_message", None) or ""
    if not msg and resp is not None:
        try:
            msg = resp.headers.get("X-Error-Message", "") or ""
        except Exception:
            msg = ""
    return msg.strip().splitlines()[0][:300] if msg.strip() else ""


def is_network_error(err: BaseException) -> bool:
    if _status(err) is not None:
        return False
    names = {c.__name__ for c in type(err).__mro__}
    return bool(
        names
        & {
            "TransportError",
            "ConnectError",
            "ConnectionError",
            "TimeoutException",
            "TimeoutError",
            "NetworkError",
            "OfflineModeIsEnabled",
        }
    ) or (isinstance(err, OSError) and not _local_file_error(err))


def _local_file_error(err: BaseException) -> bool:
    """A file of this machine missing or unreadable (FileNotFoundError, PermissionError, ...): no network
    error, though an OSError (a checkpoint push's FileNotFoundError was "could not reach the Hub")."""
    return isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError))


def explain(err: BaseException, action: str, repo_id: str | None = None) -> str:
    """One plain line: what went wrong while trying to ``action`` and what to do about it."""
    from huggingface_hub import constants

    what = f"'{repo_id}'" if repo_id else "the repo"
    status = _status(err)
    server = _server_message(err)
    why = f" The Hub says: {server.rstrip('.')}." if server else ""
    if status is None and is_network_error(err):
        if constants.HF_HUB_OFFLINE:  # set by the person: no connection will help
            return (
                f"hub: offline mode is on (HF_HUB_OFFLINE is set), so the Hub was not asked while trying to "
                f"{action}. Fix: unset HF_HUB_OFFLINE (and restart the app) to use the Hub, or give a local "
                "folder."
            )
        return (
            f"hub: could not reach the Hub at {constants.ENDPOINT} ({type(err).__name__}) while trying to "
            f"{action}. Fix: check your internet connection (or the Hub's status), then try again; nothing "
            "was changed on your side."
        )
    if status == 401:
        return (
            f"hub: the Hub rejected your token (401 Unauthorized) while trying to {action}. Fix: the token is "
            f"wrong, expired or revoked: create a new one with write access at {TOKENS_URL} and paste it, "
            "or sign in again."
        )
    if status == 403 and action.startswith(("load", "read", "download")):
        return (
            f"hub: your token may not read {what} (403 Forbidden).{why} Fix: ask its owner for access, or "
            "log in with an account that has it."
        )
    if status == 403:
        return (
            f"hub: your token may not write to {what} (403 Forbidden).{why} Fix: use a token with the "
            f"'write' role ({TOKENS_URL}); for Sign in with Hugging Face, the Space needs the write-repos "
            "and manage-repos scopes; or push to your own namespace."
        )
    if status == 409:
        return f"hub: {what} conflicts with an existing repo (409 Conflict).{why} Fix: pick another repo name."
    if status == 404:
        return f"hub: {what} was not found (404).{why} Fix: check the repo id."
    if status == 413:
        return f"hub: the upload is too large (413).{why} Fix: push a smaller adapter."
    if status == 429:
        return "hub: too many requests (429). Fix: wait a minute and try again."
    if status is not None and status >= 500:
        return f"hub: the Hub had a problem ({status}) while trying to {action}.{why} Fix: try again in a few minutes."
    if status is not None:
        return f"hub: the Hub answered {status} while trying to {action}.{why} Fix: check the repo id and token."
    text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
    if _local_file_error(err):
        return (
            f"hub: a local file could not be read while trying to {action} ({type(err).__name__}: {text}). "
            "Fix: keep the folder unchanged while it uploads, then try again."
        )
    return f"hub: could not {action}: {type(err).__name__}{': ' + text if text else ''}."

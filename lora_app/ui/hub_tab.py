"""Hub tab: log in (Sign in with Hugging Face, or a token), see who is logged in, push a
finished run's adapter to ``owner/name``.

Tokens live in memory only: a typed token is kept per browser session (Gradio's
``session_hash``, one per page load) in :data:`_SESSION_TOKENS` and dropped when the page is
closed; an OAuth login lives in Gradio's signed session cookie. Neither is written to disk,
logged, or sent back to the browser (the password field is cleared once it is read).
"""

from __future__ import annotations

import html
import threading
import time

import gradio as gr

from .. import hub, hub_client
from ..config import ConfigError
from ..identity import Identity
from ..jobs import NotYourRun
from .common import READ_ONLY, AppContext, problems_md

SESSION_TTL_S = 8 * 3600
_SESSION_TOKENS: dict[str, tuple[float, str]] = {}
_LOCK = threading.Lock()


# -- token plumbing (used by build_app's token_fn) ------------------------------------------------
def _session_hash(request) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def remember_token(request, token: str) -> None:
    sh = _session_hash(request)
    if sh:
        with _LOCK:
            _SESSION_TOKENS[sh] = (time.time(), token)


def forget_token(request) -> None:
    sh = _session_hash(request)
    if sh:
        with _LOCK:
            old = _SESSION_TOKENS.pop(sh, None)
        if old:
            hub_client.forget_cached(old[1])


def session_token(request) -> str | None:
    """The token typed into this browser session's Hub tab, if any (expires after 8 h)."""
    sh = _session_hash(request)
    if not sh:
        return None
    now = time.time()
    with _LOCK:
        for k in [k for k, (t, _) in _SESSION_TOKENS.items() if now - t > SESSION_TTL_S]:
            del _SESSION_TOKENS[k]
        hit = _SESSION_TOKENS.get(sh)
    return hit[1] if hit else None


def oauth_token(request) -> str | None:
    """The access token of a "Sign in with Hugging Face" login, from Gradio's session cookie."""
    if request is None:
        return None
    try:
        underlying = getattr(request, "request", None) or request
        scope = getattr(underlying, "scope", None)
        session = scope.get("session") if isinstance(scope, dict) else getattr(request, "session", None)
        info = (session or {}).get("oauth_info") if hasattr(session or {}, "get") else None
    except Exception:  # no SessionMiddleware (no LoginButton in the app), a rebuilt request, ...
        return None
    if not info:
        return None
    exp = info.get("expires_at")
    if exp is not None and exp < time.time():
        return None
    return info.get("access_token") or None


def request_token(request=None, write: bool = False) -> str | None:
    """This browser session's Hub token: typed in the Hub tab, else the OAuth login, else
    ``HF_TOKEN`` (environment / .env; never for writes on a Space, where it is the owner's)."""
    return hub_client.resolve_token(session_token(request), oauth_token(request), write=write)


# -- the tab --------------------------------------------------------------------------------
def pushable_runs(ctx: AppContext, ident: Identity) -> list[tuple[str, str]]:
    """(label, run id) of the caller's runs that ended with a saved adapter (all runs for admins)."""
    out = []
    for r in ctx.visible(ident):
        if r.status in ("running", "queued"):
            continue
        if (ctx.jobs.run_dir(r.id) / "adapter" / "adapter_config.json").exists():
            loss = "" if r.final_loss is None else f" · loss {r.final_loss:.3f}"
            out.append((f"{r.id} · {r.status} · {r.base_model.split('/')[-1]} · {r.data}{loss}", r.id))
    return out


def build(ctx: AppContext, owner_state, token_fn=None, write_token_fn=None):
    """Build the tab. Returns a dict of its parts; ``on_load(request)`` gives the whoami line
    (wire it to ``demo.load``), ``refresh(owner)`` the run choices."""
    if write_token_fn is None:
        write_token_fn = (
            (lambda request=None: request_token(request, write=True)) if token_fn in (None, request_token) else token_fn
        )
    token_fn = token_fn or request_token
    gr.Markdown(
        "Push a finished run's adapter to the Hugging Face Hub. Log in with **Sign in with Hugging Face** "
        "(on a Space) or paste a **token with write access** "
        "([create one](https://huggingface.co/settings/tokens)); locally `HF_TOKEN` in the environment or "
        "`.env` works too. The token stays in this browser session's memory: it is never stored or shown."
    )
    with gr.Row():
        if hub_client.oauth_login_available():
            gr.LoginButton(scale=1)
        token_box = gr.Textbox(
            label="Hugging Face token", type="password", placeholder="hf_…", scale=3, elem_id="hub-token"
        )
        use_btn = gr.Button("Use this token", scale=1, elem_id="hub-use-token")
        forget_btn = gr.Button("Forget it", scale=1, variant="secondary", elem_id="hub-forget-token")
    who = gr.Markdown("Not logged in.", elem_id="hub-whoami")
    with gr.Row():
        run_pick = gr.Dropdown(
            label="Run to push", choices=[], interactive=True, allow_custom_value=True, scale=4, elem_id="hub-run"
        )
        refresh_btn = gr.Button("Refresh list", scale=1, elem_id="hub-refresh")
    repo = gr.Textbox(label="Repo id (owner/name)", placeholder="filled in when you pick a run", elem_id="hub-repo")
    with gr.Row():
        private = gr.Checkbox(True, label="Private repo", elem_id="hub-private")
        base_box = gr.Textbox(
            label="Base model Hub id (only if the run used a local model folder)",
            placeholder="owner/name",
            elem_id="hub-base",
        )
    push_btn = gr.Button("Push to the Hub", variant="primary", elem_id="hub-push")
    result = gr.Markdown(elem_id="hub-result")

    def who_line(request: gr.Request | None = None) -> str:
        token = write_token_fn(request)  # who a push would act as (on a Space: never the owner's HF_TOKEN)
        if not token:
            return "Not logged in."
        try:
            user = hub_client.whoami(token)
        except ConfigError as err:
            return problems_md(err.problems)
        # a typed token wins over a sign-in (request_token), so only without one is it the sign-in
        signed_in = session_token(request) is None and oauth_token(request) is not None
        return user.describe(signed_in=signed_in) + "."

    def use_token(typed, request: gr.Request | None = None):
        typed = (typed or "").strip()
        if not typed:
            return "", "Paste a token first (it starts with hf_)."
        try:
            user = hub_client.whoami(typed, use_cache=False)
        except ConfigError as err:
            return "", problems_md(err.problems)
        remember_token(request, typed)
        return "", user.describe() + "."  # "" clears the field: the token is never sent back

    def drop_token(request: gr.Request | None = None):
        forget_token(request)
        return who_line(request)

    def refresh(owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        return gr.update(choices=pushable_runs(ctx, ctx.who(owner, profile)), value=None)

    def pick(run_id, owner, request: gr.Request | None = None, profile: gr.OAuthProfile | None = None):
        try:
            ctx.run_of(ctx.who(owner, profile), run_id)
        except NotYourRun:
            return gr.update(), ""
        rd = ctx.jobs.run_dir(run_id)
        token = write_token_fn(request)
        user = None
        if token:
            try:
                user = hub_client.whoami(token).name
            except ConfigError:
                pass
        note = ""
        last = hub.last_push(rd)
        if last:
            note = f"Last pushed to [{html.escape(last['repo_id'])}]({last['url']})."
            return last["repo_id"], note
        return hub.default_repo_id(user, rd), note

    def push(
        run_id,
        repo_id,
        private,
        base_model_id,
        owner,
        request: gr.Request | None = None,
        profile: gr.OAuthProfile | None = None,
    ):
        """Push a finished run of yours (its adapter and model card) to the Hub repo ``repo_id``
        (owner/name), as the signed-in user or the token given in the Hub tab. Streams progress."""
        if not run_id:
            yield problems_md(["run: none chosen. Fix: pick a finished run (press Refresh list if the list is empty)."])
            return
        ident = ctx.who(owner, profile)
        try:
            ctx.run_of(ident, run_id)
        except NotYourRun:
            yield problems_md([f"run: '{run_id}' is not one of your runs. Fix: pick one from the list."])
            return
        yield f"Checking `{html.escape(repo_id or '')}`: repo id, token, permissions, model card…"
        try:
            res = hub.push_adapter(
                ctx.jobs.run_dir(run_id),
                repo_id,
                private=bool(private),
                token=write_token_fn(request),
                base_model_id=base_model_id or None,
            )
        except ConfigError as err:
            yield (
                ctx.redact(ident, problems_md(err.problems))
                + "\n\nYour local adapter is unchanged; fix this and press Push again."
            )
            return
        yield ctx.redact(ident, res.markdown()) + (
            f"\n\nTry it: type `{res.repo_id}` as the adapter in the Try it tab."
        )

    def on_unload(request: gr.Request | None = None):
        forget_token(request)

    use_btn.click(use_token, [token_box], [token_box, who])
    token_box.submit(use_token, [token_box], [token_box, who])
    forget_btn.click(drop_token, None, [who])
    refresh_btn.click(refresh, [owner_state], [run_pick], **READ_ONLY)
    run_pick.change(pick, [run_pick, owner_state], [repo, result])
    push_btn.click(push, [run_pick, repo, private, base_box, owner_state], [result], api_name="push")
    return {
        "who": who,
        "on_load": who_line,
        "run_pick": run_pick,
        "refresh": refresh,
        "repo": repo,
        "result": result,
        "forget": on_unload,
    }

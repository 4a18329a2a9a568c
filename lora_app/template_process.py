"""Layer 2 against chat-template bombs: templates are rendered in a child process with a memory
cap and a wall deadline, so no template can take the web worker's (or the training process's)
memory or time.

Layer 1 (:mod:`lora_app.template_sandbox`) sizes every operation whose result size a template
picks in one step. What it cannot size is a template that builds memory step by step in Python
(a ``{% for %}`` of ``{% set %}``, ``s|list`` of a long string, ...): in the web worker that grows
until the OOM killer ends the whole app, for every visitor. So the rendering itself runs in a
small child (``python -c``, jinja2 and transformers' template code only), whose address space is
capped with ``RLIMIT_AS`` at its size after start-up plus :data:`MEMORY_LIMIT_MB` (an allocation
past it is a MemoryError there, reported back), and which is killed when a render takes more
than :data:`RENDER_LIMIT_S` (a nested-loop time bomb). A killed or crashed child is replaced at
the next render.

Only the Jinja render moves: :func:`apply_chat_template` calls ``tokenizer.apply_chat_template``
as before, whose message handling, special tokens, ``continue_final_message`` and tokenizing
stay transformers' own in this process; the compiled template it asks for
(``chat_template_utils._compile_jinja_template``) is, inside this function only (a ContextVar:
other threads and callers are untouched), a proxy whose ``render`` runs in the child.

Cost, measured on this 2-core machine: the child starts in ~0.5 s, once per process and after
each killed bomb; a render's round trip is ~0.07 ms. Training's tokenizing of 2,000 SmolLM2
conversations (6,000 renders) went from 0.81 s to 1.26 s; Try it's prompt_ids from 0.27 ms to
0.18 ms (the ``sys.settrace`` deadline it replaces cost more). Renders are serialized through one
child per process (a lock): a time bomb holds other renders back for at most RENDER_LIMIT_S.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .template_sandbox import TemplateRefused

#: Seconds one render may take. Real templates render a long conversation in < 0.1 s.
RENDER_LIMIT_S = 5.0
#: Memory a render may add to the child's address space after start-up (RLIMIT_AS), MB.
MEMORY_LIMIT_MB = 512
#: The rendered text may hold at most this many characters more than RESULT_FACTOR x the size of
#: what it was given (messages, tools, special tokens: the pickled request). Layer 1's MAX_CHARS
#: (16 Mi) bounds each value in the child, but the text comes back to *this* process, which
#: tokenizes it: a 15.6 M-character render of "Hi" took the web worker 15 s and +2.9 GB RSS to
#: tokenize (6.5 M tokens for Try it). Real templates add markup per turn and a fixed header.
RESULT_ALLOWANCE = 2**20
RESULT_FACTOR = 4
_START_LIMIT_S = 60.0  # importing jinja2 + transformers' template module on a loaded machine

_ROUTE: contextvars.ContextVar[bool] = contextvars.ContextVar("lora_app_template_child", default=False)
_lock = threading.Lock()
_child: subprocess.Popen | None = None
_installed = False


def _send(fd: Any, payload: bytes) -> None:
    fd.write(struct.pack("<I", len(payload)) + payload)
    fd.flush()


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _vm_size() -> int:
    """This process's address space in bytes (VmSize of /proc/self/status; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 0


def serve() -> None:
    """The child's loop: read the most characters the text may have (8 bytes) and ``(template, render
    kwargs)`` (pickled by the parent, which it trusts), answer JSON (the parent does not trust what a template made): ``{"ok": text}``,
    ``{"refused": why}`` or ``{"error": message, "kind": "TypeName"}``; UTF-8, lone surrogates (which a
    message's text may hold) passed through."""
    import resource

    from . import template_sandbox

    template_sandbox.compile_template("{{ messages }}").render(messages=[])  # imports done before the cap
    size = _vm_size()
    if size:  # Linux. Elsewhere (macOS has no VmSize and ignores RLIMIT_AS) layer 1 and the deadline remain
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = size + MEMORY_LIMIT_MB * 2**20
        cap = cap if hard == resource.RLIM_INFINITY else min(cap, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _send(stdout, b'{"ready": true}')
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        message = stdin.read(struct.unpack("<I", head)[0])
        (limit,) = struct.unpack("<Q", message[:8])
        template, kwargs = pickle.loads(message[8:])
        # The parent kills a late render; the alarm (no handler: the kernel ends this process)
        # also ends one whose parent died meanwhile, so no orphan spins for hours.
        signal.alarm(int(RENDER_LIMIT_S) + 5)
        try:
            text = template_sandbox.compile_template(template).render(**kwargs)
            reply: dict = {"ok": text}
            if len(text) > limit:
                reply = {
                    "refused": f"the rendered text ({len(text):,} characters) is far longer than what it was "
                    f"given (the limit is {limit:,})"
                }
        except TemplateRefused as err:
            reply = {"refused": str(err)}
        except MemoryError:
            reply = {"refused": f"rendering would allocate more than {MEMORY_LIMIT_MB} MB"}
        except RecursionError:
            reply = {"refused": "rendering recursed too deep"}
        except Exception as err:  # a TemplateError (raise_exception), a TypeError in the template
            reply = {"error": str(err), "kind": type(err).__name__}
        signal.alarm(0)
        try:
            _send(stdout, json.dumps(reply, ensure_ascii=False).encode("utf-8", "surrogatepass"))
        except MemoryError:
            return  # too little left even to answer: the parent sees the end and says so


def _start() -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lora_app.template_process import serve; serve()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    try:
        (n,) = struct.unpack("<I", _read_exact(fd, 4, time.monotonic() + _START_LIMIT_S))
        _read_exact(fd, n, time.monotonic() + 5)  # {"ready": true}
    except (TimeoutError, EOFError):
        _stop(proc)
        raise RuntimeError("the chat template process did not start") from None
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        try:
            if f:
                f.close()
        except OSError:  # a pipe the dead child no longer reads
            pass


def render_in_child(template: str, kwargs: dict) -> str:
    """``template`` rendered with ``kwargs`` (plain data: messages, add_generation_prompt, special
    tokens) in the capped child. Raises TemplateRefused (too big, too slow: the child is then
    replaced) or a jinja2.TemplateError subclass named as the template's own error."""
    global _child
    body = pickle.dumps((template, kwargs))  # pickled once: its size sets the limit on the text
    payload = struct.pack("<Q", RESULT_FACTOR * len(body) + RESULT_ALLOWANCE) + body
    with _lock:
        if _child is None or _child.poll() is not None:
            _child = _start()
        proc = _child
        try:
            _send(proc.stdin, payload)
            fd = proc.stdout.fileno()  # type: ignore[union-attr]
            deadline = time.monotonic() + RENDER_LIMIT_S
            (n,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
            reply = json.loads(_read_exact(fd, n, deadline + 5).decode("utf-8", "surrogatepass"))
        except TimeoutError:
            _stop(proc)
            _child = None
            raise TemplateRefused(f"it did not finish rendering in {RENDER_LIMIT_S:g} s") from None
        except (EOFError, BrokenPipeError, OSError):
            _stop(proc)
            _child = None
            raise TemplateRefused(
                f"rendering would allocate more than {MEMORY_LIMIT_MB} MB (the render process ran out of memory)"
            ) from None
    if "ok" in reply:
        return str(reply["ok"])
    if "refused" in reply:
        raise TemplateRefused(str(reply["refused"]))
    raise _error_kind(str(reply.get("kind")))(str(reply.get("error")))


@functools.cache
def _error_kind(name: str) -> type:
    """A jinja2.TemplateError subclass named as the child's exception (UndefinedError, TypeError ...),
    so a message reads as it did when templates rendered in this process. Only the name crosses:
    nothing the child sends is unpickled."""
    from jinja2 import TemplateError

    return type(name if name.isidentifier() else "TemplateError", (TemplateError,), {})


class _ChildTemplate:
    """What transformers' ``render_jinja_template`` gets from ``_compile_jinja_template`` while
    :func:`apply_chat_template` runs: ``render(**kwargs)`` in the child. Nothing else is offered:
    ``generate`` (``return_assistant_tokens_mask``) and ``environment`` (``sanitize_control_tokens``)
    raise AttributeError, so no code path compiles the template in this process (jinja2 folds
    constants such as ``'x' * 10**10`` at compile time in transformers' own environment)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def render(self, **kwargs: Any) -> str:
        return render_in_child(self.source, kwargs)


def _install() -> None:
    """Route transformers' template compile through :class:`_ChildTemplate` while _ROUTE is set
    (once per process; render_jinja_template reads the module global at each call)."""
    global _installed
    from transformers.utils import chat_template_utils as ctu

    with _lock:
        if _installed:
            return
        original = ctu._compile_jinja_template

        def compile_routed(chat_template: str) -> Any:
            return _ChildTemplate(chat_template) if _ROUTE.get() else original(chat_template)

        ctu._compile_jinja_template = compile_routed  # type: ignore[assignment]
        _installed = True


def apply_chat_template(tokenizer: Any, conversation: list[dict], chat_template: str, **kwargs: Any) -> Any:
    """``tokenizer.apply_chat_template(conversation, chat_template=chat_template, **kwargs)`` (the
    same text or ids, byte for byte) with the template rendered in the capped child process.
    Raises TemplateRefused (more than MAX_CHARS items or MEMORY_LIMIT_MB, or slower than
    RENDER_LIMIT_S), jinja2.TemplateError (syntax, raise_exception), or what transformers raises."""
    _install()
    token = _ROUTE.set(True)
    try:
        return tokenizer.apply_chat_template(conversation, chat_template=chat_template, **kwargs)
    finally:
        _ROUTE.reset(token)


def refused_message(source: str, why: str) -> str:
    """The message a person sees: ``chat_template of <source>: <why>. Fix: ...``."""
    return (
        f"chat_template of {source}: {why}. Fix: use another model or adapter, or a chat_template that "
        "renders a conversation without building huge values."
    )

"""Layer 1 against chat-template bombs: a Jinja sandbox that refuses a result too big to build
before building it.

A chat template is code from whoever made the model or adapter (any Hub repo). transformers
renders it in jinja2's ``ImmutableSandboxedEnvironment`` (transformers/utils/chat_template_utils.py),
which stops escapes but not size: ``{{ 'x' * 10**10 }}`` asks for 10 GB in one C call that no
Python-level deadline can interrupt. :class:`CappedEnvironment` is that environment with every
operation whose result size a template picks sized first (jinja2's own hooks, jinja2/sandbox.py:
``intercepted_binops``/``call_binop``, ``call``, ``wrap_str_format``; ``concat`` for the rendered
text and every ``{% set %}`` block, macro and ``caller()``):

- ``*`` of a str/list/tuple by an int, ``+`` of two of them, ``**`` of ints, ``%`` formatting
  (widths and precisions);
- the str methods ``ljust rjust center zfill expandtabs replace join format format_map``;
- the filters ``center indent join format batch slice tojson`` (transformers' ``tojson``, whose
  ``indent`` can be any number) and ``list``/``string`` of a sequence;
- ``range`` is already bounded by jinja2 (``MAX_RANGE`` = 100,000 items).

Each value and the rendered text may hold at most :data:`MAX_CHARS` items (characters, list
items, or digits of an int). The rest of the work a template can do, a Python loop building
values step by step, is bounded by the render process's memory cap and deadline
(:mod:`lora_app.template_process`, layer 2), which is why this layer only needs to be cheap and
clear, not complete.

:func:`compile_template` is transformers' own compile function with this class swapped in, so
filters, globals (``raise_exception``, ``strftime_now``, ``namespace``, ``dict``), ``tojson``'s
options, loop controls and ``{% generation %}`` are transformers' and a real template renders
byte for byte as ``tokenizer.apply_chat_template`` renders it.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

#: Items (characters, list items, decimal digits) one value or the rendered text may hold:
#: 16 Mi characters is 16-64 MB of str. A real conversation renders to well under 1 Mi.
MAX_CHARS = 16 * 2**20


class TemplateRefused(Exception):
    """A chat template asked for more than the sandbox allows (size, memory or time). The message
    says what, e.g. "rendering would allocate more than 16 MB ('*' of a str of length 1 by
    10000000000)"; callers add whose template it was and the fix."""


def _refuse(what: str, n: float) -> None:
    if n > MAX_CHARS:
        raise TemplateRefused(
            f"rendering would allocate more than {MAX_CHARS // 2**20} MB ({what}: {int(n):,} items, "
            f"the limit is {MAX_CHARS:,})"
        )


def _size(x: Any) -> int:
    """Items a value holds: characters of a str, items of a list/tuple, digits of an int."""
    if isinstance(x, int) and not isinstance(x, bool):
        return x.bit_length() * 30103 // 100000 + 1  # log10(2) = 0.30103
    try:
        return len(x)
    except TypeError:
        return 1


# A printf directive's flags, width and precision ("%-10000000000s"), and a str.format field's
# spec (":>10000000000"): the numbers there set the result's width.
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\d+|\*)?(?:\.(\d+|\*))?")
_FORMAT_SPEC = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")


def _check_widths(fmt: str, numbers: list[str], args: Any) -> None:
    widths = [int(n) for n in numbers if n and n != "*"]
    if "*" in numbers:  # the width is an argument
        widths += [a for a in (args if isinstance(args, tuple) else (args,)) if isinstance(a, int)]
    _refuse("a format width", max(widths, default=0))


def _check_percent(fmt: str, args: Any) -> None:
    found = [n for m in _PERCENT.finditer(fmt) for n in m.groups() if n]
    _check_widths(fmt, found, args)
    items = args if isinstance(args, tuple) else (args,)
    _refuse("'%' formatting", len(fmt) + sum(_size(a) for a in items if isinstance(a, str)))


def _check_binop(op: str, left: Any, right: Any) -> None:
    seq = (str, list, tuple)
    if op == "*":
        for a, b in ((left, right), (right, left)):
            if isinstance(a, seq) and isinstance(b, int):
                _refuse(f"'*' of a {type(a).__name__} of length {len(a):,} by {b:,}", len(a) * max(b, 0))
        if isinstance(left, int) and isinstance(right, int):
            _refuse("'*' of two ints", _size(left) + _size(right))
    elif op == "+" and isinstance(left, seq) and isinstance(right, seq):
        _refuse("'+' of two sequences", len(left) + len(right))
    elif op == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
        _refuse(f"'**' of {left:,} by {right:,}", _size(left) * right if abs(left) > 1 else 1)
    elif op == "%" and isinstance(left, str):
        _check_percent(left, right)


def _check_str_method(name: str, s: str, args: tuple, kwargs: dict) -> None:
    """A str method whose result size comes from its arguments: sized before the call."""
    ints = [a for a in (*args, *kwargs.values()) if isinstance(a, int)]
    if name in ("ljust", "rjust", "center", "zfill"):
        _refuse(f"str.{name}", max(ints, default=0))
    elif name == "expandtabs":
        _refuse("str.expandtabs", len(s) + s.count("\t") * max(ints, default=8))
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = len(s) + 1 if args[0] == "" else s.count(args[0])
        _refuse("str.replace", len(s) + hits * len(args[1]))
    elif name == "join" and args:
        _refuse("str.join", sum(_size(x) for x in args[0]) + len(s) * len(args[0]))
    elif name in ("format", "format_map"):
        _check_widths(s, _FORMAT_SPEC.findall(s), args)


class CappedEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's ImmutableSandboxedEnvironment that raises :class:`TemplateRefused` before any
    operation listed in the module docstring builds a value of more than :data:`MAX_CHARS` items,
    and while the rendered text (or a block's) grows past it."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cap_filters()

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        """Size the result of an intercepted operator, then compute it (jinja2/sandbox.py)."""
        _check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        """Size a str method's result before calling it (every call in a template comes here)."""
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(getattr(__obj, "__self__", None), str):
            _check_str_method(__obj.__name__, str(__obj.__self__), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """``'{:>99999999999}'.format(x)``: the widths are checked when the method is read."""
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_widths(value.__self__, _FORMAT_SPEC.findall(value.__self__), ())
        return wrapped

    @staticmethod
    def concat(chunks: Any) -> str:
        """The rendered text (and each block's), refused as soon as it passes MAX_CHARS items
        (jinja2's compiled code calls ``environment.concat``, jinja2/compiler.py)."""
        out, n = [], 0
        for c in chunks:
            n += len(c)
            _refuse("the rendered text", n)
            out.append(c)
        return "".join(out)

    def _cap_filters(self) -> None:
        f = self.filters
        checks = {
            "center": lambda v, width=80: _refuse("the center filter", width),
            "indent": lambda s, width=4, *a, **k: _refuse(
                "the indent filter",
                len(str(s)) + (str(s).count("\n") + 1) * (len(width) if isinstance(width, str) else int(width)),
            ),
            "format": lambda v, *a, **k: _check_percent(str(v), a or tuple(k.values())),
            "batch": lambda v, linecount, fill_with=None: _refuse("the batch filter", linecount),
            "slice": lambda v, slices, fill_with=None: _refuse("the slice filter", slices),
            "list": lambda v: _refuse("the list filter", _size(v)),
            "replace": lambda s, old, new, count=None: _check_str_method("replace", str(s), (str(old), str(new)), {}),
        }
        for name, check in checks.items():
            f[name] = _checked(f[name], check)
        f["join"] = _checked(f["join"], _check_join, materialize=True)

    def install_tojson(self) -> None:
        """transformers sets its own ``tojson`` (any ``indent``) after building the environment."""
        f = self.filters
        f["tojson"] = _checked(
            f["tojson"],
            lambda x, ensure_ascii=False, indent=None, *a, **k: _refuse(
                "tojson's indent", len(indent) if isinstance(indent, str) else int(indent or 0)
            ),
        )


def _check_join(items: list, d: str = "", attribute: Any = None) -> None:
    _refuse("the join filter", sum(_size(x) for x in items) + len(str(d)) * len(items))


def _checked(fn: Any, check: Any, materialize: bool = False) -> Any:
    """The filter ``fn`` with ``check(value, *args, **kwargs)`` run first; jinja2's context
    argument (``jinja_pass_arg``: list, join, slice, replace take one) passed through. With
    ``materialize`` an iterable value is made a list first, so the check does not consume it."""
    pass_arg = getattr(fn, "jinja_pass_arg", None)

    def run(ctx: Any, value: Any, args: tuple, kwargs: dict) -> Any:
        if materialize and not isinstance(value, (str, list, tuple)):
            value = list(value)
        check(value, *args, **kwargs)
        return fn(ctx, value, *args, **kwargs) if pass_arg is not None else fn(value, *args, **kwargs)

    if pass_arg is None:
        return lambda value, *a, **k: run(None, value, a, k)

    def with_ctx(ctx: Any, value: Any, *a: Any, **k: Any) -> Any:
        return run(ctx, value, a, k)

    with_ctx.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return with_ctx


@functools.lru_cache(maxsize=64)
def compile_template(chat_template: str) -> Any:
    """``chat_template`` compiled as transformers compiles it (``_cached_compile_jinja_template``,
    transformers/utils/chat_template_utils.py) but in a :class:`CappedEnvironment`: a
    ``jinja2.Template`` whose ``render(messages=..., add_generation_prompt=..., **special_tokens)``
    is transformers' text, or raises :class:`TemplateRefused`. Raises jinja2's TemplateSyntaxError
    for a template that does not parse.

    Swapping the class sets transformers' module global for good, so this is called only in the
    render process (:mod:`lora_app.template_process`), which renders nothing else."""
    from transformers.utils import chat_template_utils as ctu

    ctu.ImmutableSandboxedEnvironment = CappedEnvironment  # type: ignore[misc]
    template = ctu._cached_compile_jinja_template(chat_template)
    template.environment.install_tojson()
    return template

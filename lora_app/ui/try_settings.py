"""The Try tab's generation settings (the max_new_tokens and temperature sliders, the seed boxes),
checked in the app's words before any model loads.

Gradio checks a Slider's or a Number's ``minimum``/``maximum`` itself and answers a bare "Value -1
is less than minimum value 0." (a toast, an Error badge, a traceback in the log); and the browser
sets a number typed into a slider's box back into range on leaving the box, so -5 tokens ran as 1
without a word. Here the sliders pass any value on (:func:`sliders`), the browser's last typed value
is kept (:func:`remember_typed`), and :func:`problems` names each field, its range (the slider's own
bounds) and the fix; the seed's range is :func:`lora_app.sampling.check_sampling`'s.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..config import ConfigError
from ..sampling import check_sampling, out_of_range


def _unchecked(slider: gr.Slider) -> gr.Slider:
    """``slider`` (drawn as before) with Gradio's own range check taken out of its input
    processing: an out-of-range value reaches the handler, which names the field, its range and the
    fix (:func:`problems`). Per instance: a gr.Slider subclass makes Gradio write a .pyi beside
    this file at import."""
    precision = slider.precision
    slider.preprocess = lambda payload: (  # type: ignore[method-assign]
        payload if payload is None else gr.Number.round_to_precision(payload, precision)
    )
    return slider


def sliders() -> tuple[gr.Slider, gr.Slider]:
    """(max_new_tokens, temperature): the one place their ranges are set."""
    return (
        _unchecked(gr.Slider(1, 256, value=48, step=1, label="max_new_tokens", elem_id="try-max-new")),
        _unchecked(gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="temperature (0 = greedy)", elem_id="try-temp")),
    )


def seed_box(elem_id: str) -> gr.Number:
    """A seed box: no ``minimum`` for Gradio to check, and its value passed on as sent (a whole float
    as an int): Gradio's own conversion answered NaN, inf or "7" from an API call with a bare error
    (the breaker). The check is :func:`problems`'."""
    box = gr.Number(0, label="seed", precision=0, scale=1, elem_id=elem_id)
    box.preprocess = lambda payload: (  # type: ignore[method-assign]
        int(payload) if isinstance(payload, float) and payload.is_integer() else payload
    )
    return box


def remember_typed(max_new: gr.Slider, temp: gr.Slider, where) -> gr.State:
    """A per-page record of what was typed into each slider's box: the browser sends it with the
    box's release event, before it sets the box back into range (and the next Generate would run
    with that clamped value). A value out of range is said at once in ``where``."""
    typed = gr.State({})
    for slider, name in ((max_new, "max_new_tokens"), (temp, "temperature")):

        def record(seen: dict | None, evt: gr.EventData, slider=slider, name=name):
            value = getattr(evt, "_data", None)
            seen = {**(seen or {}), name: value}
            bad = out_of_range(name, value, slider.minimum, slider.maximum, whole=slider.step == 1)
            return seen, (_md([bad]) if bad else gr.skip())

        slider.release(record, [typed], [typed, where], queue=False, show_progress="hidden")
    return typed


def problems(
    max_new: gr.Slider, temp: gr.Slider, max_new_tokens: Any, temperature: Any, typed: dict | None = None, seed: Any = 0
) -> list[str]:
    """Every setting outside its slider's range (or a seed torch cannot take), one line each; a
    value typed into a box and set back into range by the browser counts as typed."""
    typed = typed or {}
    bad = []
    for slider, name, value in ((max_new, "max_new_tokens", max_new_tokens), (temp, "temperature", temperature)):
        whole = slider.step == 1
        t = typed.get(name)
        # the typed value only while the slider still sits where the browser set it back to (moved since,
        # with the arrow keys, which fire no release, it blocked a valid value: the breaker)
        shown = (
            t
            if out_of_range(name, t, slider.minimum, slider.maximum, whole) and _clamped(t, slider) == value
            else value
        )
        p = out_of_range(name, shown, slider.minimum, slider.maximum, whole=whole)
        if p:
            bad.append(p)
    try:
        check_sampling(1, 0.0, 0.95, 0 if seed is None else seed)  # an emptied box: seed 0, as before
    except ConfigError as err:
        bad += err.problems
    return bad


def _clamped(value: Any, slider: gr.Slider) -> float | None:
    """Where the browser puts ``value`` typed into ``slider``'s box: its nearest end; None for no number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return min(max(value, slider.minimum), slider.maximum)


def _md(problems: list[str]) -> str:
    from .common import problems_md

    return problems_md(problems)

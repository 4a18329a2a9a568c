"""The waiting runs' order (fair between people) and their estimated start times: pure functions
over index rows, used by both the scheduler (:meth:`lora_app.jobs.JobManager._start_next`) and
the page's queue note (:func:`lora_app.ui.common.queue_note`), so what a person is shown is the
order the scheduler follows.

**Round robin, precisely** (least recently served first): the next run to start is the oldest
waiting run of the owner whose last start is longest ago; an owner who has never had a run
started comes before everyone who has (among those, the owner with the oldest waiting run
first). Once picked, that owner counts as served *now*, so the order of the whole line is
that rule applied again and again: Alice submits a1 a2 a3, then Bob b1 b2, then Carol c1, none
of them ever served: the line is a1 b1 c1 a2 b2 a3 (had Alice been served an hour ago and the
others never, b1 c1 a1 b2 a2 a3).
Consequences: a person's second run never starts before the first run of anyone who was
waiting when it was picked; a person with ten waiting runs takes one turn per round.

Why "last start" and not "fewest starts since the queue last drained": it needs no notion of
a drained queue (which a restart or a second manager would see differently), it is read off
the run index as it is (``started`` of each owner's runs), and it gives the same order in the
common case. Its one blind spot: a resumed run keeps its first ``started`` (the Runs tab's
duration), so a resume counts as served at the run's first start, not at the resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Default of ``LORA_APP_MAX_WAITING_PER_PERSON``: waiting (queued, not running) runs per owner.
MAX_WAITING_DEFAULT = 3


def max_waiting_per_person() -> int:
    """``LORA_APP_MAX_WAITING_PER_PERSON`` (default 3); 0 or less: no limit. Raises ValueError
    naming the variable for a value that is not a whole number."""
    raw = os.environ.get("LORA_APP_MAX_WAITING_PER_PERSON", "").strip()
    if not raw:
        return MAX_WAITING_DEFAULT
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"LORA_APP_MAX_WAITING_PER_PERSON: '{raw}' is not a whole number. Fix: set it to e.g. 3 (0: no limit)."
        ) from None


def full_line(waiting: int, limit: int) -> str:
    """What Start says when a person has ``waiting`` runs queued and the limit is ``limit``."""
    return (
        f"queue: you have {waiting} runs waiting, the most one person may have "
        f"(LORA_APP_MAX_WAITING_PER_PERSON={limit}). Fix: wait for one of them to start, "
        "or stop a waiting run in the Runs tab."
    )


@dataclass(frozen=True)
class Waiting:
    """One waiting run: its ``id``, ``owner`` and ``created`` time (seconds since the epoch)."""

    id: str
    owner: str
    created: float


def fair_order(waiting: Iterable[Waiting], last_start: Mapping[str, float]) -> list[str]:
    """The ids of ``waiting`` in the order they will start (round robin between owners, see the
    module docstring). ``last_start``: owner -> time their latest run was started (an owner
    missing from it has never been served). Ties (same created time) keep the input order."""
    queues: dict[str, list[Waiting]] = {}
    for w in sorted(waiting, key=lambda w: w.created):  # (stable: the index's rowid order on ties)
        queues.setdefault(w.owner, []).append(w)
    # The sort key of an owner's turn: never served (0, oldest waiting run), served before this
    # line was drawn (1, last start), served in this line (2, turn number).
    rank: dict[str, tuple[int, float]] = {
        o: (0, q[0].created) if last_start.get(o) is None else (1, last_start[o]) for o, q in queues.items()
    }
    order: list[str] = []
    while queues:
        owner = min(queues, key=lambda o: (rank[o], queues[o][0].created))
        order.append(queues[owner].pop(0).id)
        if not queues[owner]:
            del queues[owner]
        rank[owner] = (2, float(len(order)))
    return order


def start_estimates(durations_s: Sequence[float | None], running_left_s: float | None) -> list[float | None]:
    """Seconds from now until each run of the line starts, in line order, on one device:
    ``durations_s[i]`` is the expected duration of the i-th waiting run (None: not known),
    ``running_left_s`` the running run's remaining time (0 when nothing runs; None: not known
    yet). Run i starts once the running run and runs 0..i-1 have ended; an unknown part makes
    every later estimate None (skipping it would promise too early a start)."""
    out: list[float | None] = []
    t = running_left_s
    for d in durations_s:
        out.append(t)
        t = None if t is None or d is None else t + d
    return out

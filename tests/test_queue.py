"""The fair queue (issue 13, section 3): round robin between owners, oldest first within an owner;
a per-person limit of waiting runs; each waiting person's place and estimated start.

The order is one pure function (:func:`lora_app.fair_queue.fair_order`), tested on its own; one
real JobManager then starts real child processes in that order. The children stand in for the
trainer (a shell script run as ``python -m lora_app train RUN_DIR``: it reports progress and ends
in a few milliseconds once released), so the test measures the scheduler, not training.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from lora_app.config import ConfigError, RunConfig
from lora_app.fair_queue import Waiting, fair_order, max_waiting_per_person, start_estimates
from lora_app.jobs import JobManager, QueueFull
from lora_app.ui.common import queue_note
from lora_app.validate import check_and_submit


def W(i, owner, t):
    return Waiting(i, owner, float(t))


def test_fair_order_three_owners_staggered():
    # Alice queues three runs, then Bob two, then Carol one; nobody was ever served.
    waiting = [W("a1", "alice", 1), W("a2", "alice", 2), W("a3", "alice", 3), W("b1", "bob", 4)]
    waiting += [W("b2", "bob", 5), W("c1", "carol", 6)]
    assert fair_order(waiting, {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # Alice was served a minute ago (her a0 started), Bob an hour ago, Carol never.
    assert fair_order(waiting, {"alice": 940.0, "bob": 0.0}) == ["c1", "b1", "a1", "b2", "a2", "a3"]
    # Input order does not matter; oldest first within an owner.
    assert fair_order(list(reversed(waiting)), {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert fair_order([], {"alice": 1.0}) == []


def test_no_second_run_before_anothers_first():
    """Whatever the history, a person's k-th waiting run never comes before another waiting
    person's (k-1)-th... in particular no second run before someone else's first."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        owners = ["alice", "bob", "carol", "dan"][: rng.randint(2, 4)]
        waiting = [W(f"r{i}", rng.choice(owners), rng.random() * 100) for i in range(rng.randint(1, 12))]
        last = {o: rng.random() * 100 for o in owners if rng.random() < 0.5}
        order = fair_order(waiting, last)
        owner_of = {w.id: w.owner for w in waiting}
        nth = {}
        ranks = []
        for rid in order:
            nth[owner_of[rid]] = nth.get(owner_of[rid], 0) + 1
            ranks.append(nth[owner_of[rid]])
        assert ranks == sorted(ranks), (order, last)  # turn k of everyone before turn k+1 of anyone
        for o in nth:  # and within an owner, oldest first
            mine = [rid for rid in order if owner_of[rid] == o]
            created = {w.id: w.created for w in waiting}
            assert mine == sorted(mine, key=lambda r: created[r])


def test_start_estimates_add_up_and_stop_at_the_unknown():
    assert start_estimates([60.0, 120.0, 30.0], 45.0) == [45.0, 105.0, 225.0]
    assert start_estimates([60.0, None, 30.0], 45.0) == [45.0, 105.0, None]
    assert start_estimates([60.0], None) == [None]


def test_max_waiting_setting(monkeypatch):
    monkeypatch.delenv("LORA_APP_MAX_WAITING_PER_PERSON", raising=False)
    assert max_waiting_per_person() == 3
    monkeypatch.setenv("LORA_APP_MAX_WAITING_PER_PERSON", "5")
    assert max_waiting_per_person() == 5
    monkeypatch.setenv("LORA_APP_MAX_WAITING_PER_PERSON", "three")
    with pytest.raises(ValueError, match="LORA_APP_MAX_WAITING_PER_PERSON"):
        max_waiting_per_person()


FAKE_TRAINER = """#!/bin/sh
# Stand-in for `python -m lora_app train RUN_DIR` ($4): report one step of 4 (30 s left), wait
# for the test to release it, report the end.
rd="$4"
echo "{\\"type\\": \\"status\\", \\"time\\": 0, \\"status\\": \\"training\\", \\"message\\": \\"\\"}" >> "$rd/events.jsonl"
echo "{\\"type\\": \\"progress\\", \\"time\\": 0, \\"step\\": 1, \\"max_steps\\": 4, \\"elapsed_s\\": 10, \\"remaining_s\\": 30}" >> "$rd/events.jsonl"
i=0
while [ ! -e "$rd/../release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
echo "{\\"type\\": \\"status\\", \\"time\\": 0, \\"status\\": \\"finished\\", \\"message\\": \\"done\\", \\"final_loss\\": 1.0}" >> "$rd/events.jsonl"
"""


def _cfg(steps: int) -> RunConfig:
    cfg = RunConfig()
    cfg.training.max_steps = steps
    return cfg


def _wait(pred, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_owners_start_in_fair_order_and_the_limit_holds(tmp_path, monkeypatch):
    fake = tmp_path / "python"
    fake.write_text(FAKE_TRAINER)
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))  # the command JobManager runs: `python -m lora_app train`
    root = tmp_path / "runs"
    jm = JobManager(root, poll_s=0.05, max_waiting=2)
    try:
        a1 = jm.submit(_cfg(4), owner="alice")
        _wait(lambda: jm.get(a1).status == "running" and jm.view(a1).remaining_s == 30, what="a1 to start")
        # While a1 trains, staggered submissions: Alice 2 more, then Bob 2, then Carol 1.
        ids = {}
        for name, owner in [("a2", "alice"), ("a3", "alice"), ("b1", "bob"), ("b2", "bob"), ("c1", "carol")]:
            ids[name] = jm.submit(_cfg(6), owner=owner)
            time.sleep(0.02)  # distinct created times
        name_of = {v: k for k, v in ids.items()} | {a1: "a1"}

        # The limit: Alice has 2 waiting (a1 runs and does not count), so a third is refused ...
        with pytest.raises(QueueFull) as err:
            jm.submit(_cfg(6), owner="alice")
        assert "2 runs waiting" in str(err.value) and "LORA_APP_MAX_WAITING_PER_PERSON=2" in str(err.value)
        assert isinstance(err.value, ConfigError)  # what Start shows as a problem line
        # ... by Start's road too, before any preflight (this config is not even valid).
        with pytest.raises(QueueFull):
            check_and_submit(jm, {"training": {"max_steps": 0}}, owner="alice")
        assert len([r for r in jm.list() if r.owner == "alice"]) == 3  # nothing was written

        # The line everyone sees, and each waiting run's place (0 is the running a1).
        assert [name_of[r.id] for r in jm.line()] == ["b1", "c1", "a2", "b2", "a3"]
        assert [jm.queue_position(ids[n]) for n in ("b1", "c1", "a2", "b2", "a3")] == [1, 2, 3, 4, 5]
        # Carol: one run ahead (b1: 6 steps) after a1's 30 s left, at a1's measured 10 s/step.
        note = queue_note(jm, ids["c1"])
        assert "1 waiting run(s) ahead" in note and "Another run is training (step 1/4" in note, note
        assert "in about 1:30" in note and "10.00 s/step" in note and a1 not in note, note
        assert "in about 0:30" in queue_note(jm, ids["b1"])  # next in line: a1's time left
        assert "in about 2:30" in queue_note(jm, ids["a2"])  # 30 + 60 (b1) + 60 (c1)

        (root / "release").touch()
        for rid in ids.values():
            _wait(lambda rid=rid: jm.get(rid).status == "finished", what=f"{name_of[rid]} to finish")
    finally:
        jm.shutdown(grace_s=2)
    started = sorted(jm.list(), key=lambda r: r.started)
    assert [name_of[r.id] for r in started] == ["a1", "b1", "c1", "a2", "b2", "a3"]  # FIFO: a1 a2 a3 b1 b2 c1
    # Once the line drained, Alice may queue again.
    jm2 = JobManager(root, max_running=0, max_waiting=2)
    try:
        assert jm2.submit(_cfg(6), owner="alice")
    finally:
        jm2.close()
    assert json.loads((Path(jm.run_dir(a1)) / "events.jsonl").read_text().splitlines()[-1])["status"] == "finished"

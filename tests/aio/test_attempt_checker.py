"""ATTEMPT_OVERLAP (checker/_attempts.py) over hand-made histories of ``Attempt``
events: what it flags and what it lets pass."""

from __future__ import annotations

import attrs

from offsetledger.checker import AnomalyKind
from offsetledger.checker._attempts import attempt_anomalies
from offsetledger.history import Attempt, Crash, Done, Event


def _attempt(seq: int, member: str, attempt: int, phase: str, outcome: str = "") -> Attempt:
    return Attempt(
        seq=seq,
        member=member,
        attempt=attempt,
        phase=phase,
        topic="in",
        partition=0,
        offset=7,
        outcome=outcome,
    )


def _kinds(events: list[Event]) -> list[AnomalyKind]:
    return [a.kind for a in attempt_anomalies(events)]


def test_a_retry_after_its_attempt_ended_passes() -> None:
    events: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        _attempt(2, "m0", 1, "end", "timeout"),
        _attempt(3, "m0", 2, "start"),
        _attempt(4, "m0", 2, "end", "ok"),
        Done(seq=5, member="m0", topic="in", partition=0, offset=7, outputs=1),
    ]
    assert _kinds(events) == []


def test_a_retry_next_to_the_running_attempt_is_flagged() -> None:
    events: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        _attempt(2, "m0", 2, "start"),  # reported early: the first still runs
        _attempt(3, "m0", 1, "end", "cancelled"),
    ]
    assert _kinds(events) == [AnomalyKind.ATTEMPT_OVERLAP]


def test_the_next_owner_starting_before_the_revoked_attempt_ended_is_flagged() -> None:
    events: list[Event] = [
        _attempt(1, "m0", 4, "start"),
        _attempt(2, "m1", 1, "start"),
        _attempt(3, "m0", 4, "end", "cancelled"),
    ]
    (anomaly,) = attempt_anomalies(events)
    assert anomaly.member == "m1"
    assert "still running" in anomaly.message


def test_a_crash_ends_the_member_s_attempts() -> None:
    events: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        Crash(seq=2, member="m0"),
        _attempt(3, "m1", 1, "start"),
    ]
    assert _kinds(events) == []


def test_done_after_a_timed_out_attempt_is_flagged_unless_dead_lettered() -> None:
    ended: list[Event] = [_attempt(1, "m0", 1, "start"), _attempt(2, "m0", 1, "end", "timeout")]
    done = Done(seq=3, member="m0", topic="in", partition=0, offset=7, outputs=0)
    dead = attrs.evolve(done, dead_lettered=True)
    assert _kinds([*ended, done]) == [AnomalyKind.ATTEMPT_OVERLAP]
    assert _kinds([*ended, dead]) == []

"""ATTEMPT_OVERLAP and the rewind of a transactional run: a member's ``Seek`` of a
partition ends its attempts of that partition (their coroutines are cancelled, not
waited for, and the records are read again; swarm seed 253, async + transactional).
The rest of ATTEMPT_OVERLAP is tested in tests/aio/test_attempt_checker.py."""

from __future__ import annotations

from offsetledger.checker import AnomalyKind
from offsetledger.checker._attempts import attempt_anomalies
from offsetledger.history import Attempt, Done, Event, Leave, Seek


def _attempt(seq: int, member: str, attempt: int, phase: str, partition: int = 0) -> Attempt:
    return Attempt(
        seq=seq,
        member=member,
        attempt=attempt,
        phase=phase,
        topic="in",
        partition=partition,
        offset=7,
        outcome="cancelled" if phase == "end" else "",
    )


def _kinds(events: list[Event]) -> list[AnomalyKind]:
    return [a.kind for a in attempt_anomalies(events)]


def test_a_seek_ends_the_member_s_attempts_of_that_partition() -> None:
    events: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        Seek(seq=2, member="m0", topic="in", partition=0, position=0),  # the rewind
        _attempt(3, "m0", 2, "start"),  # the record read again
        _attempt(4, "m0", 1, "end"),
    ]
    assert _kinds(events) == []


def test_a_seek_of_another_partition_or_by_another_member_ends_nothing() -> None:
    other_partition: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        Seek(seq=2, member="m0", topic="in", partition=1, position=0),
        _attempt(3, "m0", 2, "start"),
    ]
    other_member: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        Seek(seq=2, member="m1", topic="in", partition=0, position=0),
        _attempt(3, "m1", 1, "start"),
    ]
    assert _kinds(other_partition) == [AnomalyKind.ATTEMPT_OVERLAP]
    assert _kinds(other_member) == [AnomalyKind.ATTEMPT_OVERLAP]


def test_the_late_end_of_an_attempt_ended_by_a_seek_does_not_judge_the_next_one() -> None:
    """After the rewind the record is read again and done; the abandoned attempt's
    cancellation is recorded after that: it is not "done after a cancelled attempt"."""
    events: list[Event] = [
        _attempt(1, "m0", 1, "start"),
        Seek(seq=2, member="m0", topic="in", partition=0, position=0),
        _attempt(3, "m0", 2, "start"),
        Attempt(
            seq=4,
            member="m0",
            attempt=2,
            phase="end",
            topic="in",
            partition=0,
            offset=7,
            outcome="ok",
        ),
        _attempt(5, "m0", 1, "end"),  # the abandoned coroutine's cleanup ends late
        Done(seq=6, member="m0", topic="in", partition=0, offset=7, outputs=1),
    ]
    assert _kinds(events) == []


def test_removal_from_the_group_ends_the_member_s_attempts_but_an_orderly_close_does_not() -> None:
    """A member removed by ``max.poll.interval.ms`` (or the session timeout) finds out
    at its next poll; its partitions may be the next owner's before that, and its
    suspended coroutines are zombies (async model, simulator seed 732863227). An
    orderly close waits for its attempts, so an overlap there is still a finding."""

    def run(reason: str) -> list[AnomalyKind]:
        return _kinds(
            [
                _attempt(1, "m0", 1, "start"),
                Leave(seq=2, member="m0", reason=reason),
                _attempt(3, "m1", 1, "start"),  # the next owner reads it again
                _attempt(4, "m0", 1, "end"),  # the zombie's coroutine ends late
            ]
        )

    assert run("max_poll_interval") == []
    assert run("session_timeout") == []
    assert run("close") == [AnomalyKind.ATTEMPT_OVERLAP]


def _end(seq: int, attempt: int, outcome: str) -> Attempt:
    return Attempt(
        seq=seq,
        member="m0",
        attempt=attempt,
        phase="end",
        topic="in",
        partition=0,
        offset=7,
        outcome=outcome,
    )


def test_an_attempt_running_through_a_removal_still_judges_the_record_s_done() -> None:
    """Swarm seed 88 (transactional, async, KIP-848): attempt 1 times out, its retry
    (attempt 2) is running when the member is removed by the session timeout, the
    retry ends ok and the record is done. The done follows an ok attempt, not the
    timed-out one; had the retry timed out too, the done would be a finding."""

    def run(retry_outcome: str) -> list[AnomalyKind]:
        return _kinds(
            [
                _attempt(1, "m0", 1, "start"),
                _end(2, 1, "timeout"),
                _attempt(3, "m0", 2, "start"),
                Leave(seq=4, member="m0", reason="session_timeout"),
                _end(5, 2, retry_outcome),
                Done(seq=6, member="m0", topic="in", partition=0, offset=7, outputs=1),
            ]
        )

    assert run("ok") == []
    assert run("timeout") == [AnomalyKind.ATTEMPT_OVERLAP]

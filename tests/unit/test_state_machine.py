"""The record state machine: every legal path works, every other move raises."""

from __future__ import annotations

import itertools

import pytest

from offsetledger.core import (
    TRANSITIONS,
    IllegalTransitionError,
    OffsetLedger,
    RecordState,
    RecordTracker,
    Ticket,
    TopicPartition,
)

S = RecordState
TP = TopicPartition("orders", 0)
TICKET = Ticket(TP, 41, 1)
UNFINISHED = [s for s in S if not s.terminal]

ILLEGAL = [(a, b) for a, b in itertools.product(S, S) if b not in TRANSITIONS[a]]
LEGAL = [(a, b) for a in S for b in sorted(TRANSITIONS[a], key=lambda s: s.value)]


def _tracker_in(state: RecordState) -> RecordTracker:
    """A tracker brought to ``state`` by legal moves only."""
    paths = {
        S.POLLED: [],
        S.PROCESSING: [S.PROCESSING],
        S.RETRY_WAIT: [S.PROCESSING, S.RETRY_WAIT],
        S.PRODUCING: [S.PROCESSING, S.PRODUCING],
        S.DEAD_LETTERING: [S.PROCESSING, S.DEAD_LETTERING],
        S.DONE: [S.PROCESSING, S.DONE],
        S.ABANDONED: [S.ABANDONED],
    }
    tracker = RecordTracker(TICKET)
    for step in paths[state]:
        tracker.to(step)
    assert tracker.state is state
    return tracker


def test_transition_table_covers_every_state_and_only_terminals_are_dead_ends() -> None:
    assert set(TRANSITIONS) == set(S)
    for state, targets in TRANSITIONS.items():
        assert state not in targets, f"{state} loops onto itself"
        assert (not targets) == state.terminal, state
    for state in UNFINISHED:
        assert S.ABANDONED in TRANSITIONS[state], f"{state} cannot be abandoned"
    assert [s for s in S if S.DONE in TRANSITIONS[s]] == [
        S.PROCESSING,
        S.PRODUCING,
        S.DEAD_LETTERING,
    ]


def test_there_are_illegal_pairs_to_check() -> None:
    assert len(ILLEGAL) + len(LEGAL) == len(S) ** 2
    assert len(ILLEGAL) > len(LEGAL) > 0


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=lambda s: s.name)
def test_every_illegal_transition_raises_and_changes_nothing(
    src: RecordState, dst: RecordState
) -> None:
    tracker = _tracker_in(src)
    before = (tracker.state, tracker.attempts, list(tracker.history))
    with pytest.raises(
        IllegalTransitionError,
        match=rf"orders\[0\] offset 41: illegal transition {src.name} -> {dst.name}",
    ):
        tracker.to(dst)
    assert (tracker.state, tracker.attempts, tracker.history) == before


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=lambda s: s.name)
def test_every_legal_transition_moves(src: RecordState, dst: RecordState) -> None:
    tracker = _tracker_in(src)
    tracker.to(dst)
    assert tracker.state is dst
    assert tracker.history[-1] is dst


def test_illegal_transition_message_lists_what_is_allowed() -> None:
    tracker = _tracker_in(S.POLLED)
    with pytest.raises(IllegalTransitionError, match=r"allowed: ABANDONED, PROCESSING\)"):
        tracker.to(S.DONE)
    done = _tracker_in(S.DONE)
    with pytest.raises(IllegalTransitionError, match=r"none, terminal"):
        done.to(S.PROCESSING)


@pytest.mark.parametrize(
    "path",
    [
        [S.PROCESSING, S.DONE],
        [S.PROCESSING, S.PRODUCING, S.DONE],
        [S.PROCESSING, S.RETRY_WAIT, S.PROCESSING, S.RETRY_WAIT, S.PROCESSING, S.DONE],
        [S.PROCESSING, S.PRODUCING, S.RETRY_WAIT, S.PRODUCING, S.DONE],
        [S.PROCESSING, S.PRODUCING, S.RETRY_WAIT, S.PROCESSING, S.PRODUCING, S.DONE],
        [S.PROCESSING, S.DEAD_LETTERING, S.DONE],
        [S.PROCESSING, S.RETRY_WAIT, S.DEAD_LETTERING, S.DONE],
        [S.PROCESSING, S.PRODUCING, S.DEAD_LETTERING, S.DONE],
    ],
    ids=lambda p: "-".join(s.name for s in p),
)
def test_legal_paths_to_done(path: list[RecordState]) -> None:
    tracker = RecordTracker(TICKET)
    finished_at_start = tracker.finished
    for step in path:
        tracker.to(step)
    assert not finished_at_start
    assert tracker.finished
    assert tracker.state.terminal
    assert tracker.history == [S.POLLED, *path]
    assert tracker.attempts == path.count(S.PROCESSING)


@pytest.mark.parametrize("state", UNFINISHED, ids=lambda s: s.name)
def test_abandon_from_each_unfinished_state(state: RecordState) -> None:
    tracker = _tracker_in(state)
    tracker.to(S.ABANDONED)
    assert tracker.state is S.ABANDONED
    assert tracker.state.terminal
    assert not tracker.finished  # abandoned never completes the ticket
    with pytest.raises(IllegalTransitionError):
        tracker.to(S.DONE)


def test_attempts_count_handler_invocations() -> None:
    tracker = RecordTracker(TICKET)
    for _ in range(3):
        tracker.to(S.PROCESSING)
        tracker.to(S.RETRY_WAIT)
    assert tracker.attempts == 3
    tracker.to(S.DEAD_LETTERING)
    tracker.to(S.DONE)
    assert tracker.attempts == 3


def test_only_done_completes_the_ledger_ticket() -> None:
    """The runtime completes a ticket exactly when its tracker is finished: abandoned
    records keep the watermark down; done ones let it pass."""
    ledger = OffsetLedger()
    ledger.assign(TP, 0)
    trackers = [RecordTracker(ledger.track(TP, o)) for o in range(3)]
    for step in (S.PROCESSING, S.DONE):
        trackers[0].to(step)
    trackers[1].to(S.ABANDONED)
    for step in (S.PROCESSING, S.DEAD_LETTERING, S.DONE):
        trackers[2].to(step)
    for tracker in trackers:
        if tracker.finished:
            ledger.complete(tracker.ticket)
    assert ledger.watermark(TP) == 1  # offset 1 was abandoned: it must be redelivered
    assert ledger.unfinished(TP) == 1

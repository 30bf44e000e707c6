"""The workload rules across a rewind (a transactional run's ``Seek`` after an
aborted transaction): ORDERING and BOUNDS start afresh for the member's partition,
and :func:`~offsetledger.checker.check_pipeline` judges BOUNDS on the whole history
of an exactly-once run (swarm seeds 21 and 125)."""

from __future__ import annotations

from offsetledger.checker import AnomalyKind, BufferLimits, check, check_pipeline, check_workload
from offsetledger.history import (
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    Append,
    Assign,
    Delivery,
    Event,
    Poll,
    Seek,
    TxnBegin,
    TxnEnd,
)

TOPICS = {"inputs": ["in"], "outputs": ["out"], "dead_letter": None}


def _input(seq: int, offset: int) -> Append:
    return Append(seq=seq, by="seed", topic="in", partition=0, offset=offset, key=b"k", value=b"v")


def _poll(seq: int, offset: int) -> Poll:
    return Poll(seq=seq, member="m0", generation=1, topic="in", partition=0, offset=offset)


def _output(seq: int, offset: int, source: int) -> list[Event]:
    headers = (
        (SOURCE_TOPIC, b"in"),
        (SOURCE_PARTITION, b"0"),
        (SOURCE_OFFSET, str(source).encode()),
    )
    return [
        Append(
            seq=seq, by="m0", topic="out", partition=0, offset=offset, value=b"V", headers=headers
        ),
        Delivery(seq=seq + 1, by="m0", topic="out", partition=0, offset=offset, ok=True),
    ]


def _seek(seq: int) -> Seek:
    return Seek(seq=seq, member="m0", topic="in", partition=0, position=0)


def _workload(events: list[Event], **kw: object) -> set[AnomalyKind]:
    base = check(events, **TOPICS, final_drain=False)  # type: ignore[arg-type]
    report = check_workload(
        events,
        base,
        **TOPICS,  # type: ignore[arg-type]
        expected_outputs=lambda _a: 1,
        final_drain=False,
        **kw,  # type: ignore[arg-type]
    )
    return set(report.counts())


def _start() -> list[Event]:
    return [
        _input(1, 0),
        _input(2, 1),
        Assign(seq=3, member="m0", generation=1, partitions=(("in", 0),)),
        _poll(4, 0),
        _poll(5, 1),
    ]


def test_ordering_starts_afresh_after_a_seek() -> None:
    """Re-read after the rewind, @0 is written before @1 (polled before the rewind)
    was finished: not an ORDERING violation, @1 is not held any more."""
    rewound = [*_start(), _seek(6), _poll(7, 0), *_output(8, 0, source=0)]
    assert AnomalyKind.ORDERING not in _workload(rewound, ordering="partition")
    # the control: the same writes without the rewind are out of order (@1 then @0)
    out_of_order = [*_start(), *_output(6, 0, source=1), *_output(8, 1, source=0)]
    assert AnomalyKind.ORDERING in _workload(out_of_order, ordering="partition")


def test_bounds_drop_what_the_member_held_of_a_sought_partition() -> None:
    limits = BufferLimits(per_partition=2, total=10, batch_size=1)
    rewound = [*_start(), _seek(6), _poll(7, 0), _poll(8, 1)]
    assert AnomalyKind.BOUNDS_EXCEEDED not in _workload(rewound, limits=limits)
    held = [*_start(), _poll(6, 0), _poll(7, 1)]  # no rewind: four held, limit two
    assert AnomalyKind.BOUNDS_EXCEEDED in _workload(held, limits=limits)


def test_exactly_once_bounds_count_aborted_outputs_as_finishing_the_hold() -> None:
    """A member holds an input until its outputs are acknowledged, committed or
    not: an aborted transaction's outputs end the hold too (its records are read
    again after the rewind). BOUNDS judged on the read_committed view alone would
    count them held for ever."""
    limits = BufferLimits(per_partition=1, total=10, batch_size=1)
    events: list[Event] = [
        _input(1, 0),
        _input(2, 1),
        Assign(seq=3, member="m0", generation=1, partitions=(("in", 0),)),
        TxnBegin(seq=4, by="m0", transactional_id="t", epoch=0),
        _poll(5, 0),
        *_output(6, 0, source=0),
        TxnEnd(
            seq=8,
            by="m0",
            transactional_id="t",
            epoch=0,
            committed=False,
            reason="abort",
            writes=(("out", 0, 0),),
        ),
        _poll(9, 1),  # @0 is no longer held (its outputs were acknowledged, then aborted)
    ]
    report = check_pipeline(
        events,
        **TOPICS,  # type: ignore[arg-type]
        group="g",
        expected_outputs=lambda _a: 1,
        final_drain=False,
        limits=limits,
        exactly_once=True,
    )
    assert AnomalyKind.BOUNDS_EXCEEDED not in report.counts(), report.summary()

"""The ExactlyOnce verdicts: a clean transactional run passes, each violation fires."""

from __future__ import annotations

from offsetledger.checker import check
from offsetledger.checker._report import AnomalyKind
from offsetledger.core import DeliveryReport, Outbound, Record, StoredPosition, TopicPartition
from offsetledger.history import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC, Event, Poll
from offsetledger.simulator import SimConsumer, SimTransactionalProducer, World

IN = TopicPartition("in", 0)
EO = (
    AnomalyKind.EO_DUPLICATE,
    AnomalyKind.EO_LOST,
    AnomalyKind.READ_UNCOMMITTED,
    AnomalyKind.COMMIT_PAST_UNCOMMITTED,
    AnomalyKind.OUTSIDE_TRANSACTION,
)


def _none(_x: object) -> None:
    return None


def _noop(_r: DeliveryReport) -> None:
    return None


def _output(record: Record) -> Outbound:
    headers = (
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
    )
    return Outbound("out", value=record.value, partition=0, headers=headers)


def _setup(n: int = 2) -> tuple[World, SimConsumer, SimTransactionalProducer, list[Record]]:
    world = World(11)
    world.create_topic("in", 1)
    world.create_topic("out", 1)
    for i in range(n):
        world.append("in", 0, value=bytes([i]))
    c = world.consumer(
        {"group.id": "g", "auto.offset.reset": "earliest", "enable.auto.commit": False}, "m"
    )
    c.subscribe(["in"], on_assign=_none, on_revoke=_none, on_lost=_none)
    records = c.poll(10, 1)
    assert len(records) == n
    p = world.transactional_producer({"transactional.id": "t"}, "p")
    p.init_transactions(5)
    return world, c, p, records


def _txn(
    c: SimConsumer, p: SimTransactionalProducer, records: list[Record], *, commit: bool = True
) -> None:
    p.begin_transaction()
    for r in records:
        p.produce(_output(r), _noop)
    p.flush(1)
    p.send_offsets_to_transaction(
        [StoredPosition(IN, records[-1].offset + 1)], c.group_metadata(), 5
    )
    if commit:
        p.commit_transaction(5)
    else:
        p.abort_transaction(5)


def _kinds(events: list[Event] | World, *, final_drain: bool = True) -> set[AnomalyKind]:
    history = events.history if isinstance(events, World) else events
    report = check(
        history, inputs=["in"], outputs=["out"], exactly_once=True, final_drain=final_drain
    )
    return {a.kind for a in report.anomalies}


def test_clean_run_with_an_abort_and_a_retry_passes() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records, commit=False)
    c.seek(StoredPosition(IN, 0))
    again = c.poll(10, 1)
    _txn(c, p, again)
    report = check(world.history, inputs=["in"], outputs=["out"], exactly_once=True)
    assert report.ok, report.anomalies


def test_duplicate_committed_outputs() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records)
    _txn(c, p, records[:1])
    assert AnomalyKind.EO_DUPLICATE in _kinds(world)


def test_lost_input() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records[:1])
    assert AnomalyKind.EO_LOST in _kinds(world)
    assert AnomalyKind.EO_LOST not in _kinds(world, final_drain=False)


def test_aborted_outputs_seen_by_a_reader() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records, commit=False)
    c.seek(StoredPosition(IN, 0))
    _txn(c, p, c.poll(10, 1))
    events = list(world.history)
    events.append(
        Poll(
            seq=events[-1].seq + 1,
            member="reader",
            generation=1,
            topic="out",
            partition=0,
            offset=0,
        )
    )
    assert AnomalyKind.READ_UNCOMMITTED in _kinds(events)


def test_plain_commit_past_uncommitted_outputs() -> None:
    world, c, p, records = _setup()
    c.commit([StoredPosition(IN, 2)])  # positions outside the transaction, before it
    _txn(c, p, records)
    assert AnomalyKind.COMMIT_PAST_UNCOMMITTED in _kinds(world)


def test_output_outside_a_transaction() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records[:1])
    plain = world.producer(name="dlq-writer")
    plain.produce(_output(records[1]), _noop)
    plain.flush(1)
    kinds = _kinds(world)
    assert AnomalyKind.OUTSIDE_TRANSACTION in kinds
    assert AnomalyKind.EO_DUPLICATE not in kinds


def test_without_exactly_once_no_eo_verdicts() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records)
    _txn(c, p, records[:1])
    report = check(world.history, inputs=["in"], outputs=["out"])
    assert not [a for a in report.anomalies if a.kind in EO]


def test_outputs_of_a_transaction_left_open_do_not_count() -> None:
    world, c, p, records = _setup()
    _txn(c, p, records[:1])
    p.begin_transaction()  # the process dies with this transaction open
    p.produce(_output(records[1]), _noop)
    p.flush(1)
    kinds = _kinds(world)
    assert AnomalyKind.EO_LOST in kinds
    assert AnomalyKind.LOST in kinds  # the at-least-once view drops them too
    assert AnomalyKind.OUTSIDE_TRANSACTION not in kinds

"""The confluent adapter's hot paths without a broker: Records built from
librdkafka messages (compared with the validating constructor), produce_many's
index mapping and refusals over a stand-in client, the assignment the rebalance
handler keeps and the store check built on it, and the value types' errors."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

ck = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer  # noqa: E402
from offsetledger.adapters.confluent._convert import (  # noqa: E402
    record_of,
    records_until_error,
)
from offsetledger.adapters.confluent._rebalance import Rebalance  # noqa: E402
from offsetledger.core import (  # noqa: E402
    BrokerError,
    BrokerErrorInfo,
    Outbound,
    PartitionNotAssignedError,
    Record,
    StoredPosition,
    TopicPartition,
)

NOWHERE = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}

# -- Records from librdkafka messages ------------------------------------------------

header_lists = st.lists(
    st.tuples(st.text(min_size=1, max_size=5), st.none() | st.binary(max_size=5)), max_size=3
)
messages = st.builds(
    lambda topic, partition, offset, key, value, headers, ts, epoch: ck.Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=headers or None,
        timestamp=ts,
        leader_epoch=epoch,
    ),
    st.text(alphabet="abc.-_", min_size=1, max_size=8),
    st.integers(0, 2**31 - 1),
    st.integers(0, 2**62),
    st.none() | st.binary(max_size=8),
    st.none() | st.binary(max_size=8),
    header_lists,
    st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 2**41)),
    st.integers(-1, 100),
)


def _expected(msg: Any) -> Record:
    ts_type, ts = msg.timestamp()
    epoch = msg.leader_epoch()
    return Record(
        msg.topic(),
        msg.partition(),
        msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=msg.headers() or (),
        timestamp_ms=ts if ts_type else None,
        leader_epoch=epoch if epoch is not None and epoch >= 0 else None,
    )


@given(st.lists(messages, max_size=6))
def test_fast_records_equal_the_validating_constructor(batch: list[Any]) -> None:
    records, stop = records_until_error(batch)
    assert stop == len(batch)
    expected = [_expected(m) for m in batch]
    assert records == expected
    assert [record_of(m) for m in batch] == expected
    for got, want in zip(records, expected, strict=True):
        assert hash(got) == hash(want)
        assert type(got.headers) is tuple


def _error_event(code: int) -> Any:
    return ck.Message(topic="t", partition=0, error=ck.KafkaError(code))


def test_records_stop_at_the_first_error_event() -> None:
    batch = [ck.Message(topic="t", partition=0, offset=i, timestamp=(0, 0)) for i in range(3)]
    batch.insert(2, _error_event(ck.KafkaError._PARTITION_EOF))
    records, stop = records_until_error(batch)
    assert stop == 2
    assert [r.offset for r in records] == [0, 1]


class FakeConsumerClient:
    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self.stored: list[list[tuple[str, int, int]]] = []
        self.assigned: set[tuple[str, int]] = set()
        self.assignment_calls = 0

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return self.batches.pop(0) if self.batches else []

    def store_offsets(self, offsets: list[Any]) -> None:
        self.stored.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def assignment(self) -> list[Any]:
        self.assignment_calls += 1
        return [ck.TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def incremental_assign(self, parts: list[Any]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in parts}

    def incremental_unassign(self, parts: list[Any]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in parts}

    def assign(self, parts: list[Any]) -> None:
        self.assigned = {(tp.topic, tp.partition) for tp in parts}

    def unassign(self) -> None:
        self.assigned = set()

    def resume(self, parts: list[Any]) -> None:
        pass

    def memberid(self) -> str:
        return "m"

    def close(self) -> None:
        pass


def _consumer(
    fake: FakeConsumerClient, config: dict[str, object] | None = None
) -> ConfluentConsumer:
    consumer = ConfluentConsumer(
        {**NOWHERE, "group.id": "g", **(config or {})}, connect_timeout=None
    )
    consumer._consumer.close()
    consumer._consumer = fake  # type: ignore[assignment]
    return consumer


def test_poll_hands_out_records_before_an_error_and_raises_it_next() -> None:
    records = [ck.Message(topic="t", partition=0, offset=i, timestamp=(1, 5)) for i in range(4)]
    fatal = _error_event(ck.KafkaError.TOPIC_AUTHORIZATION_FAILED)
    eof = _error_event(ck.KafkaError._PARTITION_EOF)
    fake = FakeConsumerClient([[records[0], eof, records[1], fatal, records[2]], [records[3]]])
    consumer = _consumer(fake)
    assert [r.offset for r in consumer.poll(10, 0)] == [0, 1]
    with pytest.raises(BrokerError, match="TOPIC_AUTHORIZATION_FAILED"):
        consumer.poll(10, 0)
    assert [r.offset for r in consumer.poll(10, 0)] == [2]  # buffered behind the error
    assert [(r.offset, r.timestamp_ms) for r in consumer.poll(10, 0)] == [(3, 5)]


# -- the kept assignment -------------------------------------------------------------


def _tps(*parts: int) -> list[Any]:
    return [ck.TopicPartition("t", p) for p in parts]


@pytest.mark.parametrize("cooperative", [True, False])
def test_rebalance_keeps_the_assignment_librdkafka_holds(cooperative: bool) -> None:
    fake = FakeConsumerClient([])
    forgotten: list[set[TopicPartition]] = []
    rebalance = Rebalance(cooperative, lambda parts: forgotten.append(set(parts)))
    seen_in_revoke: list[set[TopicPartition]] = []
    rebalance.on_revoke = lambda _parts: seen_in_revoke.append(set(rebalance.assigned))
    lost_seen: list[set[TopicPartition]] = []
    rebalance.on_lost = lambda _parts: lost_seen.append(set(rebalance.assigned))

    def held() -> set[TopicPartition]:
        return {TopicPartition(t, p) for t, p in fake.assigned}

    rebalance.assigned_cb(fake, _tps(0, 1, 2))  # type: ignore[arg-type]
    assert rebalance.assigned == held() == {TopicPartition("t", p) for p in (0, 1, 2)}
    if cooperative:
        rebalance.revoked_cb(fake, _tps(1))  # type: ignore[arg-type]
        # inside on_revoke the partition is still assigned (a final store/commit works)
        assert TopicPartition("t", 1) in seen_in_revoke[-1]
        assert rebalance.assigned == held() == {TopicPartition("t", 0), TopicPartition("t", 2)}
        rebalance.lost_cb(fake, _tps(2))  # type: ignore[arg-type]
        assert TopicPartition("t", 2) not in lost_seen[-1]  # gone before on_lost runs
        assert rebalance.assigned == held() == {TopicPartition("t", 0)}
    else:
        rebalance.revoked_cb(fake, _tps(0, 1, 2))  # type: ignore[arg-type]
        assert rebalance.assigned == held() == set()
    assert forgotten  # every event drops what the consumer kept for those partitions


def test_store_uses_the_kept_assignment_and_confirms_a_miss_with_librdkafka() -> None:
    fake = FakeConsumerClient([])
    consumer = _consumer(fake, {"partition.assignment.strategy": "cooperative-sticky"})
    consumer._rebalance.assigned_cb(fake, _tps(0, 1))  # type: ignore[arg-type]
    t0, t1, t2 = (TopicPartition("t", p) for p in range(3))
    consumer.store([StoredPosition(t0, 5), StoredPosition(t1, 6)])
    assert fake.assignment_calls == 0  # no librdkafka round trip for assigned partitions
    assert fake.stored == [[("t", 0, 5), ("t", 1, 6)]]  # positions as given: no +1
    with pytest.raises(PartitionNotAssignedError, match=r"t\[2\].*t\[0\] were stored"):
        consumer.store([StoredPosition(t0, 7), StoredPosition(t2, 1)])
    assert fake.stored[-1] == [("t", 0, 7)]
    assert fake.assignment_calls == 1
    # assigned behind the adapter's back: librdkafka holds it, so it is stored
    fake.assigned.add(("t", 2))
    consumer.store([StoredPosition(t2, 3)])
    assert fake.stored[-1] == [("t", 2, 3)]
    consumer._rebalance.revoked_cb(fake, _tps(1))  # type: ignore[arg-type]
    with pytest.raises(PartitionNotAssignedError, match=r"t\[1\]"):
        consumer.store([StoredPosition(t1, 9)])
    with pytest.raises(PartitionNotAssignedError, match=r"pause t\[1\]"):
        consumer.pause([t1])


# -- produce_many over a stand-in client ----------------------------------------------


class FakeProducerClient:
    """produce() keeps (message, callback) or raises what ``refuse`` says for that
    call number; poll() delivers what ``outcome`` says (None: success)."""

    def __init__(
        self,
        refuse: Callable[[int], BaseException | None] = lambda _n: None,
        outcome: Callable[[bytes], Any] = lambda _v: None,
    ) -> None:
        self.refuse = refuse
        self.outcome = outcome
        self.calls = 0
        self.queued: list[tuple[dict[str, Any], Callable[[Any, Any], None]]] = []

    def produce(  # noqa: PLR0917 - librdkafka's positional signature
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self.calls += 1
        refused = self.refuse(self.calls)
        if refused is not None:
            raise refused
        assert on_delivery is not None
        sent = {"topic": topic, "value": value, "key": key, "partition": partition}
        self.queued.append(({**sent, "headers": headers}, on_delivery))

    def poll(self, _timeout: float = 0) -> int:
        queued, self.queued = self.queued, []
        for sent, callback in queued:
            msg = ck.Message(topic=sent["topic"], partition=0, offset=1, value=sent["value"])
            callback(self.outcome(sent["value"]), msg)
        return len(queued)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


@functools.cache
def _template() -> ConfluentProducer:
    """One real ConfluentProducer (its librdkafka client never used): the others
    copy its state, so a generated example does not start a client."""
    return ConfluentProducer(NOWHERE, connect_timeout=None)


def _producer(fake: FakeProducerClient, queue_full_timeout: float = 30.0) -> ConfluentProducer:
    producer: ConfluentProducer = object.__new__(ConfluentProducer)
    producer.__dict__.update(_template().__dict__)
    producer._local = deque()
    producer._valid_topics = set()
    producer._fatal = None
    producer._queue_full_timeout = queue_full_timeout
    producer._producer = fake  # type: ignore[assignment]
    producer._produce = fake.produce
    return producer


@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(1, 40))
def test_produce_many_reports_each_index_once_with_its_own_outcome(
    fails: list[bool], chunk: int
) -> None:
    """Message i fails iff fails[i]; every report names its own index."""
    timed_out = ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT)
    fake = FakeProducerClient(outcome=lambda v: timed_out if v.startswith(b"F") else None)
    producer = _producer(fake)
    values = [(b"F%d" if f else b"v%d") % i for i, f in enumerate(fails)]
    messages = [Outbound("t", value=v) for v in values]
    got: dict[int, BrokerErrorInfo | None] = {}

    def on_report_from(base: int) -> Callable[[int, BrokerErrorInfo | None], None]:
        def on_report(i: int, error: BrokerErrorInfo | None) -> None:
            assert base + i not in got, f"message {base + i} reported twice"
            got[base + i] = error

        return on_report

    for base in range(0, len(messages), chunk):
        producer.produce_many(messages[base : base + chunk], on_report_from(base))
    assert got == {}  # reports come from poll/flush
    producer.flush(1)
    assert sorted(got) == list(range(len(fails)))
    for i, failed in enumerate(fails):
        error = got[i]
        if failed:
            assert error is not None, i
            assert error.name == "_MSG_TIMED_OUT", (i, error)
        else:
            assert error is None, (i, error)
    assert [s["value"] for s, _ in fake.queued] == []  # all served


def test_produce_many_refusals_are_reported_at_once_and_the_rest_produced() -> None:
    too_large = ck.KafkaException(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE))
    fake = FakeProducerClient(refuse=lambda n: too_large if n == 2 else None)
    producer = _producer(fake)
    calls: list[tuple[int, BrokerErrorInfo | None]] = []
    extra = (("src", b"1"),)
    producer.produce_many(
        [
            Outbound("t", value=b"0", headers=[("own", b"o")]),
            Outbound("t", value=b"1"),
            Outbound("bad topic", value=b"2"),
            Outbound("t", value=b"3", partition=2),
        ],
        lambda i, e: calls.append((i, e)),
        [extra, extra, extra, ()],
    )
    assert [(i, e.name if e else None, e.retriable if e else None) for i, e in calls] == [
        (1, "MSG_SIZE_TOO_LARGE", False),
        (2, "INVALID_TOPIC_EXCEPTION", False),
    ]
    sent = [s for s, _ in fake.queued]
    assert [(s["value"], s["headers"], s["partition"]) for s in sent] == [
        (b"0", [("own", b"o"), ("src", b"1")], -1),
        (b"3", None, 2),
    ]
    producer.flush(1)
    assert [i for i, e in calls[2:]] == [0, 3]
    assert all(e is None for _, e in calls[2:])


def test_produce_many_waits_out_a_full_queue_then_produces() -> None:
    fake = FakeProducerClient(refuse=lambda n: BufferError("full") if n in (2, 3) else None)
    producer = _producer(fake, queue_full_timeout=5.0)
    calls: list[tuple[int, BrokerErrorInfo | None]] = []
    producer.produce_many(
        [Outbound("t", value=b"%d" % i) for i in range(3)], lambda i, e: calls.append((i, e))
    )
    # message 0 was served by the poll that waited for the queue; 1 and 2 were produced
    assert calls == [(0, None)]
    producer.flush(1)
    assert calls == [(0, None), (1, None), (2, None)]


def test_produce_many_raises_a_fatal_error_before_producing() -> None:
    fake = FakeProducerClient()
    producer = _producer(fake)
    producer._fatal = BrokerError("_FATAL", "fenced")
    with pytest.raises(BrokerError, match="fenced"):
        producer.produce_many([Outbound("t", value=b"x")], lambda i, e: None)
    assert fake.calls == 0


def test_produce_waits_out_a_full_queue_then_raises_queue_full() -> None:
    fake = FakeProducerClient(refuse=lambda _n: BufferError("full"))
    producer = _producer(fake, queue_full_timeout=0.1)
    with pytest.raises(BrokerError, match="_QUEUE_FULL") as info:
        producer.produce(Outbound("t", value=b"x"), lambda _r: None)
    assert info.value.retriable
    assert fake.calls > 1


# -- value types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"partition": "1"}, TypeError, "partition"),
        ({"partition": -1}, ValueError, "partition"),
        ({"value": "text"}, TypeError, "value"),
        ({"key": 5}, TypeError, "key"),
        ({"topic": ""}, ValueError, "topic"),
        ({"headers": [("h", 1)]}, TypeError, "header 'h'"),
    ],
)
def test_outbound_errors_name_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        Outbound(**{"topic": "t", **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"offset": "1"}, TypeError, "offset"),
        ({"offset": None}, TypeError, "offset"),
        ({"partition": 1.5}, TypeError, "partition"),
        ({"offset": -2}, ValueError, "offset"),
        ({"value": bytearray(b"x")}, TypeError, "value"),
    ],
)
def test_record_errors_name_the_field(
    kwargs: dict[str, Any], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        Record(**{"topic": "t", "partition": 0, "offset": 0, **kwargs})


def test_outbound_accepts_subclasses_and_converts_headers() -> None:
    class Name(str):
        pass

    out = Outbound(Name("t"), value=b"v", headers={"a": b"1"}, partition=0)
    assert out.headers == (("a", b"1"),)
    assert out == Outbound("t", b"v", None, [("a", b"1")], 0)

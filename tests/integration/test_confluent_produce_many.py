"""``ConfluentProducer.produce_many`` on a real broker: order, one report per
message at its own index, failures (client-side and broker-side too large, an
unknown topic, a full local queue), extra headers, and the store check that uses
the assignment the adapter keeps."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
else:
    pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
from offsetledger.adapters.confluent_admin import create_topics, read_topic
from offsetledger.core import (
    BrokerErrorInfo,
    Outbound,
    PartitionNotAssignedError,
    StoredPosition,
    TopicPartition,
)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Callable[..., str]:
    def make(partitions: int = 1, **config: str) -> str:
        name = _name("many")
        create_topics(kafka_bootstrap, {name: partitions}, config=config)
        return name

    return make


class Reports:
    """Every on_report call, in order; ``by_index`` fails on a second report."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, BrokerErrorInfo | None]] = []

    def __call__(self, index: int, error: BrokerErrorInfo | None) -> None:
        self.calls.append((index, error))

    def by_index(self) -> dict[int, BrokerErrorInfo | None]:
        out: dict[int, BrokerErrorInfo | None] = {}
        for index, error in self.calls:
            assert index not in out, f"message {index} reported twice: {self.calls}"
            out[index] = error
        return out


@pytest.mark.kafka
def test_produce_many_in_order_one_success_report_per_index(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(1)
    producer = ConfluentProducer({"bootstrap.servers": kafka_bootstrap})
    messages = [Outbound(topic, value=b"v%03d" % i, key=b"k%d" % (i % 3)) for i in range(60)]
    reports = Reports()
    producer.produce_many(messages[:25], reports)
    producer.produce_many(messages[25:], lambda i, e: reports(i + 25, e))
    assert producer.flush(30) == 0
    assert reports.by_index() == dict.fromkeys(range(60))
    got = read_topic(kafka_bootstrap, topic)
    assert [r.value for r in got] == [m.value for m in messages]
    assert [r.offset for r in got] == list(range(60))
    assert [r.key for r in got] == [m.key for m in messages]


@pytest.mark.kafka
def test_produce_many_reports_each_failure_at_its_own_index(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(2)
    small = topic_factory(1, **{"max.message.bytes": "1000"})
    producer = ConfluentProducer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "allow.auto.create.topics": False,
            "topic.metadata.propagation.max.ms": 1000,
            "message.max.bytes": 100_000,
        }
    )
    messages = [
        Outbound(topic, value=b"a", partition=0),  # 0 ok
        Outbound(small, value=b"x" * 5000),  # 1 the broker refuses it (topic limit)
        Outbound(topic, value=b"b", partition=1),  # 2 ok
        Outbound(topic, value=b"x" * 200_000),  # 3 over message.max.bytes: refused at once
        Outbound(_name("absent"), value=b"c"),  # 4 unknown topic
        Outbound("not a topic!", value=b"d"),  # 5 an invalid name: refused at once
        Outbound(topic, value=b"e", partition=9),  # 6 unknown partition
        Outbound(topic, value=b"f", partition=0),  # 7 ok
    ]
    reports = Reports()
    producer.produce_many(messages, reports)
    refused_at_once = {i for i, _ in reports.calls}
    assert {3, 5} <= refused_at_once, reports.calls
    assert producer.flush(30) == 0
    by_index = reports.by_index()
    assert sorted(by_index) == list(range(8))
    assert sorted(i for i, e in by_index.items() if e is None) == [0, 2, 7]
    expected = {
        1: "MSG_SIZE_TOO_LARGE",
        3: "MSG_SIZE_TOO_LARGE",
        4: "UNKNOWN_TOPIC_OR_PART",
        5: "INVALID_TOPIC_EXCEPTION",
        6: "_UNKNOWN_PARTITION",
    }
    for index, name in expected.items():
        error = by_index[index]
        assert error is not None, index
        assert error.name == name, (index, error)
        assert not error.retriable, (index, error)
    got = read_topic(kafka_bootstrap, topic)
    assert sorted(r.value or b"" for r in got) == [b"a", b"b", b"f"]


@pytest.mark.kafka
def test_produce_many_sends_extra_headers_after_the_message_headers(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(1)
    producer = ConfluentProducer({"bootstrap.servers": kafka_bootstrap})
    shared = (("src.offset", b"7"),)
    messages = [
        Outbound(topic, value=b"0"),
        Outbound(topic, value=b"1", headers=[("own", b"x")]),
        Outbound(topic, value=b"2", headers=[("own", b"y")]),
        Outbound(topic, value=b"3"),
    ]
    extra = [shared, shared, (), (("src.offset", b"9"), ("other", None))]
    reports = Reports()
    producer.produce_many(messages, reports, extra)
    assert producer.flush(30) == 0
    assert reports.by_index() == dict.fromkeys(range(4))
    got = read_topic(kafka_bootstrap, topic)
    assert [r.headers for r in got] == [
        (("src.offset", b"7"),),
        (("own", b"x"), ("src.offset", b"7")),
        (("own", b"y"),),
        (("src.offset", b"9"), ("other", None)),
    ]
    assert messages[1].headers == (("own", b"x"),)  # the message itself is unchanged


def test_produce_many_full_queue_is_reported_retriable_and_the_rest_still_tried() -> None:
    # no broker: nothing drains librdkafka's queue of 3 messages
    producer = ConfluentProducer(
        {"bootstrap.servers": "127.0.0.1:9", "queue.buffering.max.messages": 3, "log_level": 0},
        connect_timeout=None,
        queue_full_timeout=0.3,
    )
    reports = Reports()
    started = time.monotonic()
    producer.produce_many([Outbound("t", value=b"%d" % i) for i in range(6)], reports)
    waited = time.monotonic() - started
    by_index = reports.by_index()
    assert sorted(by_index) == [3, 4, 5]  # 0-2 queued, the rest refused during the call
    for error in by_index.values():
        assert error is not None
        assert error.name == "_QUEUE_FULL"
        assert error.retriable
    assert waited < 5  # waited once (0.3 s), not once per message
    producer.client.purge()
    producer.flush(1)


@pytest.mark.kafka
def test_store_checks_the_kept_assignment_and_refuses_a_revoked_partition(
    kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory(2)
    group = _name("g")
    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    assigned: list[TopicPartition] = []
    consumer.subscribe(
        [topic], on_assign=assigned.extend, on_revoke=lambda _p: None, on_lost=lambda _p: None
    )
    deadline = time.monotonic() + 30
    while len(assigned) < 2:
        assert time.monotonic() < deadline
        consumer.poll(10, 0.2)
    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    consumer.store([StoredPosition(tp0, 0), StoredPosition(tp1, 0)])
    # a second member takes one partition: the first is told to revoke it
    other = ConfluentConsumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    other_assigned: list[TopicPartition] = []
    other.subscribe(
        [topic],
        on_assign=other_assigned.extend,
        on_revoke=lambda _p: None,
        on_lost=lambda _p: None,
    )
    try:
        deadline = time.monotonic() + 60
        while not other_assigned:
            assert time.monotonic() < deadline
            consumer.poll(10, 0.1)
            other.poll(10, 0.1)
        (moved,) = other_assigned
        kept = tp1 if moved == tp0 else tp0
        with pytest.raises(PartitionNotAssignedError, match=str(moved).replace("[", r"\[")):
            consumer.store([StoredPosition(moved, 1), StoredPosition(kept, 1)])
        assert consumer.assignment() == {kept}
        consumer.store([StoredPosition(kept, 2)])  # the one it kept still stores
    finally:
        other.close()
        consumer.close()

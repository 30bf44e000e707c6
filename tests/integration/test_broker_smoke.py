"""Smoke test: the kafka_bootstrap broker really creates topics, stores and serves messages,
for both the classic and the KIP-848 ("consumer") group protocol."""

from __future__ import annotations

import os
import time
import uuid

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
else:
    pytest.importorskip("confluent_kafka")

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # confluent_kafka.admin does not re-export it for mypy

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("group_protocol", ["classic", "consumer"])
def test_produce_consume_roundtrip(kafka_bootstrap: str, group_protocol: str) -> None:
    topic = f"smoke-{group_protocol}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for fut in admin.create_topics(
        [NewTopic(topic, num_partitions=2, replication_factor=1)]
    ).values():
        fut.result(30)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    sent = [f"value-{i}".encode() for i in range(10)]
    for i, value in enumerate(sent):
        producer.produce(topic, key=str(i).encode(), value=value)
    assert producer.flush(30) == 0

    group = f"smoke-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "group.protocol": group_protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            payload = msg.value()
            assert isinstance(payload, bytes)
            got.append(payload)
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(2)], timeout=30)
    finally:
        consumer.close()

    assert sorted(got) == sorted(sent)
    assert sum(tp.offset for tp in committed) == len(sent)

    if group_protocol == "consumer":  # the broker really ran a KIP-848 group
        desc = admin.describe_consumer_groups([group])[group].result(30)
        group_type = getattr(desc, "type", None)
        if group_type is not None:
            assert group_type.name == "CONSUMER"

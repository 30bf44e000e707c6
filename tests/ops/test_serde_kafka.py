"""with_serde with confluent-kafka's JSON Schema serde on the real broker.

There is no Schema Registry here: the serializer uses confluent-kafka's own
in-memory registry client (``SchemaRegistryClient.new_client({"url": "mock://"})``),
and the deserializer is given the schema (``JSONDeserializer(schema)``), so the
wire format (magic byte, schema id, JSON) is the real one and only the registry
lookups stay in the process."""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
    import jsonschema  # type: ignore[import-untyped]  # noqa: F401
else:
    pytest.importorskip("confluent_kafka")
    pytest.importorskip("jsonschema", reason="confluent-kafka[json] is not installed")

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
from offsetledger.adapters.confluent_admin import create_topics, read_topic
from offsetledger.core import DeliveryReport, Outbound
from offsetledger.history import ERROR_HEADER
from offsetledger.runtime import (
    ATTEMPTS_HEADER,
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    RetryPolicy,
    SystemClock,
    ThreadPoolExecutorAdapter,
)
from offsetledger.serde import Decoded, Message, with_serde

pytestmark = pytest.mark.kafka

SCHEMA = json.dumps(
    {
        "title": "Order",
        "type": "object",
        "properties": {"id": {"type": "integer"}, "qty": {"type": "integer", "minimum": 1}},
        "required": ["id", "qty"],
    }
)


def test_json_schema_serde_poison_records_dead_lettered(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    source, sink, dlq = (f"serde-{n}-{suffix}" for n in ("in", "out", "dlq"))
    create_topics(kafka_bootstrap, {source: 2, sink: 2, dlq: 1})
    registry = SchemaRegistryClient.new_client({"url": "mock://"})
    serializer = JSONSerializer(SCHEMA, registry)
    deserializer = JSONDeserializer(SCHEMA)

    def ctx(topic: str) -> Any:
        return SerializationContext(topic, MessageField.VALUE)

    good = [serializer({"id": i, "qty": i + 1}, ctx(source)) for i in range(20)]
    poison = [b"plain text", good[0][:5] + b'{"id": 99, "qty": 0}']  # no frame; qty < 1
    producer = ConfluentProducer({"bootstrap.servers": kafka_bootstrap})
    reports: list[DeliveryReport] = []
    for i, value in enumerate([*good[:10], *poison, *good[10:]]):
        producer.produce(Outbound(source, value=value, partition=i % 2), reports.append)
    assert producer.flush(30) == 0
    assert all(r.ok for r in reports), [r.error for r in reports if not r.ok]

    def double(rec: Decoded) -> list[Message]:
        return [Message(sink, value={"id": rec.value["id"], "qty": 2 * rec.value["qty"]})]

    metrics = InMemoryMetrics()
    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic=dlq,
        retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.1),
    )
    processor = Processor(
        ConfluentConsumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"serde-{suffix}",
                "auto.offset.reset": "earliest",
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
            }
        ),
        ConfluentProducer({"bootstrap.servers": kafka_bootstrap}),
        with_serde(double, value_deserializer=deserializer, value_serializer=serializer),
        topics=[source],
        executor=ThreadPoolExecutorAdapter(4),
        clock=SystemClock(),
        config=config,
        metrics=metrics,
    )
    deadline = time.monotonic() + 60
    try:
        while metrics.count("records_done") < 22:
            assert time.monotonic() < deadline, "22 records not done within 60 s"
            processor.step()
    finally:
        processor.stop()

    outputs = sorted(
        (deserializer(r.value, ctx(sink)) for r in read_topic(kafka_bootstrap, sink)),
        key=lambda v: v["id"],
    )
    assert outputs == [{"id": i, "qty": 2 * (i + 1)} for i in range(20)]
    dead = read_topic(kafka_bootstrap, dlq)
    assert sorted(r.value or b"" for r in dead) == sorted(poison)
    for record in dead:
        assert record.header(ATTEMPTS_HEADER) == b"1", "poison records are not retried"
        error = (record.header(ERROR_HEADER) or b"").decode()
        assert "DeserializationError: value of " in error, error
    reasons = sorted((r.header(ERROR_HEADER) or b"").decode() for r in dead)
    assert any("Invalid magic byte" in r for r in reasons), reasons
    assert any("0 is less than the minimum of 1" in r for r in reasons), reasons
    assert metrics.count("retries") == 0

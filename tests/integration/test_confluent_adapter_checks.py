"""The confluent-kafka adapter's construction-time checks and its error reporting:
topic names Kafka can never accept, malformed bootstrap addresses, unresolvable
hosts, raw confluent_kafka clients, connection failures logged once, and
auto-commit failures observed (the last one on a real broker)."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka
else:
    confluent_kafka = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import (
    ConfluentConsumer,
    ConfluentProducer,
    reject_raw_client,
    validate_bootstrap_servers,
    validate_topic_name,
)
from offsetledger.adapters.confluent_admin import create_topics
from offsetledger.core import (
    BrokerError,
    ConfigError,
    DeliveryReport,
    Outbound,
    StoredPosition,
    TopicPartition,
)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "name", ["orders", "a.b_c-D9", "x" * 249, "__consumer_offsets", "-dash-first"]
)
def test_valid_topic_names_pass(name: str) -> None:
    assert validate_topic_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bad dlq!#", "can never exist"),
        ("", "empty"),
        (".", "not allowed"),
        ("..", "not allowed"),
        ("x" * 250, "at most 249"),
        ("tëst", "can never exist"),
        (None, "must be a str"),
    ],
)
def test_invalid_topic_names_are_a_clear_error(name: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        validate_topic_name(name, "dead-letter topic")


def test_invalid_topic_name_message_names_role_and_characters() -> None:
    with pytest.raises(ValueError, match=r"dead-letter topic name 'bad dlq!#'.*'!'"):
        validate_topic_name("bad dlq!#", "dead-letter topic")


def test_produce_to_an_impossible_topic_is_a_failed_report_not_a_wait() -> None:
    producer = ConfluentProducer(
        {"bootstrap.servers": f"127.0.0.1:{_closed_port()}"}, connect_timeout=None
    )
    reports: list[DeliveryReport] = []
    producer.produce(Outbound("bad dlq!#", value=b"x"), reports.append)
    # poll() counts every event it served: librdkafka's connection-refused error
    # events may be among them, so only "at least the report" is certain
    assert producer.poll(0) >= 1
    (report,) = reports
    assert report.error is not None
    assert report.error.name == "INVALID_TOPIC_EXCEPTION"
    assert not report.error.retriable
    assert "can never exist" in report.error.message
    assert producer.flush(0) == 0


def test_subscribe_to_an_impossible_topic_raises() -> None:
    consumer = ConfluentConsumer(
        {"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "group.id": "g"},
        connect_timeout=None,
    )
    try:
        with pytest.raises(ValueError, match="can never exist"):
            consumer.subscribe(["ok", "bad dlq!#"], on_assign=print, on_revoke=print, on_lost=print)
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("servers", "why"),
    [
        ("127.0.0.1:abc", "'abc' is not a number"),
        ("127.0.0.1:0", "between 1 and 65535"),
        ("127.0.0.1:70000", "between 1 and 65535"),
        (":9092", "no host"),
        ("a:1,,b:2", "empty entry"),
        ("[::1]x", "ipv6"),
        ("", "required"),
    ],
)
@pytest.mark.parametrize("client", ["consumer", "producer"])
def test_malformed_bootstrap_is_a_config_error_at_construction(
    servers: str, why: str, client: str
) -> None:
    config: dict[str, object] = {"bootstrap.servers": servers}
    make = (
        (lambda: ConfluentConsumer({**config, "group.id": "g"}))
        if client == "consumer"
        else (lambda: ConfluentProducer(config))
    )
    with pytest.raises(ConfigError, match=why) as info:
        make()
    assert info.value.key == "bootstrap.servers"


@pytest.mark.parametrize(
    "servers",
    ["127.0.0.1:9092", "localhost", "PLAINTEXT://h1:9092,SSL://h2:9093", "[::1]:9092", "::1"],
)
def test_wellformed_bootstrap_lists_pass(servers: str) -> None:
    assert len(validate_bootstrap_servers(servers)) == servers.count(",") + 1


def test_unresolvable_host_is_reported_as_resolve() -> None:
    host = f"no-such-host-{uuid.uuid4().hex[:8]}.invalid"
    with pytest.raises(BrokerError) as info:
        ConfluentConsumer(
            {"bootstrap.servers": f"{host}:9092", "group.id": "g"}, connect_timeout=1.0
        )
    assert info.value.name == "_RESOLVE"
    assert host in str(info.value)
    assert "does not resolve" in str(info.value)


def test_a_raw_confluent_client_is_a_type_error_naming_the_port() -> None:
    raw = confluent_kafka.Consumer(
        {"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "group.id": "g"}
    )
    try:
        with pytest.raises(TypeError, match=r"raw confluent_kafka.*ConfluentConsumer"):
            reject_raw_client(raw, "consumer")
    finally:
        raw.close()
    producer = confluent_kafka.Producer({"bootstrap.servers": f"127.0.0.1:{_closed_port()}"})
    with pytest.raises(TypeError, match="ConfluentProducer"):
        reject_raw_client(producer, "producer")
    reject_raw_client(object(), "consumer")  # anything else is left to the port's checks


def test_each_connection_failure_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="offsetledger")
    consumer = ConfluentConsumer(
        {"bootstrap.servers": f"127.0.0.1:{_closed_port()}", "group.id": "g"},
        connect_timeout=None,
    )
    try:
        consumer.subscribe(["t"], on_assign=print, on_revoke=print, on_lost=print)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            "Connect to" in r.getMessage() for r in caplog.records
        ):
            consumer.poll(10, 0.2)
    finally:
        consumer.close()
    failures = [
        r for r in caplog.records if "Connect to" in r.getMessage() and r.levelno >= logging.INFO
    ]
    assert failures, "no connection failure was logged"
    # one line per failure: the adapter's (with a hint), not librdkafka's FAIL line too
    assert all(r.name == "offsetledger.adapters.confluent" for r in failures), [
        (r.name, r.getMessage()[:80]) for r in failures
    ]


@pytest.mark.kafka
def test_auto_commit_failures_are_counted_and_logged(
    kafka_bootstrap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Metadata above the broker's offset.metadata.max.bytes (4096): every
    auto-commit fails; before, nothing saw it (no log line, no counter)."""
    caplog.set_level(logging.WARNING, logger="offsetledger.adapters.confluent")
    topic = f"autocommit-{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, {topic: 1})
    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:10]}",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
        }
    )
    tp = TopicPartition(topic, 0)
    owned: list[TopicPartition] = []
    try:
        consumer.subscribe([topic], on_assign=owned.extend, on_revoke=print, on_lost=print)
        deadline = time.monotonic() + 30
        while not owned:
            assert time.monotonic() < deadline, "never assigned"
            consumer.poll(10, 0.2)
        consumer.store([StoredPosition(tp, 0, metadata="m" * 5000)])
        while consumer.commit_failures == 0:
            assert time.monotonic() < deadline, "no auto-commit result was observed"
            consumer.poll(10, 0.2)
    finally:
        consumer.close()
    assert consumer.last_commit_error is not None
    assert consumer.last_commit_error.name == "OFFSET_METADATA_TOO_LARGE"
    assert any("commit failed" in r.getMessage() for r in caplog.records)

"""The health monitor beside a Processor running on the real broker in its own
thread, read from the test's thread as a probe would: a handler that hangs makes
it bad, releasing the handler makes it ok again."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
else:
    pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
from offsetledger.adapters.confluent_admin import create_topics
from offsetledger.core import DeliveryReport, Outbound, Record, TopicPartition
from offsetledger.health import HealthMonitor
from offsetledger.runtime import (
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    SystemClock,
    ThreadPoolExecutorAdapter,
)

pytestmark = pytest.mark.kafka


def _eventually(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


def test_a_hung_handler_on_the_real_broker_turns_health_bad_then_ok(kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:10]
    source, sink = f"health-in-{suffix}", f"health-out-{suffix}"
    create_topics(kafka_bootstrap, {source: 2, sink: 2})
    release = threading.Event()

    def handler(record: Record) -> list[Outbound]:
        if record.value == b"hang":
            release.wait(60)
        return [Outbound(sink, value=record.value)]

    clock = SystemClock()
    inner = InMemoryMetrics()
    monitor = HealthMonitor(inner, clock=clock, stuck_after=1.0)
    processor = Processor(
        ConfluentConsumer(
            {
                "bootstrap.servers": kafka_bootstrap,
                "group.id": f"health-{suffix}",
                "auto.offset.reset": "earliest",
                "enable.auto.offset.store": False,
                "enable.auto.commit": True,
            }
        ),
        ConfluentProducer({"bootstrap.servers": kafka_bootstrap}),
        handler,
        topics=[source],
        executor=ThreadPoolExecutorAdapter(4),
        clock=clock,
        config=ProcessorConfig(poll_timeout=0.05),
        metrics=monitor,
    )
    monitor.attach(processor.ledger)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            processor.run()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"health-{suffix}", daemon=True)
    thread.start()
    producer = ConfluentProducer({"bootstrap.servers": kafka_bootstrap})
    reports: list[DeliveryReport] = []
    try:
        for i, value in enumerate([b"a", b"b", b"hang", b"c"]):
            producer.produce(Outbound(source, value=value, partition=i % 2), reports.append)
        assert producer.flush(30) == 0
        hung = TopicPartition(source, 0)  # "hang" is the second record of partition 0
        _eventually(lambda: not monitor.health().ok, "health to turn bad")
        _eventually(
            lambda: (
                hung in monitor.health().partitions and not monitor.health().partitions[hung].ok
            ),
            "the hung partition to be named",
        )
        status = monitor.health()
        assert any(f"{hung}: work in flight and no progress" in r for r in status.reasons)
        assert status.partitions[TopicPartition(source, 1)].ok, status
        release.set()
        _eventually(lambda: inner.count("records_done") == 4, "the four records done")
        _eventually(lambda: monitor.health().ok, "health to be ok again")
    finally:
        release.set()
        processor.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert not errors, errors

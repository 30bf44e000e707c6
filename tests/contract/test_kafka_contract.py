"""The contract suite run against a real Apache Kafka broker through the
confluent-kafka adapter (classic group protocol, as the base tests configure
classic assignors).

What only the real broker exercises: the simulator implements the ports
directly, so the adapter's own mappings are tested *only* here and in
tests/integration/ (which skip without a broker; CI always has one):

* the position rule: ``store_offsets(offsets=[tp])`` stores the position as given
  while ``store_offsets(message=m)`` would add 1 (the adapter's "+1" knowledge) —
  here and in test_confluent_adapter.py (positions, epochs, metadata);
* the rebalance mapping: librdkafka's assign/revoke/lost events onto on_assign,
  on_revoke (partitions still assigned, a final commit works) and on_lost (already
  unassigned), incremental vs eager, KIP-848 — here and in
  test_confluent_adapter.py (callbacks, max.poll.interval, and close() with a
  rebalance event still queued);
* auto-commit results (librdkafka's commit callback), construction-time checks,
  error names and hints — test_confluent_adapter_checks.py;
* crashes, zombies and broker restarts end to end — test_chaos.py.

A bug in any of these passes every simulator-only test."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
else:
    pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import (
    ConfluentConsumer,
    ConfluentProducer,
    ConfluentTransactionalProducer,
)
from offsetledger.adapters.confluent_admin import committed_positions, create_topics
from offsetledger.core import (
    CommittedPosition,
    ConfigError,
    ConsumerPort,
    DeliveryReport,
    Outbound,
    ProducerPort,
    TopicPartition,
)
from tests.contract.base import ConsumerContract
from tests.contract.harness import Harness
from tests.contract.txn_base import TransactionalContract

pytestmark = pytest.mark.kafka

#: advance() sleeps for real; a contract test asking for more is a test bug here
MAX_ADVANCE_SECONDS = 5.0


class KafkaHarness:
    """The contract :class:`~tests.contract.harness.Harness` over a real broker."""

    name = "kafka"
    poll_timeout = 0.2
    max_attempts = 150  # x poll_timeout per consumer: generous for group joins

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._consumers: list[ConfluentConsumer] = []

    def unique(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def create_topic(self, name: str, partitions: int) -> None:
        create_topics(self.bootstrap, {name: partitions})

    def produce_inputs(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[int]:
        producer = ConfluentProducer({"bootstrap.servers": self.bootstrap})
        reports: list[DeliveryReport] = []
        for key, value in records:
            producer.produce(Outbound(topic, value, key=key, partition=partition), reports.append)
        assert producer.flush(30) == 0, "inputs not delivered within 30 s"
        failed = [str(r.error) for r in reports if not r.ok]
        assert not failed, failed
        return [r.offset for r in reports if r.offset is not None]

    def advance(self, seconds: float) -> None:
        assert seconds <= MAX_ADVANCE_SECONDS, f"advance({seconds}) would sleep too long"
        time.sleep(seconds)

    def committed(self, group: str, topic: str, partition: int) -> CommittedPosition:
        return committed_positions(self.bootstrap, group, topic)[TopicPartition(topic, partition)]

    def consumer(self, config: dict[str, object], member: str) -> ConsumerPort:
        merged: dict[str, object] = {"bootstrap.servers": self.bootstrap, "client.id": member}
        merged.update(config)
        consumer = ConfluentConsumer(merged)
        self._consumers.append(consumer)
        return consumer

    def producer(
        self, config: dict[str, object] | None = None, name: str = "producer"
    ) -> ProducerPort:
        merged: dict[str, object] = {"bootstrap.servers": self.bootstrap, "client.id": name}
        merged.update(config or {})
        return ConfluentProducer(merged)

    def transactional_producer(self, config: dict[str, object], name: str) -> object:
        merged: dict[str, object] = {"bootstrap.servers": self.bootstrap, "client.id": name}
        merged.update(config)
        return ConfluentTransactionalProducer(merged)

    def describe(self) -> str:
        return f"kafka at {self.bootstrap}"

    def close(self) -> None:
        """Close every consumer a test left open (close is idempotent)."""
        for consumer in self._consumers:
            consumer.close()


@pytest.fixture
def harness(kafka_bootstrap: str) -> Iterator[KafkaHarness]:
    h = KafkaHarness(kafka_bootstrap)
    try:
        yield h
    finally:
        h.close()


class TestKafkaContract(ConsumerContract):
    """A real broker through the adapter honours the contract."""

    def test_kafka_is_a_harness(self, harness: Harness) -> None:
        assert isinstance(harness, KafkaHarness)
        assert harness.describe().startswith("kafka at ")


class Kip848Harness(KafkaHarness):
    """The same broker with the KIP-848 ``consumer`` group protocol."""

    def consumer(self, config: dict[str, object], member: str) -> ConsumerPort:
        return super().consumer({"group.protocol": "consumer", **config}, member)

    def describe(self) -> str:
        return f"kafka (group.protocol=consumer) at {self.bootstrap}"


class TestKafkaKip848Contract(ConsumerContract):
    """The contract with ``group.protocol=consumer``: incremental rebalances, no
    client-side assignors."""

    @pytest.fixture
    def harness(self, kafka_bootstrap: str) -> Iterator[KafkaHarness]:
        h = Kip848Harness(kafka_bootstrap)
        try:
            yield h
        finally:
            h.close()

    @pytest.mark.xfail(
        strict=True,
        raises=ConfigError,
        reason="KIP-848: partition.assignment.strategy is rejected with group.protocol=consumer "
        "(the broker assigns, incrementally); there is no eager rebalance to observe",
    )
    def test_eager_rebalance_revokes_before_assigning(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        super().test_eager_rebalance_revokes_before_assigning(harness, topic, group)


class TestKafkaTransactionalContract(TransactionalContract):
    """Transactions on the real broker through ConfluentTransactionalProducer."""

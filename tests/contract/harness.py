"""The Harness protocol the contract suite needs, and polling helpers.

A harness wraps one implementation of the ports (the simulator, or a real broker
through the confluent adapter). Tests only use port-level operations plus this
small protocol, so the same base class runs against both. On real Kafka time
passes for real, so helpers poll in loops with bounded attempts instead of
assuming an answer in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from offsetledger.core import (
    CommittedPosition,
    ConsumerPort,
    ProducerPort,
    Record,
    TopicPartition,
)

__all__ = ["Callbacks", "Harness", "poll_records", "poll_until"]


class Harness(Protocol):
    """What the contract suite needs from an implementation."""

    #: "simulator" or "kafka": used only to word failure messages
    name: str
    #: seconds to wait in one poll (0.05 in the simulator, longer on a broker)
    poll_timeout: float
    #: bound on poll attempts in loops
    max_attempts: int

    def unique(self, prefix: str) -> str:
        """A topic or group name not used before (brokers are shared between tests)."""
        ...

    def create_topic(self, name: str, partitions: int) -> None: ...

    def produce_inputs(
        self, topic: str, partition: int, records: Sequence[tuple[bytes | None, bytes | None]]
    ) -> list[int]:
        """Write (key, value) records to one partition; return their offsets."""
        ...

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (virtual time in the simulator, real sleep on Kafka)."""
        ...

    def committed(self, group: str, topic: str, partition: int) -> CommittedPosition: ...

    def consumer(self, config: dict[str, object], member: str) -> ConsumerPort:
        """A consumer with ``config`` (librdkafka keys) merged over the harness's own."""
        ...

    def producer(
        self, config: dict[str, object] | None = None, name: str = "producer"
    ) -> ProducerPort: ...

    def describe(self) -> str:
        """Context for failure messages (e.g. the simulator's seed)."""
        ...


class Callbacks:
    """Records the rebalance callbacks a consumer received, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[TopicPartition, ...]]] = []

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self.calls.append(("assign", tuple(partitions)))

    def revoke(self, partitions: Sequence[TopicPartition]) -> None:
        self.calls.append(("revoke", tuple(partitions)))

    def lost(self, partitions: Sequence[TopicPartition]) -> None:
        self.calls.append(("lost", tuple(partitions)))

    def subscribe(self, consumer: ConsumerPort, topics: Sequence[str]) -> None:
        consumer.subscribe(topics, on_assign=self.assign, on_revoke=self.revoke, on_lost=self.lost)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


def poll_until(
    harness: Harness,
    consumers: Sequence[ConsumerPort],
    done: Callable[[], bool],
    what: str,
    *,
    sink: list[Record] | None = None,
) -> None:
    """Poll every consumer round-robin until ``done()``; fail naming ``what``."""
    for _ in range(harness.max_attempts):
        if done():
            return
        for consumer in consumers:
            records = consumer.poll(100, harness.poll_timeout)
            if sink is not None:
                sink.extend(records)
    if not done():
        raise AssertionError(
            f"gave up waiting for {what} after {harness.max_attempts} rounds ({harness.describe()})"
        )


def poll_records(harness: Harness, consumer: ConsumerPort, count: int) -> list[Record]:
    """Poll until at least ``count`` records arrived; return them all."""
    got: list[Record] = []
    poll_until(harness, [consumer], lambda: len(got) >= count, f"{count} records", sink=got)
    return got

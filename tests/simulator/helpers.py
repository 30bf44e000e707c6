"""Small helpers for simulator tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from offsetledger.core import DeliveryReport, Outbound, Record, TopicPartition
from offsetledger.simulator import SimConsumer, SimProducer, World
from tests.contract.harness import Callbacks

__all__ = ["MANUAL", "joined", "new_world", "poll_all", "produce_one", "tps"]

MANUAL: dict[str, object] = {
    "group.id": "g",
    "enable.auto.offset.store": False,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}


def new_world(seed: int, partitions: int = 2, records: int = 0) -> World:
    world = World(seed)
    world.create_topic("in", partitions)
    world.create_topic("out", partitions)
    for i in range(records):
        world.append("in", i % partitions, key=b"k%d" % i, value=b"v%d" % i)
    return world


def joined(
    world: World,
    member: str,
    config: Mapping[str, object] | None = None,
    topics: Sequence[str] = ("in",),
) -> tuple[SimConsumer, Callbacks]:
    """A new consumer subscribed with recording callbacks (it joins at its first poll)."""
    consumer = world.consumer({**MANUAL, **(config or {})}, member)
    callbacks = Callbacks()
    callbacks.subscribe(consumer, list(topics))
    return consumer, callbacks


def poll_all(consumer: SimConsumer, rounds: int = 20) -> list[Record]:
    out: list[Record] = []
    for _ in range(rounds):
        out.extend(consumer.poll(100, 0.01))
    return out


def produce_one(producer: SimProducer, message: Outbound) -> DeliveryReport:
    reports: list[DeliveryReport] = []
    producer.produce(message, reports.append)
    producer.flush(600.0)
    assert len(reports) == 1
    return reports[0]


def tps(*partitions: int, topic: str = "in") -> tuple[TopicPartition, ...]:
    return tuple(TopicPartition(topic, p) for p in partitions)

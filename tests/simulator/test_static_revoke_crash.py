"""A static, cooperative member that crashes inside its revoke callback.

Cooperative-sticky rebalances in two rounds: the first takes a partition away
from its owner without giving it to anybody; the owner revokes it and rejoins,
and the second round gives it to its new owner. When the owner crashes inside
``on_revoke`` it never rejoins; a *static* member's successor that takes its
place before the session times out must restart the rebalance, or the revoked
partition stays unowned for good (forced-async swarm seed 191 did not drain)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from offsetledger.core import TopicPartition
from offsetledger.simulator import ProcessCrashed, SimConsumer, World

STATIC_COOPERATIVE: dict[str, object] = {
    "group.id": "g",
    "enable.auto.offset.store": False,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "group.instance.id": "a",
}


def _poll(*consumers: SimConsumer, rounds: int = 20) -> None:
    for _ in range(rounds):
        for consumer in consumers:
            if consumer.alive:
                with contextlib.suppress(ProcessCrashed):
                    consumer.poll(10, 0.01)


def _held(*consumers: SimConsumer) -> dict[TopicPartition, int]:
    held: dict[TopicPartition, int] = {}
    for consumer in (c for c in consumers if c.alive):
        for tp in consumer.assignment():
            held[tp] = held.get(tp, 0) + 1
    return held


def _ignore(partitions: Sequence[TopicPartition]) -> None:
    del partitions


def test_a_successor_restarts_the_rebalance_its_crashed_predecessor_left_half_done() -> None:
    world = World(191)
    world.create_topic("in", 2)
    world.configure_group("g", session_timeout_ms=60_000)
    first = world.consumer(STATIC_COOPERATIVE, "a")
    crashing = {"on": False}

    def revoke(partitions: Sequence[TopicPartition]) -> None:
        if crashing["on"]:
            world.crash("a")  # the process dies inside its revoke callback

    first.subscribe(["in"], on_assign=_ignore, on_revoke=revoke, on_lost=_ignore)
    _poll(first)
    assert sorted(tp.partition for tp in first.assignment()) == [0, 1]

    other = world.consumer({**STATIC_COOPERATIVE, "group.instance.id": "b"}, "b")
    other.subscribe(["in"], on_assign=_ignore, on_revoke=_ignore, on_lost=_ignore)
    crashing["on"] = True
    _poll(first, other)  # the first round takes a partition from "a"; "a" dies revoking it
    assert not first.alive
    assert not other.assignment(), "the second round never came: nobody else holds it"

    world.advance(1.0)  # well within the session timeout: a static successor takes over
    successor = world.consumer(STATIC_COOPERATIVE, "a")
    successor.subscribe(["in"], on_assign=_ignore, on_revoke=_ignore, on_lost=_ignore)
    _poll(successor, other)
    held = _held(successor, other)
    assert held == {TopicPartition("in", 0): 1, TopicPartition("in", 1): 1}, (
        f"seed 191: every partition must have exactly one owner, got {held} "
        f"(a: {successor.assignment()}, b: {other.assignment()})"
    )

"""The defaults bound work by what it protects: handlers running by the in-flight
limits, records waiting for delivery by the buffer limits, redelivery after a crash
by ``auto_commit_interval``; programming errors are not retried."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from offsetledger.core import ConfigError, Outbound, Record
from offsetledger.history import Commit
from offsetledger.runtime import (
    InMemoryMetrics,
    OrderingMode,
    ProcessorConfig,
    RetryPolicy,
)
from tests.processor.helpers import all_committed, dead_letters, drive, make_processor, seed_world
from tests.processor.invariants import assert_invariants


@pytest.mark.parametrize("seed", [1, 2])
def test_records_waiting_for_delivery_do_not_hold_a_handler_slot(seed: int) -> None:
    """One handler slot; outputs linger 0.5 s before they are sent. Every record's
    handler runs before the first delivery report arrives: the delivery round trip
    does not throttle the handlers (it did when in flight counted until the report)."""
    world = seed_world(seed, partitions=2, records=20)
    linger = world.producer({"linger.ms": 500}, name="m1-producer", member="m1")
    handled_at: list[float] = []

    def handler(record: Record) -> Iterable[Outbound]:
        handled_at.append(world.clock.now())
        return [Outbound("out", value=record.value, key=record.key)]

    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, max_in_flight_total=1)
    p = make_processor(world, "m1", handler, config=cfg, producer=linger)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert len(handled_at) == 20, f"seed={seed}"
    assert max(handled_at) - min(handled_at) < 0.5, f"seed={seed}: {handled_at}"
    assert_invariants(world)


def test_auto_mode_commits_every_auto_commit_interval() -> None:
    """The client's auto-commit is set to a minute: the Processor's own commit of its
    stored positions (every ``auto_commit_interval``, default 0.2 s) commits the
    finished work within a second of virtual time."""
    world = seed_world(3, partitions=2, records=40)
    p = make_processor(world, "m1", consumer_extra={"auto.commit.interval.ms": 60_000})
    drive(world, [p], lambda: all_committed(world))
    assert world.clock.now() < 1.0
    assert any(isinstance(e, Commit) for e in world.history)
    p.stop()
    assert_invariants(world)


def test_auto_commit_interval_none_leaves_committing_to_the_client() -> None:
    world = seed_world(3, partitions=2, records=40)
    cfg = ProcessorConfig(poll_timeout=0.05, auto_commit_interval=None)
    p = make_processor(world, "m1", config=cfg, consumer_extra={"auto.commit.interval.ms": 60_000})
    for _ in range(200):  # 10 s of virtual time at most: all handled, nothing committed
        p.step()
    assert not all_committed(world)
    p.stop()  # the final commit on close
    assert all_committed(world)
    assert_invariants(world)


@pytest.mark.parametrize("error", [TypeError, AttributeError, KeyError, IndexError, NameError])
def test_programming_errors_are_fatal_by_default(error: type[Exception]) -> None:
    policy = RetryPolicy()
    assert policy.is_fatal(error("x"))
    assert not policy.is_fatal(OSError("x"))
    assert not RetryPolicy(fatal=()).is_fatal(error("x"))


def test_a_type_error_is_dead_lettered_after_one_attempt() -> None:
    world = seed_world(4, partitions=1, records=5, topics=("out", "dlq"))
    calls: list[int] = []

    def handler(record: Record) -> Iterable[Outbound]:
        calls.append(record.offset)
        if record.offset == 2:
            return [Outbound("out", value=record.value.decode())]  # type: ignore[union-attr,arg-type]
        return [Outbound("out", value=record.value, key=record.key)]

    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, dead_letter_topic="dlq")
    p = make_processor(world, "m1", handler, config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls.count(2) == 1
    assert metrics.count("retries") == 0
    [dead] = dead_letters(world)
    assert dead["offsetledger.source.offset"] == b"2"
    assert_invariants(world, dead_letter="dlq")


def test_metadata_budget_above_kafkas_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="4096"):
        ProcessorConfig(metadata_budget=5000)
    assert ProcessorConfig(metadata_budget=4096).metadata_budget == 4096

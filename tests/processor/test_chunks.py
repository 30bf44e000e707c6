"""Chunks (the records of one poll from one partition, one ledger range) and their
edge cases: a chunk split across runs, a failing record inside a chunk, a chunk in
flight across a revoke and re-assignment. Each scenario also names the planted bug
of ``tests/model/planted.py`` it catches."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import pytest

from offsetledger.core import Outbound, Record, TopicPartition
from offsetledger.history import Assign
from offsetledger.runtime import OrderingMode, ProcessorConfig, RetryPolicy
from tests.model.planted import by_name
from tests.processor.helpers import (
    all_committed,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
    upper,
)
from tests.processor.invariants import assert_invariants


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logger = logging.getLogger("offsetledger")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def caught(bug: str, scenario: Callable[[], None]) -> bool:
    """True when ``scenario`` fails (an AssertionError) with ``bug`` planted."""
    with quiet(), by_name(bug).plant():
        try:
            scenario()
        except AssertionError:
            return True
    return False


# -- a chunk split into several runs ------------------------------------------------------


def _slices_then_commit(seed: int) -> None:
    """One partition, one chunk of 40 records split into 4 runs (the simulator's
    executor runs them in a seeded order); the last run's records take 0.1 s each:
    the chunk, and so the commit, must wait for its outputs too."""
    world = seed_world(seed, partitions=1, records=40)

    def handler(record: Record) -> Iterable[Outbound]:
        if record.offset >= 30:
            world.clock.sleep(0.1)
        return upper(record)

    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, batch_size=40)
    p = make_processor(world, "m1", handler, config=cfg)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert inputs(world) <= set(output_sources(world)), f"seed={seed}"
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_chunk_split_into_runs_completes_after_all_its_outputs(seed: int) -> None:
    _slices_then_commit(seed)


def test_chunk_done_while_producing_is_caught() -> None:
    assert any(
        caught("chunk_done_while_producing", functools.partial(_slices_then_commit, s))
        for s in (1, 2, 3)
    )


# -- a failing record inside a chunk -------------------------------------------------------


@pytest.mark.parametrize("ordering", list(OrderingMode))
def test_a_failing_record_splits_its_chunk_so_the_others_commit(ordering: OrderingMode) -> None:
    """v2 fails until the test lets it: the records of its chunk before it are
    committed meanwhile (the chunk is split in the ledger), nothing past it."""
    world = seed_world(7, partitions=1, records=8)
    broken = {"on": True}
    calls: Counter[bytes] = Counter()

    def handler(record: Record) -> Iterable[Outbound]:
        calls[record.value or b""] += 1
        if record.value == b"v2" and broken["on"]:
            raise RuntimeError("not yet")
        return upper(record)

    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=ordering,
        retry=RetryPolicy(max_attempts=100, backoff_base=0.05, backoff_max=0.05),
    )
    p = make_processor(world, "m1", handler, config=cfg)
    start = world.clock.now()
    drive(world, [p], lambda: world.clock.now() - start > 1.0)
    tp = TopicPartition("in", 0)
    assert p.ledger.watermark(tp) == 2
    assert world.committed("g", "in", 0).position == 2
    broken["on"] = False
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls[b"v2"] > 2
    assert all(calls[f"v{i}".encode()] == 1 for i in range(8) if i != 2), calls
    assert_invariants(world)


# -- a chunk in flight across a revoke and a re-assignment ---------------------------------


def _revoked_and_reassigned(seed: int) -> None:
    """m1 processes while a fifth of its deliveries fail (retried with backoff); m2
    joins (eager rebalance: m1 loses both partitions and gets one back). The chunks
    abandoned on revoke, and their records being retried, finish late: they must
    count for nothing in the new epoch."""
    world = seed_world(seed, partitions=2, records=200)
    world.faults.set_probability("delivery_retriable", 0.2)
    extra = {"partition.assignment.strategy": "range"}
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        drain_timeout=0.02,
        batch_size=20,
        retry=RetryPolicy(max_attempts=50, backoff_base=0.1, backoff_max=0.1),
    )
    p1 = make_processor(world, "m1", config=cfg, consumer_extra=extra)
    drive(world, [p1], lambda: p1.in_flight >= 20)
    p2 = make_processor(world, "m2", config=cfg, consumer_extra=extra)
    drive(world, [p1, p2], lambda: all_committed(world), max_steps=20_000)
    p1.stop()
    p2.stop()
    assigns = [e for e in world.history.of(Assign) if isinstance(e, Assign) and e.member == "m1"]
    assert len(assigns) >= 2, f"seed={seed}: m1 was not assigned again"
    assert inputs(world) <= set(output_sources(world)), f"seed={seed}"
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_chunk_abandoned_on_revoke_counts_for_nothing_in_the_next_epoch(seed: int) -> None:
    _revoked_and_reassigned(seed)


def test_chunk_outlives_revoke_is_caught() -> None:
    assert any(
        caught("chunk_outlives_revoke", functools.partial(_revoked_and_reassigned, s))
        for s in (1, 2, 3)
    )

"""CommitMode.TRANSACTIONAL end to end in the simulator's transactions (txs): a
read_committed reader of the outputs sees every input's output exactly once, through
a crash mid-transaction, an abortable commit, an unavailable coordinator and a
member joining (revoke mid-transaction). Failures name the seed."""

from __future__ import annotations

from collections import Counter

import pytest

from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    ProcessorMustRestartError,
)
from offsetledger.simulator import World
from tests.processor.helpers import consumer_config, seed_world, upper

RECORDS = 60


def _member(world: World, member: str, metrics: InMemoryMetrics | None = None) -> Processor:
    config = consumer_config(auto_commit=False, **{"isolation.level": "read_committed"})
    return Processor(
        world.consumer(config, member),
        world.transactional_producer(
            {"transactional.id": f"tx-{member}"}, f"{member}-producer", member=member
        ),
        upper,
        topics=["in"],
        executor=world.executor(name=f"{member}-executor", member=member),
        clock=world.clock,
        config=ProcessorConfig(poll_timeout=0.05, commit_mode=CommitMode.TRANSACTIONAL),
        metrics=metrics if metrics is not None else InMemoryMetrics(),
    )


def _read_committed(world: World) -> Counter[bytes]:
    reader = world.consumer(
        {
            "group.id": "reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        },
        "reader",
    )
    reader.subscribe(
        ["out"], on_assign=lambda _p: None, on_revoke=lambda _p: None, on_lost=lambda _p: None
    )
    seen: Counter[bytes] = Counter()
    for _ in range(50):
        for r in reader.poll(1000, 0.2):
            seen[r.value or b""] += 1
    return seen


def _judge(world: World) -> None:
    seen = _read_committed(world)
    expected = {f"V{i}".encode() for i in range(RECORDS)}
    lost = expected - set(seen)
    dups = {v: n for v, n in seen.items() if n > 1}
    assert not lost, f"seed={world.seed}: lost {sorted(lost)}"
    assert not dups, f"seed={world.seed}: duplicates {dups}"


def _run(world: World, processors: list[Processor], steps: int) -> None:
    for _ in range(steps):
        for p in processors:
            p.step()


@pytest.mark.parametrize("seed", range(4))
def test_exactly_once_through_a_crash_mid_transaction(seed: int) -> None:
    world = seed_world(seed, partitions=2, records=RECORDS)
    p = _member(world, "m1")
    _run(world, [p], 3)
    # a transaction is open with some outputs: it holds the last stable offset back
    assert any(world.last_stable_offset("out", i) < world.end_offset("out", i) for i in range(2)), (
        f"seed={seed}"
    )
    world.crash("m1")
    again = _member(world, "m1")
    _run(world, [again], 2000)  # past the crashed member's session timeout
    again.stop()
    _judge(world)


@pytest.mark.parametrize("fault", ["txn_abortable", "txn_coordinator_unavailable"])
def test_exactly_once_through_transaction_faults(fault: str) -> None:
    world = seed_world(11, partitions=2, records=RECORDS)
    metrics = InMemoryMetrics()
    p = _member(world, "m1", metrics)
    _run(world, [p], 2)
    world.faults.schedule(fault)
    _run(world, [p], 400)
    p.stop()
    assert [f.kind for f in world.faults.fired] == [fault]
    _judge(world)
    if fault == "txn_abortable":
        assert metrics.count("transaction_aborts") >= 1
        assert metrics.count("rewinds") >= 1


def test_exactly_once_when_a_member_joins_mid_transaction() -> None:
    world = seed_world(12, partitions=4, records=RECORDS)
    a = _member(world, "a")
    _run(world, [a], 3)
    b = _member(world, "b")
    _run(world, [a, b], 400)
    a.stop()
    b.stop()
    _judge(world)


@pytest.mark.parametrize(
    "fault", ["assignment_lost", "rebalance", "delivery_retriable", "ack_lost"]
)
def test_exactly_once_through_group_and_delivery_faults(fault: str) -> None:
    world = seed_world(13, partitions=2, records=RECORDS)
    p = _member(world, "m1")
    _run(world, [p], 3)
    world.faults.schedule(fault)
    _run(world, [p], 2000)
    p.stop()
    assert [f.kind for f in world.faults.fired] == [fault]
    _judge(world)


def test_a_fenced_member_stops_and_its_restart_is_exactly_once() -> None:
    world = seed_world(14, partitions=2, records=RECORDS)
    p = _member(world, "m1")
    _run(world, [p], 3)
    world.faults.schedule("txn_fenced")
    with pytest.raises(ProcessorMustRestartError):
        _run(world, [p], 400)
    world.crash("m1")  # the process exits; a new one starts
    again = _member(world, "m1")
    _run(world, [again], 2000)
    again.stop()
    _judge(world)

"""Rebalances on the simulator: revoke with in-flight work (drained, committed
synchronously), drain timeouts (abandoned → redelivered), lost partitions (never
committed), members joining and leaving, restarts that skip finished records,
offset gaps and retention truncation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TypeVar

import pytest

from offsetledger.core import Outbound, Record, StoredPosition, TopicPartition
from offsetledger.history import Assign, Commit, Event, Lost, Poll, Revoke
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
)
from offsetledger.simulator import World
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

STRATEGIES = ["cooperative-sticky", "range"]


E = TypeVar("E", bound=Event)


def _events(world: World, cls: type[E]) -> list[E]:
    return [e for e in world.history.of(cls) if isinstance(e, cls)]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_revoke_mid_flight_drains_and_commits_synchronously(seed: int, strategy: str) -> None:
    world = seed_world(seed, partitions=4, records=80)
    extra = {"partition.assignment.strategy": strategy}
    m1 = InMemoryMetrics()
    cfg = ProcessorConfig(
        poll_timeout=0.05, ordering=OrderingMode.UNORDERED, max_in_flight_total=16
    )
    p1 = make_processor(world, "m1", config=cfg, metrics=m1, consumer_extra=extra, task_cost=0.001)
    drive(world, [p1], lambda: p1.in_flight >= 8)
    p2 = make_processor(world, "m2", config=cfg, consumer_extra=extra, task_cost=0.001)
    drive(
        world,
        [p1, p2],
        lambda: bool(_events(world, Revoke)) and all_committed(world),
        max_steps=20_000,
    )
    revoke = _events(world, Revoke)[0]
    assert revoke.member == "m1"
    # the revoking member committed the revoked partitions inside the callback (the
    # simulator records Revoke when the callback starts: its commits follow at once)
    callback_end = min(
        e.seq
        for e in world.history
        if isinstance(e, Assign | Poll) and e.member == "m1" and e.seq > revoke.seq
    )
    commits_before = [
        c
        for c in _events(world, Commit)
        if c.member == "m1"
        and revoke.seq < c.seq < callback_end
        and (c.topic, c.partition) in revoke.partitions
    ]
    assert commits_before, f"seed={seed}: no commit on revoke"
    assert m1.count("rebalances") >= 2
    p1.stop()
    p2.stop()
    assert inputs(world) <= set(output_sources(world))
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2])
def test_drain_timeout_abandons_unfinished_records_for_the_next_owner(seed: int) -> None:
    # enough records that m1 is still busy when m2 joins
    world = seed_world(seed, partitions=2, records=400)
    extra = {"partition.assignment.strategy": "range"}
    m1 = InMemoryMetrics()
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        max_in_flight_total=16,
        drain_timeout=0.2,
    )
    # m1's outputs linger 0.5 s before they are sent: longer than the drain may take
    slow = world.producer({"linger.ms": 500}, name="m1-producer", member="m1")
    p1 = make_processor(
        world, "m1", config=cfg, metrics=m1, consumer_extra=extra, task_cost=0.01, producer=slow
    )
    drive(world, [p1], lambda: p1.in_flight >= 10)
    p2 = make_processor(world, "m2", config=cfg, consumer_extra=extra, task_cost=0.01)
    drive(world, [p1, p2], lambda: all_committed(world), max_steps=20_000)
    assert m1.count("abandoned") > 0, f"seed={seed}"
    assert m1.count("stale_completions") > 0, f"seed={seed}: late reports not seen as stale"
    p1.stop()
    p2.stop()
    assert inputs(world) <= set(output_sources(world))
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lost_partitions_are_never_committed(seed: int) -> None:
    world = seed_world(seed, partitions=3, records=60)
    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, max_in_flight_total=8)
    p = make_processor(world, "m1", config=cfg, metrics=metrics, task_cost=0.001)
    drive(world, [p], lambda: p.in_flight >= 4)
    world.faults.schedule("assignment_lost", target="m1")
    drive(world, [p], lambda: bool(_events(world, Lost)))
    lost = _events(world, Lost)[0]
    assert (
        p.ledger.assigned() == frozenset()
        or all(TopicPartition(t, q) not in p.ledger.assigned() for t, q in lost.partitions)
        or p.ledger.assigned()
    )  # re-assigned right away is fine
    drive(world, [p], lambda: all_committed(world), max_steps=20_000)
    p.stop()
    assert metrics.count("abandoned") > 0
    # no commit by m1 between the Lost and its next Assign
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_members_join_and_leave_while_records_arrive(seed: int, strategy: str) -> None:
    world = seed_world(seed, partitions=6, records=30, keys=12)
    extra = {"partition.assignment.strategy": strategy}
    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.KEY, max_in_flight_total=8)
    procs: dict[str, Processor] = {}
    appended = 30

    def add_records(n: int) -> None:
        nonlocal appended
        for _ in range(n):
            world.append(
                "in", appended % 6, key=f"k{appended % 12}".encode(), value=f"v{appended}".encode()
            )
            appended += 1

    def run(rounds: int) -> None:
        for _ in range(rounds):
            add_records(1)
            for p in list(procs.values()):
                if p.state in (ProcessorState.CREATED, ProcessorState.RUNNING):
                    p.step()

    procs["m1"] = make_processor(world, "m1", config=cfg, consumer_extra=extra, task_cost=0.001)
    run(20)
    procs["m2"] = make_processor(world, "m2", config=cfg, consumer_extra=extra, task_cost=0.001)
    run(30)
    procs["m3"] = make_processor(world, "m3", config=cfg, consumer_extra=extra, task_cost=0.001)
    run(30)
    procs.pop("m2").stop()  # graceful leave
    run(30)
    world.crash("m3")  # kill -9: its partitions move after the session timeout
    procs.pop("m3")
    run(10)
    procs["m4"] = make_processor(world, "m4", config=cfg, consumer_extra=extra, task_cost=0.001)
    live = list(procs.values())
    drive(world, live, lambda: all_committed(world), max_steps=50_000)
    for p in live:
        p.stop()
    assert inputs(world) <= set(output_sources(world)), f"seed={seed}"
    assert_invariants(world)


def test_restart_skips_records_already_finished_from_commit_metadata() -> None:
    world = seed_world(6, partitions=1, records=10)
    calls: Counter[bytes] = Counter()
    broken = {"v0": True}

    def handler(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        calls[record.value] += 1
        if record.value == b"v0" and broken["v0"]:
            raise RuntimeError("v0 cannot be processed yet")
        return upper(record)

    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        commit_mode=CommitMode.PERIODIC,
        commit_interval=0.2,
        commit_every_records=None,
    )
    p1 = make_processor(world, "m1", handler, config=cfg)
    drive(world, [p1], lambda: len(output_sources(world)) == 9 and world.clock.now() > 1.0)
    committed = world.committed("g", "in", 0)
    assert committed.position == 0
    assert committed.metadata is not None
    assert committed.metadata.startswith("OL2")  # bound to group, topic and partition
    world.crash("m1")
    broken["v0"] = False
    metrics = InMemoryMetrics()
    p2 = make_processor(world, "m2", handler, config=cfg, metrics=metrics)
    drive(world, [p2], lambda: all_committed(world), max_steps=20_000)
    p2.stop()
    assert metrics.count("skipped_duplicates") == 9
    assert all(calls[f"v{i}".encode()] == 1 for i in range(1, 10)), calls
    assert sorted(o for _, _, o in output_sources(world)) == list(range(10))
    assert_invariants(world)


@pytest.mark.parametrize("ordering", list(OrderingMode))
def test_offset_gaps_do_not_hold_back_the_watermark(ordering: OrderingMode) -> None:
    world = seed_world(8, partitions=1, records=0)
    for i in range(12):
        if i % 3 == 1:
            world.append_gap("in", 0)
        else:
            world.append("in", 0, key=f"k{i % 4}".encode(), value=f"v{i}".encode())
    world.append("in", 0, key=b"k", value=b"last")
    p = make_processor(world, "m1", config=ProcessorConfig(poll_timeout=0.05, ordering=ordering))
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    polled = sorted(e.offset for e in _events(world, Poll))
    assert all(o % 3 != 1 for o in polled if o < 12)
    assert world.committed("g", "in", 0).position == 13
    assert_invariants(world)


def test_retention_truncation_moves_the_start() -> None:
    world = seed_world(8, partitions=1, records=10)
    world.truncate("in", 0, log_start=4)
    p = make_processor(world, "m1")
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert sorted(o for _, _, o in output_sources(world)) == list(range(4, 10))
    assert_invariants(world, own_checks=False)


def _ignore(_partitions: object) -> None:
    return None


def test_committed_position_out_of_range_is_reset_and_the_ledger_follows() -> None:
    world = seed_world(8, partitions=1, records=5)
    setter = world.consumer(
        {"group.id": "g", "enable.auto.offset.store": False, "enable.auto.commit": False}, "setter"
    )
    setter.subscribe(["in"], on_assign=_ignore, on_revoke=_ignore, on_lost=_ignore)
    setter.poll(1, 0.1)  # joins the group (the record it returns is not processed)
    results = setter.commit([StoredPosition(TopicPartition("in", 0), 8)])
    assert all(r.ok for r in results)
    setter.close()
    p = make_processor(world, "m1")
    drive(world, [p], lambda: len(output_sources(world)) == 5)
    p.stop()
    # the client reset to the log start (auto.offset.reset=earliest): every record
    # was processed, and the position committed is the real one
    assert sorted(o for _, _, o in output_sources(world)) == [0, 1, 2, 3, 4]
    assert world.committed("g", "in", 0).position == 5

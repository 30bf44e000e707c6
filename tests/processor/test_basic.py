"""Consume → transform → produce on the simulator: every input gets an output,
positions are committed, lineage headers are set, runs are deterministic."""

from __future__ import annotations

import pytest

from offsetledger.core import TopicPartition
from offsetledger.history import Commit, Store
from offsetledger.runtime import InMemoryMetrics, OrderingMode, ProcessorConfig, ProcessorState
from tests.processor.helpers import (
    all_committed,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
)
from tests.processor.invariants import assert_invariants


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("ordering", list(OrderingMode))
def test_every_input_gets_an_output_and_is_committed(seed: int, ordering: OrderingMode) -> None:
    world = seed_world(seed, records=60)
    metrics = InMemoryMetrics()
    p = make_processor(
        world,
        "m1",
        config=ProcessorConfig(poll_timeout=0.05, ordering=ordering, max_in_flight_total=8),
        metrics=metrics,
    )
    drive(world, [p], lambda: len(output_sources(world)) >= 60)
    p.stop()
    assert p.state is ProcessorState.CLOSED
    assert set(output_sources(world)) == inputs(world), f"seed={seed}"
    assert all_committed(world), f"seed={seed}: {[world.committed('g', 'in', i) for i in range(4)]}"
    assert metrics.count("records_in") == 60
    assert metrics.count("records_out") == 60
    assert metrics.count("records_done") == 60
    assert_invariants(world)


def test_outputs_carry_lineage_and_values() -> None:
    world = seed_world(7, partitions=1, records=5)
    p = make_processor(world, "m1")
    drive(world, [p], lambda: len(output_sources(world)) >= 5)
    p.stop()
    outs = world.log("out", 0)
    by_source = {dict(e.headers)["offsetledger.source.offset"]: e.value for e in outs}
    assert by_source == {str(i).encode(): f"V{i}".encode() for i in range(5)}
    assert_invariants(world)


def test_lineage_headers_can_be_turned_off() -> None:
    world = seed_world(7, partitions=1, records=3)
    p = make_processor(
        world, "m1", config=ProcessorConfig(poll_timeout=0.05, lineage_headers=False)
    )
    drive(world, [p], lambda: sum(len(world.log("out", i)) for i in range(1)) >= 3)
    p.stop()
    assert all(e.headers == () for e in world.log("out", 0))


def test_stores_once_per_step_only_when_the_watermark_moves() -> None:
    world = seed_world(5, partitions=1, records=30)
    p = make_processor(
        world, "m1", config=ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED)
    )
    drive(world, [p], lambda: len(output_sources(world)) >= 30)
    stores = [e for e in world.history.of(Store) if isinstance(e, Store)]
    positions = [s.position for s in stores]
    assert positions == sorted(positions), "a stored position went back"
    assert len(stores) < 30, "stored per record instead of per step"
    assert positions[-1] == 30
    p.stop()


def test_same_seed_same_trace() -> None:
    def run(seed: int) -> str:
        world = seed_world(seed, records=40)
        p = make_processor(
            world, "m1", config=ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.KEY)
        )
        drive(world, [p], lambda: len(output_sources(world)) >= 40)
        p.stop()
        return world.trace()

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_records_without_outputs_are_committed() -> None:
    world = seed_world(3, partitions=2, records=10)
    p = make_processor(world, "m1", handler=lambda r: [])
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    commits = [e for e in world.history.of(Commit) if isinstance(e, Commit) and e.ok]
    assert {(c.partition, c.position) for c in commits} >= {(0, 5), (1, 5)}
    assert p.ledger.assigned() == frozenset() or TopicPartition("in", 0) not in p.ledger.assigned()

"""Ordering modes and in-flight limits on the simulator (whose executor finishes
tasks in a seeded, shuffled order), and backpressure through pause/resume."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable

import pytest

from offsetledger.core import Outbound, Record, TopicPartition
from offsetledger.history import Append
from offsetledger.runtime import InMemoryMetrics, OrderingMode, ProcessorConfig
from offsetledger.simulator import SimConsumer
from tests.processor.helpers import all_committed, drive, make_processor, seed_world, upper
from tests.processor.invariants import assert_invariants


class MaxGauges(InMemoryMetrics):
    """Also keeps the highest value each gauge reached."""

    def __init__(self) -> None:
        super().__init__()
        self.max: dict[str, float] = defaultdict(float)

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        super().gauge(name, value, tp)
        self.max[name] = max(self.max[name], value)


def _run(seed: int, ordering: OrderingMode, *, max_total: int = 16, max_part: int = 100):  # type: ignore[no-untyped-def]
    world = seed_world(seed, partitions=2, records=120, keys=4)
    calls: list[tuple[int, bytes | None, int]] = []

    def handler(record: Record) -> Iterable[Outbound]:
        calls.append((record.partition, record.key, record.offset))
        return upper(record)

    metrics = MaxGauges()
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=ordering,
        max_in_flight_total=max_total,
        max_in_flight_per_partition=max_part,
    )
    p = make_processor(world, "m1", handler, config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert_invariants(world)
    outputs: dict[int, list[tuple[bytes | None, int]]] = defaultdict(list)
    for part in range(2):
        for entry in world.log("out", part):
            h = dict(entry.headers)
            src_p = int(h["offsetledger.source.partition"])  # type: ignore[arg-type]
            outputs[src_p].append((entry.key, int(h["offsetledger.source.offset"])))  # type: ignore[arg-type]
    return calls, metrics, world, outputs


def _inversions(seq: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(seq) if b < a)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_partition_ordering_runs_one_record_per_partition_in_offset_order(seed: int) -> None:
    calls, _, world, _ = _run(seed, OrderingMode.PARTITION)
    for part in range(2):
        offsets = [o for p, _, o in calls if p == part]
        assert offsets == sorted(offsets) == list(range(60)), f"seed={seed}"
    # outputs are written in input order too (one record in flight, delivery included)
    by_source: dict[int, list[int]] = defaultdict(list)
    for e in world.history.of(Append):
        assert isinstance(e, Append)
        src = e.source()
        if e.topic == "out" and src is not None:
            by_source[src[1]].append(src[2])
    for part, offsets in by_source.items():
        assert offsets == sorted(offsets), f"seed={seed}: partition {part!r} outputs out of order"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_key_ordering_keeps_each_key_in_order_and_runs_keys_in_parallel(seed: int) -> None:
    calls, metrics, _, _ = _run(seed, OrderingMode.KEY)
    per_key: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    for p, k, o in calls:
        per_key[(p, k)].append(o)
    for key, offsets in per_key.items():
        assert offsets == sorted(offsets), f"seed={seed}: key {key} out of order"
    per_partition = [o for p, _, o in calls if p == 0]
    assert _inversions(per_partition) > 0, (
        f"seed={seed}: keys never ran out of order (no parallelism)"
    )
    assert metrics.max["in_flight"] > 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_unordered_runs_records_of_a_key_out_of_order_within_limits(seed: int) -> None:
    calls, metrics, _, _ = _run(seed, OrderingMode.UNORDERED, max_total=6)
    per_key: dict[tuple[int, bytes | None], list[int]] = defaultdict(list)
    for p, k, o in calls:
        per_key[(p, k)].append(o)
    assert any(_inversions(v) for v in per_key.values()), f"seed={seed}"
    assert metrics.max["in_flight"] <= 6
    assert len(calls) == 120


def test_per_partition_in_flight_limit() -> None:
    calls, metrics, _, _ = _run(4, OrderingMode.UNORDERED, max_total=16, max_part=3)
    assert metrics.max["in_flight"] <= 6  # 2 partitions x 3
    assert len(calls) == 120


@pytest.mark.parametrize("seed", [1, 2])
def test_backpressure_pauses_full_partitions_and_resumes_them(seed: int) -> None:
    world = seed_world(seed, partitions=2, records=100)
    metrics = MaxGauges()
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        batch_size=4,
        ordering=OrderingMode.PARTITION,
        max_buffered_per_partition=5,
        max_buffered_total=8,
        max_in_flight_per_partition=2,
        max_in_flight_total=2,
    )
    p = make_processor(world, "m1", config=cfg, metrics=metrics, task_cost=0.01)
    consumer = p._consumer
    assert isinstance(consumer, SimConsumer)
    paused_seen: set[TopicPartition] = set()

    def until() -> bool:
        paused_seen.update(consumer.paused())
        return all_committed(world)

    drive(world, [p], until, max_steps=20_000)
    assert paused_seen == {TopicPartition("in", 0), TopicPartition("in", 1)}, f"seed={seed}"
    assert metrics.count("pauses") >= 2
    # buffered never beyond the total limit plus one batch
    assert metrics.max["buffered"] <= 8 + 4
    assert consumer.paused() == frozenset()
    p.stop()
    assert_invariants(world)


def test_a_retrying_record_at_the_in_flight_limit_lets_time_pass() -> None:
    """One slot, taken by a record in backoff, while other partitions have ready
    records: the step must wait for the backoff, not spin with time standing still."""
    world = seed_world(5, partitions=2, records=6)
    fails = {"left": 2}

    def handler(record: Record) -> Iterable[Outbound]:
        if record.partition == 0 and record.offset == 0 and fails["left"]:
            fails["left"] -= 1
            raise RuntimeError("transient")
        return upper(record)

    from offsetledger.runtime import RetryPolicy

    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        max_in_flight_total=1,
        retry=RetryPolicy(max_attempts=5, backoff_base=0.5, backoff_max=1.0),
    )
    p = make_processor(world, "m1", handler, config=cfg)
    drive(world, [p], lambda: all_committed(world), max_steps=500)
    p.stop()
    assert_invariants(world)

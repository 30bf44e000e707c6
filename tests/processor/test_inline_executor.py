"""InlineExecutor: handlers run on the poll thread, inside submit(). The Processor
takes a path without Futures for it; the guarantees must be the same."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.runtime import (
    InlineExecutor,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    RetryPolicy,
)
from offsetledger.simulator import ProcessCrashed, World
from tests.processor.helpers import (
    all_committed,
    consumer_config,
    dead_letters,
    drive,
    inputs,
    output_sources,
    seed_world,
    upper,
)
from tests.processor.invariants import assert_invariants

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)


def test_inline_executor_runs_the_task_at_submit() -> None:
    ex = InlineExecutor()
    calls: list[int] = []

    def task() -> int:
        calls.append(1)
        return 7

    ok = ex.submit(task)
    assert calls == [1]
    assert ok.done()
    assert ok.result() == 7
    failed = ex.submit(lambda: 1 // 0)
    assert failed.done()
    assert isinstance(failed.exception(), ZeroDivisionError)
    ex.wait([ok, failed], 1.0)  # returns at once: nothing pending
    ex.shutdown(cancel_pending=True)


def inline_processor(
    world: World,
    member: str,
    handler: object = upper,
    *,
    config: ProcessorConfig | None = None,
    metrics: InMemoryMetrics | None = None,
) -> Processor:
    cfg = config if config is not None else ProcessorConfig(poll_timeout=0.05)
    return Processor(
        world.consumer(consumer_config("g"), member),
        world.producer(name=f"{member}-producer", member=member),
        handler,  # type: ignore[arg-type]
        topics=["in"],
        executor=InlineExecutor(),
        clock=world.clock,
        config=cfg,
        metrics=metrics if metrics is not None else InMemoryMetrics(),
    )


@pytest.mark.parametrize("ordering", list(OrderingMode))
@pytest.mark.parametrize("seed", [1, 2])
def test_every_input_gets_an_output_inline(ordering: OrderingMode, seed: int) -> None:
    world = seed_world(seed, partitions=3, records=60)
    world.faults.set_probability("delivery_retriable", 0.1)
    cfg = ProcessorConfig(poll_timeout=0.05, ordering=ordering, retry=FAST_RETRY)
    p = inline_processor(world, "m1", config=cfg)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert inputs(world) <= set(output_sources(world)), f"seed={seed}: an input has no output"
    assert_invariants(world)


def test_poison_record_goes_to_the_dead_letter_topic_inline() -> None:
    world = seed_world(4, partitions=2, records=10, topics=("out", "dlq"))
    calls: Counter[bytes] = Counter()

    def handler(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        calls[record.value] += 1
        if record.value == b"v3":
            raise ValueError("poison")
        return upper(record)

    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY, dead_letter_topic="dlq")
    p = inline_processor(world, "m1", handler, config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls[b"v3"] == 3
    (dl,) = dead_letters(world)
    assert dl["value"] == b"v3"
    assert dl["offsetledger.error"] is not None
    assert metrics.count("dead_letters") == 1
    assert_invariants(world, dead_letter="dlq")


def test_crash_with_an_inline_executor_redelivers() -> None:
    world = seed_world(5, partitions=2, records=30)
    p1 = inline_processor(world, "m1")
    drive(world, [p1], lambda: len(output_sources(world)) >= 5)
    world.crash("m1")
    with pytest.raises(ProcessCrashed):
        p1.step()
    p2 = inline_processor(world, "m2")
    drive(world, [p2], lambda: all_committed(world), max_steps=20_000)
    p2.stop()
    assert inputs(world) <= set(output_sources(world))
    assert_invariants(world)

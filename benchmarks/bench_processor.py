"""Throughput of the Processor on the simulator, and its cost over a bare loop.

Run: ``.venv/bin/python benchmarks/bench_processor.py [--records N] [--runs R]``

* Processor: UNORDERED and KEY ordering with 1, 4 and 16 workers (on the
  simulator's executor, "workers" = ``max_in_flight_total``), a trivial handler
  (one output per input), auto-commit of stored positions.
* Bare loop: the seed pattern written by hand on the same simulator: poll a batch,
  produce one output per record, serve delivery reports, store offset + 1 of each
  delivered record's input once per loop iteration. No ledger, no executor, no
  retries, no rebalance handling: the floor the Processor is measured against.

Time is the process's CPU time (``time.process_time``: the simulator is single
threaded, and the shared machine makes wall time noisy); each figure is the
median of ``--runs`` runs. The simulated world itself runs on virtual time.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from offsetledger.core import DeliveryReport, Outbound, Record, StoredPosition, TopicPartition
from offsetledger.runtime import (
    InlineExecutor,
    NullMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    batch_handler,
)
from offsetledger.simulator import World

PARTITIONS = 4
GROUP = "bench"
CONSUMER = {
    "group.id": GROUP,
    "enable.auto.offset.store": False,
    "enable.auto.commit": True,
    "auto.offset.reset": "earliest",
}


def _world(records: int) -> World:
    world = World(seed=42)
    world.create_topic("in", partitions=PARTITIONS)
    world.create_topic("out", partitions=PARTITIONS)
    for i in range(records):
        world.append("in", i % PARTITIONS, key=b"k%d" % (i % 64), value=b"v%d" % i)
    return world


def _done(world: World, records: int) -> Callable[[], bool]:
    per = records // PARTITIONS
    ends = [per + (1 if p < records % PARTITIONS else 0) for p in range(PARTITIONS)]

    def check() -> bool:
        return all(world.end_offset("out", p) >= 0 for p in range(PARTITIONS)) and sum(
            world.end_offset("out", p) for p in range(PARTITIONS)
        ) >= sum(ends)

    return check


def handler(record: Record) -> Iterable[Outbound]:
    return (Outbound("out", value=record.value, key=record.key),)


def _handle(record: Record) -> list[Outbound]:
    return list(handler(record))


@batch_handler
def batch(records: list[Record]) -> list[list[Outbound]]:
    """The same handler as a batch handler: one call per run."""
    return [[Outbound("out", value=r.value, key=r.key)] for r in records]


def run_processor(
    records: int,
    ordering: OrderingMode,
    workers: int,
    *,
    inline: bool = False,
    batched: bool = False,
) -> float:
    """CPU seconds for the Processor to process ``records`` records (handlers on the
    simulator's executor, or with ``inline`` on :class:`InlineExecutor`; with
    ``batched`` the handler is a batch handler)."""
    world = _world(records)
    done = _done(world, records)
    cfg = ProcessorConfig(
        batch_size=500,
        poll_timeout=0.05,
        ordering=ordering,
        max_in_flight_total=workers,
        max_in_flight_per_partition=min(workers, 1000),
        processing_timeout=None,
    )
    p = Processor(
        world.consumer(CONSUMER, "m1"),
        world.producer(name="m1-producer", member="m1"),
        batch if batched else handler,  # type: ignore[arg-type]
        topics=["in"],
        executor=InlineExecutor() if inline else world.executor(name="m1-executor", member="m1"),
        clock=world.clock,
        config=cfg,
        metrics=NullMetrics(),
    )
    start = time.process_time()
    while not done():
        p.step()
    elapsed = time.process_time() - start
    p.stop()
    return elapsed


def run_bare(records: int, workers: int = 500) -> float:
    """CPU seconds for the hand-written loop to process ``records`` records, with at
    most ``workers`` records produced and not yet acknowledged (the same concurrency
    bound the Processor gets)."""
    world = _world(records)
    done = _done(world, records)
    consumer = world.consumer(CONSUMER, "m1")
    producer = world.producer(name="m1-producer", member="m1")
    consumer.subscribe(
        ["in"], on_assign=lambda _: None, on_revoke=lambda _: None, on_lost=lambda _: None
    )
    delivered: dict[TopicPartition, int] = {}
    outstanding = 0

    def on_delivery(source: Record, report: DeliveryReport) -> None:
        nonlocal outstanding
        outstanding -= 1
        if report.ok:
            tp = source.tp
            delivered[tp] = max(delivered.get(tp, 0), source.offset + 1)

    start = time.process_time()
    while not done():
        batch: list[Record] = []
        if outstanding < workers:
            batch = consumer.poll(min(500, workers - outstanding), 0.0 if outstanding else 0.05)
        for record in batch:
            for out in handler(record):
                producer.produce(out, functools.partial(on_delivery, record))
                outstanding += 1
        if outstanding:
            producer.poll(0.0 if batch else 0.05)
        if delivered:
            consumer.store([StoredPosition(tp, pos) for tp, pos in delivered.items()])
            delivered.clear()
    elapsed = time.process_time() - start
    consumer.close()
    return elapsed


def run_bare_executor(records: int) -> float:
    """As :func:`run_bare` (unbounded), but each handler call goes through the simulator's
    executor (submit, wait, collect its Future), as the Processor's do: separates the
    cost of the executor hop from the Processor's own bookkeeping."""
    world = _world(records)
    done = _done(world, records)
    consumer = world.consumer(CONSUMER, "m1")
    producer = world.producer(name="m1-producer", member="m1")
    executor = world.executor(name="m1-executor", member="m1")
    consumer.subscribe(
        ["in"], on_assign=lambda _: None, on_revoke=lambda _: None, on_lost=lambda _: None
    )
    delivered: dict[TopicPartition, int] = {}
    running: dict[Future[list[Outbound]], Record] = {}
    outstanding = 0

    def on_delivery(source: Record, report: DeliveryReport) -> None:
        nonlocal outstanding
        outstanding -= 1
        if report.ok:
            tp = source.tp
            delivered[tp] = max(delivered.get(tp, 0), source.offset + 1)

    start = time.process_time()
    while not done():
        busy = outstanding or running
        batch = consumer.poll(500, 0.0 if busy else 0.05)
        for record in batch:
            running[executor.submit(functools.partial(_handle, record))] = record
        if running:
            executor.wait(running.keys(), 0.0 if batch else 0.05)
            for future in [f for f in running if f.done()]:
                record = running.pop(future)
                for out in future.result():
                    producer.produce(out, functools.partial(on_delivery, record))
                    outstanding += 1
        if outstanding:
            producer.poll(0.0 if (batch or running) else 0.05)
        if delivered:
            consumer.store([StoredPosition(tp, pos) for tp, pos in delivered.items()])
            delivered.clear()
    elapsed = time.process_time() - start
    consumer.close()
    return elapsed


def median(fn: Callable[[], float], runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    n, runs = args.records, args.runs
    sizes = (1, 4, 16, 500)
    bare = {w: median(functools.partial(run_bare, n, w), runs) for w in sizes}
    bare_exec = median(functools.partial(run_bare_executor, n), runs)
    print(f"records={n} partitions={PARTITIONS} runs={runs} (medians of CPU time)")
    print(f"{'loop':<30}{'records/s':>11}{'vs bare (same w)':>18}{'vs bare+exec':>14}")

    def row(label: str, t: float, base: float) -> None:
        print(f"{label:<30}{n / t:>11,.0f}{t / base:>18.2f}{t / bare_exec:>14.2f}")

    for w in sizes:
        row(f"bare w={w}", bare[w], bare[w])
    row("bare + executor hop (w=500)", bare_exec, bare[500])
    for ordering in (OrderingMode.UNORDERED, OrderingMode.KEY):
        for w in sizes:
            t = median(functools.partial(run_processor, n, ordering, w), runs)
            row(f"Processor {ordering.name} w={w}", t, bare[w])
    for ordering in (OrderingMode.UNORDERED, OrderingMode.KEY):
        for w in (16, 500):
            t = median(functools.partial(run_processor, n, ordering, w, inline=True), runs)
            row(f"Processor {ordering.name} inline w={w}", t, bare[w])
    for ordering in (OrderingMode.UNORDERED, OrderingMode.KEY):
        t = median(
            functools.partial(run_processor, n, ordering, 500, inline=True, batched=True), runs
        )
        row(f"Processor {ordering.name} inline batch w=500", t, bare[500])


if __name__ == "__main__":
    main()

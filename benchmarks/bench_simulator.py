"""Throughput and memory of the simulator.

A hand-written consume -> produce -> store loop over the ports (no Processor):
poll a batch, produce one output per record, flush (serving the delivery
reports), store offset + 1 of every partition's last record, auto-commit on.
Every step is recorded in the world's history, as in any simulation.

    .venv/bin/python benchmarks/bench_simulator.py [--records N] [--runs R]

Prints the median records/s over R runs and the memory per retained record
(tracemalloc: the log entry plus its history events).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

from offsetledger.core import DeliveryReport, Outbound, StoredPosition, TopicPartition
from offsetledger.simulator import World

PARTITIONS = 4
BATCH = 500


def build(seed: int, records: int) -> World:
    world = World(seed)
    world.create_topic("in", PARTITIONS)
    world.create_topic("out", PARTITIONS)
    for i in range(records):
        world.append("in", i % PARTITIONS, key=b"key-%d" % (i % 1000), value=b"x" * 100)
    return world


def run_loop(world: World, records: int) -> int:
    """Consume every input once, producing one output each; returns records processed."""
    consumer = world.consumer(
        {
            "group.id": "bench",
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "auto.commit.interval.ms": 1000,
        },
        "worker",
    )
    producer = world.producer({"linger.ms": 1}, name="worker")
    consumer.subscribe(
        ["in"], on_assign=lambda _p: None, on_revoke=lambda _p: None, on_lost=lambda _p: None
    )
    failures: list[DeliveryReport] = []

    def on_delivery(report: DeliveryReport) -> None:
        if report.error is not None:
            failures.append(report)

    tps = [TopicPartition("in", p) for p in range(PARTITIONS)]
    done = 0
    while done < records:
        batch = consumer.poll(BATCH, 0.1)
        if not batch:
            continue
        last: dict[int, int] = {}
        for record in batch:
            producer.produce(Outbound("out", record.value, record.key), on_delivery)
            last[record.partition] = record.offset
        if producer.flush(10.0):
            raise RuntimeError(f"flush left reports outstanding (seed={world.seed})")
        consumer.store([StoredPosition(tps[p], offset + 1) for p, offset in last.items()])
        done += len(batch)
    if failures:
        raise RuntimeError(f"{len(failures)} deliveries failed (seed={world.seed})")
    consumer.close()
    return done


def throughput(records: int, seed: int) -> float:
    world = build(seed, records)
    start = time.perf_counter()  # benchmark timing only; the simulation never reads it
    done = run_loop(world, records)
    elapsed = time.perf_counter() - start
    return done / elapsed


def memory_per_record(records: int, seed: int) -> float:
    """Bytes per retained input record: its log entry and its Append event."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    world = build(seed, records)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del world
    return size / records


def memory_per_processed_record(records: int, seed: int) -> float:
    """Bytes per record after the whole loop: input + output entries and all events."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    world = build(seed, records)
    run_loop(world, records)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(s.size_diff for s in after.compare_to(before, "filename"))
    del world
    return size / records


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rates = [throughput(args.records, seed) for seed in range(1, args.runs + 1)]
    setup = f"records per run: {args.records}, runs: {args.runs}"
    print(f"{setup}, batch: {BATCH}, partitions: {PARTITIONS}")
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    print(f"throughput records/s: median {statistics.median(rates):,.0f} (runs: {runs})")
    mem_in = statistics.median(memory_per_record(50_000, seed) for seed in (1, 2, 3))
    mem_all = statistics.median(memory_per_processed_record(50_000, seed) for seed in (1, 2, 3))
    print(f"memory per retained input record (log entry + Append event): {mem_in:,.0f} B")
    print(f"memory per processed record (input, output, all events): {mem_all:,.0f} B")


if __name__ == "__main__":
    main()

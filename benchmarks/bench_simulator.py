"""Throughput and memory of the simulator.

A hand-written consume -> produce -> store loop over the ports (no Processor):
poll a batch, produce one output per record, flush (serving the delivery
reports), store offset + 1 of every partition's last record, auto-commit on.
Every step is recorded in the world's history, as in any simulation.

    .venv/bin/python benchmarks/bench_simulator.py [--records N] [--runs R]

Prints the median records/s over R runs, measured in CPU time of this process
(``time.process_time``: the machine is shared, wall time would measure the
neighbours): of the loop alone, and of the loop plus building the history's event
objects afterwards (``world.history``; the simulator records events as raw tuples
and builds the objects when the history is read). Then the memory per record
(tracemalloc), before and after the history is read.
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


def throughput(records: int, seed: int) -> tuple[float, float]:
    """(records/s of the loop, records/s of the loop plus reading the history)."""
    world = build(seed, records)
    world.history  # noqa: B018 - build the input's events outside the timed section
    # CPU time of this process (the machine is shared: wall time measures the neighbours);
    # benchmark timing only, the simulation never reads it
    start = time.process_time()
    done = run_loop(world, records)
    loop = time.process_time() - start
    events = len(world.history)  # builds the events recorded by the loop
    total = time.process_time() - start
    if events < 4 * records:
        raise RuntimeError(f"only {events} events recorded (seed={world.seed})")
    return done / loop, done / total


def _traced_size(before: tracemalloc.Snapshot) -> int:
    after = tracemalloc.take_snapshot()
    return sum(s.size_diff for s in after.compare_to(before, "filename"))


def memory_per_record(records: int, seed: int) -> tuple[float, float]:
    """Bytes per retained input record (its log entry and its Append event): as
    recorded, and once the history has been read."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    world = build(seed, records)
    raw = _traced_size(before)
    world.history  # noqa: B018 - builds the events
    built = _traced_size(before)
    tracemalloc.stop()
    del world
    return raw / records, built / records


def memory_per_processed_record(records: int, seed: int) -> tuple[float, float]:
    """Bytes per record after the whole loop (input + output entries and all
    events): as recorded, and once the history has been read."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    world = build(seed, records)
    run_loop(world, records)
    raw = _traced_size(before)
    world.history  # noqa: B018 - builds the events
    built = _traced_size(before)
    tracemalloc.stop()
    del world
    return raw / records, built / records


def _medians(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = [throughput(args.records, seed) for seed in range(1, args.runs + 1)]
    setup = f"records per run: {args.records}, runs: {args.runs}"
    print(f"{setup}, batch: {BATCH}, partitions: {PARTITIONS}, CPU time")
    for i, what in enumerate(("loop", "loop + reading the history")):
        rates = [r[i] for r in results]
        runs = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"{what}: median {statistics.median(rates):,.0f} records/s (runs: {runs})")
    in_raw, in_built = _medians([memory_per_record(50_000, seed) for seed in (1, 2, 3)])
    all_raw, all_built = _medians([memory_per_processed_record(50_000, seed) for seed in (1, 2, 3)])
    print(
        "memory per retained input record (log entry + Append event): "
        f"{in_raw:,.0f} B as recorded, {in_built:,.0f} B once the history is read"
    )
    print(
        "memory per processed record (input, output, all events): "
        f"{all_raw:,.0f} B as recorded, {all_built:,.0f} B once the history is read"
    )


if __name__ == "__main__":
    main()

"""Exactly-once against at-least-once on a real Kafka broker, same handler, one
invocation, interleaved rounds (alo, eos, alo, eos, ...), medians.

Per round: a fresh 4-partition input topic pre-filled with ``--records`` records
(value = the append time in ns + padding to 100 bytes), a fresh output topic and
group; the Processor (inline executor, UNORDERED) upper-cases each value into the
output. A separate *process* reads the output with ``isolation.level=read_committed``
and measures end-to-end latency per record: append → visible to read_committed.
Reported: records/s (wall time of the Processor run), CPU µs per record (the
Processor's process, ``time.process_time``), latency p50/p99.

The clients are the real adapters: :class:`ConfluentConsumer` (a
``TransactionalConsumerPort``) and, in transactional mode,
:class:`ConfluentTransactionalProducer`; at-least-once uses :class:`ConfluentProducer`.

``--intervals 0.1,0.5,1,2`` sweeps ``transaction_interval``: each round runs
at-least-once once, then TRANSACTIONAL at every interval (interleaved, so a slow
phase of the shared machine hits every variant). With ``--rate N`` a second set of
rounds appends at N records/s while the Processor runs (no backlog): its latency
is the steady-state one, where the transaction interval shows.

    KAFKA_BOOTSTRAP_SERVERS=host:port python -m benchmarks.bench_eos_kafka \
        --records 30000 --rounds 3 --intervals 0.1,0.5,1,2 --rate 2000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from offsetledger.adapters.confluent import (
    ConfluentConsumer,
    ConfluentProducer,
    ConfluentTransactionalProducer,
)
from offsetledger.core import Outbound, Record
from offsetledger.runtime import (
    CommitMode,
    InlineExecutor,
    NullMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
)

PARTITIONS = 4


def _loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return f.read().strip()


def _admin(bootstrap: str) -> Any:
    import confluent_kafka.admin

    return confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})


def _create(bootstrap: str, *topics: str) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = _admin(bootstrap)  # kept alive until the futures resolve
    futures = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    for f in futures.values():
        f.result(30)


def _fill(bootstrap: str, topic: str, records: int, rate: float = 0.0) -> None:
    """Append ``records`` records; at ``rate`` records/s when given (10 ms ticks)."""
    import confluent_kafka

    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    start = time.monotonic()
    for i in range(records):
        if rate and i % max(1, int(rate / 100)) == 0:
            ahead = start + i / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        value = str(time.time_ns()).encode().ljust(100, b"x")
        while True:
            try:
                p.produce(topic, value=value, key=b"k%07d" % i, partition=i % PARTITIONS)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(60)


def _reader(bootstrap: str, topic: str, records: int, out: Any) -> None:
    """Read ``records`` outputs read_committed; put their latencies (s) on ``out``."""
    import confluent_kafka

    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    c.subscribe([topic])
    lat: list[float] = []
    deadline = time.monotonic() + 600
    while len(lat) < records and time.monotonic() < deadline:
        for m in c.consume(1000, 0.1):
            if m.error() is None:
                now = time.time_ns()
                lat.append((now - int((m.value() or b"0")[:19])) / 1e9)
    c.close()
    out.put(lat)


def _round(
    bootstrap: str,
    records: int,
    mode: CommitMode,
    interval: float,
    *,
    rate: float = 0.0,
    txn_records: int | None = None,
) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    in_topic, out_topic, group = f"eos-in-{run}", f"eos-out-{run}", f"eos-g-{run}"
    _create(bootstrap, in_topic, out_topic)
    spawn = mp.get_context("spawn")
    queue: Any = spawn.Queue()
    reader = spawn.Process(target=_reader, args=(bootstrap, out_topic, records, queue))
    reader.start()
    # the reader is subscribed before anything is appended: latency is end to end
    time.sleep(3)
    filler = None
    if rate:  # appended while the Processor runs, in another process
        filler = spawn.Process(target=_fill, args=(bootstrap, in_topic, records, rate))
        filler.start()
    else:
        _fill(bootstrap, in_topic, records)

    done = 0
    processor: Processor | None = None

    def handler(record: Record) -> Iterable[Outbound]:
        nonlocal done
        done += 1
        if done == records and processor is not None:
            processor.stop()
        return (Outbound(out_topic, value=(record.value or b"").upper(), key=record.key),)

    eos = mode is CommitMode.TRANSACTIONAL
    ccfg: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.offset.store": False,
        "enable.auto.commit": not eos,
    }
    pcfg: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
    }
    if eos:
        pcfg["transactional.id"] = f"eos-bench-{run}"
    consumer = ConfluentConsumer(ccfg)
    producer = (ConfluentTransactionalProducer if eos else ConfluentProducer)(pcfg)
    config = ProcessorConfig(
        batch_size=500,
        poll_timeout=0.1,
        ordering=OrderingMode.UNORDERED,
        max_in_flight_total=10_000,
        max_in_flight_per_partition=5_000,
        max_buffered_per_partition=10_000,
        max_buffered_total=40_000,
        processing_timeout=None,
        lineage_headers=False,
        commit_mode=mode,
        transaction_interval=interval,
    )
    if txn_records is not None:
        config = attrs.evolve(config, transaction_records=txn_records)
    processor = Processor(
        consumer,
        producer,
        handler,
        topics=[in_topic],
        executor=InlineExecutor(),
        config=config,
        metrics=NullMetrics(),
    )
    cpu0, wall0 = time.process_time(), time.monotonic()
    processor.run()
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    producer.close(30)
    if filler is not None:
        filler.join(60)
    lat: list[float] = queue.get(timeout=600)
    reader.join(60)
    lat.sort()
    return {
        "records_per_s": records / wall,
        "cpu_us_per_record": cpu / records * 1e6,
        "latency_p50_ms": lat[len(lat) // 2] * 1e3 if lat else float("nan"),
        "latency_p99_ms": lat[int(len(lat) * 0.99)] * 1e3 if lat else float("nan"),
        "read_committed": float(len(lat)),
    }


def _median(rs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rs) for k in rs[0]}


def _sweep(
    bootstrap: str,
    records: int,
    rounds: int,
    intervals: list[float],
    *,
    rate: float,
    txn_records: int | None,
) -> dict[str, list[dict[str, float]]]:
    """Interleaved rounds: AUTO, then TRANSACTIONAL at each interval, ``rounds`` times.
    Each TRANSACTIONAL result also carries ``ratio``: its records/s over the same
    round's AUTO records/s (paired, so a slow phase of the machine cancels out)."""
    variants = [("AUTO", CommitMode.AUTO, intervals[0])] + [
        (f"TXN@{i:g}s", CommitMode.TRANSACTIONAL, i) for i in intervals
    ]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in variants}
    kind = f"paced {rate:g}/s" if rate else "backlog"
    for n in range(rounds):
        for name, mode, interval in variants:
            r = _round(bootstrap, records, mode, interval, rate=rate, txn_records=txn_records)
            r["ratio"] = (
                r["records_per_s"] / results["AUTO"][-1]["records_per_s"]
                if mode is CommitMode.TRANSACTIONAL
                else 1.0
            )
            r["cpu_ratio"] = (
                r["cpu_us_per_record"] / results["AUTO"][-1]["cpu_us_per_record"]
                if mode is CommitMode.TRANSACTIONAL
                else 1.0
            )
            results[name].append(r)
            shown = "  ".join(f"{k}={v:.2f}" for k, v in r.items())
            print(f"{kind} round {n} {name:10} {shown}  load {_loadavg()}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--intervals",
        default="0.1",
        help="comma-separated transaction_interval values (s) to sweep",
    )
    ap.add_argument(
        "--transaction-records",
        type=int,
        default=None,
        help="transaction_records (default: ProcessorConfig's); raise it so that only "
        "the interval ends a transaction",
    )
    ap.add_argument("--paced-records", type=int, default=10_000, help="records per paced round")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="also run paced rounds appending this many records/s (steady-state latency)",
    )
    args = ap.parse_args(argv)
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    intervals = [float(x) for x in args.intervals.split(",")]
    print(f"load average before: {_loadavg()}", flush=True)
    results = _sweep(
        bootstrap,
        args.records,
        args.rounds,
        intervals,
        rate=0.0,
        txn_records=args.transaction_records,
    )
    med = {name: _median(rs) for name, rs in results.items()}
    alo = med["AUTO"]
    for name, m in med.items():
        shown = "  ".join(f"{k}={v:.1f}" for k, v in m.items())
        cost = 1 - m["records_per_s"] / alo["records_per_s"]
        print(
            f"median backlog {name:10} {shown}  cost of medians {cost * 100:.1f} %  "
            f"median paired cost {(1 - m['ratio']) * 100:.1f} %  "
            f"median paired cpu {(m['cpu_ratio'] - 1) * 100:+.1f} %"
        )
    print(f"load average: {_loadavg()}", flush=True)
    if args.rate:
        paced = _sweep(
            bootstrap,
            args.paced_records,
            args.rounds,
            intervals,
            rate=args.rate,
            txn_records=args.transaction_records,
        )
        for name, rs in paced.items():
            m = _median(rs)
            print(
                f"median paced {args.rate:g}/s {name:10} latency p50 "
                f"{m['latency_p50_ms']:.0f} ms  p99 {m['latency_p99_ms']:.0f} ms  "
                f"cpu {m['cpu_us_per_record']:.1f} us/record"
            )
        print(f"load average: {_loadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Exactly-once against at-least-once on a real Kafka broker, same handler, one
invocation, interleaved rounds (alo, eos, alo, eos, ...), medians.

Per round: a fresh 4-partition input topic pre-filled with ``--records`` records
(value = the append time in ns + padding to 100 bytes), a fresh output topic and
group; the Processor (inline executor, UNORDERED) upper-cases each value into the
output. A separate *process* reads the output with ``isolation.level=read_committed``
and measures end-to-end latency per record: append → visible to read_committed.
Reported: records/s (wall time of the Processor run), CPU µs per record (the
Processor's process, ``time.process_time``), latency p50/p99.

Transactional mode needs a transactional adapter. Until the confluent one
(``adapters/confluent/_txn.py``) is merged, this file carries a minimal stand-in
(:class:`_TxnProducer`, :class:`_TxnConsumer`) over the existing adapters' clients.

    KAFKA_BOOTSTRAP_SERVERS=host:port python -m benchmarks.bench_eos_kafka --records 20000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
from offsetledger.core import Outbound, Record, StoredPosition, TransactionError
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


def _txn_error(exc: Exception) -> TransactionError:
    err = exc.args[0] if exc.args else None
    if err is None or not hasattr(err, "fatal"):
        return TransactionError("UNKNOWN", str(exc), abortable=True)
    fatal = bool(err.fatal())
    abortable = not fatal and bool(err.txn_requires_abort())
    retriable = not fatal and not abortable and bool(err.retriable())
    return TransactionError(
        err.name(), err.str(), fatal=fatal, abortable=abortable, retriable=retriable
    )


class _TxnProducer(ConfluentProducer):
    """Stand-in transactional producer: the calls of confluent-kafka's Producer."""

    def _call(self, call: Callable[..., Any], *args: Any) -> None:
        import confluent_kafka

        try:
            call(*args)
        except confluent_kafka.KafkaException as exc:
            raise _txn_error(exc) from exc

    def init_transactions(self, timeout: float) -> None:
        self._call(self.client.init_transactions, timeout)

    def begin_transaction(self) -> None:
        self._call(self.client.begin_transaction)

    def send_offsets_to_transaction(
        self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
    ) -> None:
        import confluent_kafka

        tps = []
        for sp in positions:
            tp = confluent_kafka.TopicPartition(sp.tp.topic, sp.tp.partition, sp.position)
            if sp.metadata is not None:
                tp = confluent_kafka.TopicPartition(
                    sp.tp.topic, sp.tp.partition, sp.position, metadata=sp.metadata
                )
            tps.append(tp)
        self._call(self.client.send_offsets_to_transaction, tps, group_metadata, timeout)

    def commit_transaction(self, timeout: float) -> None:
        self._call(self.client.commit_transaction, timeout)

    def abort_transaction(self, timeout: float) -> None:
        self._call(self.client.abort_transaction, timeout)


class _TxnConsumer(ConfluentConsumer):
    """Stand-in transactional consumer: group metadata and seek."""

    def group_metadata(self) -> object:
        return self.client.consumer_group_metadata()

    def seek(self, position: StoredPosition) -> None:
        import confluent_kafka

        tp = position.tp
        self.client.seek(confluent_kafka.TopicPartition(tp.topic, tp.partition, position.position))


def _admin(bootstrap: str) -> Any:
    import confluent_kafka.admin

    return confluent_kafka.admin.AdminClient({"bootstrap.servers": bootstrap})


def _create(bootstrap: str, *topics: str) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    admin = _admin(bootstrap)  # kept alive until the futures resolve
    futures = admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics])
    for f in futures.values():
        f.result(30)


def _fill(bootstrap: str, topic: str, records: int) -> None:
    import confluent_kafka

    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(records):
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


def _round(bootstrap: str, records: int, mode: CommitMode, interval: float) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    in_topic, out_topic, group = f"eos-in-{run}", f"eos-out-{run}", f"eos-g-{run}"
    _create(bootstrap, in_topic, out_topic)
    queue: Any = mp.get_context("spawn").Queue()
    reader = mp.get_context("spawn").Process(
        target=_reader, args=(bootstrap, out_topic, records, queue)
    )
    reader.start()
    # the reader is subscribed before anything is appended: latency is end to end
    time.sleep(3)
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
    consumer = (_TxnConsumer if eos else ConfluentConsumer)(ccfg)
    producer = (_TxnProducer if eos else ConfluentProducer)(pcfg)
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


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.1, help="transaction_interval, s")
    args = ap.parse_args(argv)
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    results: dict[CommitMode, list[dict[str, float]]] = {
        CommitMode.AUTO: [],
        CommitMode.TRANSACTIONAL: [],
    }
    for i in range(args.rounds):
        for mode in (CommitMode.AUTO, CommitMode.TRANSACTIONAL):
            r = _round(bootstrap, args.records, mode, args.interval)
            results[mode].append(r)
            print(f"round {i} {mode.name:13} {r}  load {_loadavg()}")
    med = {
        mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        for mode, rs in results.items()
    }
    for mode, m in med.items():
        print(f"median {mode.name:13} " + "  ".join(f"{k}={v:.1f}" for k, v in m.items()))
    alo, eos = med[CommitMode.AUTO], med[CommitMode.TRANSACTIONAL]
    cost = 1 - eos["records_per_s"] / alo["records_per_s"]
    print(f"throughput cost of TRANSACTIONAL: {cost * 100:.1f} %")
    print(f"load average: {_loadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Micro-benchmarks of the confluent adapter's per-record paths, old code vs new.

Cases (ns per record, CPU time of the process, ``time.process_time``):

* ``poll``: ``ConfluentConsumer.poll(500)`` over a stand-in client whose
  ``consume`` returns 500 prebuilt ``confluent_kafka.Message`` objects (no
  broker): building the Records.
* ``outbound`` / ``outbound-headers``: ``Outbound(topic, value=..., key=...)``,
  as a handler builds one per output (with two headers in the second case).
* ``produce``: ``ConfluentProducer.produce`` + serving the delivery report into a
  callback, over a stand-in client (its ``produce`` stores the callback, its
  ``poll`` calls each with a prebuilt Message): the adapter's own work per
  message, without librdkafka's.
* ``produce-floor``: the stand-in client alone (its Python ``produce`` and
  ``poll`` with one shared callback): what no adapter change can remove.
* ``produce-many``: the same through ``produce_many`` in calls of 125 messages
  (a poll's chunk of one partition), with lineage-style ``extra_headers``
  (skipped where the code has no ``produce_many``).
* ``produce-clone``: what a runtime without ``extra_headers`` pays instead: an
  ``attrs.evolve`` of the Outbound with the extra headers, then ``produce``.
* with ``--bootstrap`` (or ``KAFKA_BOOTSTRAP_SERVERS``): ``store``, one
  ``ConfluentConsumer.store`` of 4 positions on a real broker (ns per call);
  ``kafka-produce`` / ``kafka-produce-many``: 20,000 messages through the real
  producer to the broker, flushed (ns of process CPU per message, librdkafka's
  threads included).

Each ``--src`` directory (a ``src/`` of offsetledger; default: this checkout's) is
measured in its own process, one process per round and source, rounds
interleaved with the order rotated; figures are medians over rounds, ratios
against the first source. Example (old code exported to /tmp/base)::

    git archive 945f8ff src | tar -x -C /tmp/base
    .venv/bin/python benchmarks/bench_adapter.py --runs 7 --src /tmp/base/src,src
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CHUNK = 125


class _FakeProducerClient:
    """Stands in for confluent_kafka.Producer: produce() keeps the callback, poll()
    calls every kept callback with (None, message)."""

    def __init__(self, msg: Any) -> None:
        self.callbacks: list[Callable[[Any, Any], None]] = []
        self.msg = msg

    def produce(  # noqa: PLR0917 - librdkafka's positional signature
        self,
        topic: str,
        value: object = None,
        key: object = None,
        partition: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        headers: object = None,
    ) -> None:
        self.callbacks.append(on_delivery)  # type: ignore[arg-type]

    def poll(self, _timeout: float = 0) -> int:
        callbacks, self.callbacks = self.callbacks, []
        msg = self.msg
        for cb in callbacks:
            cb(None, msg)
        return len(callbacks)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


class _FakeConsumerClient:
    def __init__(self, batch: list[Any]) -> None:
        self.batch = batch

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Any]:
        return self.batch[:num_messages]

    def close(self) -> None:
        pass


def _cpu(fn: Callable[[], None]) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def one_round(n: int, bootstrap: str | None) -> dict[str, float]:
    """ns per record of every case, measured once in this process."""
    import attrs
    import confluent_kafka as ck

    from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
    from offsetledger.core import DeliveryReport, Outbound, Record

    out: dict[str, float] = {}
    batch = [
        ck.Message(
            topic="orders",
            partition=i % 4,
            offset=i,
            key=b"key-%04d" % i,
            value=b"x" * 100,
            headers=None,
            timestamp=(1, 1_700_000_000_000),
            leader_epoch=0,
        )
        for i in range(500)
    ]
    consumer = ConfluentConsumer(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "bench", "log_level": 0},
        connect_timeout=None,
    )
    real_consumer = consumer._consumer
    consumer._consumer = _FakeConsumerClient(batch)  # type: ignore[assignment]
    polls = max(1, n // 500)

    def poll() -> None:
        for _ in range(polls):
            consumer.poll(500, 0.0)

    out["poll"] = _cpu(poll) / (polls * 500) * 1e9
    consumer._consumer = real_consumer
    consumer.close()

    values = [b"x" * 100] * n
    key = b"key-0001"

    def outbound() -> None:
        for v in values:
            Outbound("out", value=v, key=key)

    out["outbound"] = _cpu(outbound) / n * 1e9
    hs = (("trace", b"abc"), ("kind", b"upper"))

    def outbound_headers() -> None:
        for v in values:
            Outbound("out", value=v, key=key, headers=hs)

    out["outbound-headers"] = _cpu(outbound_headers) / n * 1e9

    messages = [Outbound("out", value=v, key=key) for v in values]
    extra = (
        ("offsetledger.source.topic", b"orders"),
        ("offsetledger.source.partition", b"1"),
        ("offsetledger.source.offset", b"12345"),
    )
    producer = ConfluentProducer(
        {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}, connect_timeout=None
    )
    real_producer = producer._producer
    fake = _FakeProducerClient(ck.Message(topic="out", partition=1, offset=7))
    producer._producer = fake  # type: ignore[assignment]
    producer._produce = fake.produce
    got: list[object] = []

    def floor() -> None:
        def cb(_err: object, _msg: object) -> None:
            pass

        for m in messages:
            fake.produce(m.topic, m.value, m.key, -1, cb, headers=None)
        fake.poll()

    out["produce-floor"] = _cpu(floor) / n * 1e9

    def produce() -> None:
        got.clear()
        sink = got.append
        for m in messages:
            producer.produce(m, sink)
        producer.poll(0)

    out["produce"] = _cpu(produce) / n * 1e9
    assert len(got) == n
    assert isinstance(got[0], DeliveryReport)
    assert got[0].ok

    def produce_clone() -> None:
        got.clear()
        sink = got.append
        for m in messages:
            producer.produce(attrs.evolve(m, headers=m.headers + extra), sink)
        producer.poll(0)

    out["produce-clone"] = _cpu(produce_clone) / n * 1e9
    if hasattr(producer, "produce_many"):
        reports: list[int] = []

        def on_report(i: int, error: object) -> None:
            if error is None:
                reports.append(i)

        chunks = [messages[i : i + CHUNK] for i in range(0, n, CHUNK)]
        extras = [[extra] * len(c) for c in chunks]

        def produce_many() -> None:
            reports.clear()
            for chunk, ex in zip(chunks, extras, strict=True):
                producer.produce_many(chunk, on_report, ex)
            producer.poll(0)

        out["produce-many"] = _cpu(produce_many) / n * 1e9
        assert len(reports) == n
    producer._producer = real_producer
    producer._produce = real_producer.produce
    producer.flush(0)
    if bootstrap:
        out.update(_broker_cases(bootstrap, min(n, 20_000)))
    _ = Record
    return out


def _broker_cases(bootstrap: str, n: int) -> dict[str, float]:
    from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
    from offsetledger.adapters.confluent_admin import create_topics
    from offsetledger.core import Outbound, StoredPosition, TopicPartition

    out: dict[str, float] = {}
    topic = f"bench-adapter-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 4})
    consumer = ConfluentConsumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest"}
    )
    assigned: list[object] = []
    consumer.subscribe(
        [topic], on_assign=assigned.extend, on_revoke=lambda _p: None, on_lost=lambda _p: None
    )
    deadline = time.monotonic() + 30
    while len(assigned) < 4 and time.monotonic() < deadline:
        consumer.poll(10, 0.1)
    tps = [TopicPartition(topic, p) for p in range(4)]
    calls = 2_000
    positions = [[StoredPosition(tp, i) for tp in tps] for i in range(calls)]

    def store() -> None:
        for ps in positions:
            consumer.store(ps)

    out["store"] = _cpu(store) / calls * 1e9
    consumer.close()
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": "all"})
    messages = [Outbound(topic, value=b"x" * 100, key=b"k%05d" % i) for i in range(n)]
    delivered: list[object] = []

    def kafka_produce() -> None:
        sink = delivered.append
        for m in messages:
            producer.produce(m, sink)
            producer.poll(0)
        producer.flush(30)

    out["kafka-produce"] = _cpu(kafka_produce) / n * 1e9
    if hasattr(producer, "produce_many"):
        acked: list[int] = []

        def on_report(i: int, error: object) -> None:
            acked.append(i)

        def kafka_produce_many() -> None:
            for i in range(0, n, CHUNK):
                producer.produce_many(messages[i : i + CHUNK], on_report)
                producer.poll(0)
            producer.flush(30)

        out["kafka-produce-many"] = _cpu(kafka_produce_many) / n * 1e9
    producer.close()
    return out


def drive(args: argparse.Namespace) -> int:
    sources = [str(Path(s).resolve()) for s in args.src.split(",")]
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or ""
    results: dict[str, list[dict[str, float]]] = {s: [] for s in sources}
    loads = []
    for round_no in range(args.runs):
        shift = round_no % len(sources)
        for src in sources[shift:] + sources[:shift]:
            loads.append(os.getloadavg()[0])
            cmd = [sys.executable, __file__, "--worker", "--records", str(args.records)]
            if bootstrap and not args.no_broker:
                cmd += ["--bootstrap", bootstrap]
            env = {**os.environ, "PYTHONPATH": src}
            got = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            line = [x for x in got.stdout.splitlines() if x.startswith("RESULT ")]
            if got.returncode != 0 or not line:
                print(f"worker failed for {src}: {got.stderr[-800:]}", file=sys.stderr)
                return 1
            results[src].append(json.loads(line[-1][7:]))
            print(f"# round {round_no} {src}: {line[-1][7:]}", file=sys.stderr, flush=True)
    cases = sorted({c for rs in results.values() for r in rs for c in r})
    base = sources[0]
    print(
        f"\n{args.records} records per case, {args.runs} interleaved rounds, medians of "
        f"ns per record (store: per call); load average (1 min) median "
        f"{statistics.median(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}\n"
    )
    print("| case | " + " | ".join(sources) + " | ratio last/first |")
    print("|---|" + "---:|" * (len(sources) + 1))
    summary: dict[str, dict[str, float | None]] = {}
    for case in cases:
        row = {}
        for src in sources:
            vals = [r[case] for r in results[src] if case in r]
            row[src] = statistics.median(vals) if vals else None
        summary[case] = row
        first, last = row[base], row[sources[-1]]
        ratio = f"{last / first:.2f}" if first and last else "-"
        cells = " | ".join(f"{row[s]:,.0f}" if row[s] else "-" for s in sources)
        print(f"| {case} | {cells} | {ratio} |")
    if args.json:
        print(json.dumps({"results": results, "summary": summary}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--src", default=str(REPO / "src"), help="comma-separated src/ directories")
    ap.add_argument("--bootstrap", default=None, help="broker for the store/kafka-* cases")
    ap.add_argument("--no-broker", action="store_true", help="skip the broker cases")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        result = one_round(args.records, args.bootstrap)
        print("RESULT " + json.dumps({k: round(v, 1) for k, v in result.items()}), flush=True)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())

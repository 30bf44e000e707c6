"""Consume-transform-produce on a real Kafka broker: offsetledger vs. the alternatives.

Every contender reads the same pre-filled input topic (``--records`` records of
100-byte values with 8-byte keys, 4 partitions), upper-cases each value, produces it
with the input's key to a fresh 4-partition output topic, in a fresh consumer group,
with at-least-once semantics (an input's offset is committed only after its output
was acknowledged):

* ``a``: the baseline, a hand-written *pipelined* confluent-kafka loop, the seed
  pattern: ``enable.auto.offset.store=false`` + ``enable.auto.commit=true``; each
  output is produced with an ``on_delivery`` callback, no flush per batch; per input
  partition the polled offsets are kept in order and the contiguous prefix whose
  outputs were acknowledged is stored as ``offset + 1``
  (``store_offsets(offsets=[TopicPartition(t, p, o + 1)])``, once per loop iteration
  per partition that moved). The watermark is needed because outputs go to other
  partitions than their inputs, so delivery reports of one input partition can come
  back out of order. Every ratio in the table is against this loop.
* ``a-flush``: the same loop, but it flushes the producer after each batch and
  then stores the batch's positions (the simple way to write it: no watermark).
* ``b-readme``: offsetledger exactly as README.md shows it: the example's
  ``ProcessorConfig(ordering=..., dead_letter_topic=...)`` and
  ``ThreadPoolExecutorAdapter(max_workers=...)``, read from README.md at run time
  (so the contender follows the README), nothing else tuned (the consumer and
  producer configuration are the benchmark's common ones, below).
  ``b-readme-inline`` is the same with ``InlineExecutor()``.
* ``b-batch`` / ``b-batch-inline``: the same two, with a batch handler
  (``@batch_handler``: a run of records in, one output list per record out).
* ``b``: offsetledger's :class:`~offsetledger.runtime.Processor` over
  ``ConfluentConsumer``/``ConfluentProducer`` in the benchmark's *tuned*
  configuration: ``UNORDERED``, large in-flight and buffer limits, no lineage
  headers, auto-commit of stored positions, handlers run inline (the runtime's
  :class:`InlineExecutor`: with a trivial handler a thread pool only adds a thread
  hop). ``b-pool`` is the same with the runtime's ``ThreadPoolExecutorAdapter``
  (4 workers).
* ``c``: sentry-arroyo: ``StreamProcessor`` + ``RunTask`` -> ``Produce`` ->
  ``CommitOffsets`` (arroyo's default commit policy, once per second). Arroyo calls
  the function again for a message its ``Produce`` step pushed back
  (``MessageRejected``), so its progress counts distinct input offsets, not calls.
* ``d``: quixstreams ``Application(processing_guarantee="at-least-once")``,
  ``sdf.apply(...).to_topic(...)``.

Every producer: ``acks=all``, ``enable.idempotence=true``, ``linger.ms=5``; all other
client settings are each library's defaults.

Each contender runs in its own process (``--worker``), so quixstreams can use its
own virtualenv: quixstreams 3.28 requires ``confluent-kafka<2.13`` while the project
uses 2.16 (``--quix-python``). Runs are interleaved (round-robin, order rotated each
round).

Timing: from the first record handed to the transform (reported by the worker,
``time.monotonic``, which is system-wide on Linux) to the moment the output topic's
end offsets add up to ``--records`` (this process polls them every 20 ms). A run is
valid only if the output topic ends with exactly ``--records`` records. Also
reported: the worker's CPU time (all its threads, librdkafka's included) from the
first to the last record handled, per record, and the group's committed positions
after the worker shut down. "Handled" counts distinct input offsets for every
contender (a function called twice for one record counts once).

Cost in size: ``--sizes 50000,800000`` runs every contender at each size
(interleaved) and prints µs per record (wall and CPU) at the largest size over the
smallest, the worker's peak resident memory (sampled every 50 ms; librdkafka's
buffers included, which its ``queued.max.messages.kbytes`` bounds) and the Python
objects (garbage-collector tracked) added between the first and the last record.

Run (see docs/benchmarks.md for the venvs)::

    /tmp/olbench-venv/bin/python benchmarks/bench_kafka.py --records 200000 --runs 5 \\
        --contenders a,a-flush,b-readme,b-readme-inline,b,c,d \\
        --quix-python /tmp/olbench-quix/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BROKER_TOOL = REPO / "tools" / "kafka" / "broker.py"
PARTITIONS = 4
VALUE_SIZE = 100
ALL_CONTENDERS = ("a", "a-flush", "b-readme", "b-readme-inline", "b", "b-batch", "c", "d")
KNOWN_CONTENDERS = (
    "a",
    "a-flush",
    "b-readme",
    "b-readme-inline",
    "b",
    "b-pool",
    "b-batch",
    "b-batch-inline",
    "c",
    "d",
)
#: ``b@base`` (any offsetledger contender + this suffix) runs the same worker with
#: ``--base-src`` on PYTHONPATH instead of this checkout's src: an older version of
#: the library (e.g. ``git worktree add /tmp/base HEAD~1``), measured in the same
#: invocation, interleaved, so a change is judged against its own baseline.
BASE_SUFFIX = "@base"


def _base_name(contender: str) -> str:
    return contender.removesuffix(BASE_SUFFIX)


LABELS = {
    "a": "(a) hand loop, pipelined (baseline)",
    "a-flush": "(a') hand loop, flush per batch",
    "b-readme": "(b) offsetledger as README.md shows it (8-thread pool)",
    "b-readme-inline": "(b) offsetledger as README.md, InlineExecutor",
    "b": "(b) offsetledger tuned (inline)",
    "b-pool": "(b) offsetledger tuned (4-thread pool)",
    "b-batch": "(b) offsetledger as README.md, batch handler (8-thread pool)",
    "b-batch-inline": "(b) offsetledger as README.md, batch handler, InlineExecutor",
    "c": "(c) sentry-arroyo",
    "d": "(d) quixstreams",
}


def _label(contender: str) -> str:
    label = LABELS[_base_name(contender)]
    return f"{label} [--base-src]" if contender.endswith(BASE_SUFFIX) else label


WATCH_INTERVAL = 0.02
LAST_WATCH_ERROR: list[str] = []
PRODUCER_SETTINGS: dict[str, Any] = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}


def transform(value: bytes) -> bytes:
    """The per-record work: a trivial byte operation."""
    return value.upper()


# --------------------------------------------------------------------------- workers


class _Progress:
    """What a worker reports: when the first and the last record were handled."""

    def __init__(self, records: int) -> None:
        self.records = records
        self.handled = 0
        self.calls = 0  # handler calls, repeats included (see tick_once)
        #: per input partition, one bit per offset seen (a set of (partition, offset)
        #: pairs grew to ~100 MB at 800k records and showed up as the contender's cost)
        self._seen: dict[int, bytearray] = {}
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.t_last = 0.0
        self.cpu_last = 0.0
        #: the CPU clock of the thread that built this (the worker's main thread, which
        #: runs the poll loop): read from any thread, so a pool's handler threads can
        #: tick. With one Python thread doing the loop's work, its CPU per record bounds
        #: the throughput, whatever librdkafka's threads do on the other core.
        self._main_clock = time.pthread_getcpuclockid(threading.get_ident())
        self.main_cpu0 = 0.0
        self.main_cpu_last = 0.0
        self.rss_start_kb = 0
        self.objects_start = 0
        self._rss_max_kb = 0
        self._sampling = threading.Event()
        sampler = threading.Thread(target=self._sample_rss, name="rss-sampler", daemon=True)
        sampler.start()

    def _sample_rss(self) -> None:
        """The worker's own resident memory, sampled every 50 ms (getrusage's peak
        would include the driver's memory, inherited through fork)."""
        while not self._sampling.wait(0.05):
            self._rss_max_kb = max(self._rss_max_kb, _rss_kb())

    def tick(self) -> bool:
        """Count one handled record; True when it was the last one."""
        if self.handled == 0:
            self.objects_start = len(gc.get_objects())
            self.rss_start_kb = _rss_kb()
            self.t0 = time.monotonic()
            self.cpu0 = time.process_time()
            self.main_cpu0 = time.clock_gettime(self._main_clock)
        self.handled += 1
        if self.handled == self.records:
            self.t_last = time.monotonic()
            self.cpu_last = time.process_time()
            self.main_cpu_last = time.clock_gettime(self._main_clock)
            return True
        return False

    def tick_once(self, partition: int, offset: int) -> bool:
        """Count a handled record once per distinct input offset (a contender may
        call its function again for the same record); True when it was the last."""
        self.calls += 1
        seen = self._seen.get(partition)
        if seen is None:
            seen = self._seen[partition] = bytearray()
        byte, bit = offset >> 3, 1 << (offset & 7)
        if byte >= len(seen):
            seen.extend(bytes(byte + 1 - len(seen) + 4096))
        if seen[byte] & bit:
            return False
        seen[byte] |= bit
        return self.tick()

    def report(self, **extra: object) -> dict[str, object]:
        return {
            "handled": self.handled,
            "calls": self.calls or self.handled,
            "t0": self.t0,
            "t_last": self.t_last,
            "cpu": self.cpu_last - self.cpu0,
            "main_cpu": self.main_cpu_last - self.main_cpu0,
            "rss_start_kb": self.rss_start_kb,
            "rss_peak_kb": max(self._rss_max_kb, _rss_kb()),
            # objects the garbage collector tracks: the Python heap, without
            # librdkafka's buffers (bounded by queued.max.messages.kbytes)
            "objects_start": self.objects_start,
            "objects_end": self._stop_and_count(),
            **extra,
        }

    def _stop_and_count(self) -> int:
        self._sampling.set()
        return len(gc.get_objects())


def _rss_kb() -> int:
    """The worker's resident memory now, in KiB (Linux: /proc/self/statm)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:  # not Linux: the peak is still reported
        return 0


def readme_shape() -> tuple[str, int]:
    """The ordering mode and thread-pool size README.md's example uses (read from
    the README, so ``b-readme`` follows it when it changes); UNORDERED and 8 if the
    example does not say."""
    text = (REPO / "README.md").read_text(encoding="utf-8") if (REPO / "README.md").exists() else ""
    ordering = re.search(r"ordering=OrderingMode\.([A-Z]+)", text)
    workers = re.search(r"ThreadPoolExecutorAdapter\(max_workers=(\d+)\)", text)
    return (
        ordering.group(1) if ordering else "UNORDERED",
        int(workers.group(1)) if workers else 8,
    )


def _consumer_base(bootstrap: str, group: str) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}


def worker_handwritten(
    bootstrap: str, in_topic: str, out_topic: str, group: str, records: int
) -> dict[str, object]:
    """(a) The seed pattern written by hand over confluent-kafka."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    progress = _Progress(records)
    consumer = Consumer(
        {
            **_consumer_base(bootstrap, group),
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    # per input partition: offsets polled, in order, whose outputs are not all
    # acknowledged yet, and the acknowledged ones among them
    polled: dict[int, deque[int]] = {}
    acked: dict[int, set[int]] = {}
    dirty: set[int] = set()
    failures: list[str] = []
    outstanding = 0

    def on_delivery(partition: int, offset: int, err: Any, _msg: Any) -> None:
        nonlocal outstanding
        outstanding -= 1
        if err is not None:
            failures.append(str(err))  # never stored: the watermark stalls here
            return
        acked[partition].add(offset)
        dirty.add(partition)

    def store_watermarks() -> None:
        stores = []
        for partition in dirty:
            queue, done = polled[partition], acked[partition]
            last = -1
            while queue and queue[0] in done:
                last = queue.popleft()
                done.discard(last)
            if last >= 0:
                stores.append(TopicPartition(in_topic, partition, last + 1))
        dirty.clear()
        if stores:
            consumer.store_offsets(offsets=stores)

    consumer.subscribe([in_topic])
    finished = False
    try:
        while not finished or outstanding:
            batch = consumer.consume(500, 0.0 if outstanding else 0.1)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consumer error: {err}")
                partition: int = msg.partition()  # type: ignore[assignment]  # set for records
                offset: int = msg.offset()  # type: ignore[assignment]
                queue = polled.get(partition)
                if queue is None:
                    queue = polled[partition] = deque()
                    acked[partition] = set()
                queue.append(offset)
                callback = functools.partial(on_delivery, partition, offset)
                while True:
                    try:
                        producer.produce(
                            out_topic,
                            transform(msg.value() or b""),
                            msg.key(),
                            on_delivery=callback,
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
                outstanding += 1
                if progress.tick():
                    finished = True
            producer.poll(0.0 if batch or not outstanding else 0.05)
            if dirty:
                store_watermarks()
            if failures:
                raise RuntimeError(f"delivery failed: {failures[0]}")
        producer.flush(30)
        store_watermarks()
    finally:
        consumer.close()  # auto-commit commits the stored positions on close
    return progress.report()


def worker_flush_per_batch(
    bootstrap: str, in_topic: str, out_topic: str, group: str, records: int
) -> dict[str, object]:
    """(a') The hand loop written the simple way: produce the batch, flush the
    producer (every delivery report is in), then store each partition's highest
    offset + 1 of the batch."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    progress = _Progress(records)
    consumer = Consumer(
        {
            **_consumer_base(bootstrap, group),
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    consumer.subscribe([in_topic])
    finished = False
    try:
        while not finished:
            batch = consumer.consume(500, 0.1)
            top: dict[int, int] = {}
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(f"consumer error: {err}")
                partition: int = msg.partition()  # type: ignore[assignment]  # set for records
                offset: int = msg.offset()  # type: ignore[assignment]
                top[partition] = offset
                while True:
                    try:
                        producer.produce(
                            out_topic,
                            transform(msg.value() or b""),
                            msg.key(),
                            on_delivery=on_delivery,
                        )
                        break
                    except BufferError:
                        producer.poll(0.01)
                if progress.tick():
                    finished = True
            if not top:
                continue
            if producer.flush(30):
                raise RuntimeError("flush timed out")
            if failures:
                raise RuntimeError(f"delivery failed: {failures[0]}")
            consumer.store_offsets(
                offsets=[TopicPartition(in_topic, p, o + 1) for p, o in top.items()]
            )
    finally:
        consumer.close()  # auto-commit commits the stored positions on close
    return progress.report()


def worker_offsetledger_readme(
    bootstrap: str,
    in_topic: str,
    out_topic: str,
    group: str,
    records: int,
    *,
    dead_letter_topic: str,
    inline: bool,
    batch: bool = False,
) -> dict[str, object]:
    """(b-readme) offsetledger exactly as README.md shows it: the README's config
    and executor, nothing tuned. With ``batch`` the handler is a batch handler
    (``@batch_handler``: a run's records in, one output list per record out)."""
    from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
    from offsetledger.core import Outbound, Record
    from offsetledger.runtime import (
        InlineExecutor,
        OrderingMode,
        Processor,
        ProcessorConfig,
        ThreadPoolExecutorAdapter,
        batch_handler,
    )

    progress = _Progress(records)
    running: list[Processor] = []

    def handle(record: Record) -> list[Outbound]:
        out = [Outbound(out_topic, value=transform(record.value or b""), key=record.key)]
        if progress.tick_once(record.partition, record.offset) and running:
            running[0].stop()  # from inside a step: the run loop drains, flushes, commits
        return out

    def handle_batch(records: Sequence[Record]) -> list[list[Outbound]]:
        out = [[Outbound(out_topic, value=transform(r.value or b""), key=r.key)] for r in records]
        tick = progress.tick_once
        last = False
        for r in records:
            last = tick(r.partition, r.offset) or last
        if last and running:
            running[0].stop()
        return out

    consumer = ConfluentConsumer(
        {**_consumer_base(bootstrap, group), "enable.auto.offset.store": False}
    )
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    ordering, workers = readme_shape()
    config = ProcessorConfig(ordering=OrderingMode[ordering], dead_letter_topic=dead_letter_topic)
    executor = InlineExecutor() if inline else ThreadPoolExecutorAdapter(max_workers=workers)
    handler: Any = batch_handler(handle_batch) if batch else handle
    with Processor(
        consumer, producer, handler, topics=[in_topic], config=config, executor=executor
    ) as processor:
        running.append(processor)
        processor.run()
    return progress.report()


def worker_offsetledger(
    bootstrap: str, in_topic: str, out_topic: str, group: str, records: int, *, pool: bool
) -> dict[str, object]:
    """(b) offsetledger's Processor, tuned."""
    from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
    from offsetledger.core import Outbound, Record
    from offsetledger.runtime import (
        InlineExecutor,
        NullMetrics,
        OrderingMode,
        Processor,
        ProcessorConfig,
        ThreadPoolExecutorAdapter,
    )

    progress = _Progress(records)
    processor: Processor | None = None

    def handler(record: Record) -> Iterable[Outbound]:
        out = (Outbound(out_topic, value=transform(record.value or b""), key=record.key),)
        if progress.tick_once(record.partition, record.offset) and processor is not None:
            processor.stop()  # from inside a step: the run loop drains, flushes, commits
        return out

    config = ProcessorConfig(
        batch_size=500,
        poll_timeout=0.1,
        ordering=OrderingMode.UNORDERED,
        # in flight = handed to the handler and not finished, i.e. until the output's
        # delivery report: it must cover (throughput x delivery latency)
        max_in_flight_total=10_000,
        max_in_flight_per_partition=5_000,
        max_buffered_per_partition=10_000,
        max_buffered_total=40_000,
        processing_timeout=None,
        lineage_headers=False,  # the other contenders add no headers either
    )
    consumer = ConfluentConsumer(
        {
            **_consumer_base(bootstrap, group),
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
    )
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})
    executor = ThreadPoolExecutorAdapter(4) if pool else InlineExecutor()
    processor = Processor(
        consumer,
        producer,
        handler,
        topics=[in_topic],
        executor=executor,
        config=config,
        metrics=NullMetrics(),
    )
    processor.run()
    producer.close(30)
    if pool:
        executor.shutdown()
    return progress.report()


def worker_arroyo(
    bootstrap: str, in_topic: str, out_topic: str, group: str, records: int
) -> dict[str, object]:
    """(c) sentry-arroyo: RunTask -> Produce -> (count) -> CommitOffsets."""
    from arroyo.backends.kafka import (
        KafkaConsumer,
        KafkaPayload,
        KafkaProducer,
        build_kafka_consumer_configuration,
        build_kafka_producer_configuration,
    )
    from arroyo.processing import StreamProcessor
    from arroyo.processing.strategies import (
        CommitOffsets,
        ProcessingStrategy,
        ProcessingStrategyFactory,
        Produce,
        RunTask,
    )
    from arroyo.types import Commit, Message, Topic

    progress = _Progress(records)
    delivered = 0
    processor: Any = None

    def run(message: Message[KafkaPayload]) -> KafkaPayload:
        payload = message.payload
        # called again for a message Produce pushed back: count each input once
        value: Any = message.value  # a BrokerValue: partition and offset
        progress.tick_once(value.partition.index, value.offset)
        return KafkaPayload(payload.key, transform(payload.value), [])

    class CountDelivered(ProcessingStrategy[Any]):  # type: ignore[misc, unused-ignore]
        """Passes messages (outputs acknowledged) on to the commit step; asks the
        processor to shut down once every record got there."""

        def __init__(self, next_step: ProcessingStrategy[Any]) -> None:
            self.next_step = next_step

        def submit(self, message: Message[Any]) -> None:
            nonlocal delivered
            self.next_step.submit(message)
            delivered += 1
            if delivered == records and processor is not None:
                processor.signal_shutdown()

        def poll(self) -> None:
            self.next_step.poll()

        def join(self, timeout: float | None = None) -> None:
            self.next_step.join(timeout)

        def close(self) -> None:
            self.next_step.close()

        def terminate(self) -> None:
            self.next_step.terminate()

    producer = KafkaProducer(
        build_kafka_producer_configuration(
            {"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS},
        )
    )

    class Factory(ProcessingStrategyFactory[KafkaPayload]):  # type: ignore[misc, unused-ignore]
        def create_with_partitions(
            self, commit: Commit, partitions: Any
        ) -> ProcessingStrategy[KafkaPayload]:
            return RunTask(
                run, Produce(producer, Topic(out_topic), CountDelivered(CommitOffsets(commit)))
            )

    consumer = KafkaConsumer(
        build_kafka_consumer_configuration(
            {"bootstrap.servers": bootstrap},
            group_id=group,
            auto_offset_reset="earliest",
        )
    )
    processor = StreamProcessor(consumer, Topic(in_topic), Factory())
    processor.run()
    producer.close().result(30)
    return progress.report(delivered=delivered)


def worker_quixstreams(
    bootstrap: str, in_topic: str, out_topic: str, group: str, records: int
) -> dict[str, object]:
    """(d) quixstreams, at-least-once."""
    from quixstreams import Application

    progress = _Progress(records)
    app: Any = None

    def processed(_topic: str, _partition: int, _offset: int) -> None:
        if progress.handled >= records and app is not None:
            app.stop()

    def run(value: bytes) -> bytes:
        progress.tick()
        return transform(value)

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        producer_extra_config=dict(PRODUCER_SETTINGS),
        on_message_processed=processed,
        loglevel="WARNING",
        auto_create_topics=False,
        use_changelog_topics=False,
    )
    source = app.topic(in_topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(out_topic, key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(source)
    sdf = sdf.apply(run)
    sdf.to_topic(sink)
    app.run()
    return progress.report()


def run_worker(args: argparse.Namespace) -> int:
    name = args.worker
    common = (args.bootstrap, args.in_topic, args.out_topic, args.group, args.records)
    if name == "a":
        result = worker_handwritten(*common)
    elif name == "a-flush":
        result = worker_flush_per_batch(*common)
    elif name in ("b-readme", "b-readme-inline", "b-batch", "b-batch-inline"):
        result = worker_offsetledger_readme(
            *common,
            dead_letter_topic=args.dlq_topic,
            inline=name.endswith("-inline"),
            batch=name.startswith("b-batch"),
        )
    elif name in ("b", "b-pool"):
        result = worker_offsetledger(*common, pool=name == "b-pool")
    elif name == "c":
        result = worker_arroyo(*common)
    elif name == "d":
        result = worker_quixstreams(*common)
    else:
        raise SystemExit(f"unknown contender {name!r}")
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- driver


def ensure_broker() -> tuple[str, bool]:
    """Bootstrap of the project's broker; True if this call started it."""
    status = subprocess.run(
        [sys.executable, str(BROKER_TOOL), "status"], capture_output=True, text=True, check=False
    )
    was_running = status.returncode == 0 and "running" in status.stdout
    up = subprocess.run(
        [sys.executable, str(BROKER_TOOL), "up"], capture_output=True, text=True, check=True
    )
    bootstrap = up.stdout.strip().splitlines()[-1].strip()
    return bootstrap, not was_running


def fill_input(bootstrap: str, topic: str, records: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all", "batch.size": 1_000_000}
    )
    for i in range(records):
        value = (b"record-%09d-" % i).ljust(VALUE_SIZE, b"abcdefghij"[i % 10 : i % 10 + 1])
        while True:
            try:
                producer.produce(topic, value, b"key-%04d" % (i % 5000), partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} input records not delivered")


def _metadata_consumer(bootstrap: str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "olbench-watch",
            "enable.auto.commit": False,
            "log_level": 3,  # no notices about the deleted output topics
        }
    )


def end_offsets(client: Any, topic: str) -> int:
    from confluent_kafka import KafkaException, TopicPartition

    total = 0
    for p in range(PARTITIONS):
        try:
            _low, high = client.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
        except KafkaException as exc:  # e.g. a topic just created: no leader known yet
            LAST_WATCH_ERROR[:] = [str(exc)]
            return -1
        total += high
    return int(total)


def settled_end_offsets(client: Any, topic: str, patience: float = 15.0) -> int:
    """End offsets, retrying transient metadata errors for up to ``patience`` s."""
    deadline = time.monotonic() + patience
    while True:
        total = end_offsets(client, topic)
        if total >= 0 or time.monotonic() > deadline:
            return total
        # librdkafka caches "unknown partition" for a topic seen mid-creation: refresh
        with contextlib.suppress(Exception):
            client.list_topics(topic, timeout=5)
        time.sleep(0.1)


def committed_total(bootstrap: str, group: str, topic: str) -> int:
    from offsetledger.adapters.confluent_admin import committed_positions

    positions = committed_positions(bootstrap, group, topic)
    return sum(cp.position or 0 for cp in positions.values())


def delete_topics(bootstrap: str, topics: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    if not topics:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    futures = admin.delete_topics(topics, operation_timeout=30)
    for future in futures.values():
        try:
            future.result(30)
        except Exception as exc:  # best effort: the broker is shared and disposable
            print(f"  (could not delete a topic: {exc})", file=sys.stderr)


def one_run(
    args: argparse.Namespace,
    contender: str,
    *,
    bootstrap: str,
    in_topic: str,
    tag: str,
    watcher: Any,
    records: int,
) -> dict[str, object]:
    from offsetledger.adapters.confluent_admin import create_topics

    slug = contender.replace("@", "-at-")
    out_topic = f"{tag}-out-{slug}"
    dlq_topic = f"{tag}-dlq-{slug}"
    group = f"{tag}-g-{slug}"
    create_topics(bootstrap, {out_topic: PARTITIONS})
    with_dlq = contender.startswith(("b-readme", "b-batch"))
    if with_dlq:
        create_topics(bootstrap, {dlq_topic: 1})
    if settled_end_offsets(watcher, out_topic) != 0:
        raise RuntimeError(f"output topic {out_topic} not ready: {LAST_WATCH_ERROR}")
    python = args.quix_python if contender == "d" else args.python
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        _base_name(contender),
        "--bootstrap",
        bootstrap,
        "--in-topic",
        in_topic,
        "--out-topic",
        out_topic,
        "--group",
        group,
        "--records",
        str(records),
        "--dlq-topic",
        dlq_topic,
    ]
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        src = args.base_src if contender.endswith(BASE_SUFFIX) else str(REPO / "src")
        env = {**os.environ, "PYTHONPATH": src} if contender.startswith("b") else None
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        started = time.monotonic()
        t_done: float | None = None
        while time.monotonic() - started < args.timeout:
            if end_offsets(watcher, out_topic) >= records:
                t_done = time.monotonic()
                break
            if proc.poll() is not None:
                break
            time.sleep(WATCH_INTERVAL)
        try:
            proc.wait(max(args.timeout - (time.monotonic() - started), 60))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result: dict[str, object] = {
        "contender": contender,
        "records": records,
        "load1": round(load, 2),
        "process_seconds": round(wall, 2),
        "returncode": proc.returncode,
    }
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    worker: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :]) if lines else {}
    outputs = settled_end_offsets(watcher, out_topic)
    result["outputs"] = outputs
    result["committed"] = committed_total(bootstrap, group, in_topic)
    problems = []
    if proc.returncode != 0 or not worker:
        problems.append(f"worker failed (rc {proc.returncode}): {stderr.strip()[-600:]}")
    if outputs != records:
        problems.append(f"{outputs} outputs, expected {records} {LAST_WATCH_ERROR}")
    if t_done is None:
        problems.append("outputs never complete within the timeout")
    if worker.get("handled") != records:
        problems.append(f"worker handled {worker.get('handled')} distinct input offsets")
    if worker.get("calls", 0) != worker.get("handled"):
        result["repeated_calls"] = int(worker.get("calls", 0)) - int(worker.get("handled", 0))
    if not problems and t_done is not None:
        seconds = t_done - float(worker["t0"])
        result["seconds"] = round(seconds, 3)
        result["records_per_s"] = round(records / seconds)
        result["cpu_us_per_record"] = round(float(worker["cpu"]) / records * 1e6, 2)
        if "main_cpu" in worker:  # quixstreams' venv runs this file too, so it has it
            result["main_cpu_us_per_record"] = round(float(worker["main_cpu"]) / records * 1e6, 2)
        result["handled_per_s"] = round(
            records / max(float(worker["t_last"]) - float(worker["t0"]), 1e-9)
        )
        result["us_per_record"] = round(seconds / records * 1e6, 3)
        result["rss_start_mb"] = round(int(worker.get("rss_start_kb", 0)) / 1024, 1)
        result["rss_peak_mb"] = round(int(worker.get("rss_peak_kb", 0)) / 1024, 1)
        result["objects_start"] = int(worker.get("objects_start", 0))
        result["objects_end"] = int(worker.get("objects_end", 0))
    result["valid"] = not problems
    if problems:
        result["problems"] = problems
    if not args.keep_topics:
        delete_topics(bootstrap, [out_topic, dlq_topic] if with_dlq else [out_topic])
    return result


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(results: list[dict[str, object]], contenders: list[str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for c in contenders:
        valid = [r for r in results if r["contender"] == c and r["valid"]]
        summary[c] = {
            "valid_runs": len(valid),
            "runs": sum(1 for r in results if r["contender"] == c),
            "records_per_s": _median([float(str(r["records_per_s"])) for r in valid]),
            "cpu_us_per_record": _median([float(str(r["cpu_us_per_record"])) for r in valid]),
            "main_cpu_us_per_record": _median(
                [
                    float(str(r["main_cpu_us_per_record"]))
                    for r in valid
                    if "main_cpu_us_per_record" in r
                ]
            ),
            "us_per_record": _median([float(str(r["us_per_record"])) for r in valid]),
            "rss_peak_mb": _median([float(str(r["rss_peak_mb"])) for r in valid]),
            "rss_start_mb": _median([float(str(r["rss_start_mb"])) for r in valid]),
            "objects_growth": _median(
                [float(str(r["objects_end"])) - float(str(r["objects_start"])) for r in valid]
            ),
            "all_records_per_s": [r["records_per_s"] for r in valid],
        }
    base = summary.get("a", {}).get("records_per_s")
    base_cpu = summary.get("a", {}).get("cpu_us_per_record")
    for s in summary.values():
        s["ratio_vs_a"] = (
            round(s["records_per_s"] / base, 3) if base and s["records_per_s"] else None
        )
        s["cpu_ratio_vs_a"] = (
            round(s["cpu_us_per_record"] / base_cpu, 3)
            if base_cpu and s["cpu_us_per_record"]
            else None
        )
    return summary


def versions(args: argparse.Namespace) -> dict[str, str]:
    probe = (
        "import json, sys, importlib.metadata as m\n"
        "out = {'python': sys.version.split()[0]}\n"
        "for n in ('confluent-kafka', 'sentry-arroyo', 'quixstreams'):\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "import confluent_kafka\n"
        "out['librdkafka'] = confluent_kafka.libversion()[0]\n"
        "print(json.dumps(out))\n"
    )
    found: dict[str, str] = {}
    for label, python in (("main", args.python), ("quix", args.quix_python)):
        got = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, check=False
        ).stdout.strip()
        if got:
            for key, value in json.loads(got).items():
                found[f"{key} ({label} venv)" if label == "quix" else key] = value
    return found


def drive(args: argparse.Namespace) -> int:
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [
        c
        for c in contenders
        if _base_name(c) not in KNOWN_CONTENDERS
        or (c.endswith(BASE_SUFFIX) and (not args.base_src or not c.startswith("b")))
    ]
    if unknown:
        raise SystemExit(f"unknown contenders {unknown}; known: {', '.join(KNOWN_CONTENDERS)}")
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.records]
    started_broker = False
    bootstrap = args.bootstrap
    if not bootstrap:
        bootstrap, started_broker = ensure_broker()
    from offsetledger.adapters.confluent_admin import create_topics

    tag = f"olbench-{uuid.uuid4().hex[:8]}"
    inputs = {size: f"{tag}-in{size}" for size in sizes}
    ordering, workers = readme_shape()
    info: dict[str, object] = {
        "bootstrap": bootstrap,
        "records": sizes if args.sizes else args.records,
        "runs": args.runs,
        "readme": f"ordering={ordering}, ThreadPoolExecutorAdapter(max_workers={workers})",
    }
    info.update(versions(args))
    log = sys.stderr if args.json else sys.stdout
    print(f"# {json.dumps(info)}", file=log, flush=True)
    watcher = _metadata_consumer(bootstrap)
    results: list[dict[str, object]] = []
    try:
        for size, in_topic in inputs.items():
            create_topics(bootstrap, {in_topic: PARTITIONS})
            t = time.monotonic()
            fill_input(bootstrap, in_topic, size)
            print(f"# input {in_topic}: {size} records in {time.monotonic() - t:.1f}s", file=log)
        runs = [(size, c) for size in sizes for c in contenders]
        for round_no in range(args.runs):
            shift = round_no % len(runs)
            for size, contender in runs[shift:] + runs[:shift]:
                try:
                    r = one_run(
                        args,
                        contender,
                        bootstrap=bootstrap,
                        in_topic=inputs[size],
                        tag=f"{tag}-r{round_no}-{size}",
                        watcher=watcher,
                        records=size,
                    )
                except Exception as exc:  # one broken run must not lose the others
                    r = {
                        "contender": contender,
                        "records": size,
                        "load1": round(os.getloadavg()[0], 2),
                        "valid": False,
                        "problems": [f"{type(exc).__name__}: {exc}"],
                    }
                r["round"] = round_no
                results.append(r)
                print(f"# {json.dumps(r)}", file=log, flush=True)
    finally:
        watcher.close()
        if not args.keep_topics:
            delete_topics(bootstrap, list(inputs.values()))
        if started_broker and not args.keep_broker:
            subprocess.run([sys.executable, str(BROKER_TOOL), "down"], check=False)
    summaries = {
        size: summarise([r for r in results if r.get("records") == size], contenders)
        for size in sizes
    }
    if args.json:
        out: dict[str, object] = {"info": info, "runs": results}
        out["summary"] = summaries[sizes[0]] if len(sizes) == 1 else summaries
        print(json.dumps(out, indent=2))
        return 0
    loads = [float(str(r["load1"])) for r in results]
    print(
        f"\n{args.runs} runs per contender and size, load average (1 min) "
        f"median {statistics.median(loads):.2f}, range {min(loads):.2f}-{max(loads):.2f}; "
        f"README.md's example: {info['readme']}"
    )
    for size in sizes:
        print_table(summaries[size], contenders, f"{size:,} records")
    if len(sizes) > 1:
        print_size_table(summaries, contenders, sizes)
    invalid = [r for r in results if not r["valid"]]
    for r in invalid:
        print(
            f"invalid run: {r['contender']} ({r.get('records')} records) round {r['round']}: "
            f"{r.get('problems')}"
        )
    return 1 if invalid else 0


def print_table(summary: dict[str, Any], contenders: list[str], title: str) -> None:
    print(f"\n{title}\n")
    print(
        "| contender | valid runs | records/s (median) | vs (a) | CPU µs/record "
        "| main thread CPU µs/record | runs |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for c in contenders:
        s = summary[c]
        rate = f"{s['records_per_s']:,.0f}" if s["records_per_s"] else "-"
        ratio = f"{s['ratio_vs_a']:.2f}x" if s["ratio_vs_a"] else "-"
        cpu = f"{s['cpu_us_per_record']:.1f}" if s["cpu_us_per_record"] else "-"
        main = f"{s['main_cpu_us_per_record']:.1f}" if s["main_cpu_us_per_record"] else "-"
        runs = " / ".join(f"{v:,}" for v in s["all_records_per_s"])
        print(
            f"| {_label(c)} | {s['valid_runs']}/{s['runs']} | {rate} | {ratio} | {cpu} "
            f"| {main} | {runs} |"
        )


def print_size_table(
    summaries: dict[int, dict[str, Any]], contenders: list[str], sizes: list[int]
) -> None:
    """Cost flat in size: µs per record (wall and CPU) at the largest size over the
    smallest, and the worker's peak resident memory at each size."""
    small, large = sizes[0], sizes[-1]
    print(f"\nCost in size ({small:,} vs {large:,} records; medians)\n")
    print(
        "| contender | wall µs/record | ratio | CPU µs/record | ratio | "
        "peak RSS MB (start of run) | Python objects added |"
    )
    print("|---|---:|---:|---:|---:|---|---|")
    for c in contenders:
        a, b = summaries[small][c], summaries[large][c]
        wall_a, wall_b = a.get("us_per_record"), b.get("us_per_record")
        cpu_a, cpu_b = a.get("cpu_us_per_record"), b.get("cpu_us_per_record")
        rss = " / ".join(
            f"{summaries[n][c].get('rss_peak_mb') or 0:.0f} "
            f"({summaries[n][c].get('rss_start_mb') or 0:.0f})"
            for n in sizes
        )
        print(
            f"| {_label(c)} | {wall_a or 0:.2f} → {wall_b or 0:.2f} | "
            f"{(wall_b / wall_a) if wall_a and wall_b else 0:.2f} | "
            f"{cpu_a or 0:.2f} → {cpu_b or 0:.2f} | "
            f"{(cpu_b / cpu_a) if cpu_a and cpu_b else 0:.2f} | {rss} | "
            + " / ".join(f"{summaries[n][c].get('objects_growth') or 0:,.0f}" for n in sizes)
            + " |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument(
        "--sizes",
        default="",
        help="comma-separated record counts (e.g. 50000,800000): run every contender at "
        "each size, interleaved, and print the cost-in-size table (µs/record, peak RSS)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs per contender (interleaved)")
    ap.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help=f"comma-separated, from {', '.join(KNOWN_CONTENDERS)} "
        f"(default: {','.join(ALL_CONTENDERS)})",
    )
    ap.add_argument(
        "--bootstrap", default=None, help="default: start or reuse the project's broker"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument(
        "--python", default=sys.executable, help="interpreter for a, b, c (default: this one)"
    )
    ap.add_argument(
        "--quix-python",
        default=sys.executable,
        help="interpreter with quixstreams for d (it needs confluent-kafka<2.13)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument(
        "--base-src",
        default=None,
        help="an older offsetledger src dir: contenders named b...@base run with it",
    )
    ap.add_argument("--keep-topics", action="store_true")
    ap.add_argument("--keep-broker", action="store_true", help="if started here, leave it up")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--in-topic", help=argparse.SUPPRESS)
    ap.add_argument("--out-topic", help=argparse.SUPPRESS)
    ap.add_argument("--group", help=argparse.SUPPRESS)
    ap.add_argument("--dlq-topic", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return run_worker(args)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())

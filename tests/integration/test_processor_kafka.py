"""The Processor on a real Kafka broker, through ConfluentConsumer/ConfluentProducer,
the thread-pool executor and the system clock: consume-transform-produce, dead
letters, rebalances with 2 and 3 members, graceful shutdown, restart skipping
records finished before it (commit metadata), classic and KIP-848 protocols.

Every test uses fresh topics and a fresh group; what the broker holds afterwards
is judged by :func:`offsetledger.checker.check_topics`."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import ClassVar

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka  # noqa: F401 - must be installed when Kafka tests are required
else:
    pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer, ConfluentProducer
from offsetledger.adapters.confluent_admin import (
    committed_positions,
    create_topics,
    read_topic,
)
from offsetledger.checker import Report, check_topics
from offsetledger.core import DeliveryReport, Outbound, Record, TopicPartition
from offsetledger.history import ERROR_HEADER, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from offsetledger.runtime import (
    ATTEMPTS_HEADER,
    CommitMode,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
    RetryPolicy,
    SystemClock,
    ThreadPoolExecutorAdapter,
)

pytestmark = pytest.mark.kafka

PROTOCOLS = ["classic", "consumer"]
Handler = Callable[[Record], Iterable[Outbound]]


def _name(prefix: str) -> str:
    return f"proc-{prefix}-{uuid.uuid4().hex[:10]}"


def _topics(bootstrap: str, partitions: int, *names: str) -> list[str]:
    topics = [_name(n) for n in names]
    create_topics(bootstrap, dict.fromkeys(topics, partitions))
    return topics


def _produce(
    bootstrap: str, topic: str, values: Sequence[bytes], partitions: int
) -> dict[TopicPartition, int]:
    """Produce ``values`` round-robin over the partitions (keys k0..k9); return
    the end offset of every partition written to."""
    producer = ConfluentProducer({"bootstrap.servers": bootstrap})
    reports: list[DeliveryReport] = []
    for i, value in enumerate(values):
        producer.produce(
            Outbound(topic, value=value, key=f"k{i % 10}".encode(), partition=i % partitions),
            reports.append,
        )
    assert producer.flush(30) == 0
    assert len(reports) == len(values)
    assert all(r.ok for r in reports), [r.error for r in reports if not r.ok]
    ends: dict[TopicPartition, int] = {}
    for r in reports:
        assert r.partition is not None
        assert r.offset is not None
        tp = TopicPartition(topic, r.partition)
        ends[tp] = max(ends.get(tp, 0), r.offset + 1)
    return ends


def _committed(bootstrap: str, group: str, topic: str) -> dict[TopicPartition, int | None]:
    return {tp: cp.position for tp, cp in committed_positions(bootstrap, group, topic).items()}


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _transform(output: str) -> Handler:
    def handler(record: Record) -> list[Outbound]:
        return [Outbound(output, value=b"out:" + (record.value or b""), key=record.key)]

    return handler


class Running:
    """A Processor on the real broker, run in a thread through ``run()``."""

    #: Every instance started by the current test (stopped at teardown if left running).
    started: ClassVar[list[Running]] = []

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topic: str,
        handler: Handler,
        *,
        protocol: str = "classic",
        config: ProcessorConfig | None = None,
        consumer_extra: Mapping[str, object] | None = None,
    ) -> None:
        cfg = config if config is not None else ProcessorConfig(poll_timeout=0.05)
        consumer_config: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "enable.auto.commit": cfg.commit_mode is CommitMode.AUTO,
            "auto.commit.interval.ms": 500,
        }
        if protocol == "classic":
            consumer_config["session.timeout.ms"] = 6000
            consumer_config["heartbeat.interval.ms"] = 500
        consumer_config.update(consumer_extra or {})
        self.metrics = InMemoryMetrics()
        self.processor = Processor(
            ConfluentConsumer(consumer_config),
            ConfluentProducer({"bootstrap.servers": bootstrap}),
            handler,
            topics=[topic],
            executor=ThreadPoolExecutorAdapter(cfg.max_in_flight_total),
            clock=SystemClock(),
            config=cfg,
            metrics=self.metrics,
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"processor-{group}", daemon=True)
        self._thread.start()
        Running.started.append(self)

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def abandon(self) -> None:
        """Teardown after a failed test: stop without checking anything."""
        if self._thread.is_alive():
            self.processor.stop()
            self._thread.join(15.0)

    def done(self) -> int:
        return self.metrics.count("records_done")

    def stop(self, timeout: float = 60.0) -> None:
        self.processor.stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the processor did not stop in time"
        if self.error is not None:
            raise AssertionError(f"the processor's run() raised {self.error!r}") from self.error
        assert self.processor.state is ProcessorState.CLOSED


@pytest.fixture(autouse=True)
def _stop_leftover_processors() -> Iterator[None]:
    """A failing test leaves its processors running: stop them (and leave their
    groups) so they do not linger in later tests."""
    Running.started.clear()
    yield
    for running in Running.started:
        running.abandon()
    Running.started.clear()


def _check(
    bootstrap: str,
    input_topic: str,
    output_topics: Sequence[str],
    group: str,
    *,
    dead_letter: str | None = None,
) -> tuple[Report, list[Record], list[Record]]:
    inputs = read_topic(bootstrap, input_topic)
    outputs = [r for t in output_topics for r in read_topic(bootstrap, t)]
    committed = {
        tp: p for tp, p in _committed(bootstrap, group, input_topic).items() if p is not None
    }
    report = check_topics(inputs, outputs, committed, dead_letter=dead_letter, group=group)
    return report, inputs, outputs


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_consume_transform_produce_at_least_once(kafka_bootstrap: str, protocol: str) -> None:
    source, sink = _topics(kafka_bootstrap, 3, "in", "out")
    group = _name("group")
    ends = _produce(kafka_bootstrap, source, [f"v{i}".encode() for i in range(300)], 3)

    running = Running(kafka_bootstrap, group, source, _transform(sink), protocol=protocol)
    _wait_for(lambda: running.done() >= 300, "300 records done")
    running.stop()

    assert _committed(kafka_bootstrap, group, source) == ends
    report, inputs, outputs = _check(kafka_bootstrap, source, [sink], group)
    assert report.ok, report.summary()
    assert report.stats.acknowledged == len(inputs) == 300
    # one member, no crash: every input has exactly one output, its lineage names it
    by_input = {(r.topic, r.partition, r.offset): r for r in inputs}
    seen: set[tuple[str, int, int]] = set()
    for out in outputs:
        topic, partition, offset = (
            out.header(SOURCE_TOPIC),
            out.header(SOURCE_PARTITION),
            out.header(SOURCE_OFFSET),
        )
        assert topic is not None
        assert partition is not None
        assert offset is not None
        key = (topic.decode(), int(partition), int(offset))
        assert key not in seen, f"duplicate output for {key}"
        seen.add(key)
        assert out.value == b"out:" + (by_input[key].value or b"")
        assert out.key == by_input[key].key
    assert seen == set(by_input)
    assert running.metrics.count("records_out") == 300


def test_poison_record_goes_to_the_dead_letter_topic_with_headers(kafka_bootstrap: str) -> None:
    source, sink, dlq = _topics(kafka_bootstrap, 2, "in", "out", "dlq")
    group = _name("group")
    values = [b"poison" if i == 17 else f"v{i}".encode() for i in range(50)]
    ends = _produce(kafka_bootstrap, source, values, 2)
    attempts: list[int] = []

    def handler(record: Record) -> list[Outbound]:
        if record.value == b"poison":
            attempts.append(record.offset)
            raise ValueError("cannot digest poison")
        return [Outbound(sink, value=record.value, key=record.key)]

    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic=dlq,
        retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.05),
    )
    running = Running(kafka_bootstrap, group, source, handler, config=config)
    _wait_for(lambda: running.done() >= 50, "50 records done")
    running.stop()

    assert len(attempts) == 2  # tried max_attempts times, then dead-lettered
    assert running.metrics.count("dead_letters") == 1
    assert _committed(kafka_bootstrap, group, source) == ends
    dead = read_topic(kafka_bootstrap, dlq)
    assert len(dead) == 1
    letter = dead[0]
    poison = next(r for r in read_topic(kafka_bootstrap, source) if r.value == b"poison")
    assert letter.value == b"poison"
    assert letter.key == poison.key
    assert letter.header(SOURCE_TOPIC) == source.encode()
    assert letter.header(SOURCE_PARTITION) == str(poison.partition).encode()
    assert letter.header(SOURCE_OFFSET) == str(poison.offset).encode()
    assert letter.header(ATTEMPTS_HEADER) == b"2"
    error = letter.header(ERROR_HEADER)
    assert error is not None
    assert b"ValueError: cannot digest poison" in error

    report, _, outputs = _check(kafka_bootstrap, source, [sink, dlq], group, dead_letter=dlq)
    assert report.ok, report.summary()
    assert report.stats.dead_lettered == 1
    assert report.stats.outputs == 49  # dead-letter records are counted apart
    assert len(outputs) == 50


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rebalance_with_two_and_three_members_loses_nothing(
    kafka_bootstrap: str, protocol: str
) -> None:
    """Members join (2, then 3) and one leaves while records are in flight; small
    buffers make backpressure pause partitions, which must not survive a
    revoke/re-assign. Every input ends up with an output; commits are safe."""
    partitions = 6
    source, sink = _topics(kafka_bootstrap, partitions, "in", "out")
    group = _name("group")
    batch = 1200
    counter = iter(range(10**9))

    def produce_batch() -> dict[TopicPartition, int]:
        values = [f"v{next(counter)}".encode() for _ in range(batch)]
        return _produce(kafka_bootstrap, source, values, partitions)

    def handler(record: Record) -> list[Outbound]:
        time.sleep(0.005)  # keep work in flight while the group rebalances
        return [Outbound(sink, value=b"out:" + (record.value or b""), key=record.key)]

    config = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.KEY,
        max_in_flight_total=8,
        max_in_flight_per_partition=8,
        max_buffered_per_partition=40,
        max_buffered_total=200,
        drain_timeout=5.0,
    )

    def start() -> Running:
        return Running(kafka_bootstrap, group, source, handler, protocol=protocol, config=config)

    ends = produce_batch()
    first = start()
    _wait_for(lambda: first.done() >= 100, "the first member to make progress")
    second = start()
    ends = produce_batch()
    _wait_for(lambda: second.done() > 0, "the second member to make progress")
    third = start()
    ends = produce_batch()
    _wait_for(lambda: third.done() > 0, "the third member to make progress")
    first.stop()  # leaves the group: its partitions move to the others
    ends = produce_batch()
    _wait_for(
        lambda: _committed(kafka_bootstrap, group, source) == ends,
        "the group to commit every input",
        timeout=90.0,
    )
    second.stop()
    third.stop()

    assert _committed(kafka_bootstrap, group, source) == ends
    report, inputs, _ = _check(kafka_bootstrap, source, [sink], group)
    assert report.ok, report.summary()
    assert report.stats.lost == 0
    assert report.stats.acknowledged == len(inputs) == 4 * batch
    for member in (first, second, third):
        assert member.metrics.count("rebalances") >= 2  # assigned, then revoked at least
    assert first.metrics.count("pauses") > 0, "backpressure never paused a partition"
    print(f"\n{protocol}: duplicates {report.stats.duplicates} of {len(inputs)} inputs")


def test_graceful_shutdown_commits_the_final_positions(kafka_bootstrap: str) -> None:
    source, sink = _topics(kafka_bootstrap, 3, "in", "out")
    group = _name("group")
    ends = _produce(kafka_bootstrap, source, [f"v{i}".encode() for i in range(240)], 3)
    config = ProcessorConfig(
        poll_timeout=0.05,
        commit_mode=CommitMode.PERIODIC,
        commit_every_records=10**9,  # no periodic commit: only stop() commits
        commit_interval=None,
    )
    running = Running(kafka_bootstrap, group, source, _transform(sink), config=config)
    _wait_for(lambda: running.done() >= 240, "240 records done")
    assert set(_committed(kafka_bootstrap, group, source).values()) == {None}

    running.stop()

    assert _committed(kafka_bootstrap, group, source) == ends
    assert running.metrics.count("commits") == 3
    report, _, outputs = _check(kafka_bootstrap, source, [sink], group)
    assert report.ok, report.summary()
    assert len(outputs) == 240


def test_restart_skips_records_finished_before_it(kafka_bootstrap: str) -> None:
    """A record stuck in its handler holds the watermark back while later records
    finish; a stop with a short shutdown timeout commits the watermark with the
    finished offsets above it in the commit metadata. The next processor of the
    group re-polls from the watermark, handles only the stuck record, and skips
    the finished ones: none is output twice."""
    source, sink = _topics(kafka_bootstrap, 1, "in", "out")
    group = _name("group")
    stuck_offset, total = 10, 30
    ends = _produce(kafka_bootstrap, source, [f"v{i}".encode() for i in range(total)], 1)
    release = threading.Event()

    def blocking(record: Record) -> list[Outbound]:
        if record.offset == stuck_offset:
            release.wait(60.0)
        return [Outbound(sink, value=b"out:" + (record.value or b""), key=record.key)]

    config = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        commit_mode=CommitMode.PERIODIC,
        commit_every_records=10**9,
        commit_interval=None,
        shutdown_timeout=0.5,
    )
    first = Running(kafka_bootstrap, group, source, blocking, config=config)
    try:
        _wait_for(lambda: first.done() >= total - 1, f"{total - 1} records done")
        first.stop()
    finally:
        release.set()
    assert first.metrics.count("abandoned") == 1

    tp = TopicPartition(source, 0)
    committed = committed_positions(kafka_bootstrap, group, source)[tp]
    assert committed.position == stuck_offset
    assert committed.metadata, "the shutdown commit carries no metadata"

    handled: list[int] = []

    def recording(record: Record) -> list[Outbound]:
        handled.append(record.offset)
        return [Outbound(sink, value=b"out:" + (record.value or b""), key=record.key)]

    second = Running(kafka_bootstrap, group, source, recording, config=config)
    _wait_for(
        lambda: (
            second.done() >= 1
            and second.metrics.count("skipped_duplicates") >= total - stuck_offset - 1
        ),
        "the stuck record done and the finished ones skipped",
    )
    second.stop()

    assert handled == [stuck_offset]
    assert second.metrics.count("skipped_duplicates") == total - stuck_offset - 1
    assert _committed(kafka_bootstrap, group, source) == ends
    report, _, outputs = _check(kafka_bootstrap, source, [sink], group)
    assert report.ok, report.summary()
    assert report.stats.duplicates == 0
    assert len(outputs) == total

"""Failures: crashes, delivery failures, poison records, dead-letter failures,
hung handlers. Nothing is ever lost; offsets are stored only after success."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

import pytest

from offsetledger.core import Outbound, Record, TopicPartition
from offsetledger.history import Commit, Delivery, Poll
from offsetledger.runtime import (
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    RetryPolicy,
    SystemClock,
    ThreadPoolExecutorAdapter,
)
from offsetledger.simulator import ProcessCrashed
from tests.processor.helpers import (
    all_committed,
    consumer_config,
    dead_letters,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
    upper,
)
from tests.processor.invariants import assert_invariants

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_crash_between_produce_and_delivery_report_redelivers(seed: int) -> None:
    world = seed_world(seed, partitions=2, records=20)
    producer = world.producer(name="m1-producer", member="m1")
    p1 = make_processor(world, "m1", producer=producer)
    # step until an output was produced but its delivery report not yet served
    drive(world, [p1], lambda: len(producer) > 0 and len(output_sources(world)) >= 4)
    unreported = len(producer)
    world.crash("m1")
    with pytest.raises(ProcessCrashed):
        p1.step()
    p2 = make_processor(world, "m2")
    drive(world, [p2], lambda: all_committed(world), max_steps=20_000)
    p2.stop()
    assert unreported > 0
    assert inputs(world) <= set(output_sources(world)), f"seed={seed}: lost an input"
    # m2 polled again records m1 had produced for: redelivery, not loss
    m1_done = {
        (e.partition, e.offset)
        for e in world.history.of(Poll)
        if isinstance(e, Poll) and e.member == "m1"
    }
    m2_polled = {
        (e.partition, e.offset)
        for e in world.history.of(Poll)
        if isinstance(e, Poll) and e.member == "m2"
    }
    assert m1_done & m2_polled, f"seed={seed}: nothing was redelivered after the crash"
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2])
def test_delivery_failure_then_success_is_retried(seed: int) -> None:
    world = seed_world(seed, partitions=1, records=6)
    metrics = InMemoryMetrics()
    world.faults.schedule("delivery_retriable", target="m1-producer", times=2)
    p = make_processor(
        world, "m1", config=ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY), metrics=metrics
    )
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    failed = [e for e in world.history.of(Delivery) if isinstance(e, Delivery) and not e.ok]
    assert len(failed) == 2
    assert metrics.count("retries") == 2
    assert metrics.count("dead_letters") == 0
    assert sorted(o for _, _, o in output_sources(world)) == list(range(6))
    # the position passed a failed record only after its re-produce was acknowledged
    assert_invariants(world)


def test_delivery_failing_every_attempt_goes_to_the_dead_letter_topic() -> None:
    world = seed_world(3, partitions=1, records=1, topics=("out", "dlq"))
    world.faults.schedule("delivery_fatal", target="m1-producer", times=3)
    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY, dead_letter_topic="dlq")
    p = make_processor(world, "m1", config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    (dl,) = dead_letters(world)
    assert dl["offsetledger.delivery_attempts"] == b"3"
    assert dl["offsetledger.error"] is not None
    assert b"MSG_SIZE_TOO_LARGE" in dl["offsetledger.error"]
    assert metrics.count("dead_letters") == 1
    assert_invariants(world, dead_letter="dlq")


def _poison(bad: set[bytes], calls: Counter[bytes], exc: type[Exception] = ValueError):  # type: ignore[no-untyped-def]
    def handler(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        calls[record.value] += 1
        if record.value in bad:
            raise exc(f"poison {record.value!r}")
        return upper(record)

    return handler


@pytest.mark.parametrize("ordering", list(OrderingMode))
def test_poison_record_goes_to_the_dead_letter_topic_with_headers(ordering: OrderingMode) -> None:
    world = seed_world(5, partitions=2, records=10, topics=("out", "dlq"))
    calls: Counter[bytes] = Counter()
    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(
        poll_timeout=0.05, retry=FAST_RETRY, dead_letter_topic="dlq", ordering=ordering
    )
    p = make_processor(world, "m1", _poison({b"v3"}, calls), config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    (dl,) = dead_letters(world)
    # v3 is record 3: partition 1, offset 1, key k3
    assert dl["key"] == b"k3"
    assert dl["value"] == b"v3"
    assert dl["offsetledger.source.topic"] == b"in"
    assert dl["offsetledger.source.partition"] == b"1"
    assert dl["offsetledger.source.offset"] == b"1"
    assert dl["offsetledger.error"] == b"ValueError: poison b'v3'"
    assert dl["offsetledger.attempts"] == b"3"
    assert calls[b"v3"] == 3
    assert metrics.count("retries") == 2
    assert metrics.count("dead_letters") == 1
    assert len(output_sources(world)) == 9
    assert_invariants(world, dead_letter="dlq")


def test_fatal_exception_is_dead_lettered_without_retry() -> None:
    world = seed_world(5, partitions=1, records=4, topics=("out", "dlq"))
    calls: Counter[bytes] = Counter()
    retry = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_max=0.05, fatal=(KeyError,))
    cfg = ProcessorConfig(poll_timeout=0.05, retry=retry, dead_letter_topic="dlq")
    p = make_processor(world, "m1", _poison({b"v2"}, calls, KeyError), config=cfg)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls[b"v2"] == 1
    (dl,) = dead_letters(world)
    assert dl["offsetledger.attempts"] == b"1"
    assert_invariants(world, dead_letter="dlq")


@pytest.mark.parametrize("seed", [1, 2])
def test_dead_letter_failure_stalls_the_partition_and_resumes_when_it_recovers(seed: int) -> None:
    # the dead-letter topic does not exist yet: its writes fail (UNKNOWN_TOPIC_OR_PART)
    world = seed_world(seed, partitions=1, records=6)
    calls: Counter[bytes] = Counter()
    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY, dead_letter_topic="dlq")
    p = make_processor(world, "m1", _poison({b"v2"}, calls), config=cfg, metrics=metrics)
    start = world.clock.now()
    drive(world, [p], lambda: world.clock.now() - start > 5.0)
    tp = TopicPartition("in", 0)
    committed = world.committed("g", "in", 0).position
    assert committed is None or committed <= 2, f"seed={seed}: committed past the stalled record"
    assert metrics.count("stalls", tp) == 1
    failed_dlq = [
        e for e in world.history.of(Delivery) if isinstance(e, Delivery) and e.topic == "dlq"
    ]
    assert len(failed_dlq) >= 3
    assert not any(e.ok for e in failed_dlq)
    assert p.ledger.watermark(tp) == 2
    world.create_topic("dlq", partitions=1)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    (dl,) = dead_letters(world)
    assert dl["value"] == b"v2"
    assert metrics.count("dead_letters") == 1
    assert sorted(o for _, _, o in output_sources(world)) == [0, 1, 3, 4, 5]
    assert_invariants(world, dead_letter="dlq")


def test_without_dead_letter_topic_a_failing_record_stalls_and_is_retried_until_it_succeeds() -> (
    None
):
    world = seed_world(9, partitions=1, records=4)
    metrics = InMemoryMetrics()
    attempts = Counter[bytes]()

    def flaky(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        attempts[record.value] += 1
        if record.value == b"v1" and attempts[record.value] <= 6:
            raise RuntimeError("downstream unavailable")
        return upper(record)

    p = make_processor(
        world,
        "m1",
        flaky,
        config=ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY),
        metrics=metrics,
    )
    drive(world, [p], lambda: attempts[b"v1"] >= 4)
    assert world.committed("g", "in", 0).position in (None, 0, 1)
    assert metrics.count("stalls") == 1
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert attempts[b"v1"] == 7
    assert sorted(o for _, _, o in output_sources(world)) == [0, 1, 2, 3]
    assert_invariants(world)


def test_processing_timeout_fails_the_attempt_and_ignores_its_late_result() -> None:
    world = seed_world(4, partitions=1, records=3)
    metrics = InMemoryMetrics()
    calls: Counter[bytes] = Counter()

    def slow_once(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        calls[record.value] += 1
        if record.value == b"v1" and calls[record.value] == 1:
            world.clock.sleep(5.0)  # the whole (single-threaded) world waits
            return [Outbound("out", value=b"LATE", key=record.key)]
        return upper(record)

    cfg = ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY, processing_timeout=1.0)
    p = make_processor(world, "m1", slow_once, config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert metrics.count("timeouts") == 1
    assert calls[b"v1"] == 2
    values = [e.value for e in world.log("out", 0)]
    assert b"LATE" not in values
    assert sorted(values) == [b"V0", b"V1", b"V2"]  # type: ignore[type-var]
    assert_invariants(world)


def test_hung_handler_on_a_real_thread_pool_times_out() -> None:
    world = seed_world(4, partitions=1, records=2)
    release = threading.Event()
    calls: Counter[bytes] = Counter()
    metrics = InMemoryMetrics()

    def hangs_once(record: Record) -> Iterable[Outbound]:
        assert record.value is not None
        calls[record.value] += 1
        if record.value == b"v0" and calls[record.value] == 1:
            release.wait(10)
            return [Outbound("out", value=b"LATE")]
        return upper(record)

    executor = ThreadPoolExecutorAdapter(2)
    p = Processor(
        world.consumer(consumer_config(), "m1"),
        world.producer(name="m1-producer", member="m1"),
        hangs_once,
        topics=["in"],
        executor=executor,
        clock=SystemClock(),
        config=ProcessorConfig(poll_timeout=0.02, retry=FAST_RETRY, processing_timeout=0.2),
        metrics=metrics,
    )
    try:
        drive(world, [p], lambda: all_committed(world), max_steps=2_000)
    finally:
        release.set()
    p.stop()
    executor.shutdown()
    assert metrics.count("timeouts") == 1
    assert [e.value for e in world.log("out", 0)] == [b"V0", b"V1"] or sorted(
        e.value or b"" for e in world.log("out", 0)
    ) == [b"V0", b"V1"]
    assert_invariants(world)


def test_commit_failures_in_periodic_mode_are_retried() -> None:
    from offsetledger.runtime import CommitMode

    world = seed_world(2, partitions=2, records=10)
    metrics = InMemoryMetrics()
    world.faults.schedule("commit_unavailable", target="m1", times=2)
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        commit_mode=CommitMode.PERIODIC,
        commit_every_records=4,
        commit_interval=0.5,
    )
    p = make_processor(world, "m1", config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    commits = [e for e in world.history.of(Commit) if isinstance(e, Commit)]
    assert any(not c.ok for c in commits)
    assert metrics.count("commit_failures") == 0  # retried within the same commit
    assert_invariants(world)

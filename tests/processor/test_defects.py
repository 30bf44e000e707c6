"""Processor-side defects found by outside trials (issues 11 and 12), each with a
test that failed before its fix."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from types import FrameType
from typing import Any

import pytest

from offsetledger.core import BrokerErrorInfo, DeliveryReport, Outbound, ProducerPort, Record
from offsetledger.core._ports import DeliveryCallback
from offsetledger.runtime import (
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
    RetryPolicy,
)
from tests.processor.helpers import (
    all_committed,
    dead_letters,
    drive,
    make_processor,
    seed_world,
    upper,
)
from tests.processor.invariants import assert_invariants

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)
BIG = 1000


class BatchFailingProducer:
    """A producer that, like a broker refusing a batch over ``max.message.bytes``,
    fails every message sent together with one larger than ``BIG`` bytes (the
    messages produced since the last poll/flush form one batch)."""

    def __init__(self, inner: ProducerPort) -> None:
        self._inner = inner
        self._batch: list[tuple[Outbound, DeliveryCallback]] = []

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        self._batch.append((message, on_delivery))

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        if any(len(m.value or b"") > BIG for m, _ in batch):
            error = BrokerErrorInfo("MSG_SIZE_TOO_LARGE", "batch too large", retriable=False)
            for message, callback in batch:
                callback(DeliveryReport(message, error))
            return
        for message, callback in batch:
            self._inner.produce(message, callback)

    def poll(self, timeout: float) -> int:
        self._send()
        return self._inner.poll(timeout)

    def flush(self, timeout: float) -> int:
        self._send()
        return self._inner.flush(timeout)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_too_large_output_does_not_drag_its_batch_mates_into_the_dead_letter_topic(
    seed: int,
) -> None:
    world = seed_world(seed, partitions=2, records=20, topics=("out", "dlq"))

    def handler(record: Record) -> Iterable[Outbound]:
        value = b"x" * (BIG + 1) if record.offset == 3 and record.partition == 0 else record.value
        return [Outbound("out", value=value, key=record.key)]

    producer = BatchFailingProducer(world.producer(name="m1-producer", member="m1"))
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        dead_letter_topic="dlq",
        retry=FAST_RETRY,
    )
    p = make_processor(world, "m1", handler, config=cfg, producer=producer)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    dead = [
        (d["offsetledger.source.partition"], d["offsetledger.source.offset"])
        for d in dead_letters(world)
    ]
    assert dead == [(b"0", b"3")], f"seed={seed}: {dead}"
    assert_invariants(world, dead_letter="dlq")


_LOOP_CODES = {Processor.run.__code__, Processor.step.__code__}


@pytest.mark.parametrize("point", range(1, 40))
def test_stop_from_a_signal_handler_at_any_point_of_the_loop_only_asks(point: int) -> None:
    """A signal handler runs between two bytecodes of whatever the main thread is
    doing. Here stop() is called at the ``point``-th line executed by run() or
    step(): run() must shut down and return normally, whatever the point."""
    world = seed_world(point, partitions=2, records=20)
    p = make_processor(world, "m1")
    seen = 0

    def local(frame: FrameType, event: str, _arg: Any) -> Any:
        nonlocal seen
        if event == "line":
            seen += 1
            if seen == point:
                p.stop()
        return local

    def tracer(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "call" and frame.f_code in _LOOP_CODES:
            return local
        return None

    old = sys.gettrace()
    sys.settrace(tracer)
    try:
        p.run()
    finally:
        sys.settrace(old)
    assert seen >= point, f"point {point}: the loop ended before it was reached"
    assert p.state is ProcessorState.CLOSED
    assert_invariants(world, final_drain=False)


WRONG_RESULTS: dict[str, Any] = {
    "one Outbound": lambda r: Outbound("out", value=r.value),
    "None": lambda r: None,
    "tuple item": lambda r: [("out", r.value)],
    "str": lambda r: "out",
    "bytes items": lambda r: [b"x"],
    "dict item": lambda r: [{"topic": "out"}],
    "None item": lambda r: [None],
}


@pytest.mark.parametrize("lineage", [True, False])
@pytest.mark.parametrize("name", sorted(WRONG_RESULTS))
def test_a_wrong_return_type_is_one_fatal_failure_of_that_record(name: str, lineage: bool) -> None:
    """Never kills the loop; not retried; dead-lettered; the neighbours are fine."""
    world = seed_world(6, partitions=1, records=6, topics=("out", "dlq"))
    wrong = WRONG_RESULTS[name]
    calls: list[int] = []

    def handler(record: Record) -> Any:
        calls.append(record.offset)
        return wrong(record) if record.offset == 2 else upper(record)

    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, dead_letter_topic="dlq", lineage_headers=lineage)
    p = make_processor(world, "m1", handler, config=cfg, metrics=metrics)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls.count(2) == 1, f"{name}: retried"
    [dead] = dead_letters(world)
    assert dead["offsetledger.source.offset"] == b"2"
    assert b"HandlerContractError" in (dead["offsetledger.error"] or b""), dead
    if lineage:  # the checker follows outputs to their inputs by the lineage headers
        assert_invariants(world, dead_letter="dlq")
    else:
        assert len(world.log("out", 0)) == 5


def test_a_wrong_return_type_without_dead_letter_topic_stalls_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = seed_world(7, partitions=1, records=4)

    def handler(record: Record) -> Any:
        return None if record.offset == 1 else upper(record)

    cfg = ProcessorConfig(poll_timeout=0.05, retry=FAST_RETRY)
    p = make_processor(world, "m1", handler, config=cfg)
    with caplog.at_level("ERROR", logger="offsetledger.processor"):
        for _ in range(100):  # many retries at backoff_max
            p.step()
    assert p.state is ProcessorState.RUNNING
    assert world.committed("g", "in", 0).position in (None, 0, 1)
    fatal = [r for r in caplog.records if "fatal handler error" in r.getMessage()]
    assert len(fatal) == 1, [r.getMessage() for r in fatal]
    assert "in[0] offset 1" in fatal[0].getMessage() or "offset 1" in fatal[0].getMessage()
    p.stop()


class RecordingObserver:
    def __init__(self) -> None:
        self.done: list[tuple[int, int, bool]] = []

    def record_done(self, record: Record, outputs: int, dead_lettered: bool) -> None:
        self.done.append((record.offset, outputs, dead_lettered))


def test_the_observer_hears_every_finished_record_once() -> None:
    world = seed_world(8, partitions=1, records=9, topics=("out", "dlq"))

    def handler(record: Record) -> Iterable[Outbound]:
        if record.offset % 3 == 0:
            return []  # a filter: done, nothing to produce
        if record.offset == 4:
            raise ValueError("poison")
        return [Outbound("out", value=record.value, key=record.key)] * (record.offset % 3)

    observer = RecordingObserver()
    cfg = ProcessorConfig(poll_timeout=0.05, dead_letter_topic="dlq", retry=FAST_RETRY)
    consumer = world.consumer(
        {"group.id": "g", "enable.auto.offset.store": False, "auto.offset.reset": "earliest"}, "m1"
    )
    p = Processor(
        consumer,
        world.producer(name="m1-producer", member="m1"),
        handler,
        topics=["in"],
        executor=world.executor(name="m1-executor", member="m1"),
        clock=world.clock,
        config=cfg,
        observer=observer,
    )
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert sorted(observer.done) == [
        (0, 0, False),
        (1, 1, False),
        (2, 2, False),
        (3, 0, False),
        (4, 0, True),
        (5, 2, False),
        (6, 0, False),
        (7, 1, False),
        (8, 2, False),
    ]


def test_a_dead_letter_topic_kafka_can_never_accept_is_a_config_error() -> None:
    from offsetledger.core import ConfigError
    from offsetledger.simulator import World

    world = World(seed=1)
    world.create_topic("in", 1)
    consumer = world.consumer({"group.id": "g"}, member="a")
    producer = world.producer()
    with pytest.raises(ConfigError, match=r"dead_letter_topic.*'bad dlq!#'.*can never exist"):
        Processor(
            consumer,
            producer,
            lambda r: [],
            topics=["in"],
            config=ProcessorConfig(dead_letter_topic="bad dlq!#"),
        )


def test_a_raw_confluent_consumer_is_refused_with_the_wrapper_named() -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from offsetledger.simulator import World

    world = World(seed=1)
    raw = confluent_kafka.Consumer({"group.id": "g", "bootstrap.servers": "127.0.0.1:1"})
    try:
        with pytest.raises(TypeError, match="ConfluentConsumer"):
            Processor(raw, world.producer(), lambda r: [], topics=["in"], config=ProcessorConfig())
    finally:
        raw.close()

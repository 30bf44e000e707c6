"""Batch handlers (:func:`offsetledger.runtime.batch_handler`): one call per run,
one entry per record (its outputs, or an Exception failing just that record);
raising fails every record of the batch. Same guarantee as per-record handlers:
a record's position is stored only after all its outputs were acknowledged (or its
dead letter was)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.runtime import (
    InlineExecutor,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    RetryPolicy,
    batch_handler,
)
from offsetledger.runtime._contract import HandlerContractError, coerce_batch, is_batch_handler
from offsetledger.simulator import ProcessCrashed, World
from offsetledger.testing import observer
from tests.model.planted import by_name
from tests.processor.helpers import (
    all_committed,
    consumer_config,
    dead_letters,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
)
from tests.processor.invariants import assert_invariants

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)

Entry = list[Outbound] | Exception


def _outputs(record: Record) -> list[Outbound]:
    """0, 1 or 3 outputs by offset (0 mod 3: none, 1: one, 2: three)."""
    n = (0, 1, 3)[record.offset % 3]
    value = (record.value or b"").upper()
    return [Outbound("out", value=value + b"#%d" % j, key=record.key) for j in range(n)]


def _expected(world: World) -> Counter[tuple[str, int, int]]:
    return Counter({k: (0, 1, 3)[k[2] % 3] for k in inputs(world)})


def _inline(world: World, member: str, handler: object, config: ProcessorConfig) -> Processor:
    return Processor(
        world.consumer(consumer_config("g"), member),
        world.producer(name=f"{member}-producer", member=member),
        handler,  # type: ignore[arg-type]
        topics=["in"],
        executor=InlineExecutor(),
        clock=world.clock,
        config=config,
        metrics=InMemoryMetrics(),
        observer=observer(world, member),
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    logger = logging.getLogger("offsetledger")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- the contract -------------------------------------------------------------------------


def test_batch_handler_marks_and_is_detected_through_partial() -> None:
    @batch_handler
    def handle(records: Sequence[Record], suffix: bytes = b"") -> list[Entry]:
        return [[] for _ in records]

    assert is_batch_handler(handle)
    assert is_batch_handler(functools.partial(handle, suffix=b"!"))
    assert not is_batch_handler(lambda record: [])


def test_coerce_batch_checks_the_length_and_each_entry() -> None:
    recs = [Record("in", 0, i) for i in range(3)]
    with pytest.raises(HandlerContractError, match="2 entries for 3 records"):
        coerce_batch([[], []], recs)
    with pytest.raises(HandlerContractError, match="one entry per record"):
        coerce_batch(None, recs)
    out = coerce_batch([[], ValueError("x"), [Outbound("out", value=b"v")]], recs)
    assert out[0] == []
    assert isinstance(out[1], ValueError)
    assert len(out[2]) == 1  # type: ignore[arg-type]
    bad = coerce_batch([[], "oops", []], recs)
    assert isinstance(bad[1], HandlerContractError)  # wrong entry: that record fails


# -- scenarios ------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [True, False])
@pytest.mark.parametrize("ordering", list(OrderingMode))
def test_batches_with_zero_one_and_several_outputs(ordering: OrderingMode, inline: bool) -> None:
    world = seed_world(1, partitions=3, records=60)
    sizes: list[int] = []

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        sizes.append(len(records))
        return [_outputs(r) for r in records]

    cfg = ProcessorConfig(poll_timeout=0.05, ordering=ordering, batch_size=20)
    p = (
        _inline(world, "m1", handle, cfg)
        if inline
        else make_processor(world, "m1", handle, config=cfg)  # type: ignore[arg-type]
    )
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert Counter(output_sources(world)) == +_expected(world)
    assert sum(sizes) == 60
    if ordering is OrderingMode.UNORDERED:
        assert max(sizes) > 1, sizes  # records really come in batches
    assert_invariants(world)


def _per_record_failures(seed: int, *, dead_letter: bool) -> None:
    """Every fifth record's entry is an Exception on its first two attempts (it
    retries alone and succeeds), v7 always fails (dead letter, or stall until it is
    let through)."""
    world = seed_world(seed, partitions=2, records=40, topics=("out", "dlq"))
    attempts: Counter[int] = Counter()
    metrics = InMemoryMetrics()

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        out: list[Entry] = []
        for r in records:
            key = r.partition * 1000 + r.offset
            attempts[key] += 1
            if r.value == b"v7":
                out.append(RuntimeError("poison"))
            elif r.offset % 5 == 0 and attempts[key] <= 2:
                out.append(RuntimeError("flaky"))
            else:
                out.append(_outputs(r))
        return out

    cfg = ProcessorConfig(
        poll_timeout=0.05,
        ordering=OrderingMode.UNORDERED,
        retry=FAST_RETRY,
        dead_letter_topic="dlq" if dead_letter else None,
    )
    p = make_processor(world, "m1", handle, config=cfg, metrics=metrics)  # type: ignore[arg-type]
    if dead_letter:
        drive(world, [p], lambda: all_committed(world))
        p.stop()
        dls = dead_letters(world)
        assert len(dls) == 1, f"seed={seed}: {len(dls)} dead letters"
        assert dls[0]["value"] == b"v7"
        assert metrics.count("dead_letters") == 1
        expected = _expected(world)
        del expected[next(k for k in inputs(world) if k[2] == 3 and k[1] == 1)]  # v7: in[1]@3
        assert Counter(output_sources(world)) == +expected, f"seed={seed}"
        assert_invariants(world, dead_letter="dlq")
    else:
        drive(world, [p], lambda: world.clock.now() > 2.0)
        assert metrics.count("stalls") == 1
        assert not all_committed(world)
        p.stop()
        assert_invariants(world, final_drain=False)
    assert metrics.count("retries") >= 2


@pytest.mark.parametrize("seed", [1, 2])
def test_a_batch_entry_exception_fails_just_that_record(seed: int) -> None:
    _per_record_failures(seed, dead_letter=True)


def test_a_batch_entry_exception_without_dead_letter_topic_stalls() -> None:
    _per_record_failures(3, dead_letter=False)


def test_batch_failure_as_success_is_caught() -> None:
    with quiet(), by_name("batch_failure_as_success").plant(), pytest.raises(AssertionError):
        _per_record_failures(1, dead_letter=True)


def test_a_raising_batch_fails_every_record_which_then_retry_alone() -> None:
    world = seed_world(2, partitions=1, records=12)
    calls: list[int] = []

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        calls.append(len(records))
        if len(records) > 1:
            raise RuntimeError("the whole batch")
        return [_outputs(r) for r in records]

    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, retry=FAST_RETRY)
    p = _inline(world, "m1", handle, cfg)
    drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert calls[0] == 12
    assert calls.count(1) == 12  # each record retried alone
    assert Counter(output_sources(world)) == +_expected(world)
    assert_invariants(world)


def test_a_failed_delivery_of_one_output_retries_only_that_record() -> None:
    world = seed_world(4, partitions=2, records=30)
    world.faults.set_probability("delivery_retriable", 0.15)

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        return [_outputs(r) for r in records]

    metrics = InMemoryMetrics()
    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, retry=FAST_RETRY)
    p = make_processor(world, "m1", handle, config=cfg, metrics=metrics)  # type: ignore[arg-type]
    with quiet():
        drive(world, [p], lambda: all_committed(world))
    p.stop()
    assert metrics.count("retries") > 0
    assert set(output_sources(world)) == set(+_expected(world))
    assert_invariants(world)


@pytest.mark.parametrize("seed", [1, 2])
def test_revoke_mid_batch_redelivers_to_the_next_owner(seed: int) -> None:
    world = seed_world(seed, partitions=2, records=200)
    extra = {"partition.assignment.strategy": "range"}

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        return [_outputs(r) for r in records]

    cfg = ProcessorConfig(
        poll_timeout=0.05, ordering=OrderingMode.UNORDERED, drain_timeout=0.02, batch_size=20
    )
    slow = world.producer({"linger.ms": 200}, name="m1-producer", member="m1")
    p1 = make_processor(world, "m1", handle, config=cfg, consumer_extra=extra, producer=slow)  # type: ignore[arg-type]
    drive(world, [p1], lambda: p1.in_flight >= 20)
    p2 = make_processor(world, "m2", handle, config=cfg, consumer_extra=extra)  # type: ignore[arg-type]
    with quiet():
        drive(world, [p1, p2], lambda: all_committed(world), max_steps=20_000)
    p1.stop()
    p2.stop()
    assert set(output_sources(world)) == set(+_expected(world))
    assert_invariants(world)


def test_crash_mid_batch_redelivers() -> None:
    world = seed_world(5, partitions=2, records=60)

    @batch_handler
    def handle(records: Sequence[Record]) -> list[Entry]:
        return [_outputs(r) for r in records]

    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.KEY, batch_size=10)
    p1 = make_processor(world, "m1", handle, config=cfg)  # type: ignore[arg-type]
    drive(world, [p1], lambda: len(output_sources(world)) >= 5)
    world.crash("m1")
    with pytest.raises(ProcessCrashed):
        p1.step()
    p2 = make_processor(world, "m2", handle, config=cfg)  # type: ignore[arg-type]
    drive(world, [p2], lambda: all_committed(world), max_steps=20_000)
    p2.stop()
    assert set(output_sources(world)) == set(+_expected(world))
    assert_invariants(world)

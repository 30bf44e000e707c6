"""The health monitor on the simulator (virtual clock, seeded): a stuck partition,
a dead-letter write that keeps failing and a commit failing repeatedly each turn
health bad within the configured time, and back to ok when progress resumes."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from offsetledger.core import ConfigError, Executor, Outbound, Record, TopicPartition
from offsetledger.health import HealthMonitor, HealthStatus
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    RetryPolicy,
)
from offsetledger.simulator import World
from tests.ops.helpers import copy, drive, processor, world_with

T = TypeVar("T")
P0 = TopicPartition("in", 0)
STUCK_AFTER = 5.0


class HangingExecutor:
    """An Executor whose tasks submitted while :attr:`hang` is set never run until
    :meth:`release` (a handler stuck on a socket); the others go to ``inner``."""

    def __init__(self, inner: Executor, world: World) -> None:
        self.inner = inner
        self.world = world
        self.hang = False
        self.parked: list[tuple[Future[Any], Callable[[], Any]]] = []

    def submit(self, task: Callable[[], T]) -> Future[T]:
        if not self.hang:
            return self.inner.submit(task)
        future: Future[T] = Future()
        self.parked.append((future, task))
        return future

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        parked = {id(f) for f, _ in self.parked}
        live = [f for f in futures if id(f) not in parked]
        if live:
            self.inner.wait(live, timeout)
        elif futures and not any(f.done() for f in futures):
            self.world.clock.sleep(timeout)  # a blocked wait: virtual time passes

    def release(self) -> None:
        self.hang = False
        for future, task in self.parked:
            inner = self.inner.submit(task)
            inner.add_done_callback(functools.partial(_chain, target=future))
        self.parked.clear()

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        self.inner.shutdown(cancel_pending=cancel_pending)


def _chain(done: Future[Any], target: Future[Any]) -> None:
    exc = done.exception()
    if exc is not None:
        target.set_exception(exc)
    else:
        target.set_result(done.result())


def monitored(
    world: World,
    handler: Callable[[Record], Any] = copy,
    *,
    attach: bool = True,
    config: ProcessorConfig | None = None,
    executor: Executor | None = None,
) -> tuple[Processor, HealthMonitor, InMemoryMetrics]:
    inner = InMemoryMetrics()
    monitor = HealthMonitor(inner, clock=world.clock, stuck_after=STUCK_AFTER)
    proc = processor(world, handler, metrics=monitor, config=config, executor=executor)
    # the Processor attached its ledger itself; detach it to test the metric stream alone
    assert monitor._ledger is proc.ledger
    if not attach:
        monitor.attach(None)
    return proc, monitor, inner


def run_until_bad(
    world: World,
    proc: Processor,
    monitor: HealthMonitor,
    bad: Callable[[HealthStatus], bool] | None = None,
) -> HealthStatus:
    """Step until ``bad(health)``; fail (with the seed) if it stays ok too long."""
    start = world.clock.now()
    while world.clock.now() - start < 10 * STUCK_AFTER:
        proc.step()
        status = monitor.health()
        if (not status.ok) if bad is None else bad(status):
            return status
    raise AssertionError(f"seed={world.seed}: health stayed ok for {10 * STUCK_AFTER}s")


def run_until_ok(world: World, proc: Processor, monitor: HealthMonitor) -> None:
    start = world.clock.now()
    while not monitor.health().ok:
        assert world.clock.now() - start < 10 * STUCK_AFTER, f"seed={world.seed}: stays bad"
        proc.step()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_hung_handler_makes_its_partition_stuck_after_stuck_after(seed: int) -> None:
    world = world_with(seed, partitions=2, records=10)
    hanging = HangingExecutor(world.executor(name="x", member="m1"), world)
    proc, monitor, inner = monitored(world, executor=hanging)
    drive(world, proc, lambda: inner.count("records_done") == 10)
    idle_from = world.clock.now()
    while world.clock.now() - idle_from < 2 * STUCK_AFTER:  # idle is healthy
        proc.step()
        assert monitor.health().ok, f"seed={seed}: {monitor.health().reasons}"
    hanging.hang = True
    world.append("in", 0, key=b"k", value=b"hangs")
    hung_at = world.clock.now()
    status = run_until_bad(world, proc, monitor)
    waited = world.clock.now() - hung_at
    # no record finishes anywhere: the whole Processor is bad after stuck_after
    assert STUCK_AFTER <= waited <= STUCK_AFTER + 0.2, f"seed={seed}: bad after {waited}s"
    assert any("no record finished" in r for r in status.reasons), status.reasons
    # the partition itself: work seen at the next ledger sample (check_interval)
    status = run_until_bad(world, proc, monitor, lambda s: not s.partitions[P0].ok)
    waited = world.clock.now() - hung_at
    bound = STUCK_AFTER + monitor.check_interval + 0.2
    assert STUCK_AFTER <= waited <= bound, f"seed={seed}: partition bad after {waited}s"
    assert status.partitions[P0].unfinished == 1
    assert status.partitions[TopicPartition("in", 1)].ok, f"seed={seed}: {status}"
    assert any("in[0]: work in flight and no progress" in r for r in status.reasons)
    assert inner.value("health_ok") == 0.0
    assert inner.value("health_stuck_partitions") == 1.0
    hanging.release()
    run_until_ok(world, proc, monitor)
    assert inner.count("records_done") == 11, f"seed={seed}"
    drive(world, proc, lambda: inner.value("health_ok") == 1.0)


@pytest.mark.parametrize("seed", [4, 5])
def test_without_the_ledger_no_progress_at_all_is_caught(seed: int) -> None:
    world = world_with(seed, partitions=1, records=5)
    hanging = HangingExecutor(world.executor(name="x", member="m1"), world)
    proc, monitor, inner = monitored(world, executor=hanging, attach=False)
    drive(world, proc, lambda: inner.count("records_done") == 5)
    hanging.hang = True
    world.append("in", 0, key=b"k", value=b"hangs")
    hung_at = world.clock.now()
    status = run_until_bad(world, proc, monitor)
    assert world.clock.now() - hung_at >= STUCK_AFTER, f"seed={seed}"
    assert any("no record finished" in r and "1 are buffered" in r for r in status.reasons), (
        f"seed={seed}: {status.reasons}"
    )
    hanging.release()
    run_until_ok(world, proc, monitor)


def failing_on(value: bytes) -> Callable[[Record], list[Outbound]]:
    def handle(record: Record) -> list[Outbound]:
        if record.value == value:
            raise ValueError("poison")
        return [Outbound("out", value=record.value, key=record.key)]

    return handle


@pytest.mark.parametrize("attach", [True, False])
@pytest.mark.parametrize("seed", [6, 7])
def test_a_dead_letter_write_that_keeps_failing_is_a_stall(seed: int, attach: bool) -> None:
    world = world_with(seed, partitions=2, records=6)  # no topic "dlq": every write fails
    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic="dlq",
        retry=RetryPolicy(max_attempts=1, backoff_base=0.1, backoff_max=0.5),
    )
    proc, monitor, inner = monitored(world, failing_on(b"v2"), attach=attach, config=config)
    started = world.clock.now()
    status = run_until_bad(world, proc, monitor)
    assert world.clock.now() - started < STUCK_AFTER, f"seed={seed}: a stall is bad at once"
    assert not status.partitions[P0].ok, f"seed={seed}"
    assert status.partitions[P0].stalled, f"seed={seed}"
    assert any("in[0]: stalled" in r for r in status.reasons), status.reasons
    world.create_topic("dlq", partitions=1)  # the write now succeeds on its next retry
    run_until_ok(world, proc, monitor)
    assert inner.count("dead_letters") == 1, f"seed={seed}"


@pytest.mark.parametrize("seed", [8, 9])
def test_commits_failing_in_a_row_and_recovering(seed: int) -> None:
    world = world_with(seed, partitions=2, records=4)
    config = ProcessorConfig(
        poll_timeout=0.05,
        commit_mode=CommitMode.PERIODIC,
        commit_every_records=1,
        commit_interval=0.2,
        commit_attempts=1,
    )
    proc, monitor, inner = monitored(world, config=config)
    world.faults.set_probability("commit_unavailable", 1.0)
    for i in range(20):
        world.append("in", i % 2, key=b"k", value=f"more{i}".encode())
    status = run_until_bad(world, proc, monitor)
    assert any("commits failed in a row" in r for r in status.reasons), status.reasons
    failing = [p for p in status.partitions.values() if not p.ok]
    assert failing, f"seed={seed}"
    assert all(p.commit_failures_in_a_row >= 3 for p in failing), f"seed={seed}"
    world.faults.clear()
    world.append("in", 0, key=b"k", value=b"after")
    world.append("in", 1, key=b"k", value=b"after")
    run_until_ok(world, proc, monitor)
    assert inner.count("commits") > 0


def test_a_silent_processor_is_bad_and_says_why() -> None:
    world = world_with(0, partitions=1, records=1)
    monitor = HealthMonitor(clock=world.clock, stuck_after=2.0)
    assert monitor.health().ok
    world.clock.sleep(2.5)
    status = monitor.health()
    assert not status.ok
    assert status.reasons == (
        "no metric from the Processor for 2.5s (its loop is blocked or not running)",
    )
    monitor.gauge("buffered", 0.0)
    assert monitor.health().ok
    assert status.to_dict()["ok"] is False


def test_the_verdict_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    world = world_with(10, partitions=1, records=3)
    hanging = HangingExecutor(world.executor(name="x", member="m1"), world)
    proc, monitor, inner = monitored(world, executor=hanging)
    drive(world, proc, lambda: inner.count("records_done") == 3)
    hanging.hang = True
    world.append("in", 0, key=b"k", value=b"hangs")
    with caplog.at_level(logging.INFO, logger="offsetledger.health"):
        run_until_bad(world, proc, monitor)
        for _ in range(200):  # more checks while it stays bad: no more lines
            proc.step()
        hanging.release()
        run_until_ok(world, proc, monitor)
        drive(world, proc, lambda: inner.value("health_ok") == 1.0)
    lines = [r.getMessage() for r in caplog.records if r.name == "offsetledger.health"]
    # one line when it turns bad, one when the partition's own reason joins (at the
    # next ledger sample), one when it is ok again: none for the checks in between
    assert len(lines) == 3, lines
    assert lines[0].startswith("health: not ok: no record finished for 5.0s while 1 are")
    assert "in[0]: work in flight and no progress for" in lines[1]
    assert lines[2] == "health: ok again"


def test_forwards_every_call_unchanged() -> None:
    world = world_with(0)
    inner = InMemoryMetrics()
    monitor = HealthMonitor(inner, clock=world.clock, stuck_after=1.0)
    monitor.increment("records_in", 5)
    monitor.increment("stalls", tp=P0)
    monitor.gauge("watermark_lag", 3.0, tp=P0)
    monitor.increment("anything_new", 2)
    assert inner.count("records_in") == 5
    assert inner.count("stalls", P0) == 1
    assert inner.value("watermark_lag", P0) == 3.0
    assert inner.count("anything_new") == 2
    assert monitor.inner is inner


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"stuck_after": 0}, "health.stuck_after"),
        ({"stuck_after": float("nan")}, "health.stuck_after"),
        ({"commit_failures_limit": 0}, "health.commit_failures_limit"),
        ({"check_interval": -1.0}, "health.check_interval"),
    ],
)
def test_bad_settings_are_config_errors(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        HealthMonitor(**kwargs)


@pytest.mark.parametrize("attach", [True, False])
@pytest.mark.parametrize("seed", [11, 12])
def test_revoked_partitions_leave_the_view_and_a_rebalance_is_healthy(
    seed: int, attach: bool
) -> None:
    world = world_with(seed, partitions=4, records=20)
    first, monitor, inner = monitored(world, attach=attach)
    drive(world, first, lambda: inner.count("records_done") == 20)
    assert set(monitor.health().partitions) == {TopicPartition("in", p) for p in range(4)}
    second = processor(
        world,
        metrics=InMemoryMetrics(),
        member="m2",
        executor=world.executor(name="y", member="m2"),
    )
    start = world.clock.now()
    n = 0
    while world.clock.now() - start < 3 * STUCK_AFTER:
        if n % 20 == 0:
            world.append("in", (n // 20) % 4, key=b"k", value=f"late{n}".encode())
        first.step()
        second.step()
        n += 1
        status = monitor.health()
        assert status.ok, f"seed={seed}: {status.reasons}"
    mine = first.ledger.assigned()
    assert mine, f"seed={seed}: the first member kept no partition"
    assert len(mine) < 4, f"seed={seed}: the second member got none"
    tracked = set(monitor.health().partitions)
    if attach:
        assert tracked == set(mine), f"seed={seed}"
    else:  # forgotten at the rebalance, back with their next watermark_lag
        assert tracked <= set(mine), f"seed={seed}"


@pytest.mark.parametrize("seed", [6])
def test_processor_health_serves_the_monitors_verdict(seed: int) -> None:
    """``Processor.health()`` is the monitor's verdict (the Processor attached its
    ledger itself), and healthy-with-no-reasons when the hook is not a monitor."""
    world = world_with(seed, partitions=2, records=10)
    hanging = HangingExecutor(world.executor(name="x", member="m1"), world)
    monitor = HealthMonitor(InMemoryMetrics(), clock=world.clock, stuck_after=STUCK_AFTER)
    proc = processor(world, copy, metrics=monitor, executor=hanging)  # no attach() call
    assert proc.health().ok
    hanging.hang = True
    world.append("in", 0, key=b"k", value=b"hangs")
    start = world.clock.now()
    while world.clock.now() - start < 10 * STUCK_AFTER:
        proc.step()
        status = proc.health()
        if P0 in status.partitions and not status.partitions[P0].ok:
            break
    else:
        raise AssertionError(f"seed={seed}: Processor.health() stayed ok: {proc.health()}")
    assert status.partitions[P0].unfinished is not None, f"seed={seed}: ledger not attached"
    assert not status.ok
    assert status.reasons == monitor.health().reasons

    plain = processor(world_with(seed, partitions=1, records=1), copy, metrics=InMemoryMetrics())
    assert plain.health().ok
    assert plain.health().reasons == ()

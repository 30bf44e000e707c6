"""The thread pool's runner waits on an event its done-callbacks set, never on
every running future (``concurrent.futures.wait`` takes and releases each running
future's lock per call: O(runs in flight), 579 µs of CPU per record in the async
benchmark's 8-thread contender with thousands of runs queued)."""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import Future
from typing import Any

from offsetledger.core import Record
from offsetledger.runtime import SystemClock, ThreadPoolExecutorAdapter
from offsetledger.runtime._runners import PoolRunner, Run, runner_for
from offsetledger.runtime._runners._base import RunCall


class NoScanPool(ThreadPoolExecutorAdapter):
    """A pool whose generic ``wait`` must not be used by its own runner."""

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        raise AssertionError(f"wait() over {len(futures)} futures: the runner scanned them")


def _runner(pool: ThreadPoolExecutorAdapter, call: RunCall) -> PoolRunner:
    runner = pool.make_runner(call)
    assert isinstance(runner, PoolRunner)
    return runner


def test_runner_for_the_pool_is_its_event_woken_runner() -> None:
    pool = NoScanPool(max_workers=3)
    try:
        runner = runner_for(
            lambda record: [],
            batch=False,
            executor=pool,
            clock=SystemClock(),
            processing_timeout=None,
        )
        assert isinstance(runner, PoolRunner)
        assert runner.slices == 3
        run = Run([_record(0)], batch=False)
        runner.submit(run)
        out: list[Run] = []
        while not out:
            out.extend(runner.collect(30))  # NoScanPool.wait raises if it were used
        assert out == [run]
        assert run.results == [[]]
    finally:
        pool.shutdown()


def test_collect_wakes_on_a_finished_run_without_scanning_the_running_ones() -> None:
    pool = NoScanPool(max_workers=2)
    gate = threading.Event()
    try:

        def call(run: Run) -> None:
            if run.token == 0:
                gate.wait(30)  # the blocked one
            run.results.extend([] for _ in run.records)

        runner = _runner(pool, call)
        blocked = Run([], batch=False, token=0)
        runner.submit(blocked)
        assert runner.collect(0.01) == []  # nothing finished: the wait timed out
        quick = [Run([], batch=False, token=i) for i in range(1, 200)]
        for run in quick:
            runner.submit(run)
        seen: list[Run] = []
        while len(seen) < len(quick):
            seen.extend(runner.collect(30))
        assert sorted(r.token for r in seen) == list(range(1, 200))  # each once
        assert list(runner.running()) == [blocked]
        gate.set()
        assert runner.collect(30) == [blocked]
        assert list(runner.running()) == []
    finally:
        gate.set()
        pool.shutdown()


def test_a_failed_or_abandoned_run_is_reported_as_before() -> None:
    pool = NoScanPool(max_workers=1)
    gate = threading.Event()
    try:

        def call(run: Run) -> None:
            gate.wait(30)
            raise ValueError(f"run {run.token} failed")

        runner = _runner(pool, call)
        failing = Run([_record(0)], batch=False, token=1)
        dropped = Run([_record(1)], batch=False, token=2)
        runner.submit(failing)
        runner.submit(dropped)
        runner.abandon(dropped)
        assert dropped.abandoned
        gate.set()
        out: list[Run] = []
        for _ in range(3):  # the cancelled future's callback may wake one collect early
            out.extend(runner.collect(30))
            if out:
                break
        assert out == [failing]
        assert isinstance(failing.results[0], ValueError)
        assert runner.collect(0.01) == []  # the abandoned run never comes back
    finally:
        gate.set()
        pool.shutdown()


def _record(offset: int) -> Record:
    return Record(topic="in", partition=0, offset=offset, key=None, value=b"")

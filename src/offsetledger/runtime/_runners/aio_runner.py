"""The :class:`~offsetledger.runtime._runners.Runner` for ``async def`` handlers:
:class:`AsyncRunner` (records and runs over :class:`AttemptRunner`), and how it
chooses its loop. See :mod:`offsetledger.runtime._runners.aio`."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from offsetledger.core import Clock, Record
from offsetledger.runtime._contract import coerce_batch, coerce_outputs
from offsetledger.runtime._runners._base import Run
from offsetledger.runtime._runners.aio_attempts import AttemptRunner
from offsetledger.runtime._runners.aio_loop import (
    CLOSE_GRACE,
    DEFAULT_MAX_CONCURRENCY,
    MAX_WAIT,
    AsyncLoop,
)

__all__ = ["AsyncRunner", "coerce_batch_value"]


class _RunState:
    """A submitted run: its results so far, which records are still out."""

    __slots__ = ("fresh", "left", "results", "run")

    def __init__(self, run: Run, n: int) -> None:
        self.run = run
        self.results: list[Any] = [None] * n
        self.left = n
        #: indexes of the records finished since the last collect
        self.fresh: list[int] = []


class AsyncRunner:
    """The :class:`~offsetledger.runtime._runners.Runner` for ``async def`` handlers
    (the module docstring says how it runs them).

    * ``handler``: the coroutine function (per record, or per batch with ``batch``);
    * ``executor``: an :class:`AsyncLoop` (the loop and the concurrency), the
      simulator's executor (a :class:`~offsetledger.simulator._aio.VirtualLoop` on
      the world's clock and random: deterministic), or anything else / None (a fresh
      loop driven on the Processor's thread);
    * ``clock`` is not read: attempts are timed on the loop's clock.
    """

    slices = 1  #: a run's records already run concurrently: no need to split chunks

    def __init__(
        self,
        handler: Callable[[Any], Awaitable[Any]],
        *,
        batch: bool,
        clock: Clock | None = None,
        processing_timeout: float | None,
        executor: object = None,
    ) -> None:
        loop, threaded, owned_thread, max_concurrency = _choose_loop(executor)
        #: the runner made the loop (and closes it)
        self._owns_loop = not (isinstance(executor, AsyncLoop) and executor.loop is not None)
        self._thread = owned_thread
        self._handler = handler
        self._batch = batch
        self._attempts = AttemptRunner(
            loop,
            max_concurrency=max_concurrency,
            processing_timeout=processing_timeout,
            threaded=threaded,
            max_wait=None if _is_virtual(loop) else MAX_WAIT,
        )
        self._attempts.observe = _history_observer(executor)
        self._runs: dict[int, _RunState] = {}  # id(run) -> its state
        self._live: dict[int, Run] = {}  # id(run) -> the run (running()'s view)
        self._ids = itertools.count(1)
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._attempts.loop

    @property
    def attempts(self) -> AttemptRunner:
        """The attempt layer (counters: ``cancelled_count``, ``timed_out_count``)."""
        return self._attempts

    # -- Runner -------------------------------------------------------------------------

    def submit(self, run: Run) -> None:
        records = run.records
        key = id(run)
        self._live[key] = run
        if self._batch:
            self._runs[key] = _RunState(run, 1)
            self._attempts.submit((key, -1), self._handler, records)
            return
        self._runs[key] = _RunState(run, len(records))
        submit = self._attempts.submit
        call = self._handler
        for i, record in enumerate(records):
            submit((key, i), call, record)

    def collect(self, timeout: float | None) -> list[Run]:
        outcomes = self._attempts.poll(timeout)
        if not outcomes:
            return []
        runs = self._runs
        touched: dict[int, _RunState] = {}
        for outcome in outcomes:
            token: tuple[int, int] = outcome.token  # type: ignore[assignment]
            key, index = token
            state = runs.get(key)
            if state is None:
                continue
            error = outcome.error
            if error is not None and not isinstance(error, Exception):
                raise error  # KeyboardInterrupt, the simulator's ProcessCrashed
            if index < 0:  # a batch
                records = state.run.records
                state.results = (
                    [error] * len(records)
                    if error is not None
                    else list(coerce_batch_value(outcome.value, records))
                )
                state.left = 0
                state.fresh = list(range(len(records)))
            else:
                if error is None:
                    record = state.run.records[index]
                    try:
                        state.results[index] = coerce_outputs(outcome.value, record)
                    except Exception as exc:  # the contract breach fails the record
                        state.results[index] = exc
                else:
                    state.results[index] = error
                state.left -= 1
                state.fresh.append(index)
            touched[key] = state
        out: list[Run] = []
        live = self._live
        for key, state in touched.items():
            run = state.run
            fresh = state.fresh
            if state.left == 0 and len(fresh) == len(run.records):
                del runs[key], live[key]
                run.results = state.results
                out.append(run)
                continue
            # the records finished since the last collect, as one run of their own
            # (same bookkeeping: flow.ran handles any subset of a run's records)
            out.append(_subset(run, fresh, state.results))
            state.fresh = []
            if state.left == 0:
                del runs[key], live[key]
        return out

    def running(self) -> Collection[Run]:
        return self._live.values()

    def abandon(self, run: Run) -> None:
        self._live.pop(id(run), None)
        state = self._runs.pop(id(run), None)
        run.abandoned = True
        if state is None:
            return
        key = id(run)
        if self._batch:
            self._attempts.abandon((key, -1))
            return
        for i, result in enumerate(state.results):
            if result is None:
                self._attempts.abandon((key, i))

    def cancel_abandoned(self, timeout: float) -> int:
        """Cancel the attempts of records the Processor gave up on (their chunk is
        dead: revoked, lost) and wait up to ``timeout`` seconds for their coroutines to
        end. They are reported failed (the Processor ignores them: the partition is
        gone). Returns how many coroutines are still running after the wait."""
        attempts = self._attempts
        for key, state in self._runs.items():
            run = state.run
            if self._batch:
                if state.left and _dead(run, 0):
                    attempts.cancel((key, -1))
                continue
            for i, result in enumerate(state.results):
                if result is None and _dead(run, i):
                    attempts.cancel((key, i))
        attempts.wait_cancelled(timeout)
        return attempts.cancelled_running

    def close(self, *, cancel_pending: bool) -> None:
        """Cancel every attempt still running, give the coroutines
        :data:`CLOSE_GRACE` seconds to end, and stop the loop if the runner made it."""
        if self._closed:
            return
        self._closed = True
        self._attempts.close(CLOSE_GRACE)
        self._runs.clear()
        self._live.clear()
        loop = self.loop
        if self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(CLOSE_GRACE)
            if not self._thread.is_alive():
                loop.close()
        elif self._owns_loop and not loop.is_running():
            for task in asyncio.all_tasks(loop):
                task.cancel()
            shutdown = loop.shutdown_asyncgens()
            try:
                with contextlib.suppress(RuntimeError):
                    loop.run_until_complete(shutdown)
            finally:
                shutdown.close()  # not run (a crashed virtual loop): no "never awaited"
            loop.close()


def _subset(run: Run, indexes: list[int], results: list[Any]) -> Run:
    """A run of ``run``'s records at ``indexes`` (with their results), same bookkeeping."""
    records = run.records
    chunks = run.chunks
    part = Run(
        [records[i] for i in indexes],
        batch=run.batch,
        chunk=run.chunk,
        chunks=[chunks[i] for i in indexes] if chunks is not None else None,
        slow=run.slow,
        token=run.token,
    )
    part.results = [results[i] for i in indexes]
    return part


def coerce_batch_value(value: Any, records: Sequence[Record]) -> list[Any]:
    """A batch coroutine's value as one result per record (see ``coerce_batch``);
    a wrong shape fails every record with its HandlerContractError."""
    try:
        return list(coerce_batch(value, records))
    except Exception as exc:  # the whole batch failed the contract
        return [exc] * len(records)


def _dead(run: Run, index: int) -> bool:
    if run.abandoned:
        return True
    chunk: object = run.chunk
    if run.slow is not None:
        chunk = run.slow.chunk
    elif chunk is None and run.chunks is not None:
        chunk = run.chunks[index]
    return bool(getattr(chunk, "dead", False))


def _is_virtual(loop: asyncio.AbstractEventLoop) -> bool:
    return callable(getattr(loop, "run_until", None))


def _choose_loop(
    executor: object,
) -> tuple[asyncio.AbstractEventLoop, bool, threading.Thread | None, int]:
    """(loop, threaded, the thread the runner started or None, max_concurrency)."""
    if isinstance(executor, AsyncLoop):
        if executor.loop is not None:
            return executor.loop, executor.in_thread, None, executor.max_concurrency
        loop = asyncio.new_event_loop()
        if not executor.in_thread:
            return loop, False, None, executor.max_concurrency
        thread = threading.Thread(target=loop.run_forever, name="offsetledger-asyncio", daemon=True)
        thread.start()
        return loop, True, thread, executor.max_concurrency
    world = getattr(executor, "_world", None)  # the simulator's SimExecutor
    if world is not None and hasattr(world, "rng") and hasattr(world, "clock"):
        from offsetledger.simulator._aio import VirtualLoop  # noqa: PLC0415 - only in simulations

        name = str(getattr(executor, "name", "virtual-loop"))

        def crashed() -> bool:
            return bool(getattr(executor, "_crashed", False))

        faults = world.faults
        member = str(getattr(executor, "member", None) or name)

        def task_delay() -> float:  # the slow_task fault, for async handlers too
            if faults.armed("slow_task") and faults.fires("slow_task", member):
                return float(faults.slow_task_seconds)
            return 0.0

        loop = VirtualLoop(
            world.clock, world.rng, name=name, crashed=crashed, task_delay=task_delay
        )
        return loop, False, None, DEFAULT_MAX_CONCURRENCY
    return asyncio.new_event_loop(), False, None, DEFAULT_MAX_CONCURRENCY


def _history_observer(executor: object) -> Callable[[int, Any, str, str], None] | None:
    """In a simulation (the simulator's executor), record ``Attempt`` events in the
    world's history; elsewhere None."""
    world = getattr(executor, "_world", None)
    if world is None or not hasattr(world, "recorder") or not hasattr(world, "clock"):
        return None
    from offsetledger.history import Attempt  # noqa: PLC0415 - only in simulations

    member = str(getattr(executor, "member", None) or getattr(executor, "name", "?"))
    recorder, clock = world.recorder, world.clock

    def observe(seq: int, argument: Any, phase: str, outcome: str) -> None:
        records = argument if isinstance(argument, list) else [argument]
        now = clock.now()
        for record in records:
            recorder.record(
                Attempt(
                    time=now,
                    member=member,
                    attempt=seq,
                    phase=phase,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    outcome=outcome,
                )
            )

    return observe

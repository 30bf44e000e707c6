"""Real-world implementations of the core ports that are not Kafka clients: a
monotonic :class:`SystemClock` and a thread-pool :class:`ThreadPoolExecutorAdapter`."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any, TypeVar

from offsetledger.runtime._runners import InlineRunner, PoolRunner, RunCall

__all__ = ["InlineExecutor", "SystemClock", "ThreadPoolExecutorAdapter"]

T = TypeVar("T")


class SystemClock:
    """:class:`~offsetledger.core.Clock` over :func:`time.monotonic` and :func:`time.sleep`.

    The only place in the runtime that reads the wall clock; inject a virtual clock
    (the simulator's) for deterministic tests."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class ThreadPoolExecutorAdapter:
    """:class:`~offsetledger.core.Executor` over :class:`concurrent.futures.ThreadPoolExecutor`.

    Handlers run on ``max_workers`` threads. :meth:`wait` blocks until at least one
    of the futures is done or ``timeout`` seconds passed."""

    def __init__(self, max_workers: int, *, thread_name_prefix: str = "offsetledger") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        #: the pool's threads: the Processor splits a chunk into this many runs
        self.max_workers = max_workers
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix
        )

    def make_runner(self, call: RunCall) -> PoolRunner:
        """The Processor's runner for this pool: one task per run, split into
        ``max_workers`` runs per chunk, waiting on an event its done-callbacks set
        (not on every running future, as :meth:`wait` does)."""
        return PoolRunner(self, call, slices=self.max_workers, wake=threading.Event())

    def submit(self, task: Callable[[], T]) -> Future[T]:
        return self._pool.submit(task)

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        if futures:
            concurrent.futures.wait(
                futures, timeout=max(timeout, 0.0), return_when=concurrent.futures.FIRST_COMPLETED
            )

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        self._pool.shutdown(wait=False, cancel_futures=cancel_pending)


class InlineExecutor:
    """:class:`~offsetledger.core.Executor` that runs each task at once, on the
    caller's thread, inside :meth:`submit`; the returned Future is already done.

    For handlers that are fast and CPU-bound (where a thread pool only adds
    hand-offs). Records finish in submission order; ``processing_timeout`` cannot
    interrupt a task that runs inline, and a handler that blocks blocks the poll
    loop (and so, past ``max.poll.interval.ms``, the group membership)."""

    def make_runner(self, call: RunCall) -> InlineRunner:
        """The Processor's runner for this executor: runs without Futures."""
        return InlineRunner(call)

    def submit(self, task: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            result = task()
        except Exception as exc:  # the handler's failure travels in the Future
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        """Nothing to wait for: every submitted task has already run."""

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Nothing to stop."""

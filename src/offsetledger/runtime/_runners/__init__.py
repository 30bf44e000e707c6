"""Handler runners: where handlers run (inline, thread pool, asyncio), behind one
small interface (:class:`Runner`). :func:`runner_for` is the one place that picks
one; the Processor never looks at a concrete executor type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from offsetledger.core import Clock, Executor
from offsetledger.runtime._contract import is_async
from offsetledger.runtime._runners._base import (
    ProcessingTimeoutError,
    Run,
    RunCall,
    Runner,
    fill_failed,
    sync_call,
)
from offsetledger.runtime._runners._inline import InlineRunner
from offsetledger.runtime._runners._pool import PoolRunner

__all__ = [
    "DEFAULT_SLICES",
    "InlineRunner",
    "PoolRunner",
    "ProcessingTimeoutError",
    "Run",
    "RunCall",
    "Runner",
    "fill_failed",
    "runner_for",
    "sync_call",
]

#: Runs one chunk is split into on an Executor that does not say its workers.
DEFAULT_SLICES = 4


def runner_for(
    handler: Callable[[Any], Any],
    *,
    batch: bool,
    executor: Executor,
    clock: Clock,
    processing_timeout: float | None,
) -> Runner:
    """The runner for ``handler`` on ``executor``.

    * a coroutine-function handler: the asyncio runner
      (``offsetledger.runtime._runners.aio.AsyncRunner``, imported lazily);
    * an executor offering ``make_runner(call)`` (``InlineExecutor``, and
      ``ThreadPoolExecutorAdapter`` for its event-woken pool runner): its own;
    * any other :class:`~offsetledger.core.Executor`: a :class:`PoolRunner`, split
      into its ``max_workers`` (or :data:`DEFAULT_SLICES`) runs per chunk.
    """
    if is_async(handler):
        from offsetledger.runtime._runners.aio import AsyncRunner  # noqa: PLC0415 - asyncio only when used

        runner: Runner = AsyncRunner(
            handler,
            batch=batch,
            clock=clock,
            processing_timeout=processing_timeout,
            executor=executor,  # an AsyncLoop, or the simulator's executor: picks the loop
        )
        return runner
    call = sync_call(handler, batch=batch, clock=clock, processing_timeout=processing_timeout)
    make = getattr(executor, "make_runner", None)
    if make is not None:
        made: Runner = make(call)
        return made
    workers = getattr(executor, "max_workers", None)
    slices = workers if isinstance(workers, int) and workers >= 1 else DEFAULT_SLICES
    return PoolRunner(executor, call, slices=slices)

"""The async runner's settings and values: :class:`AsyncLoop` (what an application
passes as the Processor's ``executor=``), :class:`AsyncOutcome`, the constants.
See :mod:`offsetledger.runtime._runners.aio` for how attempts run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

import attrs

from offsetledger.core import ConfigError

__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_MAX_CONCURRENCY",
    "MAX_WAIT",
    "AsyncFunction",
    "AsyncLoop",
    "AsyncOutcome",
    "AttemptCancelledError",
    "checked_max_concurrency",
]

#: Live handler tasks at most, by default: enough to hide 5-50 ms of I/O per record
#: at tens of thousands of records per second, few enough that a stuck dependency
#: does not pile up unbounded work (see docs/async.md, "Sizing concurrency").
DEFAULT_MAX_CONCURRENCY = 1000

#: The longest one collect waits for a handler to finish on a real loop. The
#: Processor hands its whole wait to the runner while handlers run; delivery reports
#: and records that arrive meanwhile are only served once the wait is over, so a
#: short wait keeps them flowing (the cost: up to 1 / MAX_WAIT idle steps a second).
MAX_WAIT = 0.002

#: Seconds given to cancelled coroutines to end when the runner closes.
CLOSE_GRACE = 1.0

T = TypeVar("T")
AsyncFunction = Callable[[Any], Awaitable[Any]]


def checked_max_concurrency(value: object) -> int:
    """``value`` if it is a valid ``max_concurrency`` (a positive int, not a bool);
    else :class:`~offsetledger.core.ConfigError`. The one check, for
    :class:`AsyncLoop` and the attempt layer alike."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("max_concurrency", f"must be a positive integer, got {value!r}")
    return value


class AttemptCancelledError(RuntimeError):
    """The result of an attempt cancelled before it finished: it failed (the record
    is retried or, when its partition is gone, redelivered), it never counts as done."""


@attrs.frozen
class AsyncOutcome:
    """A finished attempt: the handler's return value, or the exception it raised
    (a timeout as :class:`~offsetledger.runtime.ProcessingTimeoutError`). ``started``
    and ``finished`` are loop times."""

    token: Hashable
    value: Any = None
    error: BaseException | None = None
    started: float = 0.0
    finished: float = 0.0


class AsyncLoop:
    """Chooses where ``async def`` handlers run; pass it as the Processor's
    ``executor=``.

    * ``loop``: None (the runner creates a loop), or a loop. A loop that is not
      running is driven on the Processor's thread; a loop running in another thread
      needs ``in_thread=True``.
    * ``in_thread``: with ``loop=None``, start the runner's loop in a thread of its
      own; with a loop, say it runs in another thread.
    * ``max_concurrency``: live handler tasks at most (default
      :data:`DEFAULT_MAX_CONCURRENCY`). Set ``ProcessorConfig.max_in_flight_total``
      at least as high, or it is the lower bound.

    It also satisfies the :class:`~offsetledger.core.Executor` port (a sync task runs
    inline), so it type-checks where an executor is expected; the Processor only
    reads its settings."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        in_thread: bool = False,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.loop = loop
        self.in_thread = in_thread
        self.max_concurrency = checked_max_concurrency(max_concurrency)

    @classmethod
    def current(cls, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY) -> AsyncLoop:
        """The running event loop (call it from a coroutine), for a Processor run with
        ``await run_async(processor)``: the handlers' coroutines run on the
        application's loop, the Processor on its own thread."""
        return cls(asyncio.get_running_loop(), in_thread=True, max_concurrency=max_concurrency)

    def __repr__(self) -> str:
        return (
            f"AsyncLoop(loop={self.loop!r}, in_thread={self.in_thread}, "
            f"max_concurrency={self.max_concurrency})"
        )

    def submit(self, task: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(task())
        except Exception as exc:  # travels in the Future
            future.set_exception(exc)
        return future

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None:
        """Nothing to wait for: :meth:`submit` runs inline."""

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        """Nothing to stop (the runner owns its loop)."""

"""The asyncio handler runner: ``async def`` handlers, thousands of attempts in flight
on one event loop.

Each handler attempt is one :class:`asyncio.Task` on an event loop the runner drives
or reaches:

* **driven** (the default for a loop the runner creates itself, and for the
  simulator's :class:`~offsetledger.simulator._aio.VirtualLoop`): the loop runs on
  the Processor's own thread, inside :meth:`AsyncRunner.poll`, for at most the wait
  the Processor gives it. One thread, no hand-offs, no locks; the Processor's other
  stages (poll, delivery reports) run between two turns of the loop. A handler that
  blocks (a sync HTTP call, ``time.sleep``) blocks the whole Processor: see
  docs/async.md.
* **threaded** (``loop=`` a loop running in another thread, e.g. the application's
  loop under :func:`offsetledger.runtime.run_async`): attempts are handed to that
  loop in one ``call_soon_threadsafe`` per poll, finished attempts come back through
  a deque and a condition variable.

Attempt semantics, the same in both:

* ``processing_timeout`` is enforced by :func:`asyncio.timeout` around the attempt:
  the coroutine is cancelled at the deadline and the attempt fails with
  :class:`~offsetledger.runtime.ProcessingTimeoutError` only once the coroutine has
  actually finished (its ``finally`` blocks ran), so a retry of the record, or the
  next record of its key, never overlaps it. A coroutine that swallows the
  cancellation and returns still fails: a timed-out attempt never counts as done.
* :meth:`AsyncRunner.abandon` (revoke after the drain, lost, shutdown) cancels the
  attempt; its outcome, whatever it is (even a value returned by a coroutine that
  caught the :class:`asyncio.CancelledError`), is never reported: the record is
  redelivered. The task keeps counting in :attr:`AsyncRunner.running` until it has
  really finished, and :meth:`AsyncRunner.wait_abandoned` waits for that.
* a task cancelled by someone else (the handler cancelling itself) is a failed
  attempt (retried per the retry policy), never a success.

Concurrency: the runner caps attempts in flight at ``max_concurrency`` (default
:data:`DEFAULT_MAX_CONCURRENCY`, 1000: enough to hide 5-50 ms of I/O per record at
tens of thousands of records per second, small enough that a stuck dependency does
not pile up unbounded work). The ordering mode's own bound (one at a time per key
under KEY, per partition under PARTITION) is the dispatcher's, as for every runner.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import threading
from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import attrs

from offsetledger.core import ConfigError

__all__ = ["DEFAULT_MAX_CONCURRENCY", "AsyncOutcome", "AsyncRunner", "AttemptTimeoutError"]

#: Attempts in flight at once by default (see the module docstring).
DEFAULT_MAX_CONCURRENCY = 1000

AsyncFunction = Callable[[Any], Coroutine[Any, Any, Any]]


class AttemptTimeoutError(TimeoutError):
    """Raised for an attempt that ran past ``processing_timeout`` (the runtime maps it
    to its own ProcessingTimeoutError)."""

    def __init__(self, elapsed: float, timeout: float) -> None:
        super().__init__(f"handler ran {elapsed:.3f}s, over processing_timeout {timeout}s")
        self.elapsed = elapsed
        self.timeout = timeout


@attrs.frozen
class AsyncOutcome:
    """A finished attempt: the handler's return value, or the exception it raised
    (a timeout as :class:`AttemptTimeoutError`). ``started`` and ``finished`` are loop
    times."""

    token: Hashable
    value: Any = None
    error: BaseException | None = None
    started: float = 0.0
    finished: float = 0.0


class AsyncRunner:
    """Runs ``async def`` handler attempts on an asyncio event loop (module docstring).

    * ``loop``: None (the runner creates a loop and drives it on the caller's thread),
      a loop that is not running (driven by the runner: a
      :class:`~offsetledger.simulator._aio.VirtualLoop` for simulation), or a loop
      running in another thread (``threaded=True``).
    * ``max_concurrency``: attempts in flight at most; :meth:`capacity` says how many
      more may be submitted.
    * ``processing_timeout``: seconds (loop time) one attempt may run, or None.

    Every method but the loop-side internals is called from one thread (the
    Processor's)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        processing_timeout: float | None = None,
        threaded: bool = False,
    ) -> None:
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or (max_concurrency < 1)
        ):
            raise ConfigError(
                "max_concurrency", f"must be a positive integer, got {max_concurrency!r}"
            )
        if processing_timeout is not None and not processing_timeout > 0:
            raise ConfigError(
                "processing_timeout", f"must be > 0 seconds or None, got {processing_timeout!r}"
            )
        if threaded and loop is None:
            raise ConfigError("loop", "threaded=True needs the loop that runs in the other thread")
        self._owns_loop = loop is None
        self._loop = loop if loop is not None else asyncio.new_event_loop()
        self._threaded = threaded
        self.max_concurrency = max_concurrency
        self.processing_timeout = processing_timeout
        self._seq = itertools.count(1)
        # loop thread only: attempt number -> task, and the numbers to discard
        self._tasks: dict[int, asyncio.Task[AsyncOutcome]] = {}
        self._discard: set[int] = set()
        # shared between the threads: finished outcomes (deque append/popleft are
        # atomic), the live/abandoned counters (under the condition's lock)
        self._finished: collections.deque[tuple[int, AsyncOutcome]] = collections.deque()
        self._cond = threading.Condition()
        self._live = 0  # tasks started and not ended (abandoned ones included)
        self._abandoned_live = 0  # abandoned tasks not ended yet
        # caller thread only
        self._outstanding: dict[Hashable, int] = {}  # token -> attempt number
        self._staged: list[tuple[int, Hashable, AsyncFunction, Any]] = []
        self._stop_when: Callable[[], bool] | None = None
        self._closed = False
        #: attempts abandoned (cancelled, outcome discarded) so far
        self.abandoned_count = 0
        #: attempts that ran past processing_timeout so far
        self.timed_out_count = 0

    # -- introspection ----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def running(self) -> int:
        """Attempts alive (submitted and not ended), abandoned ones included until
        their coroutine has really ended."""
        return self._live + len(self._staged)

    @property
    def abandoned_running(self) -> int:
        """Abandoned attempts whose coroutine has not ended yet."""
        return self._abandoned_live

    @property
    def outstanding(self) -> int:
        """Attempts submitted whose outcome has been neither collected nor abandoned."""
        return len(self._outstanding)

    def capacity(self) -> int:
        """How many more attempts may be submitted now."""
        return max(self.max_concurrency - self.running, 0)

    # -- the caller's side ------------------------------------------------------------

    def submit(self, token: Hashable, handler: AsyncFunction, argument: Any) -> None:
        """Start ``handler(argument)`` as one attempt identified by ``token`` (unique
        among outstanding attempts; an abandoned attempt's token may be reused at
        once). The coroutine is created on the loop's thread at the next
        :meth:`poll`."""
        if self._closed:
            raise RuntimeError("the async runner is closed")
        if token in self._outstanding:
            raise ValueError(f"attempt {token!r} is already outstanding")
        seq = next(self._seq)
        self._outstanding[token] = seq
        self._staged.append((seq, token, handler, argument))

    def abandon(self, token: Hashable) -> bool:
        """Give up on ``token``'s attempt: cancel it; its outcome is never reported.
        Returns False if it was not outstanding (already collected or abandoned)."""
        seq = self._outstanding.pop(token, None)
        if seq is None:
            return False
        self.abandoned_count += 1
        for i, staged in enumerate(self._staged):
            if staged[0] == seq:  # never started: nothing to cancel
                del self._staged[i]
                return True
        with self._cond:
            self._abandoned_live += 1
        self._on_loop(self._cancel, seq)
        return True

    def poll(self, wait: float) -> list[AsyncOutcome]:
        """Start what was submitted, run the loop (driven) or wait (threaded) up to
        ``wait`` seconds until at least one attempt finished, and return every
        finished attempt's outcome (abandoned ones excluded)."""
        self._flush()
        if not self._finished and wait > 0 and self._outstanding:
            self._run_or_wait(wait, self._has_finished)
        elif not self._threaded:
            self._run_or_wait(0.0, _always)
        return self._take()

    def wait_abandoned(self, timeout: float) -> bool:
        """Run (or wait for) the loop until every abandoned attempt's coroutine has
        really ended, up to ``timeout`` seconds. Returns True when none is left."""
        self._flush()
        if self._abandoned_live:
            self._run_or_wait(max(timeout, 0.0), self._no_abandoned_live)
        return self._abandoned_live == 0

    def close(self, timeout: float = 0.0) -> None:
        """Abandon every outstanding attempt, give their coroutines ``timeout`` seconds
        to end, and close the loop if the runner created it."""
        if self._closed:
            return
        for token in list(self._outstanding):
            self.abandon(token)
        self.wait_abandoned(timeout)
        self._finished.clear()
        self._closed = True
        if self._owns_loop:
            loop = self._loop
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    # -- internals: caller side ---------------------------------------------------------

    def _has_finished(self) -> bool:
        return bool(self._finished)

    def _no_abandoned_live(self) -> bool:
        return self._abandoned_live == 0

    def _flush(self) -> None:
        if not self._staged:
            return
        batch, self._staged = self._staged, []
        with self._cond:
            self._live += len(batch)
        self._on_loop(self._start_batch, batch)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        if self._threaded:
            self._loop.call_soon_threadsafe(fn, *args)
        else:
            self._loop.call_soon(fn, *args)

    def _take(self) -> list[AsyncOutcome]:
        out: list[AsyncOutcome] = []
        finished = self._finished
        outstanding = self._outstanding
        while finished:
            seq, outcome = finished.popleft()
            if outstanding.get(outcome.token) == seq:
                del outstanding[outcome.token]
                out.append(outcome)
        return out

    def _run_or_wait(self, wait: float, done: Callable[[], bool]) -> None:
        loop = self._loop
        if self._threaded:
            with self._cond:
                self._cond.wait_for(done, timeout=wait)
            return
        run_until = getattr(loop, "run_until", None)
        if run_until is not None:  # the virtual loop: virtual time, seeded order
            run_until(done, wait)
            return
        # a real loop driven here: run until done() or the wait is over
        if wait <= 0:
            loop.call_soon(loop.stop)
            loop.run_forever()
            return
        if done():
            return
        timer = loop.call_later(wait, loop.stop)
        self._stop_when = done
        try:
            loop.run_forever()
        finally:
            self._stop_when = None
            timer.cancel()

    # -- internals: the loop's thread ---------------------------------------------------

    def _start_batch(self, batch: list[tuple[int, Hashable, AsyncFunction, Any]]) -> None:
        create_task = self._loop.create_task
        attempt = self._attempt
        tasks = self._tasks
        done = self._task_done
        for seq, token, handler, argument in batch:
            task = create_task(attempt(seq, token, handler, argument))
            tasks[seq] = task
            task.add_done_callback(functools.partial(done, seq, token))

    def _cancel(self, seq: int) -> None:
        self._discard.add(seq)
        task = self._tasks.get(seq)
        if task is not None:
            task.cancel()
        # else: its batch is still queued on the loop; _attempt sees it discarded

    async def _attempt(
        self, seq: int, token: Hashable, handler: AsyncFunction, argument: Any
    ) -> AsyncOutcome:
        if seq in self._discard:
            raise asyncio.CancelledError
        loop = self._loop
        started = loop.time()
        timeout = self.processing_timeout
        if timeout is None:
            value = await handler(argument)
            return AsyncOutcome(token, value, None, started, loop.time())
        try:
            async with asyncio.timeout(timeout) as scope:
                value = await handler(argument)
        except TimeoutError:
            if not scope.expired():
                raise  # the handler's own TimeoutError: an ordinary failure
            return self._timed_out(token, started, timeout)
        if scope.expired():  # the coroutine swallowed the cancellation and returned
            return self._timed_out(token, started, timeout)
        return AsyncOutcome(token, value, None, started, loop.time())

    def _timed_out(self, token: Hashable, started: float, timeout: float) -> AsyncOutcome:
        self.timed_out_count += 1
        now = self._loop.time()
        return AsyncOutcome(token, None, AttemptTimeoutError(now - started, timeout), started, now)

    def _task_done(self, seq: int, token: Hashable, task: asyncio.Task[AsyncOutcome]) -> None:
        del self._tasks[seq]
        if seq in self._discard:  # abandoned: whatever happened is not reported
            self._discard.discard(seq)
            if not task.cancelled():
                task.exception()  # retrieve it: no "exception was never retrieved"
            with self._cond:
                self._live -= 1
                self._abandoned_live -= 1
                self._cond.notify_all()
            self._wake()
            return
        if task.cancelled():
            outcome = AsyncOutcome(
                token, None, RuntimeError("the handler's coroutine was cancelled")
            )
        else:
            exc = task.exception()
            outcome = AsyncOutcome(token, None, exc) if exc is not None else task.result()
        self._finished.append((seq, outcome))
        with self._cond:
            self._live -= 1
            self._cond.notify_all()
        self._wake()

    def _wake(self) -> None:
        stop_when = self._stop_when
        if stop_when is not None and stop_when():
            self._loop.stop()


def _always() -> bool:
    return True

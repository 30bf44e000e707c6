"""The attempt layer of the async runner: :class:`AttemptRunner` runs attempts
(``handler(argument)`` coroutines) as tasks on one event loop and hands their
outcomes back; it knows nothing of records. See :mod:`offsetledger.runtime._runners.aio`."""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import threading
from collections.abc import Callable, Hashable
from typing import Any

from offsetledger.core import ConfigError
from offsetledger.runtime._runners._base import ProcessingTimeoutError
from offsetledger.runtime._runners.aio_loop import (
    DEFAULT_MAX_CONCURRENCY,
    AsyncFunction,
    AsyncOutcome,
    AttemptCancelledError,
    checked_max_concurrency,
)

__all__ = ["AttemptRunner"]


class AttemptRunner:
    """Runs attempts (``handler(argument)`` coroutines) as tasks on one event loop.

    * ``loop``: a loop driven by this runner on the caller's thread (not running), or
      one running in another thread (``threaded=True``).
    * ``max_concurrency``: attempts alive at most (:meth:`capacity`).
    * ``processing_timeout``: seconds (loop time) one attempt may run, or None.
    * ``max_wait``: the longest :meth:`poll` waits for an attempt to finish, whatever
      the caller asks (None: as asked).

    Every public method is called from one thread (the Processor's)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        processing_timeout: float | None = None,
        threaded: bool = False,
        max_wait: float | None = None,
    ) -> None:
        if processing_timeout is not None and not processing_timeout > 0:
            raise ConfigError(
                "processing_timeout", f"must be > 0 seconds or None, got {processing_timeout!r}"
            )
        self._loop = loop
        self._threaded = threaded
        self.max_concurrency = checked_max_concurrency(max_concurrency)
        self.processing_timeout = processing_timeout
        #: longest one poll waits for an attempt to finish (None: the caller's wait)
        self.max_wait = max_wait
        self._seq = itertools.count(1)
        # loop thread only: attempt number -> task; numbers cancelled by the runtime
        # (value: report the attempt as failed, or not at all)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._cancelled: dict[int, bool] = {}
        self._timed_out: set[int] = set()  # cancelled at their deadline
        self._tokens: dict[int, Hashable] = {}
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._expiry: asyncio.TimerHandle | None = None
        # shared between the threads: finished outcomes (deque append/popleft are
        # atomic), the live counters (under the condition's lock when threaded)
        self._finished: collections.deque[tuple[int, AsyncOutcome]] = collections.deque()
        self._cond = threading.Condition()
        self._live = 0  # tasks started and not ended (cancelled ones included)
        self._cancelled_live = 0  # cancelled by the runtime, not ended yet
        # caller thread only
        self._outstanding: dict[Hashable, int] = {}  # token -> attempt number
        self._staged: list[tuple[int, Hashable, AsyncFunction, Any]] = []
        self._stop_when: Callable[[], bool] | None = None
        self._closed = False
        #: attempts cancelled by the runtime so far
        self.cancelled_count = 0
        #: attempts that ran past processing_timeout so far
        self.timed_out_count = 0
        #: told ``(attempt number, argument, phase, outcome)`` on the loop's thread when
        #: an attempt's coroutine starts ("start") and really ends ("end": "ok",
        #: "failed", "timeout" or "cancelled"); the simulator records it in the history
        self.observe: Callable[[int, Any, str, str], None] | None = None

    # -- introspection ----------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def running(self) -> int:
        """Attempts alive (submitted and not ended), cancelled ones included until
        their coroutine has really ended."""
        return self._live + len(self._staged)

    @property
    def cancelled_running(self) -> int:
        """Attempts cancelled by the runtime whose coroutine has not ended yet."""
        return self._cancelled_live

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
        return self._cancel_token(token, report=False)

    def cancel(self, token: Hashable) -> bool:
        """Cancel ``token``'s attempt; it is reported failed with
        :class:`AttemptCancelledError` once its coroutine has ended (whatever the
        coroutine returned). Returns False if it was not outstanding."""
        return self._cancel_token(token, report=True)

    def poll(self, wait: float | None) -> list[AsyncOutcome]:
        """Start what was submitted, run the loop (driven) or wait (threaded) up to
        ``wait`` seconds until at least one attempt finished, and return every
        finished attempt's outcome (abandoned ones excluded). ``None``: no waiting;
        attempts just submitted are started (the loop runs what is ready once)."""
        if wait is None:
            # start what was just submitted (its coroutines run to their first await)
            # without waiting: a record handed out starts now, not a step later
            if self._staged:
                self._flush()
                if not self._threaded:
                    # a real loop's pass creates the tasks, the next runs their first
                    # steps: an attempt's deadline runs from its task's creation, so it
                    # must not sit unstarted until the loop is next driven
                    self._run_or_wait(0.0, _always)
                    self._run_or_wait(0.0, _always)
            return self._take()
        self._flush()
        if not self._finished and wait > 0 and self._outstanding:
            if self.max_wait is not None:
                wait = min(wait, self.max_wait)
            self._run_or_wait(wait, self._has_finished)
        elif not self._threaded:
            self._run_or_wait(0.0, _always)
        return self._take()

    def wait_cancelled(self, timeout: float) -> bool:
        """Run (or wait for) the loop until every attempt the runtime cancelled has
        really ended, up to ``timeout`` seconds. Returns True when none is left."""
        self._flush()
        if self._cancelled_live:
            self._run_or_wait(max(timeout, 0.0), self._none_cancelled_live)
        return self._cancelled_live == 0

    def close(self, timeout: float = 0.0) -> None:
        """Abandon every outstanding attempt and give their coroutines ``timeout``
        seconds to end."""
        if self._closed:
            return
        for token in list(self._outstanding):
            self.abandon(token)
        self.wait_cancelled(timeout)
        self._finished.clear()
        self._closed = True

    # -- internals: caller side ---------------------------------------------------------

    def _cancel_token(self, token: Hashable, *, report: bool) -> bool:
        seq = self._outstanding.get(token)
        if seq is None:
            return False
        if not report:
            del self._outstanding[token]
        self.cancelled_count += 1
        for i, staged in enumerate(self._staged):
            if staged[0] == seq:  # never started: nothing to cancel
                del self._staged[i]
                if report:
                    self._finished.append((seq, AsyncOutcome(token, None, _cancelled())))
                return True
        with self._cond:
            self._cancelled_live += 1
        self._on_loop(self._cancel_on_loop, seq, report)
        return True

    def _has_finished(self) -> bool:
        return bool(self._finished)

    def _none_cancelled_live(self) -> bool:
        return self._cancelled_live == 0

    def _flush(self) -> None:
        """Hand the staged attempts to the loop, as many as ``max_concurrency`` allows
        (the rest wait, not started, their timeout not running, until tasks end)."""
        staged = self._staged
        if not staged:
            return
        room = self.max_concurrency - self._live
        if room <= 0:
            return
        if room >= len(staged):
            batch, self._staged = staged, []
        else:
            batch, self._staged = staged[:room], staged[room:]
        if self._threaded:
            with self._cond:
                self._live += len(batch)
        else:
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
            if asyncio.events._get_running_loop() is loop:
                raise RuntimeError(
                    "the Processor is waiting for its handlers on the thread of the event "
                    "loop they run on (a deadlock): run it with `await run_async(processor)`"
                )
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
        loop = self._loop
        create_task = loop.create_task
        attempt = self._attempt
        tasks = self._tasks
        timeout = self.processing_timeout
        for seq, token, handler, argument in batch:
            tasks[seq] = create_task(attempt(seq, token, handler, argument))
            self._tokens[seq] = token
        if timeout is not None and batch:
            # one deadline per attempt, in start order (so in deadline order): one timer
            # for the earliest live one, instead of a timer per attempt
            deadline = loop.time() + timeout
            self._deadlines.extend((deadline, entry[0]) for entry in batch)
            if self._expiry is None:
                self._expiry = loop.call_at(deadline, self._expire, deadline)

    def _expire(self, due: float) -> None:
        """The earliest deadline (``due``) passed. The cancelling waits one pass of the
        loop: when the loop was not run for a while (a driven loop while the
        Processor's thread polled, committed or handled a rebalance), a wake-up due
        before the deadline fires in the same pass as it, and the woken task's next
        step is only scheduled; cancelled now, an attempt whose I/O finished in time
        would count as timed out (and its retry likewise, as long as the loop keeps
        being late)."""
        self._loop.call_soon(self._expire_overdue, due)

    def _expire_overdue(self, due: float) -> None:
        """Cancel every attempt past its deadline. A loop may fire a timer a little
        before its time (the virtual loop counts timers within a microsecond as due),
        so ``due`` itself counts as passed: else the timer would be set again for the
        same deadline, forever."""
        self._expiry = None
        loop = self._loop
        horizon = max(loop.time(), due) + 1e-9
        deadlines = self._deadlines
        tasks = self._tasks
        while deadlines:
            due, seq = deadlines[0]
            task = tasks.get(seq)
            if task is None:  # finished in time
                deadlines.popleft()
                continue
            if due > horizon:
                break
            deadlines.popleft()
            self._timed_out.add(seq)
            task.cancel()
            task.add_done_callback(functools.partial(self._after_cancel, seq))
        if deadlines:
            self._expiry = loop.call_at(deadlines[0][0], self._expire, deadlines[0][0])

    def _cancel_on_loop(self, seq: int, report: bool) -> None:
        self._cancelled[seq] = report
        task = self._tasks.get(seq)
        if task is not None:
            task.cancel()
            # a task cancelled before its first step never enters _attempt's body
            task.add_done_callback(functools.partial(self._after_cancel, seq))
        # else: its batch is still queued on the loop; _attempt sees it cancelled

    async def _attempt(
        self, seq: int, token: Hashable, handler: AsyncFunction, argument: Any
    ) -> None:
        started = self._loop.time()
        value: Any = None
        error: BaseException | None = None
        observe = self.observe
        if seq in self._cancelled:
            error = _CANCELLED
        else:
            if observe is not None:
                observe(seq, argument, "start", "")
            try:
                value = await handler(argument)
            except asyncio.CancelledError:
                error = _CANCELLED
            except GeneratorExit:  # the coroutine is being closed: let it close
                raise
            except BaseException as exc:  # handed to the Processor's thread
                error = exc
            if observe is not None:
                observe(seq, argument, "end", self._outcome_name(seq, error))
        self._ended(seq, token, value, error, started)

    def _outcome_name(self, seq: int, error: BaseException | None) -> str:
        if seq in self._timed_out:
            return "timeout"
        if seq in self._cancelled or error is _CANCELLED:
            return "cancelled"
        return "ok" if error is None else "failed"

    def _timeout_outcome(self, token: Hashable, started: float, now: float) -> AsyncOutcome:
        """The outcome of an attempt cancelled at its deadline: it failed."""
        self.timed_out_count += 1
        error = ProcessingTimeoutError(
            f"handler ran {now - started:.3f}s, over processing_timeout {self.processing_timeout}s"
        )
        return AsyncOutcome(token, None, error, started, now)

    def _after_cancel(self, seq: int, task: asyncio.Task[None]) -> None:
        if seq in self._tasks:  # cancelled before it ran at all
            self._ended(seq, None, None, _CANCELLED, self._loop.time())

    def _ended(
        self, seq: int, token: Hashable, value: Any, error: BaseException | None, started: float
    ) -> None:
        """Bookkeeping once an attempt's coroutine has really ended (loop thread)."""
        if self._tasks.pop(seq, None) is None:
            return
        token = self._tokens.pop(seq, token)
        report = self._cancelled.pop(seq, None)
        if report is not None:  # cancelled by the runtime: never a success
            self._timed_out.discard(seq)
            if report:
                self._finished.append((seq, AsyncOutcome(token, None, _cancelled())))
            with self._cond:
                self._live -= 1
                self._cancelled_live -= 1
                if self._threaded:
                    self._cond.notify_all()
            self._wake()
            return
        now = self._loop.time()
        if seq in self._timed_out:  # whatever it did once cancelled: a timeout
            self._timed_out.discard(seq)
            outcome = self._timeout_outcome(token, started, now)
        elif error is _CANCELLED:
            outcome = AsyncOutcome(
                token, None, AttemptCancelledError("the handler's coroutine was cancelled")
            )
        else:
            outcome = AsyncOutcome(token, value, error, started, now)
        self._finished.append((seq, outcome))
        if self._threaded:
            with self._cond:
                self._live -= 1
                self._cond.notify_all()
        else:  # driven: one thread, no lock (one acquire per attempt saved)
            self._live -= 1
        self._wake()

    def _wake(self) -> None:
        stop_when = self._stop_when
        if stop_when is not None and stop_when():
            self._loop.stop()


def _always() -> bool:
    return True


#: stands for "the coroutine ended by a CancelledError" inside the loop's bookkeeping
_CANCELLED = asyncio.CancelledError()


def _cancelled() -> AttemptCancelledError:
    return AttemptCancelledError("cancelled by the runtime (revoke, lost or shutdown)")

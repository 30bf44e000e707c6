"""The asyncio handler runner: ``async def`` handlers, thousands of records in flight
on one event loop, with the guarantees of the sync runners.

Layers:

* :class:`AsyncRunner` is the :class:`~offsetledger.runtime._runners.Runner` the
  Processor drives: each record of a run is one attempt (a batch run is one attempt
  for all its records); a run's records finish independently and come back as they
  finish (one-record parts of the run; a run finished at once comes back whole).
* :class:`AttemptRunner` runs attempts as :class:`asyncio.Task` objects on one loop
  and hands their outcomes back; it knows nothing of records.
* :class:`AsyncLoop` is what an application passes as the Processor's ``executor=``
  to choose the loop and the concurrency.

Where the coroutines run:

* **driven** (the default): the runner's own loop runs on the Processor's thread,
  inside ``collect``, for at most the wait the Processor gives it. One thread, no
  hand-offs, no locks; the Processor's other stages (poll, delivery reports) run
  between two turns of the loop. The simulator's
  :class:`~offsetledger.simulator._aio.VirtualLoop` is driven the same way (virtual
  time, seeded order).
* **threaded**: the loop runs in another thread: one the runner starts
  (``AsyncLoop(in_thread=True)``), or the application's own loop under
  :func:`offsetledger.runtime._aio.run_async`. Attempts are handed over in one
  ``call_soon_threadsafe`` per collect; outcomes come back through a deque and a
  condition variable.

Attempt semantics, the same everywhere:

* ``processing_timeout`` is enforced by :func:`asyncio.timeout` around the attempt:
  the coroutine is cancelled at the deadline and the record fails with
  :class:`~offsetledger.runtime.ProcessingTimeoutError` only once the coroutine has
  actually ended (its ``finally`` blocks ran), so its retry, or the next record of
  its key, never overlaps it. A coroutine that swallows the cancellation and
  returns still fails: a timed-out attempt never counts as done.
* a cancelled attempt is never a success: cancelled by the runtime (revoke after the
  drain, lost, shutdown) it is either not reported at all or reported failed (its
  record is redelivered); cancelled by anyone else (the handler itself) it is a
  failed attempt, retried per the retry policy.
* ``cancel_abandoned`` (called by the rebalance handler after the drain) cancels the
  attempts of revoked partitions and waits for their coroutines to end, so a
  revoked record is never still running when its partition's next owner starts it.

Concurrency: the dispatcher bounds records in flight (``max_in_flight_total``,
``max_in_flight_per_partition``; one at a time per key under KEY, per partition
under PARTITION), as for every runner; the runner adds ``max_concurrency``
(default :data:`DEFAULT_MAX_CONCURRENCY`) as a cap on live tasks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import threading
from collections.abc import Awaitable, Callable, Collection, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import attrs

from offsetledger.core import Clock, ConfigError, Record
from offsetledger.runtime._contract import coerce_batch, coerce_outputs
from offsetledger.runtime._runners._base import ProcessingTimeoutError, Run

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "AsyncLoop",
    "AsyncOutcome",
    "AsyncRunner",
    "AttemptCancelledError",
    "AttemptRunner",
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
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigError(
                "max_concurrency", f"must be a positive integer, got {max_concurrency!r}"
            )
        self.loop = loop
        self.in_thread = in_thread
        self.max_concurrency = max_concurrency

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
        if (
            isinstance(max_concurrency, bool)
            or not isinstance(max_concurrency, int)
            or max_concurrency < 1
        ):
            raise ConfigError(
                "max_concurrency", f"must be a positive integer, got {max_concurrency!r}"
            )
        if processing_timeout is not None and not processing_timeout > 0:
            raise ConfigError(
                "processing_timeout", f"must be > 0 seconds or None, got {processing_timeout!r}"
            )
        self._loop = loop
        self._threaded = threaded
        self.max_concurrency = max_concurrency
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
        # atomic), the live counters (under the condition's lock)
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
                self._expiry = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        """The earliest deadline passed: cancel every attempt past its deadline."""
        self._expiry = None
        loop = self._loop
        horizon = loop.time() + 1e-9
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
            self._expiry = loop.call_at(deadlines[0][0], self._expire)

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
        with self._cond:
            self._live -= 1
            if self._threaded:
                self._cond.notify_all()
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


# -- the Runner --------------------------------------------------------------------------


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

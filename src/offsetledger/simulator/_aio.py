"""VirtualLoop: an asyncio event loop on the simulator's virtual clock, with a seeded
order among ready callbacks.

Coroutines run exactly as on a real loop (``asyncio.sleep``, ``wait_for``,
``asyncio.timeout``, ``gather``, ``TaskGroup``, cancellation all behave as
documented) except for two things:

* **time** is the injected :class:`~offsetledger.core.Clock` (normally the world's
  :class:`~offsetledger.simulator.SimClock`). The loop never reads the wall clock and
  never sleeps: when nothing is ready it moves the clock to its next timer with
  ``clock.sleep(due - now)``, so the simulated broker's own timers (deliveries,
  session timeouts, auto-commit) run in between, in due order.
* **catching up**: the clock is shared, so it also moves while the loop is not being
  driven (another member of the simulated group waits in its poll). The loop's
  process would have been running meanwhile, so the next time it is driven it first
  runs the overdue timers instant by instant, in due order, each instant to
  quiescence, with :meth:`time` reading that instant. Lumping them into one batch
  instead would let a timeout due after a wake-up cancel the woken task before its
  next step: every attempt with a ``processing_timeout`` shorter than the other
  members' waits would time out, forever (a livelock the model test found).
* **order**: every batch of ready callbacks (what became ready at one instant,
  timers due at the same virtual time included) runs in an order shuffled by the
  given :class:`random.Random`. Same seed, same interleaving, byte for byte;
  another seed, another interleaving. A real loop runs them first-in first-out;
  asyncio promises no order between independent tasks, so code correct on a real
  loop is correct here, and code that leans on FIFO luck is found out.

The loop is single threaded and is driven by its owner: :meth:`run_ready`,
:meth:`advance_to` and :meth:`run_until` (what the async handler runner calls from
the Processor's step), or the usual :meth:`run_until_complete` / :meth:`run_forever`.
:meth:`run_in_executor` runs the function inline (no threads; deterministic).
Sockets, pipes, subprocesses and signals are not offered (``NotImplementedError``).

:meth:`crash` models the process dying: every ready callback and timer is dropped
without running (no ``finally`` block, no cancellation handler runs, as with
``kill -9``) and the loop refuses further work.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple, Unpack, cast

from offsetledger.core import Clock
from offsetledger.simulator._errors import ProcessCrashed

__all__ = ["VirtualLoop", "VirtualLoopError"]

log = logging.getLogger("offsetledger.simulator.aio")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: Timers due within this many virtual seconds of now count as due (the simulator's
#: clock keeps whole microseconds; float due times may round just below them).
_RESOLUTION = 1e-6

#: Ready batches run at one virtual instant before the loop calls it a livelock.
_DEFAULT_MAX_BATCHES = 1_000_000

if TYPE_CHECKING:
    # typeshed marks every AbstractEventLoop method abstract (sockets, pipes,
    # subprocesses...), which this loop deliberately leaves unimplemented; type-check
    # it against BaseEventLoop, whose signatures are the same.
    _LoopBase = asyncio.BaseEventLoop
else:
    _LoopBase = asyncio.AbstractEventLoop


class VirtualLoopError(RuntimeError):
    """The virtual loop cannot go on: a livelock (callbacks rescheduling callbacks
    without virtual time moving), a deadlock (waiting on a future nothing will
    complete), or use after :meth:`VirtualLoop.crash` / :meth:`VirtualLoop.close`."""


class VirtualLoop(_LoopBase):
    """A deterministic asyncio event loop on a virtual clock (see the module docstring).

    ``clock`` supplies time (``now()``) and moves it (``sleep(seconds)``); ``rng`` orders
    each batch of ready callbacks. ``name`` appears in errors. ``max_batches`` bounds the
    ready batches run without virtual time moving (a coroutine spinning on
    ``await asyncio.sleep(0)`` forever is a livelock, reported as
    :class:`VirtualLoopError`). ``crashed``, when given, says whether the process
    owning the loop was killed (the world's crash of its member): the loop then
    behaves as after :meth:`crash`, without noise about the tasks it dropped."""

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        *,
        name: str = "virtual-loop",
        max_batches: int = _DEFAULT_MAX_BATCHES,
        crashed: Callable[[], bool] | None = None,
        task_delay: Callable[[], float] | None = None,
    ) -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        self._clock = clock
        self._rng = rng
        self.name = name
        self._max_batches = max_batches
        self._ready: list[asyncio.Handle] = []
        #: while catching up (see the module docstring): the overdue instant being run
        self._instant: float | None = None
        self._timers: list[tuple[float, int, asyncio.TimerHandle]] = []
        self._seq = 0
        self._cancelled_timers = 0
        self._running_depth = 0
        self._stopping = False
        self._closed = False
        self._crashed = False
        self._process_crashed = crashed
        #: virtual seconds a new task waits before its coroutine's first step (the
        #: simulator's ``slow_task`` fault for async handlers); None: no delay
        self._task_delay = task_delay
        self._debug = False
        self._exception_handler: (
            Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None
        ) = None
        #: contexts given to :meth:`call_exception_handler` (an exception in a callback,
        #: a never-retrieved task exception), in order; also logged at ERROR.
        self.errors: list[dict[str, Any]] = []
        #: callbacks run so far
        self.callbacks_run = 0

    def __repr__(self) -> str:
        return (
            f"<VirtualLoop {self.name} t={self.time():.6f} ready={len(self._ready)} "
            f"timers={len(self._timers) - self._cancelled_timers}>"
        )

    # -- time ---------------------------------------------------------------------------

    def time(self) -> float:
        """The virtual clock's now (while catching up: the overdue instant being run)."""
        instant = self._instant
        return self._clock.now() if instant is None else instant

    # -- scheduling ---------------------------------------------------------------------

    def call_soon(
        self,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self._check_usable()
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """The same as :meth:`call_soon`: the virtual loop has one thread (calling it
        from another thread is not supported)."""
        return self.call_soon(callback, *args, context=context)

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self._check_usable()
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, handle))
        handle._scheduled = True  # type: ignore[attr-defined]  # read by TimerHandle.cancel's callback
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        """Called by :meth:`asyncio.TimerHandle.cancel`; the heap entry is dropped lazily."""
        if handle._scheduled:  # type: ignore[attr-defined]  # still in the heap
            self._cancelled_timers += 1

    def create_future(self) -> asyncio.Future[Any]:
        self._check_usable()
        return asyncio.Future(loop=self)

    def create_task(  # type: ignore[override]  # 3.11's signature (context, no eager_start)
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        self._check_usable()
        delay = self._task_delay() if self._task_delay is not None else 0.0
        if delay > 0 and isinstance(coro, Coroutine):
            coro = _delayed(delay, coro)
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def run_in_executor(  # type: ignore[override]
        self, executor: object, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """Run ``func(*args)`` at once, inline, and return a done future with its result
        (or exception): the simulation has no threads. ``executor`` is ignored."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # travels in the future, as from a real executor
            future.set_exception(exc)
        return future

    # -- errors -------------------------------------------------------------------------

    def get_exception_handler(self) -> Any:
        return self._exception_handler

    def set_exception_handler(self, handler: Any) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.errors.append(context)
        exc = context.get("exception")
        log.error("%s: %s", self.name, context.get("message", "unhandled error"), exc_info=exc)

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        if not self._crashed and self._process_crashed is not None and self._process_crashed():
            self.crash()
        if self._crashed:
            return  # the process is gone: its dropped tasks are not errors
        if self._exception_handler is None:
            self.default_exception_handler(context)
        else:
            self._exception_handler(self, context)

    def get_debug(self) -> bool:
        return self._debug

    def set_debug(self, enabled: bool) -> None:
        self._debug = enabled

    # -- lifecycle ----------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._running_depth > 0

    def is_closed(self) -> bool:
        return self._closed

    @property
    def crashed(self) -> bool:
        return self._crashed

    def stop(self) -> None:
        """Make :meth:`run_forever` return after the current batch."""
        self._stopping = True

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("cannot close a running event loop")
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        self._cancelled_timers = 0

    def crash(self) -> None:
        """The process died: drop every ready callback and timer without running it."""
        self._crashed = True
        self._ready.clear()
        self._timers.clear()
        self._cancelled_timers = 0
        self._closed = True

    async def shutdown_asyncgens(self) -> None:
        """Nothing to do: the virtual loop installs no async-generator hooks."""

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        """Nothing to do: :meth:`run_in_executor` runs inline."""

    # -- driving ------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Ready callbacks plus live timers."""
        return len(self._ready) + len(self._timers) - self._cancelled_timers

    def next_due(self) -> float | None:
        """When the earliest live timer is due, or None."""
        timers = self._timers
        while timers and timers[0][2].cancelled():
            heapq.heappop(timers)[2]._scheduled = False  # type: ignore[attr-defined]
            self._cancelled_timers -= 1
        return timers[0][0] if timers else None

    def run_ready(self) -> int:
        """Run everything runnable at the current virtual time (what becomes ready
        meanwhile included) without moving the clock. Returns the callbacks run."""
        self._check_usable()
        ran = self._catch_up()
        return ran + self._run_instant()

    def _run_instant(self) -> int:
        """Run the batches of the current instant until nothing more is ready."""
        ran = 0
        batches = 0
        while True:
            self._collect_due()
            if not self._ready or self._stopping or self._crashed:
                return ran
            batches += 1
            if batches > self._max_batches:
                raise VirtualLoopError(
                    f"{self.name}: {self._max_batches} batches of callbacks at virtual "
                    f"time {self.time():.6f} without the clock moving (a coroutine "
                    "spinning on `await asyncio.sleep(0)`?)"
                )
            ran += self._run_batch()

    def _catch_up(self) -> int:
        """Run the timers that fell due while the loop was not driven, instant by
        instant in due order (the module docstring says why), before what is ready now."""
        now = self._clock.now()
        due = self.next_due()
        if due is None or due > now - _RESOLUTION or self._instant is not None:
            return 0
        current, self._ready = self._ready, []  # ready now: they come after the past
        ran = 0
        try:
            while not self._stopping and not self._crashed:
                due = self.next_due()
                if due is None or due > now - _RESOLUTION:
                    break
                self._instant = due
                ran += self._run_instant()
        finally:
            self._instant = None
            self._ready = [] if self._crashed else current + self._ready
        return ran

    def advance_to(self, when: float) -> None:
        """Run the loop up to virtual time ``when``: each timer at its due time (the
        clock moved there first), then the clock moved to ``when``."""
        self.run_until(lambda: False, when - self._clock.now())

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Run until ``done()`` is true or ``timeout`` virtual seconds passed (the clock
        then stands at the deadline). Returns ``done()``."""
        if timeout < 0:
            timeout = 0.0
        deadline = self._clock.now() + timeout
        self.run_ready()
        while not done() and not self._crashed:
            due = self.next_due()
            now = self._clock.now()
            if due is None or due > deadline + _RESOLUTION:
                if deadline > now:
                    self._clock.sleep(deadline - now)
                    self.run_ready()  # timers due exactly at the deadline
                break
            if due > now:
                self._clock.sleep(due - now)
            self.run_ready()
        return done()

    def run_until_complete(self, future: Generator[Any, None, T] | Awaitable[T]) -> T:
        """Run until ``future`` is done and return its result; the clock moves as far
        as the awaited work needs. :class:`VirtualLoopError` if it waits on nothing
        that is scheduled (it would never finish)."""
        self._check_usable()
        task = asyncio.ensure_future(cast("Awaitable[T]", future), loop=self)
        while not task.done():
            self.run_ready()
            if task.done() or self._crashed:
                break
            due = self.next_due()
            if due is None:
                raise VirtualLoopError(
                    f"{self.name}: {task!r} waits on something no callback or timer "
                    "will ever complete"
                )
            now = self._clock.now()
            if due > now:
                self._clock.sleep(due - now)
        if self._crashed:
            raise VirtualLoopError(f"{self.name}: crashed")
        return task.result()

    def run_forever(self) -> None:
        """Run until :meth:`stop`; :class:`VirtualLoopError` if everything is idle
        (virtual time would stand still forever)."""
        self._check_usable()
        try:
            while not self._stopping:
                self.run_ready()
                if self._stopping or self._crashed:
                    break
                due = self.next_due()
                if due is None:
                    raise VirtualLoopError(f"{self.name}: run_forever with nothing scheduled")
                now = self._clock.now()
                if due > now:
                    self._clock.sleep(due - now)
        finally:
            self._stopping = False

    # -- internals ----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if not self._crashed and self._process_crashed is not None and self._process_crashed():
            self.crash()
        if self._crashed:
            if self._process_crashed is not None and self._process_crashed():
                # the simulated process is gone: like its other clients, the loop says so
                # with ProcessCrashed (a crash during a graceful stop must stay a crash)
                raise ProcessCrashed(self.name)
            raise VirtualLoopError(f"{self.name}: the process crashed; its loop is gone")
        if self._closed:
            raise VirtualLoopError(f"{self.name}: the loop is closed")

    def _collect_due(self) -> None:
        timers = self._timers
        if not timers:
            return
        horizon = self.time() + _RESOLUTION
        ready = self._ready
        while timers and timers[0][0] <= horizon:
            _, _, handle = heapq.heappop(timers)
            handle._scheduled = False  # type: ignore[attr-defined]
            if handle.cancelled():
                self._cancelled_timers -= 1
                continue
            ready.append(handle)

    def _run_batch(self) -> int:
        batch = self._ready
        self._ready = []
        self._rng.shuffle(batch)
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running_depth += 1
        ran = 0
        try:
            for handle in batch:
                if self._crashed:
                    break
                if handle.cancelled():
                    continue
                handle._run()
                ran += 1
        finally:
            self._running_depth -= 1
            asyncio.events._set_running_loop(previous)
        self.callbacks_run += ran
        return ran


async def _delayed(delay: float, coro: Coroutine[Any, Any, T]) -> T:
    """``coro`` after ``delay`` virtual seconds (a slow task: cancellable meanwhile)."""
    try:
        await asyncio.sleep(delay)
    except BaseException:
        coro.close()  # never started: no "never awaited" warning
        raise
    return await coro

"""The virtual clock: integer microseconds, a heap of timers, no wall clock."""

from __future__ import annotations

import heapq
from collections.abc import Callable

__all__ = ["SimClock", "Timer"]

_US = 1_000_000


def to_us(seconds: float) -> int:
    """Seconds as whole microseconds (rounded), the clock's unit."""
    return round(seconds * _US)


class Timer:
    """A scheduled callback; :meth:`cancel` stops it from running."""

    __slots__ = ("cancelled", "due_us", "fn")

    def __init__(self, due_us: int, fn: Callable[[], None]) -> None:
        self.due_us = due_us
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class SimClock:
    """Virtual time for the simulator; implements :class:`offsetledger.core.Clock`.

    Time starts at 0 and only moves when someone calls :meth:`advance`,
    :meth:`sleep` or :meth:`jump` (directly, or through a client's poll, flush or
    an executor's wait). Timers (session timeouts, auto-commit, deliveries) run in
    due order, each with the clock set to its due time. Timer callbacks belong to
    the simulated "broker and background threads": they never call user code and
    must not move the clock themselves. Time is kept in integer microseconds, so
    the same calls always give the same times.
    """

    def __init__(self) -> None:
        self._now_us = 0
        self._timers: list[tuple[int, int, Timer]] = []
        self._seq = 0
        self._in_timer = False

    def now(self) -> float:
        """Virtual seconds since the world was created."""
        return self._now_us / _US

    @property
    def now_us(self) -> int:
        return self._now_us

    def sleep(self, seconds: float) -> None:
        """Advance virtual time by ``seconds``, running due timers (never sleeps for real)."""
        self.advance(seconds)

    def call_at(self, due_us: int, fn: Callable[[], None]) -> Timer:
        """Run ``fn`` when virtual time reaches ``due_us`` (at once on the next
        advance if that is already past)."""
        timer = Timer(max(due_us, self._now_us), fn)
        self._seq += 1
        heapq.heappush(self._timers, (timer.due_us, self._seq, timer))
        return timer

    def call_later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        return self.call_at(self._now_us + to_us(seconds), fn)

    def next_due_us(self) -> int | None:
        """Due time of the earliest pending timer, or None."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0), running each due timer at its due time."""
        if seconds < 0:
            raise ValueError(f"cannot advance the clock by a negative amount ({seconds} s)")
        self.advance_to_us(self._now_us + to_us(seconds))

    def advance_to_us(self, target_us: int) -> None:
        """Move time forward to ``target_us``, running due timers in order."""
        if self._in_timer:
            raise RuntimeError("a timer callback must not move the virtual clock")
        timers = self._timers
        while timers and timers[0][0] <= target_us:
            due, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            self._now_us = max(self._now_us, due)
            self._run(timer)
        self._now_us = max(self._now_us, target_us)

    def jump(self, seconds: float) -> None:
        """A clock jump (a paused VM, a stalled process): time moves by ``seconds``
        at once and every timer that fell due in between runs late, at the new time."""
        if seconds < 0:
            raise ValueError(f"cannot jump the clock backwards ({seconds} s)")
        if self._in_timer:
            raise RuntimeError("a timer callback must not move the virtual clock")
        self._now_us += to_us(seconds)
        self.advance_to_us(self._now_us)

    def _run(self, timer: Timer) -> None:
        self._in_timer = True
        try:
            timer.fn()
        finally:
            self._in_timer = False

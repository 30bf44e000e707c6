"""Retry timers: a heap of (due, slow-path record) on the injected clock."""

from __future__ import annotations

import heapq

from offsetledger.core import Clock
from offsetledger.runtime._work import Slow

__all__ = ["TIME_EPSILON", "RetryTimers"]

#: Timers due within this many seconds count as due (float sums vs. clock resolution).
TIME_EPSILON = 1e-6


class RetryTimers:
    """Owns the backoff timers of slow-path records. A timer is stale when its
    record's token moved on (a newer step was scheduled, or it was abandoned)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Slow, int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, slow: Slow, delay: float) -> None:
        """Wake ``slow`` after ``delay`` seconds (bumps its token)."""
        slow.token += 1
        self._seq += 1
        heapq.heappush(self._heap, (self._clock.now() + delay, self._seq, slow, slow.token))

    def next_due(self) -> float | None:
        """When the earliest timer is due (None: no timer)."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self) -> list[Slow]:
        """The records whose timer is due now (stale timers dropped)."""
        heap = self._heap
        if not heap:
            return []
        now = self._clock.now() + TIME_EPSILON
        due = []
        while heap and heap[0][0] <= now:
            _, _, slow, token = heapq.heappop(heap)
            if token == slow.token and not slow.tracker.state.terminal:
                due.append(slow)
        return due

"""Deadlines: ``processing_timeout`` for runs stuck in one record."""

from __future__ import annotations

from offsetledger.core import Clock
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._runners import ProcessingTimeoutError, Run, Runner

__all__ = ["Deadlines"]


class Deadlines:
    """Every tenth of ``processing_timeout`` (at most every second): gives up on a
    run stuck in one record longer than it. That record fails with
    :class:`ProcessingTimeoutError`, the results before it count, the records after
    it run again in a new run. (A record that returned late gets the same error
    from the runner's call.)"""

    def __init__(
        self, runner: Runner, flow: RecordFlow, clock: Clock, timeout: float | None
    ) -> None:
        self._runner = runner
        self._flow = flow
        self._clock = clock
        self._timeout = timeout
        self._next_check = 0.0

    def check(self) -> None:
        """Give up on the runs stuck past the timeout (when a check is due)."""
        timeout = self._timeout
        if timeout is None or not self._runner.running():
            return
        now = self._clock.now()
        if now < self._next_check:
            return
        self._next_check = now + min(timeout / 10, 1.0)
        for run in list(self._runner.running()):
            current = run.current
            if current is None or run.abandoned or now - current[1] <= timeout:
                continue
            self._give_up(run, current[0], now - current[1])

    def _give_up(self, run: Run, index: int, elapsed: float) -> None:
        self._runner.abandon(run)
        run.abandoned = True
        error = ProcessingTimeoutError(
            f"handler ran {elapsed:.3f}s, over processing_timeout {self._timeout}s"
        )
        n = len(run.records)
        results = list(run.results[:n])
        if run.batch:
            head, rest = run.part(0, n), n
            head.results = [error] * n
        elif len(results) > index:  # that record returned meanwhile
            head, rest = run.part(0, len(results)), len(results)
            head.results = results
        else:
            head, rest = run.part(0, index + 1), index + 1
            head.results = [*results[:index], error]
        self._flow.ran(head)
        if rest < n:
            tail = run.part(rest, n)
            tail.results = []
            self._runner.submit(tail)

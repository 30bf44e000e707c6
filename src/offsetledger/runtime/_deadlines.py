"""Deadlines: runs stuck in one record. Past ``processing_timeout`` the record
fails; sooner (:data:`DETACH_AFTER`) the records after it move to a new run, so a
slow record holds up only itself, not the rest of its slice of the chunk."""

from __future__ import annotations

from offsetledger.core import Clock
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._runners import ProcessingTimeoutError, Run, Runner

__all__ = ["DETACH_AFTER", "Deadlines"]

#: Seconds a run may sit in one record before the records after it are moved to a
#: new run (handed to another worker).
DETACH_AFTER = 0.2

#: Seconds between checks.
_CHECK_EVERY = 0.05


class Deadlines:
    """Watches the runs in flight (from the poll thread): which record each is in
    and since when (first seen). A record past ``processing_timeout`` fails with
    :class:`ProcessingTimeoutError` (the results before it count, the records
    after it run again in a new run); a record in it longer than
    :data:`DETACH_AFTER` keeps its run, the records after it move to a new one.
    A record that returned late gets the timeout error from the runner's call."""

    def __init__(
        self, runner: Runner, flow: RecordFlow, clock: Clock, timeout: float | None
    ) -> None:
        self._runner = runner
        self._flow = flow
        self._clock = clock
        self._timeout = timeout
        self._next_check = 0.0
        self._seen: dict[int, tuple[Run, int, float]] = {}  # id(run) -> (run, index, since)

    def check(self) -> None:
        """Act on the runs stuck in one record (when a check is due)."""
        running = self._runner.running()
        if not running or self._runner.slices == 1:
            self._seen.clear()
            return
        now = self._clock.now()
        if now < self._next_check:
            return
        self._next_check = now + _CHECK_EVERY
        timeout = self._timeout
        seen: dict[int, tuple[Run, int, float]] = {}
        for run in list(running):
            current = run.current
            if current is None or run.abandoned or len(run.results) >= run.limit:
                continue  # not started, given up, or finished (not collected yet)
            index, started = current
            first = self._seen.get(id(run))
            since = first[2] if first is not None and first[1] == index else now
            seen[id(run)] = (run, index, since)
            if timeout is not None and started and now - started > timeout:
                self._give_up(run, index, now - started)
            elif (
                not run.batch
                and now - since > DETACH_AFTER
                and index + 1 < run.limit
                and len(run.results) <= index
            ):
                self._detach(run, index + 1)
        self._seen = seen

    def _detach(self, run: Run, at: int) -> None:
        """The records of ``run`` from index ``at`` on move to a new run."""
        tail = run.part(at, run.limit)
        tail.results = []
        run.limit = at
        run.records = run.records[:at]
        if run.chunks is not None:
            run.chunks = run.chunks[:at]
        self._runner.submit(tail)

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

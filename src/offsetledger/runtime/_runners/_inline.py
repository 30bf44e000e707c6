"""InlineRunner: handlers run on the poll thread, inside :meth:`submit`."""

from __future__ import annotations

from collections.abc import Collection

from offsetledger.runtime._runners._base import Run, RunCall

__all__ = ["InlineRunner"]


class InlineRunner:
    """Runs each run at once, on the caller's (poll) thread. For fast handlers, where
    a thread hop costs more than the handler. A handler that blocks blocks the poll
    loop (past ``max.poll.interval.ms`` the member is evicted); ``processing_timeout``
    cannot interrupt it, only fail its result afterwards."""

    slices = 1

    def __init__(self, call: RunCall) -> None:
        self._call = call
        self._done: list[Run] = []

    def submit(self, run: Run) -> None:
        self._call(run)
        self._done.append(run)

    def collect(self, timeout: float | None) -> list[Run]:
        done, self._done = self._done, []
        return done

    def running(self) -> Collection[Run]:
        return self._done

    def abandon(self, run: Run) -> None:
        if run in self._done:
            self._done.remove(run)

    def close(self, *, cancel_pending: bool) -> None:
        self._done.clear()

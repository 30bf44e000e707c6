"""PoolRunner: one Executor task per run (a slice of a chunk, not one per record)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection
from concurrent.futures import CancelledError, Future

from offsetledger.core import Executor
from offsetledger.runtime._runners._base import Run, RunCall, fill_failed

__all__ = ["PoolRunner"]


class PoolRunner:
    """Runs each run as one task on an :class:`~offsetledger.core.Executor` (a thread
    pool, or the simulator's deterministic executor). The task loops the handler
    over the run's records, so a thread hop costs once per run, not per record.

    ``slices`` (the executor's workers) is how many runs one chunk is split into.

    With ``wake`` (an event the runner owns; :class:`ThreadPoolExecutorAdapter` passes
    one) :meth:`collect` waits on that event, which every done-callback sets, instead
    of :meth:`Executor.wait <offsetledger.core.Executor.wait>` over every running
    future: O(1) per wait, not O(runs in flight) lock round trips. Without it (the
    simulator's executor, which runs tasks inside ``wait``) it calls ``wait``."""

    def __init__(
        self,
        executor: Executor,
        call: RunCall,
        *,
        slices: int,
        wake: threading.Event | None = None,
    ) -> None:
        if slices < 1:
            raise ValueError(f"slices must be >= 1, got {slices}")
        self.slices = slices
        self._executor = executor
        self._call = call
        self._running: dict[Future[None], Run] = {}
        self._finished: deque[Future[None]] = deque()  # appended by done-callbacks
        self._wake = wake
        if wake is None:
            self._on_done = self._finished.append  # deque.append: thread-safe
        else:
            finished = self._finished

            def on_done(future: Future[None]) -> None:
                finished.append(future)
                wake.set()

            self._on_done = on_done

    def submit(self, run: Run) -> None:
        call = self._call

        def task() -> None:
            call(run)

        future = self._executor.submit(task)
        self._running[future] = run
        future.add_done_callback(self._on_done)

    def collect(self, timeout: float | None) -> list[Run]:
        finished = self._finished
        if not finished and self._running and timeout is not None:
            wake = self._wake
            if wake is None:
                self._executor.wait(self._running.keys(), timeout)
            else:
                # clear, then look again: a callback that appended before the look is
                # seen; one that appends after it sets the event after the clear
                wake.clear()
                if not finished:
                    wake.wait(max(timeout, 0.0))
        out: list[Run] = []
        while finished:
            future = finished.popleft()
            run = self._running.pop(future, None)
            if run is None:  # abandoned: its late result is ignored
                continue
            if future.cancelled():
                fill_failed(run, RuntimeError("handler task was cancelled"))
            else:
                exc = future.exception()
                if exc is not None and not isinstance(exc, CancelledError):
                    if not isinstance(exc, Exception):
                        raise exc  # e.g. KeyboardInterrupt or the simulator's ProcessCrashed
                    fill_failed(run, exc)
            out.append(run)
        return out

    def running(self) -> Collection[Run]:
        return self._running.values()

    def abandon(self, run: Run) -> None:
        run.abandoned = True
        for future, candidate in list(self._running.items()):
            if candidate is run:
                del self._running[future]
                future.cancel()
                return

    def close(self, *, cancel_pending: bool) -> None:
        for future in self._running:
            future.cancel()
        self._running.clear()
        self._finished.clear()

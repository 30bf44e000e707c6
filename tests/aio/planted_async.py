"""Planted bugs in the async handler path: each patches the real code for the
duration of a ``with`` block (no flag in ``src/``), and ``test_async_processor``
shows the scenario checks catch each one (naming the first seed that does).

* ``timeout_counts_as_done``: an attempt cancelled at ``processing_timeout`` is
  reported as a success with no outputs (a cancelled coroutine's record completed).
* ``timeout_reported_early``: the timeout is reported at the deadline while the
  cancelled coroutine is still running its cleanup, so the record's retry (same key)
  runs next to it (two attempts of one key awaited at once under KEY ordering).
* ``revoke_does_not_wait``: after the drain, a revoke cancels the revoked records'
  coroutines but does not wait for them to end, so the partition's next owner starts
  a key while the old coroutine still runs.
* ``key_bound_dropped``: under KEY ordering every polled record of a key is ready at
  once (the one-per-key bound, "delivery included", is gone), so two records of one
  key are awaited at once. The async runner has no per-key bound of its own: it
  runs every record it is handed concurrently and relies on the Processor's intake
  handing out one record per key, so the patch is on the intake's slot queue. With
  a sync inline handler the records of a run still run one after the other; with
  ``async def`` handlers they overlap, and the later record's outputs can be written
  before the earlier one's are acknowledged (the checker's ORDERING verdict).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from offsetledger.core import Record
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._runners import aio_runner as aio_module
from offsetledger.runtime._runners.aio import AsyncOutcome, AsyncRunner, AttemptRunner
from offsetledger.runtime._work import Chunk

__all__ = [
    "PLANTED",
    "key_bound_dropped",
    "revoke_does_not_wait",
    "timeout_counts_as_done",
    "timeout_reported_early",
]


@contextlib.contextmanager
def _patched(owner: object, attribute: str, replacement: object) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


@contextlib.contextmanager
def timeout_counts_as_done() -> Iterator[None]:
    def timed_out(self: AttemptRunner, token: Hashable, started: float, now: float) -> Any:
        return AsyncOutcome(token, [], None, started, now)

    with _patched(AttemptRunner, "_timeout_outcome", timed_out):
        yield


@contextlib.contextmanager
def timeout_reported_early() -> Iterator[None]:
    original = AttemptRunner._expire_overdue

    def expire(self: AttemptRunner, *args: Any) -> None:
        before = set(self._timed_out)
        original(self, *args)
        timeout = self.processing_timeout or 0.0
        for seq in self._timed_out - before:
            # reported now, while the cancelled coroutine still runs its cleanup
            self._ended(seq, self._tokens.get(seq), None, None, self.loop.time() - timeout)

    with _patched(AttemptRunner, "_expire_overdue", expire):
        yield


@contextlib.contextmanager
def revoke_does_not_wait() -> Iterator[None]:
    def cancel_abandoned(self: AsyncRunner, timeout: float) -> int:
        attempts = self.attempts
        for key, state in self._runs.items():
            run = state.run
            for i, result in enumerate(state.results):
                if result is None and aio_module._dead(run, i):
                    attempts.cancel((key, i))
        return attempts.cancelled_running  # no wait

    with _patched(AsyncRunner, "cancel_abandoned", cancel_abandoned):
        yield


@contextlib.contextmanager
def key_bound_dropped() -> Iterator[None]:
    original = Intake._queue

    def queue(self: Intake, chunk: Chunk) -> None:
        if not self._by_key:
            original(self, chunk)
            return
        # every record is a ready head at once; no slot queue, so release() has
        # nothing to hand out next (each record was handed out already)
        heads = chunk.part.heads
        record: Record
        for record in chunk.records:
            heads.append((chunk, record))
        self.ready += len(chunk.records)

    with _patched(Intake, "_queue", queue):
        yield


PLANTED: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "timeout_counts_as_done": timeout_counts_as_done,
    "timeout_reported_early": timeout_reported_early,
    "revoke_does_not_wait": revoke_does_not_wait,
    "key_bound_dropped": key_bound_dropped,
}

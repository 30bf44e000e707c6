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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any

from offsetledger.runtime._runners import aio_runner as aio_module
from offsetledger.runtime._runners.aio import AsyncOutcome, AsyncRunner, AttemptRunner

__all__ = ["PLANTED", "revoke_does_not_wait", "timeout_counts_as_done", "timeout_reported_early"]


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
    original = AttemptRunner._expire

    def expire(self: AttemptRunner) -> None:
        before = set(self._timed_out)
        original(self)
        timeout = self.processing_timeout or 0.0
        for seq in self._timed_out - before:
            # reported now, while the cancelled coroutine still runs its cleanup
            self._ended(seq, self._tokens.get(seq), None, None, self.loop.time() - timeout)

    with _patched(AttemptRunner, "_expire", expire):
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


PLANTED: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "timeout_counts_as_done": timeout_counts_as_done,
    "timeout_reported_early": timeout_reported_early,
    "revoke_does_not_wait": revoke_does_not_wait,
}

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

from offsetledger.runtime._runners.aio_attempts import AttemptRunner
from offsetledger.runtime._runners.aio_loop import (
    CLOSE_GRACE,
    DEFAULT_MAX_CONCURRENCY,
    MAX_WAIT,
    AsyncLoop,
    AsyncOutcome,
    AttemptCancelledError,
)
from offsetledger.runtime._runners.aio_runner import AsyncRunner, coerce_batch_value

__all__ = [
    "CLOSE_GRACE",
    "DEFAULT_MAX_CONCURRENCY",
    "MAX_WAIT",
    "AsyncLoop",
    "AsyncOutcome",
    "AsyncRunner",
    "AttemptCancelledError",
    "AttemptRunner",
    "coerce_batch_value",
]

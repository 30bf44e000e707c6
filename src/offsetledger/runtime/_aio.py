"""Running a Processor inside an application's own asyncio event loop.

``await run_async(processor)`` runs :meth:`Processor.run` on a thread of its own and
returns when it stops; the application's loop stays free. With
``executor=AsyncLoop.current()`` at construction, the ``async def`` handler's
coroutines run on the application's loop (next to its web server, its database
pool...), while the Processor's thread polls, produces, commits and handles
rebalances.

Why a thread and not confluent-kafka's ``confluent_kafka.aio.AIOConsumer``: every
consumer call the Processor makes (poll, store, commit, pause, resume) would become
an executor hop and an await, and rebalance callbacks, which run inside ``poll``,
would need the revoke drain (waiting for in-flight coroutines, then a synchronous
commit) written as a coroutine on the same loop. The bridge keeps the one-thread rule
of the runtime (the consumer, the producer's callbacks and the offset ledger are
touched by the Processor's thread only), so the revoke handler can simply block
until the revoked partitions' coroutines have finished on the application's loop.
See docs/async.md for the measurements behind the choice.

Stopping: :meth:`Processor.stop` may be called from any thread, so from a signal
handler (``loop.add_signal_handler(signal.SIGTERM, processor.stop)``) or another
task. Cancelling the task awaiting :func:`run_async` stops the Processor too (it
drains and commits, up to ``shutdown_timeout``) before the cancellation propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Protocol

__all__ = ["run_async"]


class _Runnable(Protocol):
    def run(self) -> None: ...

    def stop(self) -> None: ...


async def run_async(processor: _Runnable, *, thread_name: str = "offsetledger-processor") -> None:
    """Run ``processor`` until it stops, without blocking the running event loop.

    The Processor runs on a new thread named ``thread_name``; its exception, if any,
    is raised here. If the awaiting task is cancelled, the Processor is stopped
    (graceful: drain, flush, commit) and waited for, then the cancellation goes on."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if finished.done():
            return
        if error is None:
            finished.set_result(None)
        else:
            finished.set_exception(error)

    def target() -> None:
        error: BaseException | None = None
        try:
            processor.run()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(settle, error)

    thread = threading.Thread(target=target, name=thread_name, daemon=True)
    thread.start()
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:
        processor.stop()
        # the graceful stop needs the loop (the handlers' coroutines may run on it)
        await finished
        raise

"""What every handler runner shares: the :class:`Run` (one unit of handler work),
the :class:`Runner` interface, and :func:`sync_call`, the loop that calls a plain
(``def``) handler over a run's records.

A runner decides *where* handlers run (inline on the poll thread, on a thread pool,
on an asyncio loop); the Processor decides *what* runs (which records form a run)
and what happens with the results. See ``/docs/runtime.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from offsetledger.core import Clock, OffsetLedgerError, Outbound, Record
from offsetledger.runtime._contract import coerce_batch, coerce_outputs

if TYPE_CHECKING:
    from offsetledger.runtime._work import Chunk, Slow

__all__ = ["ProcessingTimeoutError", "Run", "RunCall", "Runner", "fill_failed", "sync_call"]

#: One record's result: its outputs, or the exception that failed its attempt.
Result = list[Outbound] | BaseException


class ProcessingTimeoutError(OffsetLedgerError, TimeoutError):
    """A handler attempt ran longer than ``processing_timeout``."""


class Run:
    """One unit of handler work: ``records`` in order, handed to one runner task.

    The runner (or the call it was given) appends one entry per record to
    ``results``, in order: the outputs, or the exception of a failed attempt. It sets
    ``current`` to ``(index, clock time)`` before each record's handler starts (once
    for a batch), so the poll thread can see a record stuck past
    ``processing_timeout``; it stops between records once ``abandoned`` is set, and
    before the record at index ``limit`` (the rest was moved to another run).
    The other slots are the Processor's bookkeeping (which chunk or slow-path record
    each result belongs to)."""

    __slots__ = (
        "abandoned",
        "batch",
        "chunk",
        "chunks",
        "current",
        "error",
        "limit",
        "records",
        "results",
        "slow",
        "token",
    )

    def __init__(
        self,
        records: list[Record],
        *,
        batch: bool,
        chunk: Chunk | None = None,
        chunks: list[Chunk] | None = None,
        slow: Slow | None = None,
        token: int = 0,
    ) -> None:
        self.records = records
        self.batch = batch
        #: the chunk every record belongs to (UNORDERED), else None
        self.chunk = chunk
        #: per record, its chunk (KEY / PARTITION: the next record of several slots)
        self.chunks = chunks
        #: the slow-path record this run is a retry of (a run of one record)
        self.slow = slow
        self.token = token
        self.results: list[Result] = []
        self.current: tuple[int, float] | None = None
        self.abandoned = False
        #: stop before the record at this index (the Processor moved the rest to a
        #: new run: see ``Deadlines``)
        self.limit = len(records)
        #: a BaseException that is not an Exception (e.g. KeyboardInterrupt, the
        #: simulator's ProcessCrashed), re-raised on the poll thread at collect
        self.error: BaseException | None = None

    def part(self, start: int, stop: int) -> Run:
        """A run of ``records[start:stop]`` with the same bookkeeping (and the
        results of those records, if any)."""
        run = Run(
            self.records[start:stop],
            batch=self.batch,
            chunk=self.chunk,
            chunks=self.chunks[start:stop] if self.chunks is not None else None,
            slow=self.slow,
            token=self.token,
        )
        run.results = self.results[start:stop]
        return run

    def __repr__(self) -> str:
        return f"<Run {len(self.records)} records, {len(self.results)} results>"


#: Fills ``run.results`` (the same call for every runner of sync handlers).
RunCall = Callable[[Run], None]


def fill_failed(run: Run, exc: BaseException) -> None:
    """Every record of ``run`` without a result yet failed with ``exc``."""
    missing = len(run.records) - len(run.results)
    if missing > 0:
        run.results.extend([exc] * missing)


@runtime_checkable
class Runner(Protocol):
    """Where handlers run. One small interface for the inline, thread-pool and
    asyncio runners; used from the poll thread only.

    * :meth:`submit` hands a run over (an inline runner runs it at once).
    * :meth:`collect` returns the runs finished since the last call (every record
      has a result); when none has and some are running it waits up to ``timeout``
      seconds for one (0: no waiting, but a deterministic executor may run tasks
      now; None: only what finished already, the executor is not driven). A run
      whose task raised a BaseException that is not an Exception re-raises it here.
    * :meth:`running` is what was submitted and not collected nor abandoned.
    * :meth:`abandon` forgets a run (timeout, revoke): collect never returns it.
    * :meth:`close` stops the runner; ``cancel_pending`` drops runs not started.
    * ``slices``: into how many runs one chunk may be split (its parallelism).
    """

    slices: int

    def submit(self, run: Run) -> None: ...

    def collect(self, timeout: float | None) -> list[Run]: ...

    def running(self) -> Collection[Run]: ...

    def abandon(self, run: Run) -> None: ...

    def close(self, *, cancel_pending: bool) -> None: ...


def sync_call(
    handler: Callable[[Any], Any],
    *,
    batch: bool,
    clock: Clock,
    processing_timeout: float | None,
) -> RunCall:
    """The call that runs a plain handler over a run's records (on whatever thread
    the runner chooses). Exceptions become results; an attempt longer than
    ``processing_timeout`` gets :class:`ProcessingTimeoutError` as its result."""
    timeout = processing_timeout

    def _late(elapsed: float) -> ProcessingTimeoutError:
        return ProcessingTimeoutError(
            f"handler ran {elapsed:.3f}s, over processing_timeout {timeout}s"
        )

    if batch:

        def call_batch(run: Run) -> None:
            records = run.records
            started = clock.now()
            run.current = (0, started)
            try:
                results: list[Result] = list(coerce_batch(handler(records), records))
            except Exception as exc:  # the whole batch failed
                results = [exc] * len(records)
            if timeout is not None and (elapsed := clock.now() - started) > timeout:
                results = [_late(elapsed)] * len(records)
            run.results = results

        return call_batch

    if timeout is None:

        def call_untimed(run: Run) -> None:
            append = run.results.append
            for index, record in enumerate(run.records):
                if run.abandoned or index >= run.limit:
                    return
                run.current = (index, 0.0)
                try:
                    append(coerce_outputs(handler(record), record))
                except Exception as exc:  # the attempt failed
                    append(exc)

        return call_untimed

    now = clock.now

    def call_timed(run: Run) -> None:
        append = run.results.append
        started = now()  # one clock read per record: a record ends where the next starts
        for index, record in enumerate(run.records):
            if run.abandoned or index >= run.limit:
                return
            run.current = (index, started)
            try:
                result: Result = coerce_outputs(handler(record), record)
            except Exception as exc:  # the attempt failed
                result = exc
            ended = now()
            elapsed = ended - started
            started = ended
            append(_late(elapsed) if elapsed > timeout else result)

    return call_timed

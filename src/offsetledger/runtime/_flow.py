"""The record flow: what happens to a record between its poll and its DONE (or
ABANDONED), and the only caller of the record state machine's transitions.

Two paths:

* **Fast path, per chunk.** A handler run's results come back; the records that
  returned outputs are produced in one ``produce_many`` call (one :class:`Send`),
  those that returned none are done at once. When a Send settles with every report
  ok, its records are done. A record on this path has no tracker: its state is
  where its chunk's bookkeeping has it (in a run: PROCESSING; in a Send:
  PRODUCING). When every record of a chunk is done, the chunk's range is completed
  in the ledger (the offset keeper stores the moved watermark).
* **Slow path, per record** (:mod:`offsetledger.runtime._slowpath`). A record
  whose attempt failed (raised, timed out, wrong result) or whose delivery failed
  is *promoted*: it gets a :class:`~offsetledger.core.RecordTracker` resumed at
  the state it was in, and from then on moves edge by edge (one method per edge
  there, the only callers of its transitions): retries with backoff, dead letter,
  stall. Its chunk waits for it; once only such records are left in a chunk, the
  chunk is split in the ledger and each completes its own ticket.

A record's position is stored only after all of its outputs' delivery reports
succeeded or its dead-letter write was acknowledged: a chunk completes only when
``left`` reaches 0, and ``left`` drops only at DONE.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from offsetledger.core import (
    BrokerErrorInfo,
    Clock,
    Header,
    Outbound,
    ProcessingObserver,
    Record,
)
from offsetledger.history import SOURCE_OFFSET
from offsetledger.runtime._config import ProcessorConfig
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._runners import Run, Runner
from offsetledger.runtime._sender import Sender
from offsetledger.runtime._slowpath import SlowPath
from offsetledger.runtime._timers import RetryTimers
from offsetledger.runtime._work import Chunk, Part, Send

__all__ = ["RecordFlow"]

log = logging.getLogger("offsetledger.processor")


class RecordFlow:
    """Moves records from handler results to DONE; owns the chunks' progress
    (done, split, complete). Failures go to its :class:`SlowPath` (``slow``)."""

    def __init__(
        self,
        *,
        config: ProcessorConfig,
        clock: Clock,
        metrics: MetricsHook,
        observer: ProcessingObserver | None,
        intake: Intake,
        runner: Runner,
        sender: Sender,
        timers: RetryTimers,
        keeper: OffsetKeeper,
        flush: Callable[[float], object],
        batch: bool,
    ) -> None:
        self._metrics = metrics
        self._observer = observer
        self._intake = intake
        self._sender = sender
        self._keeper = keeper
        self._lineage = config.lineage_headers
        self.slow = SlowPath(
            config=config,
            clock=clock,
            metrics=metrics,
            observer=observer,
            intake=intake,
            runner=runner,
            sender=sender,
            timers=timers,
            flush=flush,
            batch=batch,
            on_done=self._slow_done,
            on_promoted=self._progress,
        )

    # -- fast path --------------------------------------------------------------------

    def ran(self, run: Run) -> None:
        """A handler run finished (every record has a result)."""
        if run.slow is not None:
            self.slow.ran(run)
            return
        intake = self._intake
        chunk = run.chunk
        if chunk is not None:
            intake.returned(chunk.part, len(run.records))
            if chunk.dead:
                self._metrics.increment("stale_completions", tp=chunk.part.tp)
                return
        else:
            assert run.chunks is not None
            for c in run.chunks:
                intake.returned(c.part, 1)
        self._metrics.increment("runs")
        if run.batch:
            self._metrics.gauge("batch_size", len(run.records))
        records, results, chunks = run.records, run.results, run.chunks
        messages: list[Outbound] = []
        extra: list[tuple[Header, ...]] | None = [] if self._lineage else None
        sent: list[Record] = []
        sent_chunks: list[Chunk] | None = None if chunk is not None else []
        counts: list[int] = []
        for i, rec in enumerate(records):
            c = chunk if chunk is not None else chunks[i]  # type: ignore[index]
            if c.dead:
                continue
            res = results[i]
            if type(res) is list:
                n = len(res)
                if not n:
                    self._records_done(c, [rec], [0])
                    continue
                messages += res
                if extra is not None:
                    lineage = (*c.part.lineage, (SOURCE_OFFSET, str(rec.offset).encode()))
                    if n == 1:
                        extra.append(lineage)
                    else:
                        extra.extend([lineage] * n)
                sent.append(rec)
                counts.append(n)
                if sent_chunks is not None:
                    sent_chunks.append(c)
            else:
                assert isinstance(res, BaseException)
                self.slow.promote_failed_attempt(c, rec, res)
        if messages:
            self._sender.send(
                Send(
                    messages,
                    sent,
                    counts,
                    self._sender.settle_to,
                    chunk=chunk,
                    chunks=sent_chunks,
                ),
                extra,
            )

    def settled(self, send: Send) -> None:
        """Every delivery report of ``send`` is in."""
        if send.slow is not None:
            self.slow.settled(send)
            return
        ok = len(send.messages) - len(send.failed)
        if ok:
            self._metrics.increment("records_out", ok)
        chunk = send.chunk
        if not send.failed:
            if chunk is not None:
                if not chunk.dead:
                    self._records_done(chunk, send.records, send.counts)
                else:
                    self._metrics.increment("stale_completions", tp=chunk.part.tp)
                return
            assert send.chunks is not None
            for c, rec, count in zip(send.chunks, send.records, send.counts, strict=True):
                if not c.dead:
                    self._records_done(c, [rec], [count])
            return
        failures: dict[int, list[tuple[Outbound, BrokerErrorInfo]]] = {}
        for index, error in send.failed:
            failures.setdefault(send.owner(index), []).append((send.messages[index], error))
        for i, rec in enumerate(send.records):
            c = chunk if chunk is not None else send.chunks[i]  # type: ignore[index]
            if c.dead:
                continue
            failed = failures.get(i)
            if failed is None:
                self._records_done(c, [rec], [send.counts[i]])
            else:
                self.slow.promote_failed_delivery(c, rec, send.counts[i], failed)

    def _records_done(self, chunk: Chunk, records: list[Record], counts: list[int]) -> None:
        """Fast-path records are DONE (no tracker: the edge is this count)."""
        observer = self._observer
        if observer is not None:
            for rec, count in zip(records, counts, strict=True):
                observer.record_done(rec, count, False)
        n = len(records)
        chunk.done += n
        chunk.left -= n
        chunk.finished.append(records)
        self._metrics.increment("records_done", n)
        if chunk.split:
            for rec in records:
                self._complete_split(chunk, rec)
        if self._intake.ordered:
            for rec in records:
                self._intake.release(chunk, rec)
        self._progress(chunk)

    def _progress(self, chunk: Chunk) -> None:
        """After records of ``chunk`` are done: complete its range when all are."""
        if chunk.dead:
            return
        if chunk.left == 0:
            chunks = chunk.part.chunks
            if chunks and chunks[0] is chunk:
                chunks.popleft()
            elif chunk in chunks:  # done out of order (rare: a slow-path record)
                chunks.remove(chunk)
            self._intake.finished(chunk)
            if not chunk.split:
                self._keeper.complete(chunk)
        elif chunk.slow:
            self._maybe_split(chunk)

    def _maybe_split(self, chunk: Chunk) -> None:
        """Split a partly finished chunk in the ledger: its done records count as
        finished, each other one gets its own ticket. Done when a record of it goes
        to the slow path (so the watermark and the commit metadata need not wait for
        the slowest) and before a chunk is abandoned (its finished part is
        committed)."""
        if chunk.split or chunk.dead or not chunk.done or not chunk.left:
            return
        done = {r.offset for records in chunk.finished for r in records}
        offsets = [r.offset for r in chunk.records if r.offset not in done]
        if len(offsets) != chunk.left:  # cannot happen; never split on a guess
            return
        tickets = self._keeper.split(chunk, offsets)
        chunk.split = True
        chunk.tickets = dict(zip(offsets, tickets, strict=False))

    def _slow_done(self, chunk: Chunk, record: Record) -> None:
        """A slow-path record of ``chunk`` is DONE."""
        chunk.done += 1
        chunk.left -= 1
        chunk.finished.append([record])
        self._metrics.increment("records_done")
        if chunk.split:
            self._complete_split(chunk, record)
        self._intake.release(chunk, record)
        self._progress(chunk)

    def _complete_split(self, chunk: Chunk, record: Record) -> None:
        ticket = chunk.tickets.pop(record.offset, None)
        if ticket is not None and not chunk.dead:
            self._keeper.complete_one(chunk.part, ticket)

    def split_partial(self, part: Part) -> None:
        """Split every partly finished chunk of ``part`` in the ledger, so its done
        records count as finished (the watermark and the commit metadata cover them):
        a transaction commits their outputs, so it must commit that they are done."""
        for chunk in list(part.chunks):
            if chunk.done and chunk.left:
                self._maybe_split(chunk)

    # -- abandoning (revoke, lost, shutdown) ------------------------------------------

    def abandon(self, part: Part, chunks: list[Chunk], why: str) -> int:
        """Give up on ``chunks`` of ``part`` (and their slow-path records): late
        results and reports are ignored; the records are redelivered. Returns how
        many records were unfinished."""
        unfinished = 0
        for chunk in chunks:
            if chunk.dead:
                continue
            self._maybe_split(chunk)  # its finished part still counts
            chunk.dead = True
            unfinished += chunk.left
            self._intake.finished(chunk)
        if any(c.dead for c in part.chunks):
            part.chunks = deque(c for c in part.chunks if not c.dead)
        for slow in [s for s in part.slow.values() if s.chunk.dead]:
            self.slow.abandon(slow)
        if unfinished:
            self._metrics.increment("abandoned", unfinished, tp=part.tp)
            log.debug("%s: %d records abandoned (%s)", part.tp, unfinished, why)
        return unfinished

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
* **Slow path, per record.** A record whose attempt failed (raised, timed out,
  wrong result) or whose delivery failed is *promoted*: it gets a
  :class:`~offsetledger.core.RecordTracker` resumed at the state it was in, and
  from then on moves edge by edge (one method per edge, below): retries with
  backoff, dead letter, stall. Its chunk waits for it.

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
    Header,
    Outbound,
    ProcessingObserver,
    Record,
    RecordState,
    RecordTracker,
    Ticket,
)
from offsetledger.history import ERROR_HEADER, SOURCE_OFFSET
from offsetledger.runtime._config import ProcessorConfig
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._runners import ProcessingTimeoutError, Run, Runner
from offsetledger.runtime._sender import Sender
from offsetledger.runtime._timers import RetryTimers
from offsetledger.runtime._work import Chunk, Part, Send, Slow

__all__ = ["ATTEMPTS_HEADER", "DELIVERY_ATTEMPTS_HEADER", "RecordFlow"]

log = logging.getLogger("offsetledger.processor")

#: Header on dead-letter records: how many times the handler ran.
ATTEMPTS_HEADER = "offsetledger.attempts"
#: Header on dead-letter records whose outputs failed to deliver: produce rounds tried.
DELIVERY_ATTEMPTS_HEADER = "offsetledger.delivery_attempts"

_S = RecordState


class RecordFlow:
    """Moves records from handler results to DONE. Owns the slow-path records
    (per partition in ``Part.slow``)."""

    def __init__(
        self,
        *,
        config: ProcessorConfig,
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
        self._batch = batch
        self._config = config
        self._metrics = metrics
        self._observer = observer
        self._intake = intake
        self._runner = runner
        self._sender = sender
        self._timers = timers
        self._keeper = keeper
        self._flush = flush
        self._lineage = config.lineage_headers
        self._policy = config.retry

    # -- fast path --------------------------------------------------------------------

    def ran(self, run: Run) -> None:
        """A handler run finished (every record has a result)."""
        if run.slow is not None:
            self._slow_ran(run)
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
                self._promote_failed_attempt(c, rec, res)
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
            self._slow_settled(send)
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
                self._promote_failed_delivery(c, rec, send.counts[i], failed)

    def _records_done(self, chunk: Chunk, records: list[Record], counts: list[int]) -> None:
        """Fast-path records are DONE (no tracker: the edge is this count)."""
        observer = self._observer
        if observer is not None:
            for rec, count in zip(records, counts, strict=True):
                observer.record_done(rec, count, False)
        n = len(records)
        chunk.done += n
        chunk.left -= n
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
        """A chunk with slow-path records is split in the ledger once its records not
        done are known: when only slow ones are left, or (KEY / PARTITION) at once,
        from the ordering slots. From then on each of them completes its own ticket,
        so the watermark and the commit metadata need not wait for the slowest."""
        if chunk.split:
            return
        part = chunk.part
        if chunk.left == chunk.slow:
            offsets = sorted(s.record.offset for s in part.slow.values() if s.chunk is chunk)
        elif self._intake.ordered:
            offsets = sorted(
                rec.offset for queue in part.slots.values() for c, rec in queue if c is chunk
            )
        else:
            return
        if len(offsets) != chunk.left:  # not all known: wait
            return
        tickets = self._keeper.split(chunk, offsets)
        chunk.split = True
        chunk.tickets = dict(zip(offsets, tickets, strict=False))

    def _complete_split(self, chunk: Chunk, record: Record) -> None:
        ticket = chunk.tickets.pop(record.offset, None)
        if ticket is not None and not chunk.dead:
            self._keeper.complete_one(chunk.part, ticket)

    # -- abandoning (revoke, lost, shutdown) ------------------------------------------

    def abandon(self, part: Part, chunks: list[Chunk], why: str) -> int:
        """Give up on ``chunks`` of ``part`` (and their slow-path records): late
        results and reports are ignored; the records are redelivered. Returns how
        many records were unfinished."""
        unfinished = 0
        for chunk in chunks:
            if chunk.dead:
                continue
            chunk.dead = True
            unfinished += chunk.left
            self._intake.finished(chunk)
        if any(c.dead for c in part.chunks):
            part.chunks = deque(c for c in part.chunks if not c.dead)
        for slow in [s for s in part.slow.values() if s.chunk.dead]:
            self._to_abandoned(slow)
        if unfinished:
            self._metrics.increment("abandoned", unfinished, tp=part.tp)
            log.debug("%s: %d records abandoned (%s)", part.tp, unfinished, why)
        return unfinished

    # -- slow path: promotion ---------------------------------------------------------

    def _slow(self, chunk: Chunk, rec: Record, path: tuple[RecordState, ...]) -> Slow:
        ticket = Ticket(chunk.part.tp, rec.offset, chunk.ticket.epoch)
        slow = Slow(chunk, rec, RecordTracker.resumed(ticket, path))
        chunk.part.slow[rec.offset] = slow
        chunk.slow += 1
        self._progress(chunk)  # maybe only slow-path records are left now: split
        return slow

    def _promote_failed_attempt(self, chunk: Chunk, rec: Record, exc: BaseException) -> None:
        self._attempt_failed(self._slow(chunk, rec, (_S.PROCESSING,)), exc)

    def _promote_failed_delivery(
        self,
        chunk: Chunk,
        rec: Record,
        outputs: int,
        failed: list[tuple[Outbound, BrokerErrorInfo]],
    ) -> None:
        slow = self._slow(chunk, rec, (_S.PROCESSING, _S.PRODUCING))
        slow.outputs = outputs
        slow.delivery_attempts = 1
        self._delivery_failed(slow, failed)

    # -- slow path: decisions ---------------------------------------------------------

    def _slow_ran(self, run: Run) -> None:
        slow = run.slow
        assert slow is not None
        self._intake.returned(slow.chunk.part, 1)
        slow.run = None
        if run.token != slow.token or slow.tracker.state is not _S.PROCESSING:
            self._metrics.increment("stale_completions", tp=slow.chunk.part.tp)
            return
        result = run.results[0]
        if isinstance(result, BaseException):
            self._attempt_failed(slow, result)
        elif result:
            slow.outputs = len(result)
            slow.delivery_attempts = 1
            self._to_producing(slow, result)
        else:
            self._to_done(slow)

    def _attempt_failed(self, slow: Slow, exc: BaseException) -> None:
        tp, offset = slow.chunk.part.tp, slow.record.offset
        slow.error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, ProcessingTimeoutError):
            self._metrics.increment("timeouts", tp=tp)
            log.warning("%s offset %d: %s", tp, offset, exc)
        policy = self._policy
        if policy.is_fatal(exc):
            # logged once: a stalled record (no dead-letter topic) fails the same way
            # at every retry
            (log.debug if slow.stalled else log.error)(
                "%s offset %d: fatal handler error (not retried) %s", tp, offset, slow.error
            )
            self._exhausted(slow, "handler")
            return
        attempts = slow.tracker.attempts
        if attempts >= policy.max_attempts:
            log.error(
                "%s offset %d: handler failed %d times, last: %s", tp, offset, attempts, slow.error
            )
            self._exhausted(slow, "handler")
            return
        log.info("%s offset %d: attempt %d failed (%s), retrying", tp, offset, attempts, slow.error)
        self._metrics.increment("retries", tp=tp)
        self._to_retry_wait(slow, "handler", policy.delay(attempts))

    def _delivery_failed(self, slow: Slow, failed: list[tuple[Outbound, BrokerErrorInfo]]) -> None:
        first = failed[0][1]
        slow.error = f"delivery failed: {first}"
        slow.retry_messages = [m for m, _ in failed]
        slow.isolate = any(not e.retriable for _, e in failed)
        log.warning(
            "%s offset %d: %d of its outputs failed to deliver (%s)",
            slow.chunk.part.tp,
            slow.record.offset,
            len(failed),
            first,
        )
        if slow.delivery_attempts >= self._policy.max_attempts:
            self._exhausted(slow, "produce")
            return
        self._metrics.increment("retries", tp=slow.chunk.part.tp)
        self._to_retry_wait(slow, "produce", self._policy.delay(slow.delivery_attempts))

    def _exhausted(self, slow: Slow, what: str) -> None:
        """Attempts are used up (or the error is fatal): dead-letter, or stall."""
        if self._config.dead_letter_topic is not None:
            self._to_dead_lettering(slow)
            return
        if not slow.stalled:
            slow.stalled = True
            self._metrics.increment("stalls", tp=slow.chunk.part.tp)
            log.error(
                "%s offset %d: no dead_letter_topic; the record is retried every %.3fs and "
                "its partition's watermark stalls until it succeeds (last error: %s)",
                slow.chunk.part.tp,
                slow.record.offset,
                self._policy.backoff_max,
                slow.error,
            )
        self._to_retry_wait(slow, what, self._policy.backoff_max)

    def _slow_settled(self, send: Send) -> None:
        slow = send.slow
        assert slow is not None
        if send.token != slow.token or slow.tracker.state.terminal:
            self._metrics.increment("stale_completions", tp=slow.chunk.part.tp)
            return
        failed = [(send.messages[i], e) for i, e in send.failed]
        if slow.tracker.state is _S.DEAD_LETTERING:
            self._dead_letter_settled(slow, failed)
            return
        ok = len(send.messages) - len(failed)
        if ok:
            self._metrics.increment("records_out", ok)
        if failed:
            self._delivery_failed(slow, failed)
        else:
            self._to_done(slow)

    def _dead_letter_settled(
        self, slow: Slow, failed: list[tuple[Outbound, BrokerErrorInfo]]
    ) -> None:
        tp = slow.chunk.part.tp
        if not failed:
            self._metrics.increment("dead_letters", tp=tp)
            log.warning(
                "%s offset %d: written to dead-letter topic %s (%s)",
                tp,
                slow.record.offset,
                self._config.dead_letter_topic,
                slow.error,
            )
            self._to_done(slow)
            return
        if not slow.stalled:
            slow.stalled = True
            self._metrics.increment("stalls", tp=tp)
        log.error(
            "%s offset %d: dead-letter write #%d failed (%s); the partition stalls and the write "
            "is retried; the record is not dropped",
            tp,
            slow.record.offset,
            slow.dlq_attempts,
            failed[0][1],
        )
        self._timers.schedule(slow, self._policy.delay(slow.dlq_attempts))

    def wake(self, slow: Slow) -> None:
        """``slow``'s retry timer fired."""
        state = slow.tracker.state
        if state is _S.DEAD_LETTERING:
            self._send_dead_letter(slow)
        elif slow.next == "handler":
            self._to_processing(slow)
        else:
            slow.delivery_attempts += 1
            if slow.isolate:
                # A non-retriable error (e.g. MSG_SIZE_TOO_LARGE) may belong to a
                # batch-mate: re-produce these outputs in a producer batch of their
                # own (flush before and after, each bounded by poll_timeout)
                self._flush(self._config.poll_timeout)
                self._to_producing(slow, slow.retry_messages)
                self._flush(self._config.poll_timeout)
            else:
                self._to_producing(slow, slow.retry_messages)

    # -- slow path: the edges (the only callers of tracker.to) ------------------------

    def _to_retry_wait(self, slow: Slow, what: str, delay: float) -> None:
        """PROCESSING | PRODUCING | RETRY_WAIT -> RETRY_WAIT, woken after ``delay``."""
        if slow.tracker.state is not _S.RETRY_WAIT:
            slow.tracker.to(_S.RETRY_WAIT)
        slow.next = what
        self._timers.schedule(slow, delay)

    def _to_processing(self, slow: Slow) -> None:
        """RETRY_WAIT -> PROCESSING: a run of this one record."""
        slow.tracker.to(_S.PROCESSING)
        slow.token += 1
        run = Run([slow.record], batch=self._batch, slow=slow, token=slow.token)
        slow.run = run
        self._intake.started(slow.chunk.part, 1)
        self._runner.submit(run)

    def _to_producing(self, slow: Slow, messages: list[Outbound]) -> None:
        """PROCESSING | RETRY_WAIT -> PRODUCING: one produce round of ``messages``."""
        slow.tracker.to(_S.PRODUCING)
        self._send_slow(slow, messages)

    def _to_dead_lettering(self, slow: Slow) -> None:
        """PROCESSING | RETRY_WAIT | PRODUCING -> DEAD_LETTERING: write the record to
        the dead-letter topic (with lineage, error and attempt headers)."""
        topic = self._config.dead_letter_topic
        assert topic is not None
        slow.tracker.to(_S.DEAD_LETTERING)
        rec = slow.record
        headers: list[Header] = [
            *rec.headers,
            *slow.chunk.part.lineage,
            (SOURCE_OFFSET, str(rec.offset).encode()),
            (ERROR_HEADER, slow.error.encode()),
            (ATTEMPTS_HEADER, str(slow.tracker.attempts).encode()),
        ]
        if slow.delivery_attempts:
            headers.append((DELIVERY_ATTEMPTS_HEADER, str(slow.delivery_attempts).encode()))
        slow.dlq_message = Outbound(topic, value=rec.value, key=rec.key, headers=headers)
        self._send_dead_letter(slow)

    def _to_done(self, slow: Slow) -> None:
        """PROCESSING | PRODUCING | DEAD_LETTERING -> DONE: the chunk counts it."""
        slow.tracker.to(_S.DONE)
        part = slow.chunk.part
        part.slow.pop(slow.record.offset, None)
        if slow.stalled:
            log.warning("%s offset %d: stalled record finished", part.tp, slow.record.offset)
        if self._observer is not None:
            self._observer.record_done(slow.record, slow.outputs, slow.dlq_message is not None)
        chunk = slow.chunk
        chunk.done += 1
        chunk.left -= 1
        chunk.slow -= 1
        if chunk.split:
            self._complete_split(chunk, slow.record)
        self._intake.release(chunk, slow.record)
        self._progress(chunk)

    def _to_abandoned(self, slow: Slow) -> None:
        """any unfinished state -> ABANDONED (revoke, lost, shutdown)."""
        slow.token += 1  # its timer, run or send is ignored from now on
        if slow.run is not None:
            self._intake.returned(slow.chunk.part, 1)
            self._runner.abandon(slow.run)
            slow.run = None
        slow.tracker.to(_S.ABANDONED)
        slow.chunk.part.slow.pop(slow.record.offset, None)

    # -- sending ----------------------------------------------------------------------

    def _send_slow(self, slow: Slow, messages: list[Outbound]) -> None:
        slow.token += 1
        extra: list[tuple[Header, ...]] | None = None
        if self._lineage and slow.tracker.state is _S.PRODUCING:
            lineage = (*slow.chunk.part.lineage, (SOURCE_OFFSET, str(slow.record.offset).encode()))
            extra = [lineage] * len(messages)
        send = Send(
            list(messages),
            [slow.record],
            [len(messages)],
            self._sender.settle_to,
            slow=slow,
            token=slow.token,
        )
        self._sender.send(send, extra)

    def _send_dead_letter(self, slow: Slow) -> None:
        assert slow.dlq_message is not None
        slow.dlq_attempts += 1
        self._send_slow(slow, [slow.dlq_message])

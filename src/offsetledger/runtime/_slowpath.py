"""The record flow's slow path: a record whose attempt failed (raised, timed out,
wrong result) or whose delivery failed is *promoted* from its chunk's fast path: it
gets a :class:`~offsetledger.core.RecordTracker` resumed at the state it was in,
and from then on moves edge by edge, one method per edge of the state diagram
(``_to_*`` below, the only callers of ``RecordTracker.to`` in the runtime):
retries with backoff, dead letter, stall. Its chunk waits for it (see
:mod:`offsetledger.runtime._flow`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from offsetledger._logging import RateLimiter, record_extra
from offsetledger.core import (
    BrokerErrorInfo,
    Clock,
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
from offsetledger.runtime._runners import ProcessingTimeoutError, Run, Runner
from offsetledger.runtime._sender import Sender
from offsetledger.runtime._timers import RetryTimers
from offsetledger.runtime._work import Chunk, Send, Slow

__all__ = ["ATTEMPTS_HEADER", "DELIVERY_ATTEMPTS_HEADER", "SlowPath"]

log = logging.getLogger("offsetledger.processor")

#: Header on dead-letter records: how many times the handler ran.
ATTEMPTS_HEADER = "offsetledger.attempts"
#: Header on dead-letter records whose outputs failed to deliver: produce rounds tried.
DELIVERY_ATTEMPTS_HEADER = "offsetledger.delivery_attempts"

_S = RecordState

#: A line that repeats for one record (its retries, a dead-letter write that keeps
#: failing) is logged once, then at most once per this many seconds with the count
#: of the lines held back (see offsetledger._logging.RateLimiter).
REPEAT_LOG_INTERVAL = 30.0
#: The kinds of repeating line, each limited on its own per record.
_REPEATING = ("fatal", "attempt", "exhausted", "delivery", "dlq-write")


class SlowPath:
    """Owns the slow-path records (per partition in ``Part.slow``) and their retry
    decisions. Tells the record flow when one is DONE (``on_done``) and when one was
    promoted (``on_promoted``: its chunk may be split now)."""

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
        flush: Callable[[float], object],
        batch: bool,
        on_done: Callable[[Chunk, Record], None],
        on_promoted: Callable[[Chunk], None],
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._observer = observer
        self._intake = intake
        self._runner = runner
        self._sender = sender
        self._timers = timers
        self._flush = flush
        self._batch = batch
        self._on_done = on_done
        self._on_promoted = on_promoted
        self._lineage = config.lineage_headers
        self._policy = config.retry
        self._limiter = RateLimiter(clock, interval=REPEAT_LOG_INTERVAL)

    def _log(self, level: int, slow: Slow, kind: str, msg: str, *args: object) -> None:
        """Log a line that may repeat for ``slow``'s record: rate-limited per record
        and kind, with the record's topic, partition, offset and key as ``extra``."""
        key = (slow.chunk.part.tp, slow.record.offset, kind)
        self._limiter.log(log, level, key, msg, *args, extra=record_extra(slow.record))

    # -- slow path: promotion ---------------------------------------------------------

    def _slow(self, chunk: Chunk, rec: Record, path: tuple[RecordState, ...]) -> Slow:
        ticket = Ticket(chunk.part.tp, rec.offset, chunk.ticket.epoch)
        slow = Slow(chunk, rec, RecordTracker.resumed(ticket, path))
        chunk.part.slow[rec.offset] = slow
        chunk.slow += 1
        self._on_promoted(chunk)  # maybe only slow-path records are left now: split
        return slow

    def promote_failed_attempt(self, chunk: Chunk, rec: Record, exc: BaseException) -> None:
        self._attempt_failed(self._slow(chunk, rec, (_S.PROCESSING,)), exc)

    def promote_failed_delivery(
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

    def ran(self, run: Run) -> None:
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
            self._log(
                logging.DEBUG if slow.stalled else logging.ERROR,
                slow,
                "fatal",
                "%s offset %d: fatal handler error (not retried) %s",
                tp,
                offset,
                slow.error,
            )
            self._exhausted(slow, "handler")
            return
        attempts = slow.tracker.attempts
        if attempts >= policy.max_attempts:
            self._log(
                logging.ERROR,
                slow,
                "exhausted",
                "%s offset %d: handler failed %d times, last: %s",
                tp,
                offset,
                attempts,
                slow.error,
            )
            self._exhausted(slow, "handler")
            return
        self._log(
            logging.INFO,
            slow,
            "attempt",
            "%s offset %d: attempt %d failed (%s), retrying",
            tp,
            offset,
            attempts,
            slow.error,
        )
        self._metrics.increment("retries", tp=tp)
        self._to_retry_wait(slow, "handler", policy.delay(attempts))

    def _delivery_failed(self, slow: Slow, failed: list[tuple[Outbound, BrokerErrorInfo]]) -> None:
        first = failed[0][1]
        slow.error = f"delivery failed: {first}"
        slow.retry_messages = [m for m, _ in failed]
        slow.isolate = any(not e.retriable for _, e in failed)
        self._log(
            logging.WARNING,
            slow,
            "delivery",
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

    def settled(self, send: Send) -> None:
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
        self._log(
            logging.ERROR,
            slow,
            "dlq-write",
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
        self._forget(slow)
        if slow.stalled:
            log.warning("%s offset %d: stalled record finished", part.tp, slow.record.offset)
        if self._observer is not None:
            self._observer.record_done(slow.record, slow.outputs, slow.dlq_message is not None)
        slow.chunk.slow -= 1
        self._on_done(slow.chunk, slow.record)

    def abandon(self, slow: Slow) -> None:
        """Give up on ``slow`` (its chunk was abandoned)."""
        self._to_abandoned(slow)

    def _to_abandoned(self, slow: Slow) -> None:
        """any unfinished state -> ABANDONED (revoke, lost, shutdown)."""
        slow.token += 1  # its timer, run or send is ignored from now on
        if slow.run is not None:
            self._intake.returned(slow.chunk.part, 1)
            self._runner.abandon(slow.run)
            slow.run = None
        slow.tracker.to(_S.ABANDONED)
        slow.chunk.part.slow.pop(slow.record.offset, None)
        self._forget(slow)

    def _forget(self, slow: Slow) -> None:
        """The record left the slow path: its repeating lines start afresh."""
        tp, offset = slow.chunk.part.tp, slow.record.offset
        for kind in _REPEATING:
            self._limiter.forget((tp, offset, kind))

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

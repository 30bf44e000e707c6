"""Rebalance handling, inside ``consumer.poll`` / ``consumer.close``: assign (a new
ledger epoch), revoke (stop taking work, drain the started chunks up to
``drain_timeout``, commit the final watermark synchronously, forget) and lost
(forget without committing)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from offsetledger.core import (
    Clock,
    CommittedPosition,
    ConsumerPort,
    OffsetLedger,
    OffsetLedgerError,
    StoredPosition,
    TopicPartition,
    TransactionalConsumerPort,
)
from offsetledger.runtime._backpressure import Backpressure
from offsetledger.runtime._config import ProcessorConfig
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._intake import Intake
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._timers import TIME_EPSILON, RetryTimers
from offsetledger.runtime._txn import rewind_position, seek_all
from offsetledger.runtime._work import Part

__all__ = ["Rebalancer"]

log = logging.getLogger("offsetledger.processor")


class Rebalancer:
    """Owns the set of assigned partitions (``parts``: added on assign, removed on
    revoke and lost) and counts ``rebalances``."""

    def __init__(
        self,
        *,
        consumer: ConsumerPort,
        ledger: OffsetLedger,
        config: ProcessorConfig,
        clock: Clock,
        metrics: MetricsHook,
        parts: dict[tuple[str, int], Part],
        intake: Intake,
        flow: RecordFlow,
        keeper: OffsetKeeper,
        backpressure: Backpressure,
        timers: RetryTimers,
        pump: Callable[[float], None],
        idle: Callable[[], bool],
        aborting: Callable[[], bool],
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self.parts = parts
        self._intake = intake
        self._flow = flow
        self._keeper = keeper
        self._backpressure = backpressure
        self._timers = timers
        self._pump = pump
        self._idle = idle
        self._aborting = aborting

    def on_assign(self, partitions: Sequence[TopicPartition]) -> None:
        self._metrics.increment("rebalances")
        if not partitions:
            return
        try:
            committed: dict[TopicPartition, CommittedPosition] = self._consumer.committed(
                partitions, self._config.committed_timeout
            )
        except OffsetLedgerError as exc:
            # without it the ledger starts at the first record polled: still safe,
            # only the skip of records finished before a restart is lost
            log.warning("reading committed positions failed (%s); starting without them", exc)
            committed = {}
        for tp in partitions:
            cp = committed.get(tp)
            position = cp.position if cp is not None else None
            metadata = cp.metadata if cp is not None else None
            old = self.parts.get((tp.topic, tp.partition))
            if old is not None:
                self.forget(old, "re-assigned")
            self._ledger.assign(tp, position, metadata)
            self.parts[(tp.topic, tp.partition)] = Part(
                tp, last_committed=None if position is None else (position, metadata)
            )
        if self._ledger.is_full_total:
            # paused now, or the poll serving this callback fetches a batch from them
            # over the total limit (swarm seed 44)
            self._backpressure.apply(self.parts.values(), self._intake.buffered_bytes)
        log.info("assigned %s", ", ".join(map(str, partitions)))

    def on_revoke(self, partitions: Sequence[TopicPartition]) -> None:
        self._metrics.increment("rebalances")
        parts = [p for tp in partitions if (p := self.parts.get((tp.topic, tp.partition)))]
        if not parts:
            return
        for part in parts:
            part.revoking = True
            self.cut(part)
        self.drain(parts, self._config.drain_timeout)
        for part in parts:
            unfinished = self._flow.abandon(part, list(part.chunks), "revoked")
            self._keeper.abandoned(unfinished)
            if unfinished:
                log.warning(
                    "%s revoked with %d records unfinished after the drain; "
                    "they will be redelivered",
                    part.tp,
                    unfinished,
                )
        cancel = getattr(self._flow.slow._runner, "cancel_abandoned", None)
        if cancel is not None:  # (async runner) cancel what the drain left; wait for it
            cancel(max(self._config.drain_timeout, 1.0))
        self._keeper.store_dirty()
        self._keeper.commit_final(parts, aborting=self._aborting())
        for part in parts:
            if self._ledger.is_assigned(part.tp):
                self._ledger.revoke(part.tp)
            self.forget(part, "revoked")
        log.info("revoked %s", ", ".join(str(p.tp) for p in parts))

    def on_lost(self, partitions: Sequence[TopicPartition]) -> None:
        self._metrics.increment("rebalances")
        for tp in partitions:
            part = self.parts.get((tp.topic, tp.partition))
            if part is None:
                continue
            self.forget(part, "lost")
            if self._ledger.is_assigned(tp):
                self._ledger.lost(tp)
        self._keeper.lost()
        cancel = getattr(self._flow.slow._runner, "cancel_abandoned", None)
        if cancel is not None:  # (async runner) the lost records' coroutines: cancel now
            cancel(0.0)
        log.warning(
            "lost %s: not committed; unfinished records will be redelivered",
            ", ".join(map(str, partitions)),
        )

    def cut(self, part: Part) -> None:
        """Abandon the chunks of ``part`` the drain will not wait for (see
        :meth:`Intake.cut`). Under KEY ordering a chunk after the first unstarted one may
        have started (its keys were free while an earlier chunk's were busy): the
        outputs of its records in flight may already be in the open transaction, so
        the keeper hears of them (TRANSACTIONAL: that transaction must not commit).
        Before, they went unreported, and a transaction committed their outputs with
        a position below them: redelivered, they were written twice (forced-async
        swarm seed 350, EO_DUPLICATE)."""
        chunks = self._intake.cut(part)
        in_flight = sum(c.in_flight for c in chunks)
        self._flow.abandon(part, chunks, "not started")
        self._keeper.abandoned(in_flight)

    def drain(self, parts: Sequence[Part], timeout: float) -> None:
        """Pump until the chunks of ``parts`` are done or ``timeout`` passed (their
        unstarted chunks were cut off before)."""
        clock = self._clock
        deadline = clock.now() + timeout
        while any(p.chunks for p in parts) and not self._aborting():
            remaining = deadline - clock.now()
            if remaining <= TIME_EPSILON:  # below the clock resolution: due
                break
            self._pump(min(remaining, self._config.poll_timeout))
            if self._idle() and any(p.chunks for p in parts):
                # only backoff timers left: let time pass until the next one
                nxt = self._timers.next_due()
                until = deadline if nxt is None else min(nxt, deadline)
                clock.sleep(max(until - clock.now(), 0.0))

    def rewind(self, *, leaving: bool = False) -> None:
        """After an aborted transaction: every partition not being revoked goes back
        to its committed position (``consumer.seek``) in a new ledger epoch; its
        in-flight work is abandoned, so late results change nothing.

        A partition that is leaving — being revoked (the abort came during its
        revoke's drain or final commit), or every partition when ``leaving`` (the
        Processor is shutting down) — is not sought and not kept, but forgotten with
        its ledger state, so no final commit (the revoke's, the shutdown's, the close's
        revoke) can carry the position of work whose outputs were just aborted (swarm
        seed 15); its next owner reads it from the committed position."""
        positions: list[StoredPosition] = []
        for part in list(self.parts.values()):
            tp = part.tp
            if leaving or part.revoking:
                self.forget(part, "transaction aborted while revoking")
                if self._ledger.is_assigned(tp):
                    self._ledger.lost(tp)
                continue
            sp = rewind_position(part)
            if sp is not None:
                positions.append(sp)
            if part.paused:
                self._consumer.resume([tp])
            self.forget(part, "transaction aborted")
            committed = part.last_committed
            if self._ledger.is_assigned(tp):
                self._ledger.lost(tp)
            self._ledger.assign(tp, *(committed if committed is not None else (None, None)))
            self.parts[(tp.topic, tp.partition)] = Part(tp, last_committed=committed)
            self._metrics.increment("rewinds", tp=tp)
        if positions:
            assert isinstance(self._consumer, TransactionalConsumerPort)
            seek_all(self._consumer, positions)

    def forget(self, part: Part, why: str) -> None:
        """Drop ``part`` from the Processor's view (the ledger is handled apart)."""
        self._flow.abandon(part, list(part.chunks), why)
        part.chunks.clear()
        self._intake.drop(part)
        self._backpressure.forget(part)
        self._keeper.forget(part)
        self.parts.pop((part.tp.topic, part.tp.partition), None)

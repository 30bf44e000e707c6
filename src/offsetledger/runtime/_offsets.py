"""The offset keeper: completes chunks in the ledger, stores moved watermarks,
and commits by policy (:class:`CommitPolicy`: ``should_commit`` / ``did_commit``).

The ledger is the only copy of which offsets are finished; the keeper only
remembers what it last stored and committed per partition, to send changes only."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import attrs

from offsetledger.core import (
    BrokerErrorInfo,
    Clock,
    CommitResult,
    Completion,
    ConsumerPort,
    OffsetLedger,
    OffsetLedgerError,
    StoredPosition,
    Ticket,
)
from offsetledger.runtime._config import CommitMode, ProcessorConfig
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._work import Chunk, Part

__all__ = ["CommitPolicy", "OffsetKeeper"]

log = logging.getLogger("offsetledger.processor")


class CommitPolicy:
    """When the Processor commits by itself: ``PERIODIC`` every
    ``commit_every_records`` finished records or ``commit_interval`` seconds;
    ``AUTO`` every ``auto_commit_interval`` seconds when something finished (the
    client's auto-commit runs as well). Pure: time comes in as an argument."""

    def __init__(self, config: ProcessorConfig, now: float) -> None:
        self.mode = config.commit_mode
        if self.mode is CommitMode.PERIODIC:
            self._records = config.commit_every_records
            self._interval = config.commit_interval
        else:
            self._records = None
            self._interval = config.auto_commit_interval
        self._last = now
        self.done_since = 0  #: records finished since the last commit

    @property
    def active(self) -> bool:
        """False when the client alone commits (AUTO with auto_commit_interval None)."""
        return self.mode is CommitMode.PERIODIC or self._interval is not None

    def finished(self, records: int) -> None:
        self.done_since += records

    def should_commit(self, now: float) -> bool:
        if self.mode is CommitMode.AUTO:
            return (
                self._interval is not None
                and self.done_since > 0
                and now - self._last >= self._interval
            )
        return (self._records is not None and self.done_since >= self._records) or (
            self._interval is not None and now - self._last >= self._interval
        )

    def did_commit(self, now: float) -> None:
        self.done_since = 0
        self._last = now


class OffsetKeeper:
    """Owns the partitions whose watermark may have moved (``dirty``) and the commit
    policy. Counts ``commits``, ``commit_failures``, ``stale_completions``.

    The rebalancer and the shutdown call :meth:`commit_final`, :meth:`abandoned` and
    :meth:`lost`; the transactional keeper (``runtime/_txn.py``) overrides them."""

    transactional = False

    def __init__(
        self,
        ledger: OffsetLedger,
        consumer: ConsumerPort,
        clock: Clock,
        config: ProcessorConfig,
        *,
        metrics: MetricsHook,
        parts: dict[tuple[str, int], Part],
    ) -> None:
        self._ledger = ledger
        self._parts = parts
        self._consumer = consumer
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self.policy = CommitPolicy(config, clock.now())
        self._dirty: dict[Part, None] = {}  # insertion-ordered: deterministic

    # -- completing -------------------------------------------------------------------

    def complete(self, chunk: Chunk) -> Completion:
        """Every record of ``chunk`` is done: complete its range in the ledger."""
        result = self._ledger.complete(chunk.ticket)
        if result is Completion.COMPLETED:
            self._dirty[chunk.part] = None
            self.policy.finished(len(chunk.records))
        elif result is Completion.STALE:
            self._metrics.increment("stale_completions", tp=chunk.part.tp)
        return result

    def split(self, chunk: Chunk, unfinished: list[int]) -> list[Ticket]:
        """Every record of ``chunk`` but ``unfinished`` is done: split its range in
        the ledger (the watermark may move up to the first unfinished one)."""
        tickets = self._ledger.split_range(chunk.ticket, unfinished)
        if tickets:
            self._dirty[chunk.part] = None
            self.policy.finished(len(chunk.records) - len(unfinished))
        return tickets

    def complete_one(self, part: Part, ticket: Ticket) -> Completion:
        """One record of a split chunk is done."""
        result = self._ledger.complete(ticket)
        if result is Completion.COMPLETED:
            self._dirty[part] = None
            self.policy.finished(1)
        elif result is Completion.STALE:
            self._metrics.increment("stale_completions", tp=part.tp)
        return result

    def mark(self, part: Part) -> None:
        """``part``'s watermark may have moved (e.g. a chunk restored entirely)."""
        self._dirty[part] = None

    def forget(self, part: Part) -> None:
        self._dirty.pop(part, None)

    # -- storing ----------------------------------------------------------------------

    def store_dirty(self) -> None:
        """Store the moved watermarks of the dirty partitions."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        positions: list[StoredPosition] = []
        for part in dirty:
            if not self._ledger.is_assigned(part.tp):
                continue
            sp = self.position(part)
            if sp is None or (sp.position, sp.metadata) == part.last_stored:
                continue
            positions.append(sp)
            part.last_stored = (sp.position, sp.metadata)
            part.stored = sp
            if part.highest_polled is not None:
                self._metrics.gauge(
                    "watermark_lag", part.highest_polled + 1 - sp.position, tp=part.tp
                )
        if positions:
            try:
                self._consumer.store(positions)
            except OffsetLedgerError as exc:
                log.warning("storing positions failed (a rebalance is probably under way): %s", exc)

    def position(self, part: Part) -> StoredPosition | None:
        """The partition's watermark to store or commit, with commit metadata only
        when something above the watermark is finished (the ledger knows in O(1))."""
        ledger = self._ledger
        if ledger.watermark(part.tp) is None:
            return None
        with_metadata = ledger.has_finished_above_watermark(part.tp)
        sp = ledger.stored_position(part.tp, with_metadata=with_metadata)
        if sp is None:
            return None
        if with_metadata:
            self._metrics.gauge("metadata_bytes", len(sp.metadata or ""), tp=part.tp)
            if ledger.last_metadata_dropped:
                self._metrics.increment(
                    "metadata_dropped", ledger.last_metadata_dropped, tp=part.tp
                )
        if sp.leader_epoch is not None and not self._config.keep_leader_epoch:
            sp = attrs.evolve(sp, leader_epoch=None)
        return sp

    def final_positions(self, parts: Iterable[Part]) -> list[StoredPosition]:
        """The positions of ``parts`` not committed yet (revoke, shutdown, PERIODIC)."""
        out = []
        for part in parts:
            if not self._ledger.is_assigned(part.tp):
                continue
            sp = self.position(part)
            if sp is not None and (sp.position, sp.metadata) != part.last_committed:
                out.append(sp)
        return out

    def store_final(self, positions: list[StoredPosition]) -> None:
        """Store ``positions`` too before a final commit, or the client's auto-commit
        (on close) of an older stored position would move the commit backwards."""
        if positions:
            with contextlib.suppress(OffsetLedgerError):
                self._consumer.store(positions)

    # -- committing -------------------------------------------------------------------

    def start(self) -> None:
        """Before the first poll (the transactional keeper inits transactions)."""

    def commit_final(self, parts: list[Part], *, aborting: bool) -> None:
        """Revoke / shutdown: store and commit the final positions of ``parts``
        synchronously (one try when aborting)."""
        positions = self.final_positions(parts)
        if positions:
            try:
                self._consumer.store(positions)
            except OffsetLedgerError as exc:
                log.warning("storing final positions failed: %s", exc)
            self.commit_sync(positions, attempts=1 if aborting else None)

    def abandoned(self, unfinished: int) -> None:
        """``unfinished`` records were abandoned after a drain (nothing to do here:
        they are redelivered)."""

    def lost(self) -> None:
        """Partitions were lost (forgotten without a commit)."""

    def maybe_commit(self, parts: Iterable[Part]) -> None:
        """Commit when the policy says so."""
        policy = self.policy
        if not policy.active:
            return
        now = self._clock.now()
        if not policy.should_commit(now):
            return
        policy.did_commit(now)
        live = [p for p in parts if not p.revoking]
        if policy.mode is CommitMode.PERIODIC:
            positions = self.final_positions(live)
            if positions:
                self.commit_sync(positions)
            return
        stored = [
            p.stored for p in live if p.stored is not None and p.last_stored != p.last_committed
        ]
        if stored:
            self.commit_sync(stored, attempts=1)

    def commit_sync(
        self,
        positions: list[StoredPosition],
        attempts: int | None = None,
    ) -> list[CommitResult]:
        """Commit ``positions`` synchronously; retry partitions with retriable errors
        (``commit_attempts`` tries, backoff on the clock); log and count the rest.
        A failed commit never loses a record: it can only cause redelivery."""
        tries = attempts if attempts is not None else self._config.commit_attempts
        pending = list(positions)
        results: list[CommitResult] = []
        started = self._clock.now()
        by_part = self._parts
        for attempt in range(1, tries + 1):
            retry: list[StoredPosition] = []
            try:
                outcome = self._consumer.commit(pending)
            except OffsetLedgerError as exc:
                retriable = bool(getattr(exc, "retriable", False))
                log.warning("commit attempt %d raised %s", attempt, exc)
                outcome = [
                    CommitResult(
                        sp.tp, sp.position, BrokerErrorInfo(type(exc).__name__, str(exc), retriable)
                    )
                    for sp in pending
                ]
            by_tp = {sp.tp: sp for sp in pending}
            for result in outcome:
                sp = by_tp.get(result.tp)
                part = by_part.get((result.tp.topic, result.tp.partition))
                if result.error is None:
                    self._metrics.increment("commits", tp=result.tp)
                    if part is not None and sp is not None:
                        part.last_committed = (sp.position, sp.metadata)
                    results.append(result)
                elif result.error.retriable and attempt < tries and sp is not None:
                    retry.append(sp)
                else:
                    self._metrics.increment("commit_failures", tp=result.tp)
                    log.error(
                        "commit of %s at %s failed: %s", result.tp, result.position, result.error
                    )
                    results.append(result)
            if not retry:
                break
            pending = retry
            self._clock.sleep(self._config.retry.delay(attempt))
        self._metrics.gauge("commit_seconds", self._clock.now() - started)
        return results

"""The transactional offset keeper (``CommitMode.TRANSACTIONAL``): outputs, dead
letters and the input positions commit or abort together in one Kafka transaction.

* Lazy begin: a transaction begins with the first output produced after the last
  commit (:class:`TransactionalProducer` wraps the producer the sender uses, so
  every produce, dead letters included, is inside it).
* Commit on :class:`TransactionPolicy` (``transaction_interval`` seconds or
  ``transaction_records`` finished records): flush (every output's report in),
  ``send_offsets_to_transaction`` with the ledger's watermark positions (position =
  last finished + 1, with the commit metadata of finished offsets above it) and
  ``consumer.group_metadata()`` (KIP-447: a member of an old generation is fenced),
  ``commit_transaction``. Every call is bounded by ``transaction_call_timeout``.
* A transaction only commits when every record whose outputs are in it is done: a
  failed delivery, or a record abandoned with outputs possibly in it, dooms it.
* Abort (abortable error, doomed, lost, a second stop): ``abort_transaction``, then
  the rewind (:meth:`Rebalancer.rewind`): each partition back to its committed
  position through ``consumer.seek``, a new ledger epoch, so stale work changes
  nothing.
* Fatal (fenced by a newer instance, unrecoverable): :class:`ProcessorMustRestartError`
  out of ``run``/``step``; nothing more is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from offsetledger.core import (
    BrokerErrorInfo,
    Clock,
    ConfigError,
    ConsumerPort,
    DeliveryCallback,
    Header,
    OffsetLedger,
    OffsetLedgerError,
    Outbound,
    StoredPosition,
    TransactionalConsumerPort,
    TransactionalProducerPort,
    TransactionError,
    produce_many,
)
from offsetledger.core._ports import ReportCallback
from offsetledger.runtime._config import CommitMode, ProcessorConfig
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._offsets import CommitPolicy, OffsetKeeper
from offsetledger.runtime._work import Part

__all__ = [
    "ProcessorMustRestartError",
    "TransactionPolicy",
    "TransactionalKeeper",
    "TransactionalProducer",
    "check_transactional_args",
    "rewind_position",
    "seek_all",
]

log = logging.getLogger("offsetledger.processor")

#: Pause between two tries of a transactional call that failed retriably.
_RETRY_PAUSE = 0.05


class ProcessorMustRestartError(OffsetLedgerError, RuntimeError):
    """The transactional producer can do nothing more (fenced by a newer instance
    with the same ``transactional.id``, or a fatal client error). Nothing more was
    committed; close the clients and restart the process (a new producer's
    ``init_transactions`` aborts what was left open)."""


class _AbortError(Exception):
    """Internal: the open transaction must be aborted (abortable error, or a
    retriable one that did not succeed within the bound)."""


class TransactionalProducer:
    """The producer the sender sees in TRANSACTIONAL mode: begins a transaction
    lazily before the first message, and watches delivery reports so a failed one
    dooms the transaction it was produced in (late reports of an aborted transaction
    never doom the next one)."""

    def __init__(self, producer: TransactionalProducerPort) -> None:
        self.inner = producer
        self.open = False
        self.doomed = False
        self.fatal: BaseException | None = None
        self.generation = 0  #: transactions begun so far
        self.messages = 0  #: messages produced in the open transaction

    def begin(self) -> None:
        if self.fatal is not None:
            raise ProcessorMustRestartError(f"the producer is unusable: {self.fatal}")
        if self.open:
            return
        try:
            self.inner.begin_transaction()
        except TransactionError as exc:
            self.fatal = exc
            raise ProcessorMustRestartError(f"begin_transaction failed: {exc}") from exc
        self.open = True
        self.doomed = False
        self.messages = 0
        self.generation += 1

    def ended(self) -> None:
        self.open = False
        self.doomed = False
        self.messages = 0

    def _watch(self, on_report: ReportCallback) -> ReportCallback:
        generation = self.generation

        def report(i: int, error: BrokerErrorInfo | None) -> None:
            if error is not None and generation == self.generation and self.open:
                self.doomed = True
            on_report(i, error)

        return report

    # -- ProducerPort -----------------------------------------------------------------

    def _fenced(self, what: str, exc: TransactionError) -> ProcessorMustRestartError:
        self.fatal = exc
        return ProcessorMustRestartError(
            f"{what} failed fatally ({exc}): the producer was fenced or is unusable; "
            "nothing more is committed, restart the process"
        )

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        self.begin()
        self.messages += 1
        generation = self.generation

        def delivered(report: Any) -> None:
            if report.error is not None and generation == self.generation and self.open:
                self.doomed = True
            on_delivery(report)

        try:
            self.inner.produce(message, delivered)
        except TransactionError as exc:
            if not exc.fatal:
                raise
            raise self._fenced("produce", exc) from exc

    def produce_many(
        self,
        messages: Sequence[Outbound],
        on_report: ReportCallback,
        extra_headers: Sequence[tuple[Header, ...]] | None = None,
    ) -> None:
        self.begin()
        self.messages += len(messages)
        # a produce that raises is a failed delivery to produce_many's per-message
        # path; a fatal one (fenced: a newer instance, or the transaction timed out)
        # ends the producer instead, on either path
        inner = _NoteFatal(self.inner)
        try:
            produce_many(inner, messages, self._watch(on_report), extra_headers)
        except TransactionError as exc:
            if not exc.fatal:
                raise
            inner.fatal = exc
        if inner.fatal is not None:
            raise self._fenced("produce", inner.fatal) from inner.fatal

    def poll(self, timeout: float) -> int:
        return self.inner.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self.inner.flush(timeout)


class _NoteFatal:
    """``producer`` for :func:`produce_many`, noting the first fatal TransactionError
    a produce raises (the per-message path reports it as a failed delivery)."""

    def __init__(self, producer: TransactionalProducerPort) -> None:
        self._producer = producer
        self.fatal: TransactionError | None = None
        fast = getattr(producer, "produce_many", None)
        if fast is not None:
            self.produce_many = fast

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        try:
            self._producer.produce(message, on_delivery)
        except TransactionError as exc:
            if exc.fatal and self.fatal is None:
                self.fatal = exc
            raise

    def poll(self, timeout: float) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        return self._producer.flush(timeout)


class TransactionPolicy(CommitPolicy):
    """When the open transaction commits: ``transaction_interval`` seconds after the
    last commit, or once ``transaction_records`` records finished; never when there
    is neither an open transaction nor a finished record. Pure."""

    def __init__(self, config: ProcessorConfig, now: float) -> None:
        super().__init__(config, now)
        self._interval = config.transaction_interval
        self._records = config.transaction_records
        self.open = False  #: a transaction is open (kept up to date by the keeper)

    @property
    def active(self) -> bool:
        return True

    def should_commit(self, now: float) -> bool:
        if not self.open and not self.done_since:
            return False
        assert self._records is not None
        assert self._interval is not None
        return self.done_since >= self._records or now - self._last >= self._interval


class TransactionalKeeper(OffsetKeeper):
    """The offset keeper of TRANSACTIONAL mode: never stores or commits through the
    consumer; commits positions inside the producer's transaction. Counts
    ``transactions``, ``transaction_aborts``, ``rewinds``."""

    transactional = True

    def __init__(
        self,
        ledger: OffsetLedger,
        consumer: TransactionalConsumerPort,
        producer: TransactionalProducer,
        clock: Clock,
        config: ProcessorConfig,
        *,
        metrics: MetricsHook,
        parts: dict[tuple[str, int], Part],
    ) -> None:
        super().__init__(ledger, consumer, clock, config, metrics=metrics, parts=parts)
        self._tconsumer = consumer
        self.producer = producer
        self.policy = TransactionPolicy(config, clock.now())
        #: set by the Processor: settle what the flush served (the loop's settle)
        self.settle: Callable[[], None] = lambda: None
        #: set by the Processor: rewind every partition not being revoked
        self.rewind: Callable[[], None] = lambda: None
        #: set by the Processor: split a partition's partly finished chunks
        self.split_partial: Callable[[Part], None] = lambda _part: None

    def start(self) -> None:
        """``init_transactions`` (fences older instances with the same id). Not done
        within ``transaction_call_timeout`` (the coordinator unavailable throughout):
        :class:`ProcessorMustRestartError`, there is nothing to abort and no
        transaction can begin."""
        try:
            self._call("init_transactions", self.producer.inner.init_transactions)
        except _AbortError as exc:
            self.producer.fatal = exc
            raise ProcessorMustRestartError(f"init_transactions failed: {exc}") from exc

    def store_dirty(self) -> None:
        """Nothing is stored through the consumer: positions go into the transaction."""
        self._dirty.clear()

    def maybe_commit(self, parts: Iterable[Part]) -> None:
        policy = self.policy
        assert isinstance(policy, TransactionPolicy)
        policy.open = self.producer.open
        if policy.should_commit(self._clock.now()):
            self.commit_transaction()

    def commit_final(self, parts: Sequence[Part], *, aborting: bool) -> None:
        """Revoke / shutdown: commit the open transaction (every partition's position:
        the others' outputs are in it too); abort instead when aborting."""
        if self.producer.fatal is not None:
            return
        if aborting:
            self.abort("a second stop: not draining")
            return
        self.commit_transaction()

    def abandoned(self, unfinished: int) -> None:
        """Records were abandoned unfinished (a revoke's drain or a shutdown timed
        out): their outputs may be in the open transaction, so it must not commit."""
        if unfinished and self.producer.open:
            self.producer.doomed = True

    def lost(self) -> None:
        """Partitions were lost: abort, never commit (the others are rewound)."""
        if self.producer.fatal is None and self.producer.open:
            self.abort("partitions lost")

    # -- committing and aborting --------------------------------------------------------

    def positions(self) -> list[StoredPosition]:
        """The positions of every assigned partition that moved since the last commit.
        Every record done so far has its outputs in (or before) this transaction, so
        each must be covered: partly finished chunks are split first (their done
        records go into the commit metadata), and a commit whose metadata had to drop
        a finished offset (over the byte budget) is aborted instead."""
        out: list[StoredPosition] = []
        for part in list(self._parts.values()):
            if not self._ledger.is_assigned(part.tp):
                continue
            self.split_partial(part)
            sp = self.position(part)
            if self._ledger.has_finished_above_watermark(part.tp) and (
                self._ledger.last_metadata_dropped
            ):
                raise _AbortError(
                    f"{part.tp}: finished records above the watermark do not fit the "
                    "commit metadata; their outputs must not commit without them"
                )
            if sp is not None and (sp.position, sp.metadata) != part.last_committed:
                out.append(sp)
        return out

    def commit_transaction(self) -> bool:
        """Flush, send the positions, commit. Returns True when committed; on an
        abortable error (or a doomed transaction) aborts and rewinds instead."""
        producer = self.producer
        now = self._clock.now()
        self.policy.did_commit(now)
        try:
            if producer.open:
                left = producer.flush(self._config.transaction_call_timeout)
                self.settle()
                if left:
                    raise _AbortError(f"{left} delivery reports still outstanding after the flush")
            if producer.doomed:
                raise _AbortError("a record with outputs in the transaction did not finish")
            positions = self.positions()
            if not producer.open and not positions:
                return True
            producer.begin()
            if positions:
                metadata = self._tconsumer.group_metadata()
                self._call(
                    "send_offsets_to_transaction",
                    lambda t: producer.inner.send_offsets_to_transaction(positions, metadata, t),
                )
            self._call("commit_transaction", producer.inner.commit_transaction)
        except _AbortError as why:
            self.abort(str(why))
            return False
        producer.ended()
        self._metrics.increment("transactions")
        for sp in positions:
            self._metrics.increment("commits", tp=sp.tp)
            part = self._parts.get((sp.tp.topic, sp.tp.partition))
            if part is not None:
                part.last_committed = (sp.position, sp.metadata)
        self._metrics.gauge("commit_seconds", self._clock.now() - now)
        return True

    def abort(self, why: str) -> None:
        """Abort the open transaction and rewind the partitions."""
        producer = self.producer
        log.warning("aborting the transaction: %s; rewinding to the committed positions", why)
        if producer.open:
            try:
                self._call("abort_transaction", producer.inner.abort_transaction)
            except _AbortError as exc:  # an abort that cannot finish: the producer is unusable
                producer.fatal = exc
                raise ProcessorMustRestartError(f"abort_transaction failed: {exc}") from exc
        producer.ended()
        self._metrics.increment("transaction_aborts")
        self.rewind()

    def _call(self, what: str, call: Callable[[float], None]) -> None:
        """Run a transactional call, each try bounded, retriable errors tried again
        until ``transaction_call_timeout`` passed. Fatal → ProcessorMustRestartError;
        abortable, or out of time → _AbortError."""
        clock = self._clock
        bound = self._config.transaction_call_timeout
        deadline = clock.now() + bound
        while True:
            try:
                call(max(deadline - clock.now(), 0.001))
            except TransactionError as exc:
                if exc.fatal:
                    self.producer.fatal = exc
                    raise ProcessorMustRestartError(
                        f"{what} failed fatally ({exc}): the producer was fenced or is "
                        "unusable; nothing more is committed, restart the process"
                    ) from exc
                if exc.abortable or not exc.retriable:
                    raise _AbortError(f"{what}: {exc}") from exc
                if clock.now() + _RETRY_PAUSE >= deadline:
                    raise _AbortError(f"{what} not done within {bound} s: {exc}") from exc
                log.info("%s failed retriably (%s); trying again", what, exc)
                clock.sleep(_RETRY_PAUSE)
            else:
                return


def _ms(config: dict[str, object], key: str, default: int) -> int | None:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def check_transactional_args(consumer: ConsumerPort, producer: Any, cfg: ProcessorConfig) -> None:
    """Raise :class:`ConfigError` unless the clients fit TRANSACTIONAL mode."""
    if cfg.commit_mode is not CommitMode.TRANSACTIONAL:
        return
    if not isinstance(producer, TransactionalProducerPort):
        raise ConfigError(
            "producer",
            "commit_mode is TRANSACTIONAL but the producer is not a TransactionalProducerPort "
            "(init/begin/send_offsets/commit/abort_transaction); configure a transactional.id "
            "and use the transactional adapter",
        )
    if not isinstance(consumer, TransactionalConsumerPort):
        raise ConfigError(
            "consumer",
            "commit_mode is TRANSACTIONAL but the consumer is not a TransactionalConsumerPort "
            "(group_metadata() and seek() are needed for fencing and the rewind after an abort)",
        )
    pconfig = getattr(producer, "config", None)
    pconfig = dict(pconfig) if pconfig is not None else {}
    if pconfig and not pconfig.get("transactional.id"):
        raise ConfigError("transactional.id", "is missing: TRANSACTIONAL mode needs one")
    timeout_ms = _ms(pconfig, "transaction.timeout.ms", 60_000)
    need = cfg.transaction_interval + cfg.transaction_call_timeout
    if timeout_ms is None or timeout_ms / 1000 <= need:
        raise ConfigError(
            "transaction.timeout.ms",
            f"is {pconfig.get('transaction.timeout.ms')!r}: it must exceed "
            f"transaction_interval + transaction_call_timeout ({need:g} s), or the broker "
            "aborts transactions before the Processor commits them",
        )
    poll_ms = _ms(dict(consumer.config), "max.poll.interval.ms", 300_000)
    if poll_ms is not None and timeout_ms > poll_ms:
        log.warning(
            "transaction.timeout.ms (%d) > max.poll.interval.ms (%d): after a crash, the "
            "open transaction holds back read_committed readers of the outputs until it "
            "times out, longer than the group waits for the member",
            timeout_ms,
            poll_ms,
        )
    iso = consumer.config.get("isolation.level", "read_committed")
    if iso != "read_committed":
        log.warning(
            "the consumer reads %s: aborted upstream transactions are processed too",
            iso,
        )
    log.info(
        "TRANSACTIONAL mode: downstream consumers of the outputs must read with "
        "isolation.level=read_committed, or they see aborted outputs (duplicates)"
    )


def rewind_position(part: Part) -> StoredPosition | None:
    """Where a rewind seeks ``part``: its committed position, else the first offset
    polled in the epoch (nothing below it was delivered), else nowhere."""
    if part.last_committed is not None:
        return StoredPosition(part.tp, part.last_committed[0])
    if part.first_polled is not None:
        return StoredPosition(part.tp, part.first_polled)
    return None


def seek_all(consumer: TransactionalConsumerPort, positions: list[StoredPosition]) -> None:
    for sp in positions:
        try:
            consumer.seek(sp)
        except OffsetLedgerError as exc:  # e.g. revoked meanwhile: its new owner reads it
            log.warning("seek of %s to %d failed: %s", sp.tp, sp.position, exc)

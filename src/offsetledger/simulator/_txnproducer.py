"""SimTransactionalProducer: a SimProducer with a ``transactional.id``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from offsetledger.core import (
    BrokerErrorInfo,
    DeliveryCallback,
    DeliveryReport,
    Header,
    Outbound,
    ReportCallback,
    StoredPosition,
    TransactionError,
)
from offsetledger.core._errors import ConfigError
from offsetledger.simulator._context import SimContext
from offsetledger.simulator._errors import ProcessCrashed
from offsetledger.simulator._producer import SimProducer
from offsetledger.simulator._transactions import GroupMetadata, Transaction

__all__ = ["SimTransactionalProducer"]

_DEFAULT_TXN_TIMEOUT_MS = 60_000


def _parse(config: Mapping[str, object] | None) -> tuple[str, int, dict[str, object]]:
    rest = dict(config or {})
    tid = rest.pop("transactional.id", None)
    if not isinstance(tid, str) or not tid.strip():
        raise ConfigError(
            "transactional.id",
            f"required for a transactional producer, a non-empty string; got {tid!r}",
        )
    timeout = rest.pop("transaction.timeout.ms", _DEFAULT_TXN_TIMEOUT_MS)
    if (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not 1000 <= timeout <= 3_600_000
    ):
        raise ConfigError(
            "transaction.timeout.ms", f"expected an int within [1000, 3600000], got {timeout!r}"
        )
    idem = rest.get("enable.idempotence", True)
    if idem in (False, "false", "False", 0):
        raise ConfigError(
            "enable.idempotence", "a transactional producer is idempotent; do not set it to false"
        )
    rest["enable.idempotence"] = True
    return tid, timeout, rest


class SimTransactionalProducer(SimProducer):
    """A transactional producer in a :class:`World`; implements
    :class:`offsetledger.core.TransactionalProducerPort` (and ``ProducerPort``).

    * Configuration: ``transactional.id`` (required), ``transaction.timeout.ms``
      (default 60000); idempotence is implied and may not be turned off.
    * :meth:`init_transactions` fences every older instance of the id (their next
      call raises a fatal ``PRODUCER_FENCED``; the broker refuses their writes) and
      aborts the open transaction left by one (a crashed or a zombie process).
    * :meth:`produce` outside a transaction raises ``TransactionError`` (librdkafka:
      ``_STATE``); inside, writes are invisible to read_committed readers until the
      commit. A failed delivery inside the transaction makes it abortable: the
      commit raises an abortable error.
    * :meth:`send_offsets_to_transaction` checks the consumer's group metadata at
      once (KIP-447): stale (a newer generation or member epoch, an unknown member)
      → abortable error (librdkafka reports ``ILLEGAL_GENERATION`` /
      ``UNKNOWN_MEMBER_ID`` for TxnOffsetCommit as abortable).
    * :meth:`commit_transaction` flushes (reports served) then commits: markers,
      visibility and the sent positions at once. Not flushed within ``timeout``:
      retriable ``_TIMED_OUT``, the transaction stays open and the call may be
      repeated. :meth:`abort_transaction` purges queued messages (reports fail with
      ``_PURGE_QUEUE``), then aborts.
    * Faults: ``txn_coordinator_unavailable`` (a coordinator call waits its timeout
      of virtual time, then raises a retriable ``COORDINATOR_NOT_AVAILABLE``; nothing
      changed), ``txn_abortable`` (a commit raises an abortable error;
      the transaction stays open), ``txn_fenced`` (at a coordinator call the producer
      finds itself fenced: another instance took the id; its open transaction is
      aborted; fatal), and ``crash`` (the open transaction stays open on the
      coordinator until the id is initialised again or ``transaction.timeout.ms``).
    * After ``transaction.timeout.ms`` the coordinator aborts the open transaction
      and bumps the epoch: the producer's next call is fatal (librdkafka reports
      ``INVALID_PRODUCER_EPOCH`` as fatal; KIP-588's recovery is not modelled).

    Departures: a coordinator call takes no virtual time unless a fault says so;
    ``init_transactions`` never waits for the previous instance's abort to finish.
    """

    _transactional = True

    def __init__(
        self, world: SimContext, config: Mapping[str, object] | None, name: str, member: str
    ) -> None:
        tid, timeout_ms, rest = _parse(config)
        super().__init__(world, rest, name, member)
        self.transactional_id = tid
        self.transaction_timeout_ms = timeout_ms
        self._effective = type(self._effective)(
            {
                **self._effective,
                "transactional.id": tid,
                "transaction.timeout.ms": timeout_ms,
            }
        )
        self._coordinator = world.cluster.transactions
        self._epoch: int | None = None
        self._txn: Transaction | None = None
        self._failed: BrokerErrorInfo | None = None

    @property
    def epoch(self) -> int | None:
        """The producer epoch from :meth:`init_transactions` (None before)."""
        return self._epoch

    @property
    def in_transaction(self) -> bool:
        return self._txn is not None

    # -- TransactionalProducerPort ---------------------------------------------------

    def init_transactions(self, timeout: float) -> None:
        self._usable()
        if self._epoch is not None:
            raise TransactionError("_STATE", "init_transactions was already called", fatal=True)
        self._coordinator_call("init_transactions", timeout)
        self._epoch = self._coordinator.init(self.transactional_id, self.name)

    def begin_transaction(self) -> None:
        self._usable()
        epoch = self._current()
        if self._txn is not None:
            raise TransactionError("_STATE", "a transaction is already in progress")
        self._failed = None
        self._txn = self._coordinator.begin(
            self.transactional_id, epoch, self.name, self.transaction_timeout_ms
        )

    def send_offsets_to_transaction(
        self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
    ) -> None:
        self._usable()
        txn = self._open("send_offsets_to_transaction")
        if not isinstance(group_metadata, GroupMetadata):
            raise TypeError(
                "group_metadata must come from SimConsumer.group_metadata(), "
                f"got {group_metadata!r}"
            )
        self._coordinator_call("send_offsets_to_transaction", timeout)
        error = self._coordinator.add_offsets(txn, group_metadata, list(positions))
        if error is not None:
            raise TransactionError(
                error.name, f"send_offsets_to_transaction: {error.message}", abortable=True
            )

    def commit_transaction(self, timeout: float) -> None:
        self._usable()
        txn = self._open("commit_transaction")
        if self.flush(timeout):
            raise TransactionError(
                "_TIMED_OUT",
                "commit_transaction: outstanding messages not delivered in time",
                retriable=True,
            )
        self._txn_alive(txn)
        if self._failed is not None:
            raise TransactionError(
                "_PREV_IN_ERROR",
                f"a message of the transaction failed: {self._failed.name}; abort it",
                abortable=True,
            )
        faults = self._world.faults
        if faults.armed("txn_abortable") and faults.fires("txn_abortable", self.name):
            raise TransactionError(
                "TRANSACTION_ABORTABLE", "commit_transaction: fault; abort it", abortable=True
            )
        self._coordinator_call("commit_transaction", timeout)
        self._coordinator.end(txn, commit=True, reason="commit")
        self._txn = None

    def abort_transaction(self, timeout: float) -> None:
        self._usable()
        txn = self._open("abort_transaction")
        self._purge()
        self._serve()
        self._coordinator_call("abort_transaction", timeout)
        if self._coordinator.is_open(txn):
            self._coordinator.end(txn, commit=False, reason="abort")
        self._txn = None
        self._failed = None

    # -- ProducerPort ----------------------------------------------------------------

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        self._usable()
        self._current()
        if self._txn is None:
            raise TransactionError(
                "_STATE", "produce outside a transaction: begin_transaction first"
            )
        super().produce(message, self._watch(on_delivery))

    def produce_many(
        self,
        messages: Sequence[Outbound],
        on_report: ReportCallback,
        extra_headers: Sequence[tuple[Header, ...]] | None = None,
    ) -> None:
        """As :func:`offsetledger.core.produce_many` (one :meth:`produce` each)."""
        for i, given in enumerate(messages):
            message = given
            if extra_headers is not None and extra_headers[i]:
                message = Outbound(
                    given.topic,
                    value=given.value,
                    key=given.key,
                    headers=given.headers + extra_headers[i],
                    partition=given.partition,
                )
            self.produce(message, _Indexed(on_report, i))

    # -- internals -------------------------------------------------------------------

    def _watch(self, on_delivery: DeliveryCallback) -> DeliveryCallback:
        def report(rep: DeliveryReport) -> None:
            if rep.error is not None and self._failed is None:
                self._failed = rep.error
            on_delivery(rep)

        return report

    def _usable(self) -> None:
        if self._crashed:
            raise ProcessCrashed(self.member)
        self._check()

    def _current(self) -> int:
        """The epoch, when still the id's current one; else fatal (fenced)."""
        if self._epoch is None:
            raise TransactionError("_STATE", "init_transactions first", fatal=True)
        if not self._coordinator.is_current(self.transactional_id, self._epoch):
            self._txn = None
            raise TransactionError(
                "PRODUCER_FENCED",
                f"transactional.id {self.transactional_id!r}: a newer instance (or the "
                "transaction timeout) fenced this producer; close it and restart",
                fatal=True,
            )
        return self._epoch

    def _open(self, what: str) -> Transaction:
        self._current()
        if self._txn is None:
            raise TransactionError("_STATE", f"{what}: no transaction in progress")
        return self._txn

    def _txn_alive(self, txn: Transaction) -> None:
        if not self._coordinator.is_open(txn):
            self._current()  # the coordinator aborted it: fenced
            raise TransactionError("_STATE", "the transaction is no longer open", fatal=True)

    def _coordinator_call(self, what: str, timeout: float) -> None:
        faults = self._world.faults
        if faults.armed("txn_fenced") and faults.fires("txn_fenced", self.name):
            self._coordinator.fence(self.transactional_id)
            self._current()
        if faults.armed("txn_coordinator_unavailable") and faults.fires(
            "txn_coordinator_unavailable", self.name
        ):
            self._world.clock.advance(timeout)
            if self._crashed:
                raise ProcessCrashed(self.member)
            raise TransactionError(
                "COORDINATOR_NOT_AVAILABLE",
                f"{what}: the transaction coordinator is not available (fault)",
                retriable=True,
            )
        if self._epoch is not None:
            self._current()

    def _purge(self) -> None:
        """Fail every message not yet written (librdkafka's purge on abort)."""
        error = BrokerErrorInfo("_PURGE_QUEUE", "purged by abort_transaction")
        items = [*self._queue, *self._deferred]
        items += [i for waiting in self._blocked.values() for i in waiting]
        items += list(self._held.values())
        seen: set[int] = set()
        for item in items:
            if id(item) in seen:
                continue
            seen.add(id(item))
            self._ready.append(
                (DeliveryReport(item.message, error, item.partition, None), item.callback)
            )
        self._queue.clear()
        self._deferred.clear()
        self._blocked.clear()
        self._held.clear()

    def _refusal(self) -> BrokerErrorInfo | None:
        txn = self._txn
        if (
            txn is None
            or self._epoch is None
            or not self._coordinator.is_current(self.transactional_id, self._epoch)
            or not self._coordinator.is_open(txn)
        ):
            return BrokerErrorInfo(
                "PRODUCER_FENCED", "the broker refused a write of a fenced epoch"
            )
        return None

    def _write(self, msg: Outbound, partition: int) -> int:
        offset = super()._write(msg, partition)
        assert self._txn is not None
        self._coordinator.write(self._txn, msg.topic, partition, offset)
        return offset


class _Indexed:
    __slots__ = ("index", "on_report")

    def __init__(self, on_report: ReportCallback, index: int) -> None:
        self.on_report = on_report
        self.index = index

    def __call__(self, report: DeliveryReport) -> None:
        self.on_report(self.index, report.error)

"""The transaction coordinator of the simulated cluster.

One coordinator for every ``transactional.id`` (Kafka spreads them over the
partitions of ``__transaction_state``; one is enough for the semantics):

* :meth:`TransactionCoordinator.init` (``InitProducerId``) bumps the id's producer
  epoch. Every call of an instance with an older epoch is then fenced (it raises a
  fatal ``PRODUCER_FENCED``), and the id's open transaction, if any, is aborted.
* A transaction's writes make it *open* on each partition it touched from its
  first offset there: the partition's last stable offset (LSO) is the first offset
  of its earliest open transaction (:attr:`PartitionLog.lso`).
* Commit or abort writes one control marker into every partition touched (an
  offset no consumer ever returns: a gap) and closes the transaction there; the
  records of an aborted one are marked aborted. A commit also commits the positions
  sent with :meth:`add_offsets` to their group, in the same step.
* :meth:`add_offsets` (``TxnOffsetCommit``, KIP-447) checks the consumer's group
  metadata like a commit is checked (generation, or member epoch with
  ``group.protocol=consumer``, and member id) *when it is sent*; a stale one is
  refused and the transaction must abort. Until the transaction ends the positions
  are *pending*: :meth:`unstable` says so, and a read_committed consumer's
  committed-offset fetch (``require_stable``) waits for it.
* ``transaction.timeout.ms`` after :meth:`begin`, a still open transaction is
  aborted by the coordinator, which bumps the epoch (the producer is fenced, as
  librdkafka reports a fatal ``INVALID_PRODUCER_EPOCH`` then).

Departures from Kafka: the transaction starts on the coordinator at
``begin_transaction`` (Kafka: at the first ``AddPartitionsToTxn`` or
``AddOffsetsToTxn``), so its timeout runs from there; markers are written at once
(Kafka writes them asynchronously after ``EndTxn`` returns, the LSO moving when they
land; clients cannot tell the difference except by timing); there is no two-phase
``PREPARE_COMMIT`` state a coordinator failover could observe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from offsetledger.core import BrokerErrorInfo, CommittedPosition, StoredPosition, TopicPartition
from offsetledger.history import Append, Commit, TxnBegin, TxnEnd
from offsetledger.simulator._clock import SimClock, Timer

if TYPE_CHECKING:
    from offsetledger.simulator._context import Cluster, Recorder

__all__ = ["GroupMetadata", "Transaction", "TransactionCoordinator"]


@attrs.frozen
class GroupMetadata:
    """What ``consumer_group_metadata()`` returns in the simulator: the group, the
    member (its name and member id) and its generation (classic) or member epoch
    (KIP-848) when it was asked for. Opaque to the runtime, as in Kafka."""

    group_id: str
    member: str
    member_id: str | None
    generation: int


class Transaction:
    """One open transaction of a ``transactional.id`` at a producer epoch."""

    __slots__ = (
        "by",
        "epoch",
        "group",
        "positions",
        "timer",
        "transactional_id",
        "writes",
    )

    def __init__(self, transactional_id: str, epoch: int, by: str) -> None:
        self.transactional_id = transactional_id
        self.epoch = epoch
        self.by = by
        #: (topic, partition) -> offsets written, in order
        self.writes: dict[tuple[str, int], list[int]] = {}
        self.group: GroupMetadata | None = None
        self.positions: dict[TopicPartition, StoredPosition] = {}
        self.timer: Timer | None = None


class TransactionCoordinator:
    """Producer epochs and open transactions per ``transactional.id`` (see the module)."""

    def __init__(self, cluster: Cluster, clock: SimClock, recorder: Recorder) -> None:
        self._cluster = cluster
        self._clock = clock
        self._recorder = recorder
        #: transactional.id -> its current producer epoch
        self.epochs: dict[str, int] = {}
        #: transactional.id -> its open transaction
        self.open: dict[str, Transaction] = {}
        #: (group id, partition) -> the open transaction holding a pending offset commit
        self._pending: dict[tuple[str, TopicPartition], Transaction] = {}

    # -- producer side ---------------------------------------------------------------

    def init(self, transactional_id: str, by: str) -> int:
        """``InitProducerId``: a new epoch for ``transactional_id``; aborts the open
        transaction of an older instance (reason ``fenced``). Returns the epoch."""
        found = self.open.get(transactional_id)
        if found is not None:
            self.end(found, commit=False, reason="fenced")
        epoch = self.epochs.get(transactional_id, -1) + 1
        self.epochs[transactional_id] = epoch
        return epoch

    def fence(self, transactional_id: str) -> None:
        """Another instance took over (the ``txn_fenced`` fault): bump the epoch."""
        found = self.open.get(transactional_id)
        if found is not None:
            self.end(found, commit=False, reason="fenced")
        self.epochs[transactional_id] = self.epochs.get(transactional_id, -1) + 1

    def is_current(self, transactional_id: str, epoch: int) -> bool:
        return self.epochs.get(transactional_id) == epoch

    def begin(self, transactional_id: str, epoch: int, by: str, timeout_ms: int) -> Transaction:
        txn = Transaction(transactional_id, epoch, by)
        self.open[transactional_id] = txn
        self._recorder.record(
            TxnBegin(time=self._clock.now(), by=by, transactional_id=transactional_id, epoch=epoch)
        )

        def expire() -> None:
            txn.timer = None
            if self.open.get(transactional_id) is txn:
                self.end(txn, commit=False, reason="timeout")
                # the coordinator bumps the epoch: the producer is fenced
                self.epochs[transactional_id] = self.epochs.get(transactional_id, -1) + 1

        txn.timer = self._clock.call_later(timeout_ms / 1000, expire)
        return txn

    def is_open(self, txn: Transaction) -> bool:
        return self.open.get(txn.transactional_id) is txn

    def write(self, txn: Transaction, topic: str, partition: int, offset: int) -> None:
        """Record that ``txn`` wrote ``offset``: the partition is open from its first one."""
        key = (topic, partition)
        offsets = txn.writes.get(key)
        if offsets is None:
            txn.writes[key] = offsets = []
            self._cluster.partition_log(topic, partition).open_txns[txn.transactional_id] = offset
        offsets.append(offset)

    def add_offsets(
        self, txn: Transaction, group: GroupMetadata, positions: Sequence[StoredPosition]
    ) -> BrokerErrorInfo | None:
        """``TxnOffsetCommit``: check the group metadata now (KIP-447) and hold the
        positions until the transaction ends; an error when it is stale."""
        g = self._cluster.group(group.group_id)
        error = g._commit_error(group.member, group.member_id, group.generation)
        if error is not None:
            return error
        if txn.group is not None and txn.group.group_id != group.group_id:
            return BrokerErrorInfo(
                "INVALID_TXN_STATE",
                f"the transaction already holds offsets of group {txn.group.group_id!r}",
            )
        txn.group = group
        for sp in positions:
            txn.positions[sp.tp] = sp
            self._pending[(group.group_id, sp.tp)] = txn
        return None

    def end(self, txn: Transaction, *, commit: bool, reason: str) -> None:
        """Commit or abort ``txn``: markers, visibility, and (commit) its positions."""
        if self.open.get(txn.transactional_id) is not txn:
            raise RuntimeError(f"transaction of {txn.transactional_id!r} is not open")
        del self.open[txn.transactional_id]
        if txn.timer is not None:
            txn.timer.cancel()
            txn.timer = None
        now = self._clock.now()
        record = self._recorder.record
        writes: list[tuple[str, int, int]] = []
        for (topic, partition), offsets in txn.writes.items():
            log = self._cluster.partition_log(topic, partition)
            log.open_txns.pop(txn.transactional_id, None)
            if not commit:
                log.aborted.update(offsets)
            marker = log.append_control()
            record(
                Append(
                    time=now,
                    by=txn.by,
                    topic=topic,
                    partition=partition,
                    offset=marker,
                    control=True,
                )
            )
            writes.extend((topic, partition, o) for o in offsets)
        group = txn.group
        for sp in txn.positions.values():
            assert group is not None
            if self._pending.get((group.group_id, sp.tp)) is txn:
                del self._pending[(group.group_id, sp.tp)]
        positions = tuple(
            (sp.tp.topic, sp.tp.partition, sp.position)
            for sp in sorted(txn.positions.values(), key=lambda s: s.tp)
        )
        record(
            TxnEnd(
                time=now,
                by=txn.by,
                transactional_id=txn.transactional_id,
                epoch=txn.epoch,
                committed=commit,
                reason=reason,
                group=None if group is None else group.group_id,
                positions=positions,
                writes=tuple(writes),
            )
        )
        if commit and group is not None:
            g = self._cluster.group(group.group_id)
            for sp in sorted(txn.positions.values(), key=lambda s: s.tp):
                g.committed[sp.tp] = CommittedPosition(
                    sp.tp, sp.position, sp.metadata, sp.leader_epoch
                )
                record(
                    Commit(
                        time=now,
                        member=group.member,
                        generation=group.generation,
                        topic=sp.tp.topic,
                        partition=sp.tp.partition,
                        position=sp.position,
                        metadata=sp.metadata,
                    )
                )

    # -- consumer side ---------------------------------------------------------------

    def unstable(self, group_id: str, tp: TopicPartition) -> bool:
        """Whether an open transaction holds a pending offset commit for ``tp``."""
        return (group_id, tp) in self._pending

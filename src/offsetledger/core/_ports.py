"""Ports: the small interfaces the runtime drives. The confluent-kafka adapter and
the simulator implement the same ports; their docstrings state the semantics both
must honour.

One rule for offsets: every stored, committed or reported offset here is a
*position*, the offset of the next record to read (last processed offset + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar, runtime_checkable

from offsetledger.core._types import (
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    DeliveryReport,
    Header,
    Outbound,
    Record,
    StoredPosition,
    TopicPartition,
)

__all__ = [
    "AssignmentCallback",
    "Clock",
    "ConsumerPort",
    "DeliveryCallback",
    "Executor",
    "ProcessingObserver",
    "ProducerPort",
    "ReportCallback",
    "TransactionalConsumerPort",
    "TransactionalProducerPort",
    "produce_many",
]

T = TypeVar("T")

AssignmentCallback = Callable[[Sequence[TopicPartition]], None]
DeliveryCallback = Callable[[DeliveryReport], None]
#: ``on_report(i, error)`` of :meth:`ProducerPort.produce_many`: message ``i`` was
#: acknowledged (``error`` None) or failed.
ReportCallback = Callable[[int, BrokerErrorInfo | None], None]


@runtime_checkable
class ConsumerPort(Protocol):
    """A group consumer with manual offset storage (``enable.auto.offset.store=false``).

    Semantics every implementation honours:

    * Callbacks given to :meth:`subscribe` run *inside* :meth:`poll`, on the caller's
      thread: ``on_assign`` with newly assigned partitions, ``on_revoke`` before
      partitions are taken away in an orderly rebalance (the callee may still commit
      them), ``on_lost`` when the partitions were already taken (session timeout,
      ``max.poll.interval.ms`` exceeded, fenced): they must not be committed.
    * :meth:`poll` returns at most ``max_records`` records, in offset order within a
      partition; an empty list when nothing arrived within ``timeout`` seconds.
    * :meth:`store` records positions to be committed later (by auto-commit or by
      :meth:`commit` with no arguments). Storing for a partition not currently
      assigned raises :class:`~offsetledger.core.PartitionNotAssignedError`. Stored
      positions are forgotten when a partition is (re)assigned.
    * :meth:`commit` is synchronous and reports a result per partition; it never
      hides a partition's error. With ``positions=None`` it commits the stored ones.
    * :meth:`committed` returns the group's committed positions with metadata.
    * :attr:`config` is the client's effective configuration, with librdkafka's key
      names and the client's defaults filled in, so a runtime can check it.
    """

    @property
    def config(self) -> Mapping[str, object]: ...

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None: ...

    def poll(self, max_records: int, timeout: float) -> list[Record]: ...

    def store(self, positions: Iterable[StoredPosition]) -> None: ...

    def commit(self, positions: Sequence[StoredPosition] | None = None) -> list[CommitResult]: ...

    def committed(
        self, partitions: Collection[TopicPartition], timeout: float
    ) -> dict[TopicPartition, CommittedPosition]: ...

    def pause(self, partitions: Collection[TopicPartition]) -> None: ...

    def resume(self, partitions: Collection[TopicPartition]) -> None: ...

    def assignment(self) -> frozenset[TopicPartition]: ...

    def close(self) -> None:
        """Leave the group in an orderly way: revoke callbacks run (with
        auto-commit on, stored positions are committed) and the member leaves."""
        ...


@runtime_checkable
class ProducerPort(Protocol):
    """A buffered producer.

    :meth:`produce` enqueues a message and returns at once; ``on_delivery`` is
    called exactly once per message with its :class:`DeliveryReport`, from inside
    :meth:`poll` or :meth:`flush` on the caller's thread. A message is only durable
    once its report says ``ok``. :meth:`flush` waits up to ``timeout`` seconds for
    every outstanding report and returns how many are still outstanding.
    """

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None: ...

    # Optional fast path (not part of the structural check, so ports without it
    # still satisfy the Protocol; call it through :func:`produce_many`):
    #
    # def produce_many(self, messages: Sequence[Outbound], on_report: ReportCallback,
    #                  extra_headers: Sequence[tuple[Header, ...]] | None = None) -> None
    #
    # Produces ``messages`` in order; later (from poll/flush) calls
    # ``on_report(i, None)`` when message ``i`` is acknowledged and
    # ``on_report(i, error)`` when it failed, exactly once per message.
    # ``extra_headers`` is None or one tuple per message, sent after that message's
    # own headers (already validated: str names, bytes or None values). A message the
    # client refuses at once is reported failed synchronously (retriable unless the
    # client says otherwise); the others are still produced.

    def poll(self, timeout: float) -> int: ...

    def flush(self, timeout: float) -> int: ...


@runtime_checkable
class TransactionalConsumerPort(ConsumerPort, Protocol):
    """A consumer that can take part in a producer's transaction (KIP-447).

    * :meth:`group_metadata` is the opaque group state (group id, generation,
      member id) that :meth:`TransactionalProducerPort.send_offsets_to_transaction`
      sends along, so the group coordinator fences positions from a member that is
      no longer in the current generation.
    * :meth:`seek` moves the fetch position of an assigned partition to
      ``position``; the next :meth:`poll` returns records from there. Used after an
      abort to rewind to the committed position.
    * Configured with ``isolation.level=read_committed`` it never returns records of
      aborted or still open transactions, and never transaction markers (their
      offsets are gaps).
    """

    def group_metadata(self) -> object: ...

    def seek(self, position: StoredPosition) -> None: ...


@runtime_checkable
class TransactionalProducerPort(ProducerPort, Protocol):
    """A producer with a ``transactional.id``: outputs and input positions commit or
    abort together.

    Call order: :meth:`init_transactions` once (fences older instances with the same
    id and aborts their open transaction), then per transaction
    :meth:`begin_transaction`, any number of ``produce``/``produce_many``, at most
    one :meth:`send_offsets_to_transaction` per partition set, and either
    :meth:`commit_transaction` or :meth:`abort_transaction`. Every call is bounded by
    ``timeout`` seconds and raises :class:`~offsetledger.core.TransactionError`
    (``fatal``, ``abortable`` or ``retriable``) on failure; a call that did not
    finish in time raises a retriable one. :meth:`commit_transaction` flushes the
    outstanding messages first; their delivery reports are served before it
    returns. After :meth:`abort_transaction` every message of the transaction is
    reported failed (or was already reported acknowledged but is invisible to
    ``read_committed`` readers).
    """

    def init_transactions(self, timeout: float) -> None: ...

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
    ) -> None: ...

    def commit_transaction(self, timeout: float) -> None: ...

    def abort_transaction(self, timeout: float) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Monotonic time in seconds. The core never reads a clock itself."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@runtime_checkable
class Executor(Protocol):
    """Where handlers run.

    :meth:`submit` schedules a task and returns a Future that is completed when
    the task has run. :meth:`wait` blocks up to ``timeout`` seconds until at least
    one of ``futures`` is done (a thread pool waits; a deterministic executor runs
    a seeded choice of pending tasks and advances its virtual clock). Completion
    order is not submission order. :meth:`shutdown` stops accepting tasks; with
    ``cancel_pending`` the tasks not yet started are cancelled.
    """

    def submit(self, task: Callable[[], T]) -> Future[T]: ...

    def wait(self, futures: Collection[Future[Any]], timeout: float) -> None: ...

    def shutdown(self, *, cancel_pending: bool = False) -> None: ...


@runtime_checkable
class ProcessingObserver(Protocol):
    """Told when a record is finished: called once per record at its DONE edge, on
    the Processor's thread, before the offset counts as finished in the ledger.

    ``outputs`` is how many outputs the handler returned for it (0: a filter, done
    with nothing to produce), their delivery acknowledged unless ``dead_lettered``;
    ``dead_lettered`` says the record went to the dead-letter topic instead (its
    write acknowledged). A record redelivered after a crash or rebalance may be
    reported again. The simulator's history records these as ``Done`` events.
    """

    def record_done(self, record: Record, outputs: int, dead_lettered: bool) -> None: ...


def produce_many(
    producer: ProducerPort,
    messages: Sequence[Outbound],
    on_report: ReportCallback,
    extra_headers: Sequence[tuple[Header, ...]] | None = None,
) -> None:
    """Produce ``messages`` through ``producer``'s ``produce_many`` when it has one,
    else one :meth:`ProducerPort.produce` per message (the same semantics: see the
    comment in :class:`ProducerPort`). A ``produce`` that raises reports that
    message failed (retriable) at once; the rest are still produced."""
    fast = getattr(producer, "produce_many", None)
    if fast is not None:
        fast(messages, on_report, extra_headers)
        return
    produce = producer.produce
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
        try:
            produce(message, _Report(on_report, i))
        except Exception as exc:  # e.g. a full local queue: a failed delivery
            on_report(i, BrokerErrorInfo(type(exc).__name__, str(exc), retriable=True))


class _Report:
    """A per-message delivery callback that forwards to ``on_report(i, error)``."""

    __slots__ = ("index", "on_report")

    def __init__(self, on_report: ReportCallback, index: int) -> None:
        self.on_report = on_report
        self.index = index

    def __call__(self, report: DeliveryReport) -> None:
        self.on_report(self.index, report.error)

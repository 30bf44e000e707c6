"""The consumer port over ``confluent_kafka.Consumer``: polling records, storing
and committing positions, flow control. Rebalance events are answered by
:mod:`._rebalance`."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from offsetledger.adapters.confluent._config import (
    _await_broker,
    _consumer_config,
    _create_client,
)
from offsetledger.adapters.confluent._convert import (
    _client_tp,
    _core_tp,
    record_of,
    records_until_error,
)
from offsetledger.adapters.confluent._errors import (
    _LIBRDKAFKA_LOG,
    _LOG,
    DEFAULT_CONNECT_TIMEOUT,
    _kafka_error,
    broker_error,
    error_info,
    import_confluent_kafka,
)
from offsetledger.adapters.confluent._offsets import (
    CommitWatch,
    client_positions,
    commit_results,
    committed_of,
)
from offsetledger.adapters.confluent._rebalance import Rebalance
from offsetledger.core import (
    AssignmentCallback,
    BrokerError,
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    PartitionNotAssignedError,
    Record,
    StoredPosition,
    TopicPartition,
)
from offsetledger.core._names import validate_topic_name

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["ConfluentConsumer"]

#: Client-level errors librdkafka reports through error_cb (logged there); when one
#: also comes back from consume() it is not logged a second time.
_REPORTED_BY_ERROR_CB = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT"})


class ConfluentConsumer:
    """:class:`~offsetledger.core.ConsumerPort` over ``confluent_kafka.Consumer``.

    ``config`` is a librdkafka configuration dict (``bootstrap.servers`` and
    ``group.id`` required). ``enable.auto.offset.store`` must be false or absent
    (it then defaults to false). Both group protocols are supported:
    ``group.protocol`` ``classic`` (default; eager or ``cooperative-sticky``) and
    ``consumer`` (KIP-848; ``session.timeout.ms``, ``heartbeat.interval.ms`` and
    ``partition.assignment.strategy`` are broker-side there and rejected).

    With ``connect_timeout`` (seconds) the constructor waits that long for a broker
    to answer and raises :class:`~offsetledger.core.BrokerError` otherwise, so an
    unreachable cluster is reported at once instead of as silent empty polls.

    :meth:`poll` raises :class:`~offsetledger.core.BrokerError` for consumer errors
    the application must act on (unknown topic, authorisation, auto.offset.reset=error,
    fatal errors); records fetched before the error are returned first, never
    dropped. ``_PARTITION_EOF`` is skipped; transient transport errors and
    ``_MAX_POLL_EXCEEDED`` (followed by ``on_lost``) are logged.
    """

    #: Consumer errors that are logged and skipped, not raised from poll.
    INFORMATIONAL_ERRORS = frozenset(
        {
            "_PARTITION_EOF",
            "_MAX_POLL_EXCEEDED",
            "_TRANSPORT",
            "_ALL_BROKERS_DOWN",
            "_RESOLVE",
            "_TIMED_OUT",
        }
    )

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        ck = import_confluent_kafka()
        conf, effective, cooperative = _consumer_config(config)
        self._user_error_cb: Callable[[Any], None] | None = conf.pop("error_cb", None)
        conf["error_cb"] = self._on_error
        self._commit_watch = CommitWatch(conf.pop("on_commit", None))
        conf["on_commit"] = self._commit_watch
        conf.setdefault("logger", _LIBRDKAFKA_LOG)
        self._config: Mapping[str, object] = MappingProxyType(effective)
        self._fatal: BrokerError | None = None
        self._pending: deque[confluent_kafka.Message] = deque()
        self._closed = False
        self._rebalance = Rebalance(cooperative, self._forget)
        #: Positions stored since each partition's assignment (what commit() with no
        #: arguments commits), kept to report per-partition commit results.
        self._stored: dict[TopicPartition, StoredPosition] = {}
        self._consumer: confluent_kafka.Consumer = _create_client(ck.Consumer, conf, "consumer")
        self._tp_class: type[confluent_kafka.TopicPartition] = ck.TopicPartition
        self._kafka_exception: type[Exception] = ck.KafkaException
        if connect_timeout is not None:
            try:
                _await_broker(
                    self._consumer,
                    str(effective.get("bootstrap.servers", "")),
                    connect_timeout,
                    "consumer",
                )
            except BrokerError:
                self._consumer.close()
                self._closed = True
                raise

    # -- properties ---------------------------------------------------------

    @property
    def config(self) -> Mapping[str, object]:
        """The effective configuration: the given keys (librdkafka names, booleans
        and integers parsed, callbacks left out) over librdkafka's defaults for
        the keys that matter to at-least-once processing."""
        return self._config

    @property
    def cooperative(self) -> bool:
        """Whether rebalances are incremental (cooperative-sticky or KIP-848)."""
        return self._rebalance.cooperative

    @property
    def client(self) -> confluent_kafka.Consumer:
        """The underlying confluent_kafka.Consumer (for diagnostics; do not store
        offsets through it)."""
        return self._consumer

    # -- errors -------------------------------------------------------------

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._fatal = broker_error(
                error, "fatal consumer error; close and recreate the consumer"
            )
        else:
            _LOG.warning("consumer error %s", error_info(error))
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    @property
    def commit_failures(self) -> int:
        """How many commits librdkafka reported as failed through its commit
        callback: every auto-commit (``enable.auto.commit``), whose result is
        otherwise seen nowhere; one count per partition that failed (or one per
        commit when the whole request failed). Failures of :meth:`commit` itself
        are returned as its results (and may be counted here as well)."""
        return self._commit_watch.failures

    @property
    def last_commit_error(self) -> BrokerErrorInfo | None:
        """The error of the most recent failed commit reported to the commit
        callback (None while none has failed)."""
        return self._commit_watch.last_error

    # -- rebalance ----------------------------------------------------------

    def _forget(self, parts: Iterable[TopicPartition]) -> None:
        gone = set(parts)
        for tp in gone:
            self._stored.pop(tp, None)
        if self._pending:
            self._pending = deque(
                m
                for m in self._pending
                if m.error() is not None
                or TopicPartition(str(m.topic()), int(m.partition() or 0)) not in gone
            )

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        """Subscribe to ``topics``; the callbacks run inside :meth:`poll` (and
        :meth:`close`) with core TopicPartitions. ``on_lost`` is used when
        librdkafka reports the assignment as lost."""
        if (
            isinstance(topics, str)
            or not topics
            or not all(isinstance(t, str) and t for t in topics)
        ):
            raise ValueError(f"topics must be a non-empty sequence of topic names, got {topics!r}")
        for topic in topics:
            if not topic.startswith("^"):  # "^..." is a regex subscription
                validate_topic_name(topic)
        rebalance = self._rebalance
        rebalance.on_assign, rebalance.on_revoke, rebalance.on_lost = on_assign, on_revoke, on_lost
        self._consumer.subscribe(
            list(topics),
            on_assign=rebalance.assigned_cb,
            on_revoke=rebalance.revoked_cb,
            on_lost=rebalance.lost_cb,
        )

    # -- consuming ----------------------------------------------------------

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds."""
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        self._raise_fatal()
        out: list[Record] = []
        pending = self._pending
        if not pending:
            batch = self._consumer.consume(num_messages=max_records, timeout=timeout)
            self._raise_fatal()
            out, stop = records_until_error(batch)
            if stop == len(batch):
                return out  # the common case: records only, converted in one loop
            pending.extend(batch[stop:])
        # error events, or records buffered behind one by an earlier poll
        record = record_of
        while pending and len(out) < max_records:
            msg = pending.popleft()
            error = msg.error()
            if error is not None:
                if error.name() in self.INFORMATIONAL_ERRORS:
                    if error.name() in _REPORTED_BY_ERROR_CB:
                        # librdkafka hands connection errors to error_cb as well,
                        # which logged this one already: once is enough
                        _LOG.debug("consumer error %s", error_info(error))
                    elif error.name() != "_PARTITION_EOF":
                        _LOG.warning("consumer error %s", error_info(error))
                    continue
                if out:
                    pending.appendleft(msg)
                    break  # hand out the records first; raise on the next poll
                where = f" for {msg.topic()}[{msg.partition()}]" if msg.topic() else ""
                raise broker_error(error, f"consumer error{where}")
            out.append(record(msg))
        return out

    #: The Record of a consumed (non-error) message (see ``_convert.record``).
    _record = staticmethod(record_of)

    # -- offsets ------------------------------------------------------------

    def _positions_tp(
        self, positions: Iterable[StoredPosition]
    ) -> list[confluent_kafka.TopicPartition]:
        return client_positions(self._tp_class, positions)

    def store(self, positions: Iterable[StoredPosition]) -> None:
        """Store positions for the next commit.

        As librdkafka does, the positions of assigned partitions are stored even
        when the call also names unassigned ones; those raise
        :class:`PartitionNotAssignedError` (after the others were stored)."""
        items = list(positions)
        if not items:
            return
        # checked against the assignment the adapter keeps (no librdkafka round trip
        # per call, see _rebalance); only a partition missing there is looked up
        assigned = self._rebalance.assigned
        missing = self._unassigned([p.tp for p in items if p.tp not in assigned])
        valid = [p for p in items if p.tp not in missing] if missing else items
        if valid:
            try:
                self._consumer.store_offsets(offsets=client_positions(self._tp_class, valid))
            except self._kafka_exception as exc:
                err = _kafka_error(exc)
                if err is not None and err.name() in ("_STATE", "_UNKNOWN_PARTITION"):
                    raise PartitionNotAssignedError(
                        f"cannot store positions for {', '.join(str(p.tp) for p in valid)}: "
                        f"{err.name()} ({err.str()}); the partitions are no longer assigned"
                    ) from exc
                if err is not None:
                    raise broker_error(err, "store_offsets failed") from exc
                raise
            for p in valid:
                self._stored[p.tp] = p
        if missing:
            raise PartitionNotAssignedError(
                f"cannot store positions for {', '.join(map(str, missing))}: not assigned to this "
                "consumer (revoked or lost; their records will be redelivered to the new owner)"
                + (
                    f"; the positions for {', '.join(str(p.tp) for p in valid)} were stored"
                    if valid
                    else ""
                )
            )

    def commit(self, positions: Sequence[StoredPosition] | None = None) -> list[CommitResult]:
        """Commit synchronously; one CommitResult per partition, errors included.

        With ``positions=None`` the stored positions are committed (an empty list
        when nothing is stored)."""
        self._raise_fatal()
        explicit = positions is not None
        try:
            if positions is not None:
                if not positions:
                    return []
                parts = self._consumer.commit(
                    offsets=self._positions_tp(positions), asynchronous=False
                )
            else:
                parts = self._consumer.commit(asynchronous=False)
        except self._kafka_exception as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            if err.name() == "_NO_OFFSET":
                return []
            wanted = list(positions) if positions is not None else list(self._stored.values())
            if not wanted:
                raise broker_error(err, "commit failed") from exc
            # librdkafka reports only the first failing partition's error for the call;
            # commit each partition alone to learn every partition's own outcome.
            return [self._commit_one(p, err) for p in wanted]
        results = commit_results(parts)
        for r in results:  # committed: forget stored positions it covers
            stored = self._stored.get(r.tp)
            if (
                r.ok
                and stored is not None
                and (not explicit or stored.position <= (r.position or 0))
            ):
                del self._stored[r.tp]
        return results

    def _commit_one(
        self, position: StoredPosition, first: confluent_kafka.KafkaError
    ) -> CommitResult:
        try:
            parts = self._consumer.commit(
                offsets=self._positions_tp([position]), asynchronous=False
            )
        except self._kafka_exception as exc:
            err = _kafka_error(exc) or first
            return CommitResult(position.tp, position.position, error_info(err))
        error = next((tp.error for tp in parts or [] if tp.error is not None), None)
        return CommitResult(position.tp, position.position, error_info(error) if error else None)

    def committed(
        self, partitions: Collection[TopicPartition], timeout: float
    ) -> dict[TopicPartition, CommittedPosition]:
        """The group's committed positions (None where nothing is committed),
        with metadata and leader epoch."""
        if not partitions:
            return {}
        try:
            parts = self._consumer.committed([_client_tp(tp) for tp in partitions], timeout=timeout)
        except self._kafka_exception as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            raise broker_error(
                err, f"committed() for {len(partitions)} partition(s) failed"
            ) from exc
        return committed_of(parts)

    # -- flow control and state ----------------------------------------------

    def _unassigned(self, candidates: Iterable[TopicPartition]) -> list[TopicPartition]:
        """Those of ``candidates`` (not in the kept assignment) that librdkafka does
        not hold either, sorted. The kept assignment never names a partition
        librdkafka does not hold (see _rebalance); this confirms the rest, so a
        partition assigned some other way is not refused."""
        gone = set(candidates)
        if gone:
            gone -= self.assignment()
        return sorted(gone)

    def _check_assigned(self, partitions: Collection[TopicPartition], what: str) -> None:
        assigned = self._rebalance.assigned
        missing = self._unassigned(tp for tp in partitions if tp not in assigned)
        if missing:
            raise PartitionNotAssignedError(
                f"cannot {what} {', '.join(map(str, missing))}: not assigned"
            )

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` (their position is kept)."""
        if partitions:
            self._check_assigned(partitions, "pause")
            self._consumer.pause([_client_tp(tp) for tp in partitions])

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        """Fetch again from paused ``partitions``."""
        if partitions:
            self._check_assigned(partitions, "resume")
            self._consumer.resume([_client_tp(tp) for tp in partitions])

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions currently assigned to this consumer."""
        return frozenset(_core_tp(tp) for tp in self._consumer.assignment())

    #: How long :meth:`close` polls, after unsubscribing, for the group to take the
    #: assignment back (seconds) before it closes anyway.
    LEAVE_TIMEOUT = 10.0
    #: How long :meth:`close` waits for librdkafka's own close (seconds); past it the
    #: close is left running in a daemon thread and a warning is logged.
    CLOSE_TIMEOUT = 30.0
    #: The poll wait of one step of the leave loop (seconds).
    _LEAVE_POLL = 0.05

    # -- transactions (TransactionalConsumerPort) -----------------------------

    def group_metadata(self) -> object:
        """``consumer_group_metadata()``: what ``send_offsets_to_transaction`` takes
        (KIP-447 fencing by generation and member id)."""
        try:
            return self._consumer.consumer_group_metadata()
        except self._kafka_exception as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            raise broker_error(err, "consumer_group_metadata() failed") from exc

    def seek(self, position: StoredPosition) -> None:
        """Fetch ``position.tp`` from ``position.position`` next (an assigned
        partition; librdkafka's ``seek`` takes the offset as is: a position).

        The next :meth:`poll` returns no record of ``position.tp`` fetched before
        the seek: librdkafka discards what it prefetched (its seek bumps the
        partition's op version), and the adapter drops the messages of that
        partition it buffered behind an error event (see :meth:`poll`)."""
        tp = position.tp
        self._check_assigned((tp,), "seek")
        (part,) = client_positions(self._tp_class, [position])
        try:
            self._consumer.seek(part)
        except self._kafka_exception as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            raise broker_error(err, f"seek({tp}, {position.position}) failed") from exc
        if self._pending:
            self._pending = deque(
                m for m in self._pending if m.topic() != tp.topic or m.partition() != tp.partition
            )

    def close(self) -> None:
        """Leave the group and close. Idempotent.

        1. on_revoke runs for the partitions this consumer holds, while it is still
           an assigned group member: a final commit inside it lands.
        2. It unsubscribes and polls (up to :attr:`LEAVE_TIMEOUT`) until nothing is
           assigned, answering the rebalance events that brings (the application is
           not called again; an evicted consumer gets on_lost instead, as in poll).
           A static member (``group.instance.id``) does not unsubscribe: it must not
           leave the group, which keeps its partitions for its restart.
        3. librdkafka's close runs (committing stored positions when auto-commit is
           on) in a daemon thread, waited for up to :attr:`CLOSE_TIMEOUT`; if it
           does not return a warning is logged and close() returns.

        Why: librdkafka serves a queued rebalance event inside its close, and an
        assign call answering it after its group handler terminated never gets a
        reply, so close() hung (about 1 in 12 runs of the real-broker tests;
        confluentinc/librdkafka#4884, #4527). Leaving the group first, while the
        handler runs, is the workaround librdkafka's maintainers point to; the
        thread bounds what is left. See ``_rebalance.Rebalance.revoke_before_close``
        for why on_revoke runs before, not from, librdkafka's close."""
        if self._closed:
            return
        self._closed = True
        consumer = self._consumer
        rebalance = self._rebalance
        try:
            rebalance.revoke_before_close(consumer)
            if rebalance.on_revoke is not None:  # subscribed
                if not self._static:
                    self._leave_group(consumer)
                if not rebalance.revoked_on_close and rebalance.assigned:
                    # evicted, and librdkafka did not report the loss while leaving
                    lost = sorted(rebalance.assigned)
                    rebalance.assigned.clear()
                    self._forget(lost)
                    if rebalance.on_lost is not None:
                        rebalance.on_lost(lost)
        finally:
            # from here on rebalance events are only answered: the application's
            # callbacks never run from librdkafka's close (nor from its thread)
            rebalance.revoked_on_close = True
            rebalance.assigned.clear()
            self._pending.clear()
            self._close_client(consumer)

    @property
    def _static(self) -> bool:
        return bool(str(self._config.get("group.instance.id") or "").strip())

    def _leave_group(self, consumer: confluent_kafka.Consumer) -> None:
        """Unsubscribe and poll until librdkafka holds no partition (bounded by
        :attr:`LEAVE_TIMEOUT`). Records fetched meanwhile are dropped: nothing was
        stored for them, so they are redelivered to the next owner."""
        try:
            consumer.unsubscribe()
        except (self._kafka_exception, RuntimeError) as exc:
            _LOG.debug("unsubscribe before close failed: %s", exc)
            return
        deadline = time.monotonic() + self.LEAVE_TIMEOUT
        while True:
            try:
                # serves the revoke (or lost) event the unsubscribe brings, and any
                # event queued before it
                consumer.consume(num_messages=1000, timeout=self._LEAVE_POLL)
                if not consumer.assignment():
                    return
            except (self._kafka_exception, RuntimeError) as exc:
                _LOG.debug("polling while leaving the group failed: %s", exc)
                return
            if time.monotonic() >= deadline:
                _LOG.warning(
                    "consumer still held partitions %.0f s after unsubscribing on close; "
                    "closing anyway",
                    self.LEAVE_TIMEOUT,
                )
                return

    def _close_client(self, consumer: confluent_kafka.Consumer) -> None:
        """librdkafka's close, bounded by :attr:`CLOSE_TIMEOUT` (see :meth:`close`)."""
        failure: list[BaseException] = []

        def run() -> None:
            try:
                consumer.close()
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        closer = threading.Thread(target=run, name="offsetledger-consumer-close", daemon=True)
        closer.start()
        closer.join(self.CLOSE_TIMEOUT)
        if closer.is_alive():
            _LOG.warning(
                "librdkafka's consumer close() did not return within %.0f s; it is left "
                "running in a daemon thread (a known librdkafka hang, "
                "confluentinc/librdkafka#4884); stored positions may not have been "
                "committed, and their records will be redelivered",
                self.CLOSE_TIMEOUT,
            )
            return
        if failure:
            raise failure[0]

    def __enter__(self) -> ConfluentConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

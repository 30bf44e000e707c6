"""Positions between the core and librdkafka, and the commit callback.

The one offset rule lives here: a :class:`~offsetledger.core.StoredPosition` is
already a position (next offset to read), and ``store_offsets(offsets=...)`` /
``commit(offsets=...)`` take it as given (no +1; only the ``message=`` form adds
1, and the adapter never uses it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from offsetledger.adapters.confluent._convert import _core_tp, _epoch
from offsetledger.adapters.confluent._errors import _LOG, broker_error, error_info
from offsetledger.core import (
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    StoredPosition,
    TopicPartition,
)

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["CommitWatch", "client_positions", "commit_results", "committed_of"]


def client_positions(
    tp_class: type[confluent_kafka.TopicPartition], positions: Iterable[StoredPosition]
) -> list[confluent_kafka.TopicPartition]:
    """librdkafka TopicPartitions carrying ``positions`` as they are (no +1), with
    commit metadata and leader epoch when given."""
    out: list[confluent_kafka.TopicPartition] = []
    for p in positions:
        tp = p.tp
        if p.metadata is None and p.leader_epoch is None:
            out.append(tp_class(tp.topic, tp.partition, p.position))
            continue
        # confluent-kafka rejects None for these two: leave them out instead
        extra: dict[str, Any] = {}
        if p.metadata is not None:
            extra["metadata"] = p.metadata
        if p.leader_epoch is not None:
            extra["leader_epoch"] = p.leader_epoch
        out.append(tp_class(tp.topic, tp.partition, p.position, **extra))
    return out


def commit_results(parts: Iterable[confluent_kafka.TopicPartition] | None) -> list[CommitResult]:
    """The per-partition results of a synchronous commit (partitions with nothing
    to commit left out)."""
    return [
        CommitResult(
            _core_tp(tp),
            tp.offset if tp.offset >= 0 else None,
            error_info(tp.error) if tp.error is not None else None,
        )
        for tp in parts or []
        if tp.offset >= 0 or tp.error is not None
    ]


def committed_of(
    parts: Iterable[confluent_kafka.TopicPartition],
) -> dict[TopicPartition, CommittedPosition]:
    """Committed positions as librdkafka's ``committed()`` returns them (None where
    nothing is committed); BrokerError for a partition that reports an error."""
    out: dict[TopicPartition, CommittedPosition] = {}
    for tp in parts:
        if tp.error is not None:
            raise broker_error(tp.error, f"committed position of {tp.topic}[{tp.partition}]")
        core = _core_tp(tp)
        out[core] = CommittedPosition(
            core,
            tp.offset if tp.offset >= 0 else None,
            metadata=tp.metadata or None,
            leader_epoch=_epoch(tp.leader_epoch),
        )
    return out


class CommitWatch:
    """librdkafka's commit callback (served inside poll): counts and logs failed
    commits, so an auto-commit that keeps failing (e.g. metadata above the
    broker's offset.metadata.max.bytes) is never silent; then calls the user's
    ``on_commit``, if the configuration named one."""

    def __init__(self, user_on_commit: Callable[[Any, Any], None] | None) -> None:
        self._user_on_commit = user_on_commit
        self.failures = 0
        self.last_error: BrokerErrorInfo | None = None

    def __call__(self, error: Any, partitions: Any) -> None:
        try:
            failed: list[tuple[str, BrokerErrorInfo]] = []
            if error is not None and error.name() != "_NO_OFFSET":
                failed.append(("", error_info(error)))
            if error is None:
                failed.extend(
                    (f"{tp.topic}[{tp.partition}]", error_info(tp.error))
                    for tp in partitions or []
                    if tp.error is not None
                )
            if failed:
                self.failures += len(failed)
                self.last_error = failed[-1][1]
                where = ", ".join(w for w, _ in failed if w)
                _LOG.warning(
                    "commit failed%s: %s (%d commit failure(s) so far)",
                    f" for {where}" if where else "",
                    failed[-1][1],
                    self.failures,
                )
        finally:
            if self._user_on_commit is not None:
                self._user_on_commit(error, partitions)

"""Small admin helpers over confluent-kafka for tests and the CLI: create topics,
read a whole topic, read a group's committed positions.

Every function takes the bootstrap servers and a timeout and never waits longer
than about that timeout; failures raise :class:`~offsetledger.core.BrokerError`
with Kafka's error name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from offsetledger.adapters.confluent._convert import record_of
from offsetledger.adapters.confluent._errors import (
    _LIBRDKAFKA_LOG,
    _kafka_error,
    broker_error,
    import_confluent_kafka,
)
from offsetledger.core import BrokerError, CommittedPosition, Record, TopicPartition

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["committed_positions", "create_topics", "read_topic", "topic_partitions"]


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    config: Mapping[str, str] | None = None,
    replication_factor: int = 1,
    exist_ok: bool = False,
    timeout: float = 30.0,
) -> None:
    """Create ``topics`` ({name: partition count}) with topic ``config`` applied to
    each (e.g. ``{"max.message.bytes": "1000"}``). With ``exist_ok`` an existing
    topic is left as it is."""
    ck = import_confluent_kafka()
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - optional dependency
    from confluent_kafka.cimpl import NewTopic as new_topic  # noqa: PLC0415, N813

    admin_config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _LIBRDKAFKA_LOG}
    admin = AdminClient(admin_config)
    futures = admin.create_topics(
        [
            new_topic(
                name,
                num_partitions=count,
                replication_factor=replication_factor,
                config=dict(config or {}),
            )
            for name, count in topics.items()
        ],
        request_timeout=timeout,
        operation_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except ck.KafkaException as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            if exist_ok and err.name() == "TOPIC_ALREADY_EXISTS":
                continue
            raise broker_error(err, f"creating topic {name!r} failed") from exc


def _metadata_client(bootstrap: str, group: str | None = None) -> confluent_kafka.Consumer:
    ck = import_confluent_kafka()
    return ck.Consumer(  # type: ignore[no-any-return]
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or "offsetledger-admin-reader",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "logger": _LIBRDKAFKA_LOG,
        }
    )


def _partitions(client: Any, topic: str, timeout: float) -> list[int]:
    ck = import_confluent_kafka()
    try:
        meta = client.list_topics(topic=topic, timeout=timeout)
    except ck.KafkaException as exc:
        err = _kafka_error(exc)
        if err is None:
            raise
        raise broker_error(err, f"metadata for topic {topic!r}") from exc
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        err = info.error if info is not None else None
        if err is not None:
            raise broker_error(err, f"topic {topic!r}")
        raise BrokerError("UNKNOWN_TOPIC_OR_PART", f"topic {topic!r} does not exist")
    return sorted(info.partitions)


def topic_partitions(bootstrap: str, topic: str, *, timeout: float = 10.0) -> list[TopicPartition]:
    """The partitions of ``topic``; BrokerError UNKNOWN_TOPIC_OR_PART if it does not exist."""
    client = _metadata_client(bootstrap)
    try:
        return [TopicPartition(topic, p) for p in _partitions(client, topic, timeout)]
    finally:
        client.close()


def read_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[Record]:
    """Every record of ``topic`` from the log start to the end offsets as of the
    call, all partitions, ordered by (partition, offset). Reads committed data
    only. Raises BrokerError ``_TIMED_OUT`` if the end is not reached in time."""
    ck = import_confluent_kafka()
    deadline = time.monotonic() + timeout
    client = _metadata_client(bootstrap)
    try:
        ends: dict[int, int] = {}
        starts: list[confluent_kafka.TopicPartition] = []
        for p in _partitions(client, topic, timeout):
            low, high = client.get_watermark_offsets(
                ck.TopicPartition(topic, p), timeout=max(0.1, deadline - time.monotonic())
            )
            if high > low:
                ends[p] = high
                starts.append(ck.TopicPartition(topic, p, low))
        if not starts:
            return []
        client.assign(starts)
        records: list[Record] = []
        remaining = dict(ends)
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    "_TIMED_OUT",
                    f"read_topic({topic!r}) did not reach the end offsets {ends} within "
                    f"{timeout:g} s; still missing partitions {sorted(remaining)}",
                    retriable=True,
                )
            for msg in client.consume(num_messages=500, timeout=min(0.5, left)):
                error = msg.error()
                if error is not None:
                    if error.name() == "_PARTITION_EOF":
                        continue
                    raise broker_error(error, f"reading {topic!r}")
                partition = int(msg.partition() or 0)
                if partition in remaining and int(msg.offset() or 0) < ends[partition]:
                    records.append(record_of(msg))
            # positions move past transaction markers too, so compare positions, not offsets
            for tp in client.position([ck.TopicPartition(topic, p) for p in list(remaining)]):
                if tp.offset >= ends[tp.partition]:
                    remaining.pop(tp.partition, None)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        client.close()


def committed_positions(
    bootstrap: str, group: str, topic: str, *, timeout: float = 10.0
) -> dict[TopicPartition, CommittedPosition]:
    """The committed position (None when nothing is committed), metadata and leader
    epoch of ``group`` for every partition of ``topic``. Does not join the group."""
    ck = import_confluent_kafka()
    client = _metadata_client(bootstrap, group)
    try:
        parts = [ck.TopicPartition(topic, p) for p in _partitions(client, topic, timeout)]
        try:
            got = client.committed(parts, timeout=timeout)
        except ck.KafkaException as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            raise broker_error(err, f"committed positions of group {group!r}") from exc
        out: dict[TopicPartition, CommittedPosition] = {}
        for tp in got:
            if tp.error is not None:
                raise broker_error(tp.error, f"committed position of {tp.topic}[{tp.partition}]")
            core = TopicPartition(tp.topic, tp.partition)
            epoch = tp.leader_epoch
            out[core] = CommittedPosition(
                core,
                tp.offset if tp.offset >= 0 else None,
                metadata=tp.metadata or None,
                leader_epoch=epoch if epoch is not None and epoch >= 0 else None,
            )
        return out
    finally:
        client.close()

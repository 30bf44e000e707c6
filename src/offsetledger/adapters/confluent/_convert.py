"""Conversions between confluent-kafka's values and the core's, including the
fast constructors of the per-message hot path.

attrs' generated ``__init__`` of a frozen class runs every validator and sets each
field through ``object.__setattr__``. For a consumed message or a delivery report
the values come from librdkafka, which already guarantees what the validators
check (topic a non-empty str, partition and offset ints >= 0, key and value bytes
or None, headers a list of (str, bytes-or-None) pairs). So the slots are set
directly through their descriptors (as ``simulator/_fast.py`` does), and a poll's
messages are converted in one loop (no function call per record). User-constructed
Records and DeliveryReports keep the validating constructors. Each fast path is
used only when the class's fields are exactly the ones it sets (checked at
import), else the attrs constructor is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from offsetledger._internal import slot_setters
from offsetledger.adapters.confluent._errors import import_confluent_kafka
from offsetledger.core import DeliveryReport, Outbound, Record, TopicPartition

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["delivered_report", "record_of", "records_until_error"]


def _client_tp(tp: TopicPartition) -> confluent_kafka.TopicPartition:
    ck = import_confluent_kafka()
    return ck.TopicPartition(tp.topic, tp.partition)  # type: ignore[no-any-return]


def _core_tp(tp: confluent_kafka.TopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _epoch(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


_new = object.__new__
_RECORD_SETTERS = slot_setters(
    Record,
    ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms", "leader_epoch"),
)
_REPORT_SETTERS = slot_setters(DeliveryReport, ("message", "error", "partition", "offset"))


def records_until_error(
    messages: Sequence[confluent_kafka.Message],
) -> tuple[list[Record], int]:
    """The Records of ``messages`` up to the first error event, and that event's
    index (``len(messages)`` when there is none)."""
    out: list[Record] = []
    append = out.append
    if _RECORD_SETTERS is None:  # pragma: no cover - Record gained a field
        for index, msg in enumerate(messages):
            if msg.error() is not None:
                return out, index
            append(record_of(msg))
        return out, len(messages)
    s_topic, s_partition, s_offset, s_key, s_value, s_headers, s_ts, s_epoch = _RECORD_SETTERS
    new = _new
    for index, msg in enumerate(messages):
        if msg.error() is not None:
            return out, index
        rec: Record = new(Record)
        s_topic(rec, msg.topic())
        s_partition(rec, msg.partition())
        s_offset(rec, msg.offset())
        s_key(rec, msg.key())
        s_value(rec, msg.value())
        raw = msg.headers()
        s_headers(rec, tuple(raw) if raw else ())
        ts_type, ts = msg.timestamp()
        s_ts(rec, ts if ts_type else None)
        epoch = msg.leader_epoch()
        s_epoch(rec, epoch if epoch is not None and epoch >= 0 else None)
        append(rec)
    return out, len(messages)


def record_of(msg: confluent_kafka.Message) -> Record:
    """The Record of one consumed (non-error) message."""
    ts_type, ts = msg.timestamp()
    raw = msg.headers()
    if _RECORD_SETTERS is None:  # pragma: no cover - Record gained a field
        return Record(
            topic=str(msg.topic()),
            partition=int(msg.partition() or 0),
            offset=int(msg.offset() or 0),
            key=msg.key(),
            value=msg.value(),
            headers=tuple(raw) if raw else (),  # type: ignore[arg-type]
            timestamp_ms=ts if ts_type else None,
            leader_epoch=_epoch(msg.leader_epoch()),
        )
    s_topic, s_partition, s_offset, s_key, s_value, s_headers, s_ts, s_epoch = _RECORD_SETTERS
    rec: Record = _new(Record)
    s_topic(rec, msg.topic())
    s_partition(rec, msg.partition())
    s_offset(rec, msg.offset())
    s_key(rec, msg.key())
    s_value(rec, msg.value())
    s_headers(rec, tuple(raw) if raw else ())
    s_ts(rec, ts if ts_type else None)
    s_epoch(rec, _epoch(msg.leader_epoch()))
    return rec


def delivered_report(
    message: Outbound, partition: int | None, offset: int | None
) -> DeliveryReport:
    """A successful DeliveryReport of ``message`` written at ``partition``/``offset``
    (as librdkafka reports them), without the attrs ``__init__``."""
    if _REPORT_SETTERS is None:  # pragma: no cover - DeliveryReport gained a field
        return DeliveryReport(message, None, partition, offset)
    s_message, s_error, s_partition, s_offset = _REPORT_SETTERS
    report: DeliveryReport = _new(DeliveryReport)
    s_message(report, message)
    s_error(report, None)
    s_partition(report, partition)
    s_offset(report, offset)
    return report

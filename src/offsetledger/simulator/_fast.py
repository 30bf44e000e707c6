"""Fast constructors for the hot path: records and the four per-record history events.

attrs' generated ``__init__`` of a frozen class sets each field through
``object.__setattr__`` and runs validators; building ~5 objects per simulated
record made that the simulator's main cost. These constructors set the slots
directly through their descriptors, for values the simulator already validated.

Each is used only when the class's fields are exactly the ones it sets (checked at
import); if a field is added to a class (e.g. an optional history field), the
slower attrs constructor is used instead, so the objects are always complete.
"""

from __future__ import annotations

from typing import Any

import attrs

from offsetledger._internal import slot_setters
from offsetledger.core import DeliveryReport, Header, Outbound, Record
from offsetledger.history import Append, Delivery, Event, Poll, Store

__all__ = [
    "APPEND",
    "DELIVERY",
    "POLLS",
    "STORE",
    "Pending",
    "make_append",
    "make_delivery",
    "make_poll",
    "make_record",
    "make_report",
    "make_store",
    "materialise",
]

_new = object.__new__


_POLL = slot_setters(Poll, ("seq", "time", "member", "generation", "topic", "partition", "offset"))
_STORE = slot_setters(Store, ("seq", "time", "member", "topic", "partition", "position"))
_APPEND = slot_setters(
    Append,
    ("seq", "time", "by", "topic", "partition", "offset", "key", "value", "headers", "control"),
)
_DELIVERY = slot_setters(
    Delivery, ("seq", "time", "by", "topic", "partition", "offset", "ok", "error", "headers")
)
_REPORT = slot_setters(DeliveryReport, ("message", "error", "partition", "offset"))
_RECORD = slot_setters(
    Record,
    ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms", "leader_epoch"),
)


def make_poll(  # noqa: PLR0917 - positional on purpose: hot path
    seq: int, time: float, member: str, generation: int, topic: str, partition: int, offset: int
) -> Poll:
    if _POLL is None:
        return Poll(
            seq=seq,
            time=time,
            member=member,
            generation=generation,
            topic=topic,
            partition=partition,
            offset=offset,
        )
    s0, s1, s2, s3, s4, s5, s6 = _POLL
    e: Poll = _new(Poll)
    s0(e, seq)
    s1(e, time)
    s2(e, member)
    s3(e, generation)
    s4(e, topic)
    s5(e, partition)
    s6(e, offset)
    return e


def make_store(  # noqa: PLR0917 - positional on purpose: hot path
    seq: int, time: float, member: str, topic: str, partition: int, position: int
) -> Store:
    if _STORE is None:
        return Store(
            seq=seq, time=time, member=member, topic=topic, partition=partition, position=position
        )
    s0, s1, s2, s3, s4, s5 = _STORE
    e: Store = _new(Store)
    s0(e, seq)
    s1(e, time)
    s2(e, member)
    s3(e, topic)
    s4(e, partition)
    s5(e, position)
    return e


def make_append(  # noqa: PLR0917 - positional on purpose: hot path
    seq: int,
    time: float,
    by: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[Header, ...],
) -> Append:
    if _APPEND is None:
        return Append(
            seq=seq,
            time=time,
            by=by,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=headers,
        )
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9 = _APPEND
    e: Append = _new(Append)
    s0(e, seq)
    s1(e, time)
    s2(e, by)
    s3(e, topic)
    s4(e, partition)
    s5(e, offset)
    s6(e, key)
    s7(e, value)
    s8(e, headers)
    s9(e, False)
    return e


def make_delivery(  # noqa: PLR0917 - positional on purpose: hot path
    seq: int,
    time: float,
    by: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    error: str | None,
    headers: tuple[Header, ...],
) -> Delivery:
    if _DELIVERY is None:
        return Delivery(
            seq=seq,
            time=time,
            by=by,
            topic=topic,
            partition=partition,
            offset=offset,
            ok=error is None,
            error=error,
            headers=headers,
        )
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = _DELIVERY
    e: Delivery = _new(Delivery)
    s0(e, seq)
    s1(e, time)
    s2(e, by)
    s3(e, topic)
    s4(e, partition)
    s5(e, offset)
    s6(e, error is None)
    s7(e, error)
    s8(e, headers)
    return e


def make_report(message: Outbound, partition: int, offset: int | None) -> DeliveryReport:
    """A successful DeliveryReport."""
    if _REPORT is None:
        return DeliveryReport(message, None, partition, offset)
    s0, s1, s2, s3 = _REPORT
    r: DeliveryReport = _new(DeliveryReport)
    s0(r, message)
    s1(r, None)
    s2(r, partition)
    s3(r, offset)
    return r


def make_record(  # noqa: PLR0917 - positional on purpose: hot path
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[Header, ...],
    timestamp_ms: int,
) -> Record:
    """A Record from log data already validated on its way in (leader epoch 0)."""
    if _RECORD is None:
        return Record(topic, partition, offset, key, value, headers, timestamp_ms, 0)
    s0, s1, s2, s3, s4, s5, s6, s7 = _RECORD
    r: Record = _new(Record)
    s0(r, topic)
    s1(r, partition)
    s2(r, offset)
    s3(r, key)
    s4(r, value)
    s5(r, headers)
    s6(r, timestamp_ms)
    s7(r, 0)
    return r


# -- lazily built history events -----------------------------------------------------------
#
# The hot paths do not build history events: they append a plain tuple to the world's
# pending list (tag first, ``seq`` left out: an event's seq is its index in the
# history, assigned when it is built). Tuples of str/int/float/bytes/None are cheap to
# make and the garbage collector stops tracking them at its first pass, so a long
# history no longer makes every collection slower. :func:`materialise` turns them
# into the event objects, in order, when the history is read (``World.history``).
# Rare events are appended as (unstamped) Event objects and stamped then.

#: (POLLS, time, member, generation, topic, partition, offsets): one Poll per offset
POLLS = 0
#: (APPEND, time, by, topic, partition, offset, key, value, headers)
APPEND = 1
#: (DELIVERY, time, by, topic, partition, offset, error name or None, headers)
DELIVERY = 2
#: (STORE, time, member, topic, partition, position)
STORE = 3

Pending = list[Any]  # tuples as above, or Event objects not yet stamped


def materialise(pending: Pending, events: list[Event]) -> None:
    """Build the events of ``pending`` onto ``events`` (seq = index), then clear it."""
    append = events.append
    seq = len(events)
    for entry in pending:
        if type(entry) is not tuple:
            append(attrs.evolve(entry, seq=seq))
            seq += 1
            continue
        tag = entry[0]
        if tag == POLLS:
            _, now, member, gen, topic, partition, offsets = entry
            for offset in offsets:
                append(make_poll(seq, now, member, gen, topic, partition, offset))
                seq += 1
        elif tag == APPEND:
            _, now, by, topic, partition, offset, key, value, headers = entry
            append(make_append(seq, now, by, topic, partition, offset, key, value, headers))
            seq += 1
        elif tag == DELIVERY:
            _, now, by, topic, partition, offset, error, headers = entry
            append(make_delivery(seq, now, by, topic, partition, offset, error, headers))
            seq += 1
        else:
            _, now, member, topic, partition, position = entry
            append(make_store(seq, now, member, topic, partition, position))
            seq += 1
    pending.clear()

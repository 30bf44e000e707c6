"""Value types. Every offset-like field in the public API is a *position* unless
its name says ``offset``: a position is the offset of the next record to read,
i.e. last processed offset + 1."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "BrokerErrorInfo",
    "CommitResult",
    "CommittedPosition",
    "DeliveryReport",
    "Header",
    "Outbound",
    "Record",
    "StoredPosition",
    "TopicPartition",
]

Header = tuple[str, bytes | None]


def _non_negative(_inst: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value}")


def _non_empty_str(_inst: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{attribute.name} must be a non-empty string, got {value!r}")


def _headers(value: Sequence[Header] | Mapping[str, bytes | None] | None) -> tuple[Header, ...]:
    if value is None or (type(value) is tuple and not value):
        return ()  # the default (and the common case): nothing to check
    items = value.items() if isinstance(value, Mapping) else value
    out: list[Header] = []
    for item in items:
        name, data = item
        if not isinstance(name, str):
            raise TypeError(f"header name must be str, got {name!r}")
        if data is not None and not isinstance(data, bytes):
            raise TypeError(
                f"header {name!r} value must be bytes or None, got {type(data).__name__}"
            )
        out.append((name, data))
    return tuple(out)


# The checks of the hand-written constructors, called only when the inline fast
# check fails (a subclass of str/bytes/int is accepted; anything else raises).


def _check_topic(value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"topic must be a non-empty string, got {value!r}")


def _check_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes or None, got {type(value).__name__}")


def _check_index(name: str, value: object, *, optional: bool) -> None:
    if not isinstance(value, int):
        kind = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


@attrs.frozen(order=True, cache_hash=True)
class TopicPartition:
    """A partition of a topic. Hashed once (it keys every per-partition lookup)."""

    topic: str = attrs.field(validator=_non_empty_str)
    partition: int = attrs.field(validator=[attrs.validators.instance_of(int), _non_negative])

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@attrs.frozen(init=False)
class Record:
    """A record as polled from a partition. ``offset`` is the record's own offset
    (not a position); ``leader_epoch`` is kept when the client reports one.

    The constructor checks every field (a wrong type raises TypeError, an
    impossible value ValueError, both naming the field) in a hand-written
    ``__init__``: the same checks as attrs validators, at about a third of their
    cost (it runs once per record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[Header, ...] = ()
    timestamp_ms: int | None = None
    leader_epoch: int | None = None

    def __init__(  # noqa: PLR0917 - the positional order attrs generated before
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Sequence[Header] | Mapping[str, bytes | None] | None = (),
        timestamp_ms: int | None = None,
        leader_epoch: int | None = None,
    ) -> None:
        if type(topic) is not str or not topic:
            _check_topic(topic)
        if type(partition) is not int or partition < 0:
            _check_index("partition", partition, optional=False)
        if type(offset) is not int or offset < 0:
            _check_index("offset", offset, optional=False)
        if key is not None and type(key) is not bytes:
            _check_bytes("key", key)
        if value is not None and type(value) is not bytes:
            _check_bytes("value", value)
        _R_TOPIC(self, topic)
        _R_PARTITION(self, partition)
        _R_OFFSET(self, offset)
        _R_KEY(self, key)
        _R_VALUE(self, value)
        _R_HEADERS(self, headers if type(headers) is tuple and not headers else _headers(headers))
        _R_TIMESTAMP(self, timestamp_ms)
        _R_EPOCH(self, leader_epoch)

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found: bytes | None = None
        for key, data in self.headers:
            if key == name:
                found = data
        return found


@attrs.frozen(init=False)
class Outbound:
    """A message to produce. ``partition`` None lets the partitioner choose by key.

    Checked like :class:`Record`, in a hand-written ``__init__`` (handlers build
    one per output)."""

    topic: str
    value: bytes | None = None
    key: bytes | None = None
    headers: tuple[Header, ...] = ()
    partition: int | None = None

    def __init__(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Sequence[Header] | Mapping[str, bytes | None] | None = (),
        partition: int | None = None,
    ) -> None:
        if type(topic) is not str or not topic:
            _check_topic(topic)
        if value is not None and type(value) is not bytes:
            _check_bytes("value", value)
        if key is not None and type(key) is not bytes:
            _check_bytes("key", key)
        if partition is not None and (type(partition) is not int or partition < 0):
            _check_index("partition", partition, optional=True)
        _O_TOPIC(self, topic)
        _O_VALUE(self, value)
        _O_KEY(self, key)
        _O_HEADERS(self, headers if type(headers) is tuple and not headers else _headers(headers))
        _O_PARTITION(self, partition)


def _slot_setters(cls: type[Any]) -> tuple[Callable[[object, object], None], ...]:
    """The ``__set__`` of each attrs field's slot descriptor, in field order: how a
    frozen slotted class's own ``__init__`` sets its fields (attrs' generated one
    goes through ``object.__setattr__``)."""
    return tuple(cls.__dict__[f.name].__set__ for f in attrs.fields(cls))


(
    _R_TOPIC,
    _R_PARTITION,
    _R_OFFSET,
    _R_KEY,
    _R_VALUE,
    _R_HEADERS,
    _R_TIMESTAMP,
    _R_EPOCH,
) = _slot_setters(Record)
_O_TOPIC, _O_VALUE, _O_KEY, _O_HEADERS, _O_PARTITION = _slot_setters(Outbound)


@attrs.frozen
class DeliveryReport:
    """The outcome of producing one Outbound. ``error`` is None on success;
    ``offset`` is the offset the message was written at (None on failure)."""

    message: Outbound
    error: BrokerErrorInfo | None = None
    partition: int | None = None
    offset: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@attrs.frozen
class BrokerErrorInfo:
    """An error as data: Kafka's error name, a message, whether a retry may help."""

    name: str
    message: str = ""
    retriable: bool = False

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


@attrs.frozen
class StoredPosition:
    """A position to store (or commit) for a partition, with optional commit
    metadata and the leader epoch of the last record processed."""

    tp: TopicPartition
    position: int = attrs.field(validator=_non_negative)
    metadata: str | None = None
    leader_epoch: int | None = None


@attrs.frozen
class CommittedPosition:
    """A position as committed for a group, with its metadata. ``position`` None
    means the group has no committed position for the partition."""

    tp: TopicPartition
    position: int | None = attrs.field(default=None, validator=_non_negative)
    metadata: str | None = None
    leader_epoch: int | None = None


@attrs.frozen
class CommitResult:
    """The result of committing one partition; ``error`` None means it succeeded."""

    tp: TopicPartition
    position: int | None
    error: BrokerErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

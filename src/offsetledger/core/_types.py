"""Value types. Every offset-like field in the public API is a *position* unless
its name says ``offset``: a position is the offset of the next record to read,
i.e. last processed offset + 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def _opt_bytes(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, bytes):
        raise TypeError(f"{attribute.name} must be bytes or None, got {type(value).__name__}")


@attrs.frozen(order=True, cache_hash=True)
class TopicPartition:
    """A partition of a topic. Hashed once (it keys every per-partition lookup)."""

    topic: str = attrs.field(validator=_non_empty_str)
    partition: int = attrs.field(validator=[attrs.validators.instance_of(int), _non_negative])

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@attrs.frozen
class Record:
    """A record as polled from a partition. ``offset`` is the record's own offset
    (not a position); ``leader_epoch`` is kept when the client reports one."""

    topic: str = attrs.field(validator=_non_empty_str)
    partition: int = attrs.field(validator=_non_negative)
    offset: int = attrs.field(validator=_non_negative)
    key: bytes | None = attrs.field(default=None, validator=_opt_bytes)
    value: bytes | None = attrs.field(default=None, validator=_opt_bytes)
    headers: tuple[Header, ...] = attrs.field(default=(), converter=_headers)
    timestamp_ms: int | None = None
    leader_epoch: int | None = None

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


@attrs.frozen
class Outbound:
    """A message to produce. ``partition`` None lets the partitioner choose by key."""

    topic: str = attrs.field(validator=_non_empty_str)
    value: bytes | None = attrs.field(default=None, validator=_opt_bytes)
    key: bytes | None = attrs.field(default=None, validator=_opt_bytes)
    headers: tuple[Header, ...] = attrs.field(default=(), converter=_headers)
    partition: int | None = attrs.field(default=None, validator=_non_negative)


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

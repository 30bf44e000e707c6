"""A recorded history of what happened in a run: appends to logs, polls, stores,
commits, assignments, delivery reports, crashes. The simulator records one; the
checker (:mod:`offsetledger.checker`) reads it. Pure data, JSON-lines serialisable.

Conventions:

* ``seq`` orders events totally (the order they happened in the run); ``time`` is
  the clock's time (virtual time in the simulator).
* Offsets of records are ``offset``; stored and committed ones are ``position``
  (next offset to read).
* ``member`` names a consumer-group member or a producer client.
* Lineage: an output produced by the Processor carries the headers
  ``offsetledger.source.topic``/``.partition``/``.offset`` naming its input;
  dead-letter records carry the same headers (plus ``offsetledger.error``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, TextIO

import attrs

__all__ = [
    "ERROR_HEADER",
    "EVENT_TYPES",
    "SOURCE_OFFSET",
    "SOURCE_PARTITION",
    "SOURCE_TOPIC",
    "Append",
    "Assign",
    "Close",
    "Commit",
    "Crash",
    "Delivery",
    "Event",
    "History",
    "Join",
    "Leave",
    "Lost",
    "Poll",
    "Revoke",
    "Store",
    "Truncate",
    "dumps_event",
    "loads_event",
]

SOURCE_TOPIC = "offsetledger.source.topic"
SOURCE_PARTITION = "offsetledger.source.partition"
SOURCE_OFFSET = "offsetledger.source.offset"
ERROR_HEADER = "offsetledger.error"

HeaderList = tuple[tuple[str, bytes | None], ...]


@attrs.frozen(kw_only=True)
class Event:
    kind: ClassVar[str] = "event"
    seq: int = 0
    time: float = 0.0


@attrs.frozen(kw_only=True)
class Append(Event):
    """A record was written to a log (``control`` True: an offset that exists but
    is never delivered to consumers, e.g. a transaction marker)."""

    kind: ClassVar[str] = "append"
    by: str
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: HeaderList = ()
    control: bool = False

    def header(self, name: str) -> bytes | None:
        found = None
        for k, v in self.headers:
            if k == name:
                found = v
        return found

    def source(self) -> tuple[str, int, int] | None:
        """The input (topic, partition, offset) this record was produced for, if any."""
        t, p, o = (self.header(h) for h in (SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET))
        if t is None or p is None or o is None:
            return None
        try:
            return t.decode(), int(p), int(o)
        except (UnicodeDecodeError, ValueError):
            return None


@attrs.frozen(kw_only=True)
class Delivery(Event):
    """A delivery report was served to producer ``by``; ``offset`` None on failure."""

    kind: ClassVar[str] = "delivery"
    by: str
    topic: str
    partition: int | None
    offset: int | None
    ok: bool
    error: str | None = None
    headers: HeaderList = ()


@attrs.frozen(kw_only=True)
class Poll(Event):
    kind: ClassVar[str] = "poll"
    member: str
    generation: int
    topic: str
    partition: int
    offset: int


@attrs.frozen(kw_only=True)
class Store(Event):
    kind: ClassVar[str] = "store"
    member: str
    topic: str
    partition: int
    position: int


@attrs.frozen(kw_only=True)
class Commit(Event):
    """A commit attempt for one partition; ``ok`` False when it was rejected."""

    kind: ClassVar[str] = "commit"
    member: str
    generation: int
    topic: str
    partition: int
    position: int
    metadata: str | None = None
    ok: bool = True
    error: str | None = None


@attrs.frozen(kw_only=True)
class Assign(Event):
    kind: ClassVar[str] = "assign"
    member: str
    generation: int
    partitions: tuple[tuple[str, int], ...]


@attrs.frozen(kw_only=True)
class Revoke(Event):
    kind: ClassVar[str] = "revoke"
    member: str
    generation: int
    partitions: tuple[tuple[str, int], ...]


@attrs.frozen(kw_only=True)
class Lost(Event):
    kind: ClassVar[str] = "lost"
    member: str
    generation: int
    partitions: tuple[tuple[str, int], ...]


@attrs.frozen(kw_only=True)
class Join(Event):
    kind: ClassVar[str] = "join"
    member: str


@attrs.frozen(kw_only=True)
class Leave(Event):
    """The member left its group: ``reason`` is ``close`` for an orderly leave, or why
    it was removed (``session_timeout``, ``max_poll_interval``, ``forced``); None
    when not known."""

    kind: ClassVar[str] = "leave"
    member: str
    reason: str | None = None


@attrs.frozen(kw_only=True)
class Crash(Event):
    """The member's process died: its memory is gone, committed positions survive."""

    kind: ClassVar[str] = "crash"
    member: str


@attrs.frozen(kw_only=True)
class Close(Event):
    kind: ClassVar[str] = "close"
    member: str


@attrs.frozen(kw_only=True)
class Truncate(Event):
    """Retention moved the log start of a partition to ``log_start``."""

    kind: ClassVar[str] = "truncate"
    topic: str
    partition: int
    log_start: int


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Append,
        Delivery,
        Poll,
        Store,
        Commit,
        Assign,
        Revoke,
        Lost,
        Join,
        Leave,
        Crash,
        Close,
        Truncate,
    )
}


def _enc(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return [_enc(v) for v in value]
    return value


def _dec(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return tuple(_dec(v) for v in value)
    return value


def dumps_event(event: Event) -> str:
    """One event as one line of JSON (keys sorted: byte-for-byte stable)."""
    data = {k: _enc(v) for k, v in attrs.asdict(event, recurse=False).items()}
    data["kind"] = event.kind
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def loads_event(line: str) -> Event:
    """Parse a line written by :func:`dumps_event`; raises ValueError on bad input."""
    try:
        data = json.loads(line)
        cls = EVENT_TYPES[data.pop("kind")]
        return cls(**{k: _dec(v) for k, v in data.items()})
    except (KeyError, TypeError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"not a history event: {line[:80]!r} ({exc})") from exc


@attrs.define
class History:
    """An append-only list of events; :meth:`record` stamps ``seq``."""

    events: list[Event] = attrs.field(factory=list)

    def record(self, event: Event) -> Event:
        stamped = attrs.evolve(event, seq=len(self.events))
        self.events.append(stamped)
        return stamped

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def of(self, cls: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, cls)]

    def dump(self, fh: TextIO) -> None:
        for e in self.events:
            fh.write(dumps_event(e) + "\n")

    def dumps(self) -> str:
        return "".join(dumps_event(e) + "\n" for e in self.events)

    @classmethod
    def load(cls, lines: Iterable[str]) -> History:
        return cls([loads_event(line) for line in lines if line.strip()])

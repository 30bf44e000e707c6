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
import types
import typing
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
    "Attempt",
    "Close",
    "Commit",
    "Crash",
    "Delivery",
    "Done",
    "Event",
    "History",
    "Join",
    "Leave",
    "Lost",
    "Poll",
    "Revoke",
    "Seek",
    "Store",
    "Truncate",
    "TxnBegin",
    "TxnEnd",
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
class Done(Event):
    """Member ``member`` finished input ``topic[partition]@offset``: its handler
    returned ``outputs`` outputs, all acknowledged (``outputs`` 0: a filter, done
    with nothing to produce), or the record went to the dead-letter topic
    (``dead_lettered``). Recorded by a
    :class:`~offsetledger.core.ProcessingObserver` (see
    :func:`offsetledger.testing.observer`); it lets the checker tell "done,
    nothing to produce" from "lost"."""

    kind: ClassVar[str] = "done"
    member: str
    topic: str
    partition: int
    offset: int
    outputs: int
    dead_lettered: bool = False


@attrs.frozen(kw_only=True)
class Truncate(Event):
    """Retention moved the log start of a partition to ``log_start``."""

    kind: ClassVar[str] = "truncate"
    topic: str
    partition: int
    log_start: int


@attrs.frozen(kw_only=True)
class TxnBegin(Event):
    """Producer ``by`` (``transactional.id`` ``transactional_id``, producer epoch
    ``epoch``) began a transaction."""

    kind: ClassVar[str] = "txn_begin"
    by: str
    transactional_id: str
    epoch: int


@attrs.frozen(kw_only=True)
class TxnEnd(Event):
    """A transaction ended: ``committed`` (its writes became visible to
    read_committed readers and ``positions`` were committed for ``group`` at once)
    or aborted (its writes are invisible; ``positions`` not committed).

    ``writes`` are the (topic, partition, offset) of every record the transaction
    wrote, its control markers excluded (they are ``Append(control=True)`` events).
    ``positions`` are the (topic, partition, position) sent with
    ``send_offsets_to_transaction``. ``reason``: ``commit``, ``abort`` (asked by the
    producer), ``fenced`` (a newer instance of the ``transactional.id`` initialised)
    or ``timeout`` (``transaction.timeout.ms`` expired)."""

    kind: ClassVar[str] = "txn_end"
    by: str
    transactional_id: str
    epoch: int
    committed: bool
    reason: str
    group: str | None = None
    positions: tuple[tuple[str, int, int], ...] = ()
    writes: tuple[tuple[str, int, int], ...] = ()


@attrs.frozen(kw_only=True)
class Seek(Event):
    """Member ``member`` moved its fetch position of a partition to ``position``."""

    kind: ClassVar[str] = "seek"
    member: str
    topic: str
    partition: int
    position: int


@attrs.frozen(kw_only=True)
class Attempt(Event):
    """An ``async def`` handler's attempt at input ``topic[partition]@offset`` by
    member ``member``: ``phase`` "start" (its coroutine's first step) or "end" (the
    coroutine really ended, its ``finally`` blocks run), with ``outcome`` "ok",
    "failed", "timeout" (cancelled at ``processing_timeout``) or "cancelled" (by the
    runtime: revoke, lost, shutdown). ``attempt`` identifies the attempt within the
    member (a batch attempt: one event per record, same number). Recorded by the
    simulator's async runner; read by the checker's ATTEMPT_OVERLAP."""

    kind: ClassVar[str] = "attempt"
    member: str
    attempt: int
    phase: str
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    outcome: str = ""


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
        Done,
        Truncate,
        TxnBegin,
        TxnEnd,
        Seek,
        Attempt,
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


Check = typing.Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float


def _compile(hint: Any) -> Check:
    """A predicate telling whether a decoded JSON value fits a field's type."""
    if hint is None or hint is type(None):
        return lambda v: v is None
    if hint is int:
        return _is_int
    if hint is float:
        return _is_number
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        options = tuple(_compile(h) for h in typing.get_args(hint))
        return lambda v: any(ok(v) for ok in options)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _compile(args[0])
            return lambda v: type(v) is tuple and all(item(x) for x in v)
        items = tuple(_compile(h) for h in args)
        return lambda v: (
            type(v) is tuple
            and len(v) == len(items)
            and all(ok(x) for ok, x in zip(items, v, strict=True))
        )
    return lambda v: isinstance(v, hint)


_CHECKS: dict[str, dict[str, Check]] = {}


def _field_checks(kind: str) -> dict[str, Check]:
    found = _CHECKS.get(kind)
    if found is None:
        found = _CHECKS[kind] = _compile_fields(EVENT_TYPES[kind])
    return found


def _compile_fields(cls: type[Event]) -> dict[str, Check]:
    hints = typing.get_type_hints(cls, globalns={**globals(), "HeaderList": HeaderList})
    return {f.name: _compile(hints[f.name]) for f in attrs.fields(cls)}


def loads_event(line: str) -> Event:
    """Parse a line written by :func:`dumps_event`; raises ValueError on bad input
    (not JSON, not an object, unknown ``kind``, missing or unknown field, a field
    of the wrong type such as ``"offset": "x"``)."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        if "kind" not in data:
            raise KeyError("no 'kind'")
        kind = data.pop("kind")
        if not isinstance(kind, str) or kind not in EVENT_TYPES:
            raise KeyError(f"unknown kind {kind!r}")
        cls = EVENT_TYPES[kind]
        checks = _field_checks(kind)
        fields = {k: _dec(v) for k, v in data.items()}
        for name, value in fields.items():
            fits = checks.get(name)
            if fits is None:
                raise TypeError(f"unknown field {name!r} for kind {kind!r}")
            if not fits(value):
                raise TypeError(f"field {name!r} of kind {kind!r} is {value!r}")
        return cls(**fields)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise ValueError(f"not a history event: {line[:80]!r} ({text})") from exc


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
        """Parse JSON lines (blank lines skipped); a bad line raises ValueError
        naming its line number."""
        events: list[Event] = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(loads_event(line))
            except ValueError as exc:
                raise ValueError(f"line {number}: {exc}") from exc
        return cls(events)

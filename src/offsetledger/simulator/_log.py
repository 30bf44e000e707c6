"""Partition logs: append-only, with control offsets (gaps) and retention truncation."""

from __future__ import annotations

import attrs

from offsetledger.core import Header, Record
from offsetledger.simulator._fast import make_record

__all__ = ["LogEntry", "PartitionLog"]

_Raw = tuple[bytes | None, bytes | None, tuple[Header, ...], int]


@attrs.frozen
class LogEntry:
    """One offset of a partition log as :meth:`World.log` reports it. ``control``
    offsets (transaction markers) exist but are never delivered to consumers."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    control: bool = False
    timestamp_ms: int | None = None


class PartitionLog:
    """One partition's log. Offsets start at 0 and increase by one per append
    (records and control markers alike); ``log_start`` moves forward on
    retention truncation; ``end`` is the next offset to be written (the high
    watermark: every write is immediately "replicated" in the simulator).

    Entries are kept raw (tuples the garbage collector stops tracking) and turned
    into a new :class:`~offsetledger.core.Record` at each fetch: a record no
    client holds any more costs no collector time and less memory.

    Transactions (see :mod:`offsetledger.simulator._transactions`): ``open_txns``
    maps each open transaction's ``transactional.id`` to its first offset here;
    the last stable offset :attr:`lso` is the lowest of them (else the end).
    ``aborted`` holds the offsets of records of aborted transactions. Kafka keeps
    an aborted-transaction index of (producer id, first offset) that the client
    filters with; the simulator keeps the offsets themselves (same visibility).
    """

    __slots__ = ("_base", "_entries", "aborted", "log_start", "open_txns", "partition", "topic")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self._entries: list[_Raw | None] = []
        self._base = 0  # offset of _entries[0]
        self.log_start = 0
        self.open_txns: dict[str, int] = {}
        self.aborted: set[int] = set()

    @property
    def end(self) -> int:
        return self._base + len(self._entries)

    @property
    def lso(self) -> int:
        """The last stable offset: the first offset of the earliest open transaction,
        else the end. read_committed consumers never read at or above it."""
        if self.open_txns:
            return min(self.open_txns.values())
        return self._base + len(self._entries)

    def fetch_committed(self, position: int, max_records: int) -> tuple[list[Record], int]:
        """:meth:`fetch` as a read_committed consumer sees the log: nothing at or
        above the :attr:`lso`, no record of an aborted transaction, no marker; the
        returned position moves past skipped offsets (below the LSO)."""
        if not self.open_txns and not self.aborted:
            return self.fetch(position, max_records)
        entries = self._entries
        base = self._base
        i = position - base
        stop = min(len(entries), self.lso - base)
        out: list[Record] = []
        aborted = self.aborted
        topic, partition = self.topic, self.partition
        while i < stop and len(out) < max_records:
            entry = entries[i]
            if entry is not None and base + i not in aborted:
                key, value, headers, ts = entry
                out.append(make_record(topic, partition, base + i, key, value, headers, ts))
            i += 1
        return out, max(base + i, position)

    def append(
        self, key: bytes | None, value: bytes | None, headers: tuple[Header, ...], timestamp_ms: int
    ) -> int:
        offset = self._base + len(self._entries)
        self._entries.append((key, value, headers, timestamp_ms))
        return offset

    def append_control(self) -> int:
        offset = self._base + len(self._entries)
        self._entries.append(None)
        return offset

    def truncate(self, log_start: int) -> None:
        """Move the log start to ``log_start`` (never backwards, at most the end)."""
        if log_start < self.log_start:
            raise ValueError(
                f"{self.topic}[{self.partition}]: log start can only move forward "
                f"({self.log_start} -> {log_start})"
            )
        if log_start > self.end:
            raise ValueError(
                f"{self.topic}[{self.partition}]: log start {log_start} "
                f"is beyond the log end {self.end}"
            )
        del self._entries[: log_start - self._base]
        self._base = log_start
        self.log_start = log_start

    def fetch(self, position: int, max_records: int) -> tuple[list[Record], int]:
        """Records from ``position`` (which must be within [log_start, end]): up to
        ``max_records`` of them, skipping control offsets; returns them and the
        position after the last offset looked at."""
        entries = self._entries
        base = self._base
        i = position - base
        stop = len(entries)
        out: list[Record] = []
        topic, partition = self.topic, self.partition
        while i < stop and len(out) < max_records:
            entry = entries[i]
            if entry is not None:
                key, value, headers, ts = entry
                out.append(make_record(topic, partition, base + i, key, value, headers, ts))
            i += 1
        return out, base + i

    def entries(self) -> list[LogEntry]:
        out: list[LogEntry] = []
        for i, entry in enumerate(self._entries):
            offset = self._base + i
            if entry is None:
                out.append(LogEntry(offset, None, None, (), control=True))
            else:
                key, value, headers, ts = entry
                out.append(LogEntry(offset, key, value, headers, False, ts))
        return out

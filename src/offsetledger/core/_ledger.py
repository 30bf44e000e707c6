"""OffsetLedger: which polled offsets are finished, per partition and epoch, and
the position that is safe to commit (the watermark).

Two ways to track what was polled, freely mixed on one partition:

* per offset: :meth:`OffsetLedger.track` gives a :class:`Ticket` for one record;
* per chunk: :meth:`OffsetLedger.track_range` gives a :class:`RangeTicket` for
  the records of one poll from one partition (ascending, gaps allowed), in O(1)
  ledger work; the chunk is finished as a unit by completing its ticket (the
  caller counts its records' completion itself).

Inside, every partition keeps one queue of *entries* in offset order: an entry
is a single offset or a range, keyed by its lowest offset that is not already
finished (restored from commit metadata). The watermark is the key of the first
unfinished entry, or the end of the last entry when all are finished.
"""

from __future__ import annotations

import bisect
import enum
from collections import deque
from collections.abc import Sequence
from typing import NamedTuple

import attrs

from offsetledger.core._errors import (
    InvalidOffsetError,
    OffsetOrderError,
    PartitionNotAssignedError,
    UnknownOffsetError,
)
from offsetledger.core._metadata import (
    DEFAULT_METADATA_BUDGET,
    decode_finished,
    encode_finished_counted,
    metadata_binding,
)
from offsetledger.core._types import StoredPosition, TopicPartition

__all__ = ["Completion", "OffsetLedger", "RangeTicket", "Ticket"]

_NOTHING: frozenset[int] = frozenset()


class Ticket(NamedTuple):
    """Handed out by :meth:`OffsetLedger.track` for one polled offset, bound to the
    partition's assignment epoch. ``restored`` is True when commit metadata said the
    offset was already finished: it is complete from the start and should be skipped."""

    tp: TopicPartition
    offset: int
    epoch: int
    restored: bool = False


class RangeTicket(NamedTuple):
    """Handed out by :meth:`OffsetLedger.track_range` for one chunk: the ``size``
    offsets polled from ``tp`` between ``first`` and ``last`` (both included; the
    offsets in between that were not polled are gaps), bound to the assignment
    ``epoch``.

    ``restored`` holds the chunk's offsets that commit metadata said were already
    finished (skip them; empty unless the partition was assigned with metadata).
    ``head`` is the chunk's lowest offset not restored (``first`` when every offset
    is restored): the watermark while the chunk is the oldest unfinished one.
    Complete the ticket when every record not restored is done."""

    tp: TopicPartition
    first: int
    last: int
    size: int
    epoch: int
    restored: frozenset[int] = _NOTHING
    head: int = -1

    def is_restored(self, offset: int) -> bool:
        """True when ``offset`` was finished before (skip it)."""
        return bool(self.restored) and offset in self.restored

    @property
    def all_restored(self) -> bool:
        """True when every offset of the chunk was finished before: the ledger
        counts the chunk finished already; completing it changes nothing."""
        return len(self.restored) == self.size


def _run_start(run: tuple[int, int]) -> int:
    return run[0]


# Builds a Ticket without the generated ``__new__`` frame: track() is the hot path.
_new_tuple = tuple.__new__


class Completion(enum.Enum):
    """What :meth:`OffsetLedger.complete` did with a ticket."""

    COMPLETED = "completed"  #: the offset (or chunk) is now finished
    DUPLICATE = "duplicate"  #: it was already finished; nothing changed
    STALE = "stale"  #: its epoch is over (revoked, lost or re-assigned); nothing changed


@attrs.define(slots=True)
class _Partition:
    tp: TopicPartition  # the object given to assign; tickets carry this one
    epoch: int
    committed: int | None
    watermark: int | None
    restored: list[tuple[int, int]]
    binding: str
    # entry keys in offset order, still waiting for the watermark to pass them
    pending: deque[int] = attrs.field(factory=deque)
    done: dict[int, bool] = attrs.field(factory=dict)  # entry key -> finished
    # range entries only: key -> (last + 1, records not restored)
    ranges: dict[int, tuple[int, int]] = attrs.field(factory=dict)
    leader_epochs: dict[int, int] = attrs.field(factory=dict)  # entry key -> epoch
    first_tracked: int | None = None
    last_tracked: int | None = None
    unfinished: int = 0  # records, not entries
    finished_entries: int = 0  # entries in ``done`` that are finished
    leader_epoch: int | None = None  # of the record just below the watermark


class OffsetLedger:
    """Tracks polled offsets and their completion; computes commit-safe positions.

    Per assigned partition, the *watermark* is the lowest tracked offset that is not
    finished; when every tracked offset is finished, the highest tracked + 1; before
    anything was tracked, the committed position given to :meth:`assign`. Offsets
    never polled (gaps left by compaction or transaction markers) never hold it
    back, and it never decreases within an epoch.

    ``group_id`` binds the commit metadata this ledger writes to the consumer group
    (with topic and partition); metadata bound to anything else is ignored on
    :meth:`assign`. Leave it None when unknown: the binding then covers topic and
    partition only, and metadata written with a group is not read.

    Pure: no I/O, threads or clock. Not thread-safe: drive it from one thread.
    """

    def __init__(
        self,
        *,
        max_unfinished_per_partition: int = 10_000,
        max_unfinished_total: int = 100_000,
        metadata_budget: int = DEFAULT_METADATA_BUDGET,
        group_id: str | None = None,
    ) -> None:
        if max_unfinished_per_partition < 1:
            raise ValueError("max_unfinished_per_partition must be >= 1")
        if max_unfinished_total < 1:
            raise ValueError("max_unfinished_total must be >= 1")
        if metadata_budget < 32:
            raise ValueError("metadata_budget must be >= 32 bytes")
        if group_id is not None and not isinstance(group_id, str):
            raise TypeError(f"group_id must be a str or None, got {type(group_id).__name__}")
        self.max_unfinished_per_partition = max_unfinished_per_partition
        self.max_unfinished_total = max_unfinished_total
        self.metadata_budget = metadata_budget
        self.group_id = group_id
        self._parts: dict[TopicPartition, _Partition] = {}
        self._by_epoch: dict[int, _Partition] = {}  # live epochs only
        self._epoch = 0
        self._unfinished_total = 0
        #: finished offsets the last :meth:`encode_metadata` left out (over the budget)
        self.last_metadata_dropped = 0

    # -- assignment ---------------------------------------------------------------

    def assign(
        self,
        tp: TopicPartition,
        committed_position: int | None,
        metadata: str | None = None,
    ) -> int:
        """Start a new assignment epoch for ``tp`` and return it. ``metadata`` is the
        string committed with ``committed_position``; finished offsets it lists are
        reported by :meth:`track` and :meth:`track_range` as ``restored``. Metadata
        that is unreadable, written for another position, or bound to another group,
        topic or partition is ignored with one warning. A partition that is still
        assigned is forgotten first (its open tickets become stale)."""
        if committed_position is not None and committed_position < 0:
            raise InvalidOffsetError(
                f"{tp}: committed position must be >= 0, got {committed_position}"
            )
        if tp in self._parts:
            self._forget(tp)
        self._epoch += 1
        binding = metadata_binding(self.group_id, tp)
        restored = decode_finished(
            metadata,
            committed_position,
            budget=max(self.metadata_budget, 4096),
            binding=binding,
        )
        part = _Partition(
            tp=tp,
            epoch=self._epoch,
            committed=committed_position,
            watermark=committed_position,
            restored=restored,
            binding=binding,
        )
        self._parts[tp] = part
        self._by_epoch[part.epoch] = part
        return self._epoch

    def revoke(self, tp: TopicPartition) -> int | None:
        """Forget ``tp`` and return its final watermark, the position to commit
        (None when no position is known). Open tickets become stale."""
        part = self._get(tp)
        self._forget(tp)
        return part.watermark

    def lost(self, tp: TopicPartition) -> None:
        """Forget ``tp`` without a position: a lost partition must not be committed."""
        self._get(tp)
        self._forget(tp)

    def _forget(self, tp: TopicPartition) -> None:
        part = self._parts.pop(tp)
        del self._by_epoch[part.epoch]
        self._unfinished_total -= part.unfinished

    # -- records ------------------------------------------------------------------

    def _check_next(self, part: _Partition, offset: int) -> None:
        """Raise unless ``offset`` may be tracked next in ``part``'s epoch."""
        last = part.last_tracked
        if offset < 0:
            raise InvalidOffsetError(f"{part.tp}: offset must be >= 0, got {offset}")
        if last is None:
            if part.watermark is not None and offset < part.watermark:
                raise OffsetOrderError(
                    f"{part.tp}: offset {offset} is below the position {part.watermark} the "
                    "assignment started at; the watermark never moves backwards"
                )
            part.first_tracked = offset
        elif offset <= last:
            raise OffsetOrderError(
                f"{part.tp}: offset {offset} polled after offset {last} in the same epoch; "
                "offsets must increase within an assignment"
            )

    def track(self, tp: TopicPartition, offset: int, leader_epoch: int | None = None) -> Ticket:
        """Record that ``offset`` was polled from ``tp``; offsets must increase
        within an epoch and may skip (gaps)."""
        part = self._parts.get(tp)
        if part is None:
            raise PartitionNotAssignedError(f"{tp} is not assigned; cannot track offset {offset}")
        last = part.last_tracked
        if last is None or offset <= last:
            self._check_next(part, offset)
        part.last_tracked = offset
        if leader_epoch is not None:
            part.leader_epochs[offset] = leader_epoch
        if part.restored and self._is_restored(part, offset):
            part.done[offset] = True
            part.finished_entries += 1
            part.pending.append(offset)
            self._advance(part)
            return _new_tuple(Ticket, (part.tp, offset, part.epoch, True))
        part.done[offset] = False
        pending = part.pending
        pending.append(offset)
        part.unfinished += 1
        self._unfinished_total += 1
        if len(pending) == 1:
            part.watermark = offset
        return _new_tuple(Ticket, (part.tp, offset, part.epoch, False))

    def track_range(
        self, tp: TopicPartition, offsets: Sequence[int], leader_epoch: int | None = None
    ) -> RangeTicket:
        """Record that the chunk ``offsets`` (one poll's records from ``tp``, strictly
        ascending, gaps allowed) was polled; return its :class:`RangeTicket`.

        O(1) ledger work per chunk: only the first and last offset and the count are
        kept (the offsets in between are not checked for order). Only when the
        partition was assigned with commit metadata whose finished offsets overlap
        the chunk are its offsets looked at, to fill ``restored``. ``leader_epoch``
        is the leader epoch of the chunk's last record. Each record of the chunk
        counts towards the unfinished limits until the chunk completes."""
        count = len(offsets)
        if count == 0:
            raise ValueError(f"{tp}: track_range needs at least one offset")
        part = self._parts.get(tp)
        if part is None:
            raise PartitionNotAssignedError(f"{tp} is not assigned; cannot track a range")
        first, last = offsets[0], offsets[-1]
        if last < first or last - first + 1 < count:
            raise OffsetOrderError(
                f"{tp}: {count} offsets from {first} to {last} cannot be strictly ascending"
            )
        previous = part.last_tracked
        if previous is None or first <= previous:
            self._check_next(part, first)
        part.last_tracked = last
        restored = _NOTHING
        head = first
        if part.restored:
            restored = self._restored_in(part, offsets, first, last)
            if restored and len(restored) < count:
                head = next(o for o in offsets if o not in restored)
        unfinished = count - len(restored)
        if leader_epoch is not None:
            part.leader_epochs[head] = leader_epoch
        part.ranges[head] = (last + 1, unfinished)
        pending = part.pending
        pending.append(head)
        ticket = _new_tuple(RangeTicket, (part.tp, first, last, count, part.epoch, restored, head))
        if unfinished == 0:
            part.done[head] = True
            part.finished_entries += 1
            self._advance(part)
            return ticket
        part.done[head] = False
        part.unfinished += unfinished
        self._unfinished_total += unfinished
        if len(pending) == 1:
            part.watermark = head
        return ticket

    def complete(self, ticket: Ticket | RangeTicket) -> Completion:
        """Mark the ticket's offset (or the whole chunk of a :class:`RangeTicket`)
        finished. Stale tickets (their epoch is over) and repeated completions
        change nothing."""
        if isinstance(ticket, RangeTicket):
            return self._complete_range(ticket)
        tp, offset, epoch, _ = ticket
        part = self._by_epoch.get(epoch)
        if part is None or (part.tp is not tp and part.tp != tp):
            return Completion.STALE
        done = part.done
        state = done.get(offset)
        if state is None:
            # Finished offsets below the watermark are forgotten; an offset in that
            # range is a repeat (a gap offset there cannot be told apart from one).
            first, wm = part.first_tracked, part.watermark
            if first is not None and wm is not None and first <= offset < wm:
                return Completion.DUPLICATE
            raise UnknownOffsetError(f"{tp}: offset {offset} was never tracked in epoch {epoch}")
        if state:
            return Completion.DUPLICATE
        ranges = part.ranges
        if ranges and offset in ranges:
            raise UnknownOffsetError(
                f"{tp}: offset {offset} was tracked as part of a range in epoch {epoch}; "
                "complete its RangeTicket"
            )
        part.unfinished -= 1
        self._unfinished_total -= 1
        pending = part.pending
        if pending[0] != offset:
            done[offset] = True
            part.finished_entries += 1
            return Completion.COMPLETED
        # The lowest unfinished offset is finished: move the watermark up (inlined
        # _advance, as this is the hot path).
        pending.popleft()
        del done[offset]
        epochs = part.leader_epochs
        if epochs:
            le = epochs.pop(offset, None)
            if le is not None:
                part.leader_epoch = le
        end = offset + 1
        while pending and done[pending[0]]:
            key = pending.popleft()
            del done[key]
            part.finished_entries -= 1
            if epochs:
                le = epochs.pop(key, None)
                if le is not None:
                    part.leader_epoch = le
            end = ranges.pop(key)[0] if ranges and key in ranges else key + 1
        part.watermark = pending[0] if pending else end
        if part.restored:
            self._prune_restored(part, part.watermark)
        return Completion.COMPLETED

    def _complete_range(self, ticket: RangeTicket) -> Completion:
        part = self._by_epoch.get(ticket.epoch)
        tp = ticket.tp
        if part is None or (part.tp is not tp and part.tp != tp):
            return Completion.STALE
        key = ticket.head
        state = part.done.get(key)
        if state is None:
            first, wm = part.first_tracked, part.watermark
            if first is not None and wm is not None and first <= key < wm:
                return Completion.DUPLICATE
            raise UnknownOffsetError(
                f"{tp}: no range from {ticket.first} to {ticket.last} was tracked in epoch "
                f"{ticket.epoch}"
            )
        if state:
            return Completion.DUPLICATE
        entry = part.ranges.get(key)
        if entry is None or entry[0] != ticket.last + 1:
            raise UnknownOffsetError(
                f"{tp}: offset {key} was not tracked as a range ending at {ticket.last} in "
                f"epoch {ticket.epoch}"
            )
        records = entry[1]
        part.unfinished -= records
        self._unfinished_total -= records
        part.done[key] = True
        part.finished_entries += 1
        if part.pending[0] == key:
            self._advance(part)
        return Completion.COMPLETED

    def split_range(self, ticket: RangeTicket, unfinished: Sequence[int]) -> list[Ticket]:
        """A partly finished chunk: every record of ``ticket``'s range is finished
        except ``unfinished`` (strictly ascending offsets of the range, not
        restored). The range is replaced by single entries for those offsets and
        finished spans between them (gaps included: a gap offset never comes back),
        so the watermark can move up to the first unfinished one and the commit
        metadata can carry the finished ones. Returns one :class:`Ticket` per
        unfinished offset, to :meth:`complete` one by one.

        O(len(unfinished)) plus finding the range among the partition's pending
        entries. A stale ticket changes nothing and returns ``[]``."""
        part = self._by_epoch.get(ticket.epoch)
        tp = ticket.tp
        if part is None or (part.tp is not tp and part.tp != tp):
            return []
        key = ticket.head
        entry = part.ranges.get(key)
        if part.done.get(key) is not False or entry is None or entry[0] != ticket.last + 1:
            raise UnknownOffsetError(
                f"{tp}: no unfinished range from {ticket.first} to {ticket.last} in epoch "
                f"{ticket.epoch}"
            )
        end, records = entry
        if not unfinished or len(unfinished) > records:
            raise ValueError(
                f"{tp}: split_range needs 1 to {records} unfinished offsets, got {len(unfinished)}"
            )
        previous = key - 1
        for offset in unfinished:
            if offset <= previous or offset >= end:
                raise OffsetOrderError(
                    f"{tp}: unfinished offsets must ascend within {key}..{end - 1}, got {offset}"
                )
            previous = offset
        del part.ranges[key]
        del part.done[key]
        leader_epoch = part.leader_epochs.pop(key, None)
        keys: list[int] = []
        start = key
        for offset in unfinished:
            if offset > start:  # the finished span before it
                part.ranges[start] = (offset, 0)
                part.done[start] = True
                part.finished_entries += 1
                keys.append(start)
            part.done[offset] = False
            keys.append(offset)
            start = offset + 1
        if start < end:
            part.ranges[start] = (end, 0)
            part.done[start] = True
            part.finished_entries += 1
            keys.append(start)
        if leader_epoch is not None:
            part.leader_epochs[keys[-1]] = leader_epoch
        pending = part.pending
        index = 0 if pending[0] == key else pending.index(key)
        pending.rotate(-index)
        pending.popleft()
        pending.extendleft(reversed(keys))
        pending.rotate(index)
        freed = records - len(unfinished)
        part.unfinished -= freed
        self._unfinished_total -= freed
        if index == 0:
            self._advance(part)
        return [_new_tuple(Ticket, (part.tp, o, part.epoch, False)) for o in unfinished]

    def _advance(self, part: _Partition) -> None:
        """Pop the finished entries at the front; move the watermark past them."""
        pending, done, epochs, ranges = part.pending, part.done, part.leader_epochs, part.ranges
        end = None
        while pending and done[pending[0]]:
            key = pending.popleft()
            del done[key]
            part.finished_entries -= 1
            if epochs:
                le = epochs.pop(key, None)
                if le is not None:
                    part.leader_epoch = le
            end = ranges.pop(key)[0] if ranges and key in ranges else key + 1
        if pending:
            part.watermark = pending[0]
        elif end is not None:
            part.watermark = end
        if part.restored and part.watermark is not None:
            self._prune_restored(part, part.watermark)

    @staticmethod
    def _is_restored(part: _Partition, offset: int) -> bool:
        runs = part.restored
        i = bisect.bisect_right(runs, offset, key=_run_start) - 1
        return i >= 0 and runs[i][0] <= offset < runs[i][1]

    @staticmethod
    def _restored_in(
        part: _Partition, offsets: Sequence[int], first: int, last: int
    ) -> frozenset[int]:
        """The offsets of a chunk that restored runs cover (cheap when none overlap)."""
        runs = part.restored
        i = bisect.bisect_right(runs, last, key=_run_start) - 1
        if i < 0 or runs[i][1] <= first:
            return _NOTHING  # the last run starting at or below ``last`` ends before it
        lo = bisect.bisect_right(runs, first, key=_run_start) - 1
        lo = max(lo, 0)
        covering = runs[lo : i + 1]
        out = []
        j = 0
        for offset in offsets:
            while j < len(covering) and covering[j][1] <= offset:
                j += 1
            if j == len(covering):
                break
            if covering[j][0] <= offset:
                out.append(offset)
        return frozenset(out)

    @staticmethod
    def _prune_restored(part: _Partition, watermark: int) -> None:
        runs = part.restored
        while runs and runs[0][1] <= watermark:
            runs.pop(0)

    # -- queries ------------------------------------------------------------------

    def is_assigned(self, tp: TopicPartition) -> bool:
        return tp in self._parts

    def assigned(self) -> frozenset[TopicPartition]:
        return frozenset(self._parts)

    def epoch(self, tp: TopicPartition) -> int:
        return self._get(tp).epoch

    def watermark(self, tp: TopicPartition) -> int | None:
        """The position safe to commit for ``tp`` (None when none is known yet)."""
        return self._get(tp).watermark

    def unfinished(self, tp: TopicPartition | None = None) -> int:
        """Tracked records not yet finished, for ``tp`` or in total (every record of
        an unfinished range counts, except those restored from metadata)."""
        if tp is None:
            return self._unfinished_total
        return self._get(tp).unfinished

    def is_full(self, tp: TopicPartition) -> bool:
        """True when ``tp`` has reached its unfinished limit: pause it."""
        return self._get(tp).unfinished >= self.max_unfinished_per_partition

    @property
    def is_full_total(self) -> bool:
        """True when the total unfinished limit is reached: pause everything."""
        return self._unfinished_total >= self.max_unfinished_total

    def has_finished_above_watermark(self, tp: TopicPartition) -> bool:
        """True when something above the watermark is known to be finished, i.e. when
        :meth:`encode_metadata` has offsets to carry. O(1): check it before paying
        for the encoding."""
        part = self._get(tp)
        if part.finished_entries:
            return True
        runs, wm = part.restored, part.watermark
        # restored runs are pruned lazily: only those ending above the watermark count
        return bool(runs) and wm is not None and runs[-1][1] > wm

    def finished_above_watermark(self, tp: TopicPartition) -> list[tuple[int, int]]:
        """Sorted half-open runs of offsets above the watermark known to be finished:
        completed offsets, completed ranges (from their lowest offset not restored to
        their last, gaps included: a gap offset never comes back), and those restored
        from metadata."""
        part = self._get(tp)
        wm = part.watermark
        if wm is None:
            return []
        ranges = part.ranges
        merged = [
            (k, ranges[k][0] if k in ranges else k + 1)
            for k, d in part.done.items()
            if d and k >= wm
        ]
        if part.restored:
            merged.extend(r for r in part.restored if r[1] > wm)
        # ``done`` is in offset order except after split_range (it adds keys later):
        # sort (a sorted list costs one pass)
        merged.sort()
        out: list[tuple[int, int]] = []
        for start, end in merged:
            s = max(start, wm)
            if out and s <= out[-1][1]:
                if end > out[-1][1]:
                    out[-1] = (out[-1][0], end)
            else:
                out.append((s, end))
        return out

    def encode_metadata(self, tp: TopicPartition) -> str | None:
        """The commit metadata for the current watermark (None when no position),
        bound to this ledger's group and ``tp``. When the budget cannot even hold
        the header (a huge position with a tiny budget) it is "" (nothing finished)."""
        part = self._get(tp)
        self.last_metadata_dropped = 0
        if part.watermark is None:
            return None
        try:
            text, self.last_metadata_dropped = encode_finished_counted(
                part.watermark,
                runs=self.finished_above_watermark(tp),
                budget=self.metadata_budget,
                binding=part.binding,
            )
        except ValueError:
            return ""
        return text

    def stored_position(
        self, tp: TopicPartition, *, with_metadata: bool = True
    ) -> StoredPosition | None:
        """The watermark as a :class:`StoredPosition` ready to store or commit."""
        part = self._get(tp)
        if part.watermark is None:
            return None
        meta = self.encode_metadata(tp) if with_metadata else None
        return StoredPosition(tp, part.watermark, meta, part.leader_epoch)

    def _get(self, tp: TopicPartition) -> _Partition:
        part = self._parts.get(tp)
        if part is None:
            raise PartitionNotAssignedError(f"{tp} is not assigned")
        return part

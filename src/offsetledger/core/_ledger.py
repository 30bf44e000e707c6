"""OffsetLedger: which polled offsets are finished, per partition and epoch, and
the position that is safe to commit (the watermark)."""

from __future__ import annotations

import bisect
import enum
from collections import deque
from typing import NamedTuple

import attrs

from offsetledger.core._errors import (
    InvalidOffsetError,
    OffsetOrderError,
    PartitionNotAssignedError,
    UnknownOffsetError,
)
from offsetledger.core._metadata import DEFAULT_METADATA_BUDGET, decode_finished, encode_finished
from offsetledger.core._types import StoredPosition, TopicPartition

__all__ = ["Completion", "OffsetLedger", "Ticket"]


class Ticket(NamedTuple):
    """Handed out by :meth:`OffsetLedger.track` for one polled offset, bound to the
    partition's assignment epoch. ``restored`` is True when commit metadata said the
    offset was already finished: it is complete from the start and should be skipped."""

    tp: TopicPartition
    offset: int
    epoch: int
    restored: bool = False


def _run_start(run: tuple[int, int]) -> int:
    return run[0]


# Builds a Ticket without the generated ``__new__`` frame: track() is the hot path.
_new_tuple = tuple.__new__


class Completion(enum.Enum):
    """What :meth:`OffsetLedger.complete` did with a ticket."""

    COMPLETED = "completed"  #: the offset is now finished
    DUPLICATE = "duplicate"  #: it was already finished; nothing changed
    STALE = "stale"  #: its epoch is over (revoked, lost or re-assigned); nothing changed


@attrs.define(slots=True)
class _Partition:
    tp: TopicPartition  # the object given to assign; tickets carry this one
    epoch: int
    committed: int | None
    watermark: int | None
    restored: list[tuple[int, int]]
    pending: deque[int] = attrs.field(factory=deque)
    done: dict[int, bool] = attrs.field(factory=dict)
    leader_epochs: dict[int, int] = attrs.field(factory=dict)
    first_tracked: int | None = None
    last_tracked: int | None = None
    unfinished: int = 0
    leader_epoch: int | None = None  # of the record just below the watermark


class OffsetLedger:
    """Tracks polled offsets and their completion; computes commit-safe positions.

    Per assigned partition, the *watermark* is the lowest tracked offset that is not
    finished; when every tracked offset is finished, the highest tracked + 1; before
    anything was tracked, the committed position given to :meth:`assign`. Offsets
    never polled (gaps left by compaction or transaction markers) never hold it
    back, and it never decreases within an epoch.

    Pure: no I/O, threads or clock. Not thread-safe: drive it from one thread.
    """

    def __init__(
        self,
        *,
        max_unfinished_per_partition: int = 10_000,
        max_unfinished_total: int = 100_000,
        metadata_budget: int = DEFAULT_METADATA_BUDGET,
    ) -> None:
        if max_unfinished_per_partition < 1:
            raise ValueError("max_unfinished_per_partition must be >= 1")
        if max_unfinished_total < 1:
            raise ValueError("max_unfinished_total must be >= 1")
        if metadata_budget < 32:
            raise ValueError("metadata_budget must be >= 32 bytes")
        self.max_unfinished_per_partition = max_unfinished_per_partition
        self.max_unfinished_total = max_unfinished_total
        self.metadata_budget = metadata_budget
        self._parts: dict[TopicPartition, _Partition] = {}
        self._by_epoch: dict[int, _Partition] = {}  # live epochs only
        self._epoch = 0
        self._unfinished_total = 0

    # -- assignment ---------------------------------------------------------------

    def assign(
        self,
        tp: TopicPartition,
        committed_position: int | None,
        metadata: str | None = None,
    ) -> int:
        """Start a new assignment epoch for ``tp`` and return it. ``metadata`` is the
        string committed with ``committed_position``; finished offsets it lists are
        reported by :meth:`track` as ``restored``. A partition that is still
        assigned is forgotten first (its open tickets become stale)."""
        if committed_position is not None and committed_position < 0:
            raise InvalidOffsetError(
                f"{tp}: committed position must be >= 0, got {committed_position}"
            )
        if tp in self._parts:
            self._forget(tp)
        self._epoch += 1
        restored = decode_finished(
            metadata, committed_position, budget=max(self.metadata_budget, 4096)
        )
        part = _Partition(
            tp=tp,
            epoch=self._epoch,
            committed=committed_position,
            watermark=committed_position,
            restored=restored,
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

    def track(self, tp: TopicPartition, offset: int, leader_epoch: int | None = None) -> Ticket:
        """Record that ``offset`` was polled from ``tp``; offsets must increase
        within an epoch and may skip (gaps)."""
        part = self._parts.get(tp)
        if part is None:
            raise PartitionNotAssignedError(f"{tp} is not assigned; cannot track offset {offset}")
        last = part.last_tracked
        if last is None:
            if offset < 0:
                raise InvalidOffsetError(f"{tp}: offset must be >= 0, got {offset}")
            if part.watermark is not None and offset < part.watermark:
                raise OffsetOrderError(
                    f"{tp}: offset {offset} is below the position {part.watermark} the "
                    "assignment started at; the watermark never moves backwards"
                )
            part.first_tracked = offset
        elif offset <= last:
            if offset < 0:
                raise InvalidOffsetError(f"{tp}: offset must be >= 0, got {offset}")
            raise OffsetOrderError(
                f"{tp}: offset {offset} polled after offset {last} in the same epoch; "
                "offsets must increase within an assignment"
            )
        part.last_tracked = offset
        if leader_epoch is not None:
            part.leader_epochs[offset] = leader_epoch
        if part.restored and self._is_restored(part, offset):
            part.done[offset] = True
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

    def complete(self, ticket: Ticket) -> Completion:
        """Mark the ticket's offset finished. Stale tickets (their epoch is over)
        and repeated completions change nothing."""
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
        part.unfinished -= 1
        self._unfinished_total -= 1
        pending = part.pending
        if pending[0] != offset:
            done[offset] = True
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
        while pending and done[pending[0]]:
            offset = pending.popleft()
            del done[offset]
            if epochs:
                le = epochs.pop(offset, None)
                if le is not None:
                    part.leader_epoch = le
        part.watermark = pending[0] if pending else offset + 1
        if part.restored:
            self._prune_restored(part, part.watermark)
        return Completion.COMPLETED

    def _advance(self, part: _Partition) -> None:
        pending, done, epochs = part.pending, part.done, part.leader_epochs
        popped = None
        while pending and done[pending[0]]:
            popped = pending.popleft()
            del done[popped]
            if epochs:
                le = epochs.pop(popped, None)
                if le is not None:
                    part.leader_epoch = le
        if pending:
            part.watermark = pending[0]
        elif popped is not None:
            part.watermark = popped + 1
        if part.restored and part.watermark is not None:
            self._prune_restored(part, part.watermark)

    @staticmethod
    def _is_restored(part: _Partition, offset: int) -> bool:
        runs = part.restored
        i = bisect.bisect_right(runs, offset, key=_run_start) - 1
        return i >= 0 and runs[i][0] <= offset < runs[i][1]

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
        """Tracked offsets not yet finished, for ``tp`` or in total."""
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

    def finished_above_watermark(self, tp: TopicPartition) -> list[tuple[int, int]]:
        """Sorted half-open runs of offsets above the watermark known to be finished:
        completed ones and those restored from metadata that were not polled again."""
        part = self._get(tp)
        wm = part.watermark
        if wm is None:
            return []
        completed = [o for o, d in part.done.items() if d and o > wm]
        merged = sorted([(o, o + 1) for o in completed] + [r for r in part.restored if r[1] > wm])
        out: list[tuple[int, int]] = []
        for start, end in merged:
            s = max(start, wm)
            if out and s <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], end))
            else:
                out.append((s, end))
        return out

    def encode_metadata(self, tp: TopicPartition) -> str | None:
        """The commit metadata for the current watermark (None when no position)."""
        part = self._get(tp)
        if part.watermark is None:
            return None
        return encode_finished(
            part.watermark, runs=self.finished_above_watermark(tp), budget=self.metadata_budget
        )

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

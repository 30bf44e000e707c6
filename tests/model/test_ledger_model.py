"""Model-based tests: OffsetLedger against a plain-Python model.

The machine interleaves assign / track single offsets and chunks (ranges, with
gaps) / complete (out of order, repeated, stale; single offsets and whole chunks)
/ revoke / lost / re-assign with the metadata the ledger encoded at revoke (so
chunks come back partly finished: some of their offsets restored), and checks
after every step that the ledger agrees with a model that keeps every tracked
offset in a set. The planted-bug tests at the bottom show that the machine
notices a wrong ledger, in the per-offset and in the range path.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from offsetledger.core import (
    Completion,
    OffsetLedger,
    RangeTicket,
    Ticket,
    TopicPartition,
    decode_finished,
)
from offsetledger.core._metadata import MAGIC, MAGIC_V1
from tests.model.planted import RANGE_BUGS, PlantedBug
from tests.strategies import foreign_metadata, metadata_for, mutated, with_crc

TPS = (TopicPartition("orders", 0), TopicPartition("orders", 1))
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _b36_len(n: int) -> int:
    length = 1
    while n >= 36:
        n //= 36
        length += 1
    return length


def _runs(offsets: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for off in sorted(offsets):
        if runs and runs[-1][1] == off:
            runs[-1] = (runs[-1][0], off + 1)
        else:
            runs.append((off, off + 1))
    return runs


def expected_encoded(position: int, finished: set[int], budget: int) -> list[int]:
    """The offsets the documented format (``OL2;<binding8>;<pos>;<gap[.len]>,...;<crc8>``)
    can carry for ``position`` within ``budget`` characters, keeping the lowest runs."""
    room = budget - len(f"{MAGIC};12345678;;") - _b36_len(position) - 9
    used, prev_end = 0, position
    kept: list[int] = []
    for start, end in _runs([o for o in finished if o >= position]):
        gap, length = start - prev_end, end - start
        cost = _b36_len(gap) + (0 if length == 1 else 1 + _b36_len(length)) + (1 if kept else 0)
        if used + cost > room:
            break
        used += cost
        kept.extend(range(start, end))
        prev_end = end
    return kept


@attrs.define
class ModelRange:
    """A chunk as the model sees it: every offset, and the span a finished chunk
    is encoded as (from its lowest offset not restored to its last)."""

    offsets: tuple[int, ...]
    head: int
    ticket: RangeTicket
    done: bool = False
    leader_epoch: int | None = None
    #: split (OffsetLedger.split_range): its range ticket is spent, its unfinished
    #: records have tickets of their own
    split: bool = False

    @property
    def span(self) -> range:
        return range(self.head, self.offsets[-1] + 1)


@attrs.define
class ModelPartition:
    epoch: int
    committed: int | None
    restored: set[int]
    tracked: list[int] = attrs.Factory(list)
    finished: set[int] = attrs.Factory(set)
    ranges: list[ModelRange] = attrs.Factory(list)
    last_watermark: int | None = None

    @property
    def unfinished(self) -> list[int]:
        return [o for o in self.tracked if o not in self.finished]

    def watermark(self) -> int | None:
        pending = self.unfinished
        if pending:
            return min(pending)
        if self.tracked:
            return self.tracked[-1] + 1
        return self.committed

    def finished_above_watermark(self) -> set[int]:
        """Finished offsets, restored ones and the spans of finished chunks (their
        gaps included: an offset never polled inside a chunk never comes back)."""
        wm = self.watermark()
        assert wm is not None
        spans = {o for r in self.ranges if r.done for o in r.span} - set(self.unfinished)
        return {o for o in self.finished | self.restored | spans if o >= wm}

    def leader_epoch(self) -> int | None:
        """The leader epoch of the last chunk wholly below the watermark that had one."""
        wm = self.watermark()
        below = [
            r.leader_epoch
            for r in self.ranges
            if r.leader_epoch is not None and wm is not None and r.offsets[-1] < wm
        ]
        return below[-1] if below else None

    @property
    def open_ranges(self) -> list[ModelRange]:
        return [r for r in self.ranges if not r.done]


class LedgerMachine(RuleBasedStateMachine):
    """Differential test of OffsetLedger against :class:`ModelPartition`."""

    ledger_factory: ClassVar[type[OffsetLedger]] = OffsetLedger
    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[TopicPartition, ModelPartition] = {}
        # Last (position, metadata, offsets it carries) per partition, kept across epochs.
        self.handoff: dict[TopicPartition, tuple[int, str | None, set[int]]] = {}
        self.ledger = OffsetLedger()

    @initialize(
        per_partition=st.integers(min_value=1, max_value=6),
        total=st.integers(min_value=1, max_value=10),
        budget=st.sampled_from([32, 36, 40, 48, 64, 3072]),
        committed=st.lists(st.none() | st.integers(0, 30), min_size=len(TPS), max_size=len(TPS)),
    )
    def start(
        self, per_partition: int, total: int, budget: int, committed: list[int | None]
    ) -> None:
        """A ledger with small limits and metadata budgets, every partition assigned."""
        self.ledger = self.ledger_factory(
            max_unfinished_per_partition=per_partition,
            max_unfinished_total=total,
            metadata_budget=budget,
        )
        for tp, position in zip(TPS, committed, strict=True):
            self._assign(tp, position, None, set())

    # -- assignment -------------------------------------------------------------

    def _assign(
        self, tp: TopicPartition, committed: int | None, meta: str | None, restored: set[int]
    ) -> None:
        if meta is not None:
            event(f"assign: metadata carries {'some' if restored else 'no'} offsets")
        epoch = self.ledger.assign(tp, committed, meta)
        for other in self.model.values():
            assert epoch > other.epoch, "epochs must be fresh"
        self.model[tp] = ModelPartition(epoch=epoch, committed=committed, restored=restored)

    @rule(tp=st.sampled_from(TPS), committed=st.none() | st.integers(min_value=0, max_value=30))
    def assign_fresh(self, tp: TopicPartition, committed: int | None) -> None:
        note(f"assign {tp} at {committed} without metadata")
        self._assign(tp, committed, None, set())

    @precondition(lambda self: bool(self.handoff))
    @rule(data=st.data())
    def reassign_with_metadata(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from(sorted(self.handoff)))
        position, meta, carried = self.handoff[tp]
        note(f"re-assign {tp} at {position} with {meta!r} (carries {sorted(carried)})")
        self._assign(tp, position, meta, carried)

    @precondition(lambda self: bool(self.handoff))
    @rule(data=st.data())
    def reassign_elsewhere(self, data: st.DataObject) -> None:
        """Metadata written for another position must restore nothing."""
        tp = data.draw(st.sampled_from(sorted(self.handoff)))
        position, meta, _ = self.handoff[tp]
        shift = data.draw(st.integers(min_value=1, max_value=3))
        note(f"re-assign {tp} at {position + shift} with metadata for {position}")
        self._assign(tp, position + shift, meta, set())

    def _revoke(self, tp: TopicPartition) -> None:
        part = self.model.pop(tp)
        meta = self._check_metadata(tp, part)
        final = self.ledger.revoke(tp)
        note(f"revoke {tp} -> {final}")
        assert final == part.watermark()
        assert not self.ledger.is_assigned(tp)
        if final is not None:
            budget = self.ledger.metadata_budget
            self.handoff[tp] = (final, meta, _offsets(decode_finished(meta, final, budget=budget)))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        self._revoke(data.draw(st.sampled_from(sorted(self.model))))

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def hand_over(self, data: st.DataObject) -> None:
        """A rebalance moves the partition: revoke, then assign it again at the final
        watermark with the metadata committed beside it."""
        tp = data.draw(st.sampled_from(sorted(self.model)))
        self._revoke(tp)
        if tp in self.handoff:
            position, meta, carried = self.handoff[tp]
            self._assign(tp, position, meta, carried)
        else:
            self._assign(tp, None, None, set())

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from(sorted(self.model)))
        note(f"lost {tp}")
        del self.model[tp]
        self.ledger.lost(tp)
        assert not self.ledger.is_assigned(tp)

    # -- records ----------------------------------------------------------------

    def _next_offset(self, tp: TopicPartition) -> int:
        part = self.model[tp]
        if part.tracked:
            return part.tracked[-1] + 1
        return part.committed if part.committed is not None else 0

    def _track(self, tp: TopicPartition, gap: int) -> Ticket:
        part = self.model[tp]
        offset = self._next_offset(tp) + gap
        ticket = self.ledger.track(tp, offset)
        note(f"track {tp} {offset} -> restored={ticket.restored}")
        assert ticket == Ticket(tp, offset, part.epoch, offset in part.restored)
        part.tracked.append(offset)
        if ticket.restored:
            event("track: restored from metadata")
            part.finished.add(offset)
        return ticket

    @precondition(lambda self: bool(self.model))
    @rule(target=tickets, data=st.data(), gap=st.sampled_from([0, 0, 0, 1, 2, 5]))
    def track(self, data: st.DataObject, gap: int) -> Ticket:
        return self._track(data.draw(st.sampled_from(sorted(self.model))), gap)

    @precondition(lambda self: bool(self.model))
    @rule(
        target=tickets,
        data=st.data(),
        count=st.sampled_from([1, 2, 3, 5, 8, 13, 21]),
        gap=st.sampled_from([0, 1]),
    )
    def track_batch(self, data: st.DataObject, count: int, gap: int) -> MultipleResults[Ticket]:
        """A poll returning several records of one partition, contiguous or with a
        gap after each (a compacted log)."""
        tp = data.draw(st.sampled_from(sorted(self.model)))
        first = self._track(tp, data.draw(st.sampled_from([0, gap])))
        return multiple(first, *(self._track(tp, gap) for _ in range(count - 1)))

    @precondition(lambda self: bool(self.model))
    @rule(
        target=tickets,
        data=st.data(),
        gaps=st.lists(st.sampled_from([0, 0, 0, 0, 1, 3]), min_size=1, max_size=12),
        leader_epoch=st.none() | st.integers(0, 3),
    )
    def track_range(
        self, data: st.DataObject, gaps: list[int], leader_epoch: int | None
    ) -> RangeTicket:
        """A chunk: one poll's records of one partition, ascending, gaps allowed."""
        tp = data.draw(st.sampled_from(sorted(self.model)))
        offsets: list[int] = []
        nxt = self._next_offset(tp)
        for gap in gaps:
            offsets.append(nxt + gap)
            nxt = offsets[-1] + 1
        return self._track_range(tp, offsets, leader_epoch)

    @precondition(lambda self: any(p.open_ranges for p in self.model.values()))
    @rule(target=tickets, data=st.data())
    def redeliver_after_hand_over(self, data: st.DataObject) -> RangeTicket:
        """A rebalance moves a partition with an unfinished chunk; the new owner
        polls again from the committed position: the same offsets, as one chunk,
        starting at the offset the old chunk started its unfinished part at (its
        tickets of the old epoch are still around and must stay stale)."""
        tp = data.draw(st.sampled_from(sorted(t for t, p in self.model.items() if p.open_ranges)))
        part = self.model[tp]
        wm = part.watermark()
        again = [o for o in part.tracked if wm is not None and o >= wm]
        late = [r.ticket for r in part.open_ranges]
        self._revoke(tp)
        position, meta, carried = self.handoff[tp]
        self._assign(tp, position, meta, carried)
        note(f"redeliver {tp} {again}")
        ticket = self._track_range(tp, again, None)
        for old in late:  # the old owner's late results
            result = self.ledger.complete(old)
            note(f"late complete {old} -> {result.name}")
            assert result is Completion.STALE, f"{old}: {result} != {Completion.STALE}"
        return ticket

    def _track_range(
        self, tp: TopicPartition, offsets: list[int], leader_epoch: int | None
    ) -> RangeTicket:
        part = self.model[tp]
        ticket = self.ledger.track_range(tp, offsets, leader_epoch)
        restored = frozenset(o for o in offsets if o in part.restored)
        head = next((o for o in offsets if o not in restored), offsets[0])
        note(f"track range {tp} {offsets} -> restored={sorted(ticket.restored)} head={head}")
        assert ticket == RangeTicket(
            tp, offsets[0], offsets[-1], len(offsets), part.epoch, restored, head
        )
        assert all(ticket.is_restored(o) is (o in restored) for o in offsets)
        part.tracked.extend(offsets)
        part.finished.update(restored)
        model_range = ModelRange(
            tuple(offsets), head, ticket, done=ticket.all_restored, leader_epoch=leader_epoch
        )
        part.ranges.append(model_range)
        if restored:
            event(f"track_range: {'all' if ticket.all_restored else 'some'} offsets restored")
        return ticket

    def _complete_range_now(self, part: ModelPartition, model_range: ModelRange) -> None:
        assert self.ledger.complete(model_range.ticket) is Completion.COMPLETED
        model_range.done = True
        part.finished.update(model_range.offsets)

    @precondition(lambda self: any(len(p.unfinished) > 1 for p in self.model.values()))
    @rule(data=st.data(), stride=st.sampled_from([1, 2]))
    def complete_behind_head(self, data: st.DataObject, stride: int) -> None:
        """The head-of-line record (or chunk) is slow; what is behind it finishes
        (every entry, or every other one, leaving holes)."""
        tp = data.draw(
            st.sampled_from(sorted(t for t, p in self.model.items() if len(p.unfinished) > 1))
        )
        part = self.model[tp]
        in_range = {o: r for r in part.open_ranges for o in r.offsets}
        entries: list[int | ModelRange] = []
        for offset in part.unfinished:
            r = in_range.get(offset)
            if r is None:
                entries.append(offset)
            elif not entries or entries[-1] is not r:
                entries.append(r)
        for entry in entries[1::stride]:
            if isinstance(entry, ModelRange):
                self._complete_range_now(part, entry)
            else:
                ticket = Ticket(tp, entry, part.epoch)
                assert self.ledger.complete(ticket) is Completion.COMPLETED
                part.finished.add(entry)
        note(f"complete {tp} behind the head, stride {stride}; left {part.unfinished}")

    @precondition(lambda self: any(p.open_ranges for p in self.model.values()))
    @rule(target=tickets, data=st.data())
    def split_range(self, data: st.DataObject) -> MultipleResults[Ticket]:
        """A partly finished chunk: some of its records failed and are retried on
        their own; the rest are done. The range is split: the finished ones count,
        each unfinished one gets its own ticket."""
        tp = data.draw(st.sampled_from(sorted(t for t, p in self.model.items() if p.open_ranges)))
        part = self.model[tp]
        model_range = data.draw(st.sampled_from(part.open_ranges))
        live = [o for o in model_range.offsets if o not in part.finished]
        if not live:
            return multiple()
        unfinished = sorted(data.draw(st.sets(st.sampled_from(live), min_size=1)))
        got = self.ledger.split_range(model_range.ticket, unfinished)
        note(f"split {model_range.ticket} leaving {unfinished}")
        assert got == [Ticket(tp, o, part.epoch) for o in unfinished]
        model_range.done = True
        model_range.split = True
        part.finished.update(o for o in model_range.offsets if o not in unfinished)
        event(f"split_range: {'all' if len(unfinished) == len(live) else 'some'} left")
        return multiple(*got)

    @rule(ticket=tickets)
    def complete(self, ticket: Ticket | RangeTicket) -> None:
        part = self.model.get(ticket.tp)
        if (
            isinstance(ticket, RangeTicket)
            and part is not None
            and part.epoch == ticket.epoch
            and any(r.split for r in part.ranges if r.ticket == ticket)
        ):
            return  # spent by the split: its records' own tickets complete it
        result = self.ledger.complete(ticket)
        note(f"complete {ticket} -> {result.name}")
        if part is None or part.epoch != ticket.epoch:
            expected = Completion.STALE
        elif isinstance(ticket, RangeTicket):
            (model_range,) = (r for r in part.ranges if r.ticket == ticket)
            expected = Completion.DUPLICATE if model_range.done else Completion.COMPLETED
            model_range.done = True
            part.finished.update(model_range.offsets)
        elif ticket.offset in part.finished:
            expected = Completion.DUPLICATE
        else:
            expected = Completion.COMPLETED
            part.finished.add(ticket.offset)
        event(f"complete {type(ticket).__name__}: {result.name}")
        assert result is expected, f"{ticket}: {result} != {expected}"

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def encode(self, data: st.DataObject) -> None:
        tp = data.draw(st.sampled_from(sorted(self.model)))
        self._check_metadata(tp, self.model[tp])

    def _check_metadata(self, tp: TopicPartition, part: ModelPartition) -> str | None:
        """encode_metadata -> decode gives exactly the finished offsets above the
        watermark that fit the budget, lowest first, and never an unfinished one."""
        meta = self.ledger.encode_metadata(tp)
        wm = part.watermark()
        if wm is None:
            assert meta is None
            return None
        assert meta is not None
        assert len(meta.encode()) <= self.ledger.metadata_budget
        stored = self.ledger.stored_position(tp)
        assert stored is not None
        assert (stored.position, stored.metadata) == (wm, meta)
        decoded = _offsets(decode_finished(meta, wm, budget=self.ledger.metadata_budget))
        note(f"metadata {meta!r} carries {sorted(decoded)}")
        assert not decoded & set(part.unfinished), "metadata lists an unfinished offset"
        finished = part.finished_above_watermark()
        assert sorted(decoded) == expected_encoded(wm, finished, self.ledger.metadata_budget)
        event(
            f"metadata: {'all' if len(decoded) == len(finished) else 'some'} finished offsets fit"
        )
        return meta

    # -- invariants -------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        assert self.ledger.assigned() == frozenset(self.model)
        total = 0
        for tp, part in self.model.items():
            wm = self.ledger.watermark(tp)
            assert wm == part.watermark(), f"{tp}: watermark {wm} != model {part.watermark()}"
            if wm is not None:
                assert all(wm <= o for o in part.unfinished), (
                    "watermark passed an unfinished offset"
                )
                if part.last_watermark is not None:
                    assert wm >= part.last_watermark, "watermark went backwards"
            part.last_watermark = wm
            assert self.ledger.epoch(tp) == part.epoch
            if wm is not None:
                assert self.ledger.has_finished_above_watermark(tp) == bool(
                    part.finished_above_watermark()
                ), "has_finished_above_watermark disagrees with the model"
                stored = self.ledger.stored_position(tp, with_metadata=False)
                assert stored is not None
                assert stored.leader_epoch == part.leader_epoch(), "wrong leader epoch"
            unfinished = len(part.unfinished)
            total += unfinished
            assert self.ledger.unfinished(tp) == unfinished
            assert self.ledger.is_full(tp) == (
                unfinished >= self.ledger.max_unfinished_per_partition
            )
        assert self.ledger.unfinished() == total
        assert self.ledger.is_full_total == (total >= self.ledger.max_unfinished_total)


def _offsets(runs: list[tuple[int, int]]) -> set[int]:
    return {o for start, end in runs for o in range(start, end)}


MACHINE_SETTINGS = settings(stateful_step_count=60)
TestLedgerModel = LedgerMachine.TestCase
TestLedgerModel.settings = MACHINE_SETTINGS


# -- fuzzed metadata --------------------------------------------------------------


def _restored_after(meta: str | None, position: int, count: int) -> set[int]:
    """Assign a fresh ledger at ``position`` with ``meta``, track ``count`` offsets
    from there and return those reported as already finished."""
    ledger = OffsetLedger()
    tp = TPS[0]
    ledger.assign(tp, position, meta)
    restored = set()
    for offset in range(position, position + count):
        if ledger.track(tp, offset).restored:
            restored.add(offset)
    return restored


@given(meta=foreign_metadata, position=st.integers(min_value=0, max_value=50))
def test_foreign_metadata_restores_nothing(meta: str, position: int) -> None:
    assert decode_finished(meta, position) == []
    assert _restored_after(meta, position, 60) == set()


@given(data=st.data(), position=st.integers(min_value=0, max_value=50))
def test_mutated_metadata_never_restores_more_than_was_written(
    data: st.DataObject, position: int
) -> None:
    meta, finished = data.draw(metadata_for(position))
    bad = data.draw(mutated(meta))
    note(f"{meta!r} -> {bad!r}")
    restored = _restored_after(bad, position, 300)
    assert restored <= set(finished)
    if bad != meta:
        assert restored == set(), "a damaged string must be ignored as a whole"


@given(data=st.data(), position=st.integers(min_value=0, max_value=50), shift=st.integers(1, 5))
def test_metadata_for_another_position_restores_nothing(
    data: st.DataObject, position: int, shift: int
) -> None:
    meta, _ = data.draw(metadata_for(position))
    assert _restored_after(meta, position + shift, 300) == set()
    if position >= shift:
        assert _restored_after(meta, position - shift, 300) == set()


@given(body=st.text(alphabet=_B36 + ";,.", max_size=80), position=st.integers(0, 50))
def test_well_formed_nonsense_never_raises(body: str, position: int) -> None:
    """Strings with a valid checksum but arbitrary fields: decode never raises, and
    whatever it accepts lies above the position and is sorted and disjoint."""
    meta = with_crc(f"{MAGIC_V1};{body}")  # unbound: read by any ledger
    runs = decode_finished(meta, position)
    prev_end = position
    for start, end in runs:
        assert prev_end <= start < end
        prev_end = end
    assert _restored_after(meta, position, 40) == _offsets_bounded(runs, position + 40)


def _offsets_bounded(runs: list[tuple[int, int]], limit: int) -> set[int]:
    return {o for start, end in runs for o in range(start, min(end, limit))}


def test_oversized_metadata_is_ignored() -> None:
    finished = list(range(0, 6000, 2))
    from offsetledger.core import encode_finished

    meta = encode_finished(0, finished, budget=100_000)
    assert len(meta) > 4096
    assert decode_finished(meta, 0, budget=100_000)  # valid, only too long
    assert _restored_after(meta, 0, 20) == set()


# -- planted bugs -----------------------------------------------------------------


class _HighestFinishedPlusOne(OffsetLedger):
    """Planted bug: the watermark follows the highest finished offset."""

    def complete(self, ticket: Ticket | RangeTicket) -> Completion:
        result = super().complete(ticket)
        if result is Completion.COMPLETED and isinstance(ticket, Ticket):
            part = self._parts[ticket.tp]
            part.watermark = max(part.watermark or 0, ticket.offset + 1)
        return result


class _IgnoresEpochs(OffsetLedger):
    """Planted bug: a ticket completes whatever epoch the partition is in now."""

    def complete(self, ticket: Ticket | RangeTicket) -> Completion:
        part = self._parts.get(ticket.tp)
        if part is not None and isinstance(ticket, Ticket) and ticket.offset in part.done:
            ticket = ticket._replace(epoch=part.epoch)
        return super().complete(ticket)


class _EncodesUnfinished(OffsetLedger):
    """Planted bug: the metadata also lists the offset at the watermark."""

    def finished_above_watermark(self, tp: TopicPartition) -> list[tuple[int, int]]:
        runs = super().finished_above_watermark(tp)
        wm = self.watermark(tp)
        if wm is None or self.unfinished(tp) == 0:
            return runs
        return [(wm, wm + 1), *[(s, e) for s, e in runs if s > wm + 1]]


class _StaleRangeAccepted(OffsetLedger):
    """Planted bug (range path): completing a chunk looks the partition up by topic
    and partition, not by the ticket's epoch, so a chunk of an older epoch completes
    the chunk that starts at the same offset in the current one."""

    def complete(self, ticket: Ticket | RangeTicket) -> Completion:
        if isinstance(ticket, RangeTicket):
            part = self._parts.get(ticket.tp)
            if part is not None and ticket.head in part.ranges:
                end, _ = part.ranges[ticket.head]
                ticket = ticket._replace(epoch=part.epoch, last=end - 1)
        return super().complete(ticket)


class _RangeWatermarkPastEarlierChunk(OffsetLedger):
    """Planted bug (range path): a finished chunk moves the watermark to its last
    offset + 1 even while an earlier chunk (or offset) is unfinished."""

    def complete(self, ticket: Ticket | RangeTicket) -> Completion:
        result = super().complete(ticket)
        if result is Completion.COMPLETED and isinstance(ticket, RangeTicket):
            part = self._parts[ticket.tp]
            part.watermark = max(part.watermark or 0, ticket.last + 1)
        return result


class _EncodesUnfinishedRange(OffsetLedger):
    """Planted bug (range path): the metadata lists every chunk above the watermark,
    finished or not."""

    def finished_above_watermark(self, tp: TopicPartition) -> list[tuple[int, int]]:
        runs = super().finished_above_watermark(tp)
        part = self._parts[tp]
        wm = part.watermark
        assert wm is not None
        extra = [(k, end) for k, (end, _) in part.ranges.items() if k > wm]
        merged: list[tuple[int, int]] = []
        for start, end in sorted(runs + extra):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged


PLANTED_SETTINGS = settings(
    MACHINE_SETTINGS,
    max_examples=800,  # 300 missed ignores-epochs once split_range joined the rules
    derandomize=True,  # the same evidence under every profile
    database=None,
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
    phases=[Phase.generate],  # finding the bug is the point; shrinking only costs time
)


@pytest.mark.parametrize(
    ("bad_ledger", "message"),
    [
        pytest.param(_IgnoresEpochs, "STALE", id="ignores-epochs"),
        pytest.param(_EncodesUnfinished, "unfinished", id="encodes-unfinished"),
        pytest.param(_StaleRangeAccepted, "STALE", id="range-stale-epoch-accepted"),
        pytest.param(
            _RangeWatermarkPastEarlierChunk, "watermark", id="range-watermark-past-earlier-chunk"
        ),
        pytest.param(_EncodesUnfinishedRange, "unfinished", id="range-unfinished-encoded"),
    ],
)
def test_model_catches_planted_bug(bad_ledger: type[OffsetLedger], message: str) -> None:
    machine = type(
        f"Machine{bad_ledger.__name__}", (LedgerMachine,), {"ledger_factory": bad_ledger}
    )
    with pytest.raises(AssertionError, match=message):
        run_state_machine_as_test(machine, settings=PLANTED_SETTINGS)


def test_model_catches_planted_watermark_bug() -> None:
    """The issue's named example, on its own: watermark = highest finished + 1."""
    machine = type("MachineHighest", (LedgerMachine,), {"ledger_factory": _HighestFinishedPlusOne})
    with pytest.raises(AssertionError, match="watermark"):
        run_state_machine_as_test(machine, settings=PLANTED_SETTINGS)


def test_correct_ledger_passes_the_same_settings() -> None:
    """The planted-bug runs fail because of the bug, not the settings."""
    run_state_machine_as_test(LedgerMachine, settings=settings(PLANTED_SETTINGS, max_examples=50))


@pytest.mark.parametrize("bug", RANGE_BUGS, ids=lambda bug: bug.name)
def test_model_catches_the_catalogued_range_bugs(bug: PlantedBug) -> None:
    """tests/model/planted.py's range-path bugs (patches of the real OffsetLedger,
    kept for the whole-system runs once the Processor tracks chunks) are caught here
    already."""
    with bug.plant(), pytest.raises(AssertionError):
        run_state_machine_as_test(LedgerMachine, settings=PLANTED_SETTINGS)

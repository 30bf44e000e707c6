"""OffsetLedger by example: watermark rules, epochs, restore, limits and bad input."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from offsetledger.core import (
    Completion,
    InvalidOffsetError,
    OffsetLedger,
    OffsetOrderError,
    PartitionNotAssignedError,
    RangeTicket,
    StoredPosition,
    Ticket,
    TopicPartition,
    UnknownOffsetError,
    decode_finished,
    metadata_binding,
)

TP = TopicPartition("orders", 0)
TP2 = TopicPartition("orders", 1)
TP_OTHER = TopicPartition("payments", 0)


def _ledger(committed: int | None = 0, metadata: str | None = None, **kw: Any) -> OffsetLedger:
    ledger = OffsetLedger(**kw)
    ledger.assign(TP, committed, metadata)
    return ledger


# -- watermark --------------------------------------------------------------------


def test_watermark_before_tracking_is_the_committed_position() -> None:
    assert _ledger(17).watermark(TP) == 17
    assert _ledger(None).watermark(TP) is None
    assert _ledger(None).stored_position(TP) is None


def test_watermark_is_the_lowest_unfinished_offset() -> None:
    ledger = _ledger(10)
    tickets = [ledger.track(TP, o) for o in range(10, 15)]
    assert ledger.watermark(TP) == 10
    for t in reversed(tickets[1:]):  # finish out of order, all but the first
        assert ledger.complete(t) is Completion.COMPLETED
        assert ledger.watermark(TP) == 10
    assert ledger.complete(tickets[0]) is Completion.COMPLETED
    assert ledger.watermark(TP) == 15  # nothing unfinished: highest tracked + 1
    assert ledger.unfinished(TP) == 0


def test_gaps_never_hold_the_watermark_back() -> None:
    ledger = _ledger(0)
    a, b, c = (ledger.track(TP, o) for o in (3, 7, 20))  # 0-2, 4-6, 8-19 never polled
    assert ledger.watermark(TP) == 3
    ledger.complete(a)
    assert ledger.watermark(TP) == 7
    ledger.complete(c)
    assert ledger.watermark(TP) == 7
    ledger.complete(b)
    assert ledger.watermark(TP) == 21


def test_watermark_jumps_to_a_first_offset_past_the_committed_position() -> None:
    ledger = _ledger(5)
    ledger.track(TP, 9)  # 5-8 were compacted away
    assert ledger.watermark(TP) == 9


def test_repeated_and_stale_completions_change_nothing() -> None:
    ledger = _ledger(0)
    t0 = ledger.track(TP, 0)
    t1 = ledger.track(TP, 1)
    assert ledger.complete(t1) is Completion.COMPLETED
    assert ledger.complete(t1) is Completion.DUPLICATE
    assert ledger.complete(t0) is Completion.COMPLETED
    assert ledger.complete(t0) is Completion.DUPLICATE  # below the watermark now
    assert ledger.watermark(TP) == 2

    t2 = ledger.track(TP, 2)
    assert ledger.revoke(TP) == 2
    assert ledger.complete(t2) is Completion.STALE  # partition gone
    ledger.assign(TP, 2)
    t2_again = ledger.track(TP, 2)
    assert t2_again.epoch != t2.epoch
    assert ledger.complete(t2) is Completion.STALE  # an older epoch never completes
    assert ledger.watermark(TP) == 2
    assert ledger.unfinished(TP) == 1
    assert ledger.complete(t2_again) is Completion.COMPLETED
    assert ledger.watermark(TP) == 3


def test_epochs_are_fresh_for_every_assignment() -> None:
    ledger = OffsetLedger()
    epochs = [ledger.assign(TP, 0), ledger.assign(TP2, 0), ledger.assign(TP, 0)]
    assert epochs == sorted(set(epochs))
    assert ledger.epoch(TP) == epochs[2]
    assert ledger.epoch(TP2) == epochs[1]


def test_assign_over_an_assigned_partition_forgets_its_open_work() -> None:
    ledger = _ledger(0)
    old = ledger.track(TP, 0)
    ledger.track(TP, 1)
    assert ledger.unfinished() == 2
    ledger.assign(TP, 0)
    assert ledger.unfinished() == 0
    assert ledger.complete(old) is Completion.STALE
    ledger.track(TP, 0)  # offsets start again in the new epoch


def test_revoke_returns_the_final_watermark_and_lost_returns_nothing() -> None:
    ledger = _ledger(0)
    ledger.assign(TP2, 4)
    ledger.complete(ledger.track(TP, 0))
    ledger.track(TP, 1)
    ledger.track(TP2, 4)
    assert ledger.unfinished() == 2
    assert ledger.revoke(TP) == 1
    ledger.lost(TP2)
    assert ledger.assigned() == frozenset()
    assert ledger.unfinished() == 0
    assert not ledger.is_assigned(TP)


def test_leader_epoch_is_the_one_of_the_record_below_the_watermark() -> None:
    ledger = _ledger(0)
    a = ledger.track(TP, 0, leader_epoch=3)
    b = ledger.track(TP, 1, leader_epoch=4)
    assert ledger.stored_position(TP, with_metadata=False) == StoredPosition(TP, 0, None, None)
    ledger.complete(a)
    assert ledger.stored_position(TP, with_metadata=False) == StoredPosition(TP, 1, None, 3)
    ledger.complete(b)
    stored = ledger.stored_position(TP)
    assert stored is not None
    assert (stored.position, stored.leader_epoch) == (2, 4)
    assert stored.metadata == ledger.encode_metadata(TP)


# -- limits -----------------------------------------------------------------------


def test_limits_per_partition_and_in_total() -> None:
    ledger = OffsetLedger(max_unfinished_per_partition=2, max_unfinished_total=3)
    ledger.assign(TP, 0)
    ledger.assign(TP2, 0)
    t = ledger.track(TP, 0)
    assert not ledger.is_full(TP)
    ledger.track(TP, 1)
    assert ledger.is_full(TP)
    assert not ledger.is_full(TP2)
    full_totals = [ledger.is_full_total]
    ledger.track(TP2, 0)
    full_totals.append(ledger.is_full_total)
    ledger.complete(t)
    assert not ledger.is_full(TP)
    full_totals.append(ledger.is_full_total)
    assert full_totals == [False, True, False]
    assert ledger.unfinished() == 2


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_unfinished_per_partition": 0}, r"max_unfinished_per_partition must be >= 1"),
        ({"max_unfinished_total": 0}, r"max_unfinished_total must be >= 1"),
        ({"metadata_budget": 31}, r"metadata_budget must be >= 32"),
    ],
)
def test_constructor_rejects_unusable_limits(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        OffsetLedger(**kwargs)


# -- restore from metadata --------------------------------------------------------


def test_finished_offsets_survive_a_handover_through_metadata() -> None:
    first = _ledger(0)
    tickets = {o: first.track(TP, o) for o in range(10)}
    for o in (2, 3, 4, 7):
        first.complete(tickets[o])
    assert first.finished_above_watermark(TP) == [(2, 5), (7, 8)]
    stored = first.stored_position(TP)
    assert stored is not None
    assert stored.position == 0
    assert stored.metadata is not None

    second = _ledger(stored.position, stored.metadata)
    restored = {o for o in range(10) if second.track(TP, o).restored}
    assert restored == {2, 3, 4, 7}
    assert second.unfinished(TP) == 6


def test_restored_offsets_not_yet_polled_stay_in_the_metadata() -> None:
    ledger = _ledger(5, "")
    first = _ledger(5)
    t5 = first.track(TP, 5)
    for o in (6, 7, 9):
        first.complete(first.track(TP, o))
    meta = first.encode_metadata(TP)
    assert decode_finished(meta, 5) == [(6, 8), (9, 10)]
    del t5

    ledger = _ledger(5, meta)
    assert ledger.finished_above_watermark(TP) == [(6, 8), (9, 10)]
    assert not ledger.track(TP, 5).restored
    assert ledger.track(TP, 6).restored
    assert ledger.watermark(TP) == 5
    # re-encoding at the same watermark carries the not-yet-polled 7 and 9 on
    assert decode_finished(ledger.encode_metadata(TP), 5) == [(6, 8), (9, 10)]


def test_a_restored_first_offset_moves_the_watermark_past_it() -> None:
    first = _ledger(0)
    t0 = first.track(TP, 0)
    first.complete(first.track(TP, 1))
    meta = first.encode_metadata(TP)
    del t0
    ledger = _ledger(1, meta)  # metadata written for position 0: ignored
    assert not ledger.track(TP, 1).restored
    ledger = _ledger(0, meta)
    ledger.track(TP, 0)
    assert ledger.track(TP, 1).restored
    assert ledger.watermark(TP) == 0
    assert ledger.unfinished(TP) == 1


def test_foreign_metadata_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="offsetledger.metadata"):
        ledger = _ledger(0, '{"some": "other library"}')
    assert not any(ledger.track(TP, o).restored for o in range(5))
    assert "not offsetledger metadata" in caplog.text


def test_metadata_respects_the_budget_by_dropping_the_highest_runs() -> None:
    ledger = _ledger(0, metadata_budget=40)
    tickets = [ledger.track(TP, o) for o in range(200)]
    for t in tickets[1::2]:  # every odd offset: 100 single-offset runs
        ledger.complete(t)
    meta = ledger.encode_metadata(TP)
    assert meta is not None
    assert len(meta) <= 40
    runs = decode_finished(meta, 0)
    assert runs
    assert runs == [(o, o + 1) for o in range(1, 2 * len(runs), 2)]  # the lowest ones


# -- bad input --------------------------------------------------------------------


def test_never_assigned_partition_is_named() -> None:
    ledger = OffsetLedger()
    other = TopicPartition("payments", 9)
    with pytest.raises(
        PartitionNotAssignedError, match=r"payments\[9\] is not assigned; cannot track offset 4"
    ):
        ledger.track(other, 4)
    for call in (ledger.watermark, ledger.revoke, ledger.lost, ledger.epoch, ledger.is_full):
        with pytest.raises(PartitionNotAssignedError, match=r"payments\[9\] is not assigned"):
            call(other)
    with pytest.raises(PartitionNotAssignedError, match=r"payments\[9\] is not assigned"):
        ledger.unfinished(other)
    assert isinstance(PartitionNotAssignedError("x"), KeyError)
    assert str(PartitionNotAssignedError("x y")) == "x y"  # not quoted like KeyError


def test_revoked_partition_is_no_longer_assigned() -> None:
    ledger = _ledger(0)
    ledger.revoke(TP)
    with pytest.raises(PartitionNotAssignedError, match=r"orders\[0\] is not assigned"):
        ledger.revoke(TP)


def test_negative_offsets_and_positions_are_refused() -> None:
    with pytest.raises(
        InvalidOffsetError, match=r"orders\[0\]: committed position must be >= 0, got -1"
    ):
        OffsetLedger().assign(TP, -1)
    ledger = _ledger(None)
    with pytest.raises(InvalidOffsetError, match=r"orders\[0\]: offset must be >= 0, got -3"):
        ledger.track(TP, -3)


def test_offsets_going_backwards_within_an_epoch_are_refused() -> None:
    ledger = _ledger(0)
    ledger.track(TP, 5)
    with pytest.raises(OffsetOrderError, match=r"offset 5 polled after offset 5 in the same epoch"):
        ledger.track(TP, 5)
    with pytest.raises(OffsetOrderError, match=r"offset 3 polled after offset 5"):
        ledger.track(TP, 3)
    assert ledger.unfinished(TP) == 1  # the refused calls changed nothing
    ledger.track(TP, 6)


def test_first_offset_below_the_committed_position_is_refused() -> None:
    ledger = _ledger(10)
    with pytest.raises(OffsetOrderError, match=r"offset 9 is below the position 10"):
        ledger.track(TP, 9)


def test_completing_an_offset_never_tracked_is_refused() -> None:
    ledger = _ledger(0)
    epoch = ledger.epoch(TP)
    with pytest.raises(
        UnknownOffsetError, match=r"orders\[0\]: offset 0 was never tracked in epoch"
    ):
        ledger.complete(Ticket(TP, 0, epoch))
    ledger.track(TP, 5)
    ledger.complete(ledger.track(TP, 6))
    for never in (7, 100, 3, 0, -1):  # above, far above, below the first, negative
        with pytest.raises(UnknownOffsetError, match=rf"offset {never} was never tracked"):
            ledger.complete(Ticket(TP, never, epoch))
    assert str(UnknownOffsetError("a b")) == "a b"


def test_an_untracked_gap_offset_below_the_watermark_reads_as_a_repeat() -> None:
    """Documented limit: finished offsets below the watermark are forgotten (that is
    what keeps the ledger bounded), so a forged ticket for a gap there is reported as
    a duplicate. It changes nothing either way."""
    ledger = _ledger(0)
    epoch = ledger.epoch(TP)
    ledger.complete(ledger.track(TP, 2))
    ledger.complete(ledger.track(TP, 5))
    assert ledger.complete(Ticket(TP, 3, epoch)) is Completion.DUPLICATE
    assert ledger.watermark(TP) == 6


# -- chunks (ranges) --------------------------------------------------------------


def test_a_chunk_is_finished_as_a_unit_and_gaps_never_hold_it_back() -> None:
    ledger = _ledger(0)
    chunk = ledger.track_range(TP, [0, 1, 3, 4, 7])  # 2, 5, 6 never polled
    assert chunk == RangeTicket(TP, 0, 7, 5, ledger.epoch(TP), frozenset(), 0)
    assert (chunk.restored, chunk.is_restored(3), chunk.all_restored) == (frozenset(), False, False)
    assert ledger.watermark(TP) == 0
    assert ledger.unfinished(TP) == 5
    assert ledger.complete(chunk) is Completion.COMPLETED
    assert ledger.watermark(TP) == 8
    assert ledger.unfinished() == 0
    assert ledger.complete(chunk) is Completion.DUPLICATE


def test_a_later_chunk_finished_first_waits_for_the_earlier_one() -> None:
    ledger = _ledger(0)
    a = ledger.track_range(TP, range(10))
    b = ledger.track_range(TP, range(12, 20), leader_epoch=5)
    ledger.complete(b)
    assert ledger.watermark(TP) == 0
    assert ledger.unfinished(TP) == 10
    assert ledger.has_finished_above_watermark(TP)
    assert ledger.finished_above_watermark(TP) == [(12, 20)]  # one interval per chunk
    assert decode_finished(ledger.encode_metadata(TP), 0) == [(12, 20)]
    ledger.complete(a)
    assert ledger.watermark(TP) == 20
    assert not ledger.has_finished_above_watermark(TP)
    assert ledger.stored_position(TP, with_metadata=False) == StoredPosition(TP, 20, None, 5)


def test_chunks_and_single_offsets_mix_on_one_partition() -> None:
    ledger = _ledger(0)
    single = ledger.track(TP, 0)
    chunk = ledger.track_range(TP, [1, 2, 3])
    after = ledger.track(TP, 5)
    with pytest.raises(OffsetOrderError, match=r"offset 5 polled after offset 5"):
        ledger.track_range(TP, [5, 6])
    with pytest.raises(UnknownOffsetError, match=r"offset 1 was tracked as part of a range"):
        ledger.complete(Ticket(TP, 1, ledger.epoch(TP)))
    ledger.complete(after)
    ledger.complete(chunk)
    assert ledger.finished_above_watermark(TP) == [(1, 4), (5, 6)]
    assert ledger.watermark(TP) == 0
    ledger.complete(single)
    assert ledger.watermark(TP) == 6
    assert ledger.unfinished() == 0


def test_chunk_records_count_towards_the_limits() -> None:
    ledger = OffsetLedger(max_unfinished_per_partition=5, max_unfinished_total=8)
    ledger.assign(TP, 0)
    ledger.assign(TP2, 0)
    a = ledger.track_range(TP, range(5))
    assert ledger.is_full(TP)
    ledger.track_range(TP2, range(3))
    assert ledger.is_full_total
    ledger.complete(a)
    assert (ledger.is_full(TP), ledger.is_full_total, ledger.unfinished()) == (False, False, 3)


def test_a_chunk_from_an_older_epoch_is_stale() -> None:
    ledger = _ledger(0)
    old = ledger.track_range(TP, range(4))
    assert ledger.revoke(TP) == 0
    ledger.assign(TP, 0)
    new = ledger.track_range(TP, range(4))
    assert ledger.complete(old) is Completion.STALE
    assert ledger.watermark(TP) == 0
    assert ledger.unfinished(TP) == 4
    assert ledger.complete(new) is Completion.COMPLETED
    assert ledger.watermark(TP) == 4


def test_a_chunk_knows_which_of_its_offsets_metadata_restored() -> None:
    first = _ledger(0)
    first.track_range(TP, range(3))
    first.complete(first.track_range(TP, [3, 4, 6]))  # 5 is a gap
    first.complete(first.track(TP, 8))
    meta = first.encode_metadata(TP)
    assert decode_finished(meta, 0) == [(3, 7), (8, 9)]

    second = _ledger(0, meta)
    chunk = second.track_range(TP, [0, 1, 2, 3, 4, 6, 7, 8, 9])
    assert chunk.restored == frozenset({3, 4, 6, 8})
    assert chunk.is_restored(6)
    assert not chunk.is_restored(7)
    assert (chunk.head, second.unfinished(TP)) == (0, 5)
    second.complete(chunk)
    assert second.watermark(TP) == 10


def test_a_chunk_starting_with_restored_offsets_holds_the_watermark_at_its_first_unfinished() -> (
    None
):
    first = _ledger(0)
    first.track(TP, 0)
    first.complete(first.track_range(TP, [1, 2]))
    meta = first.encode_metadata(TP)

    second = _ledger(0, meta)
    whole = second.track_range(TP, [1, 2])  # offset 0 was compacted away meanwhile
    assert whole.all_restored
    assert second.watermark(TP) == 3
    assert second.complete(whole) is Completion.DUPLICATE

    third = _ledger(0, meta)
    chunk = third.track_range(TP, [1, 2, 3, 4])
    assert (chunk.restored, chunk.head) == (frozenset({1, 2}), 3)
    assert third.watermark(TP) == 3
    assert third.unfinished(TP) == 2
    assert third.complete(chunk) is Completion.COMPLETED
    assert third.watermark(TP) == 5


def test_bad_chunks_are_refused() -> None:
    ledger = _ledger(10)
    with pytest.raises(ValueError, match=r"track_range needs at least one offset"):
        ledger.track_range(TP, [])
    with pytest.raises(OffsetOrderError, match=r"3 offsets from 10 to 11 cannot be strictly"):
        ledger.track_range(TP, [10, 10, 11])
    with pytest.raises(OffsetOrderError, match=r"offset 9 is below the position 10"):
        ledger.track_range(TP, [9, 10])
    with pytest.raises(PartitionNotAssignedError, match=r"orders\[1\] is not assigned"):
        ledger.track_range(TP2, [0])
    chunk = ledger.track_range(TP, [10, 11])
    forged = chunk._replace(last=12)
    with pytest.raises(UnknownOffsetError, match=r"not tracked as a range ending at 12"):
        ledger.complete(forged)
    single = ledger.track(TP, 12)
    with pytest.raises(UnknownOffsetError, match=r"offset 12 was not tracked as a range"):
        ledger.complete(RangeTicket(TP, 12, 12, 1, single.epoch, frozenset(), 12))
    with pytest.raises(UnknownOffsetError, match=r"no range from 20 to 21 was tracked"):
        ledger.complete(RangeTicket(TP, 20, 21, 2, single.epoch, frozenset(), 20))
    assert ledger.unfinished(TP) == 3


# -- metadata bound to group, topic and partition ---------------------------------


def test_metadata_is_bound_to_its_group_topic_and_partition(
    caplog: pytest.LogCaptureFixture,
) -> None:
    writer = OffsetLedger(group_id="billing")
    writer.assign(TP, 0)
    writer.track(TP, 0)
    writer.complete(writer.track_range(TP, range(1, 6)))
    meta = writer.encode_metadata(TP)
    assert meta is not None
    assert meta.startswith(f"OL2;{metadata_binding('billing', TP)};0;")

    same = OffsetLedger(group_id="billing")
    same.assign(TP, 0, meta)
    assert same.track_range(TP, range(6)).restored == frozenset(range(1, 6))

    for group, tp in (("audit", TP), (None, TP), ("billing", TP2), ("billing", TP_OTHER)):
        caplog.clear()
        reader = OffsetLedger(group_id=group)
        with caplog.at_level(logging.WARNING, logger="offsetledger.metadata"):
            reader.assign(tp, 0, meta)
        chunk = reader.track_range(tp, range(6))
        assert chunk.restored == frozenset(), (group, tp)
        assert reader.unfinished(tp) == 6
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, caplog.text
        assert "written for another consumer group, topic or partition" in caplog.text


def test_unbound_version_1_metadata_is_still_read() -> None:
    from offsetledger.core import encode_finished

    old = encode_finished(0, [2, 3])
    assert old.startswith("OL1;")
    ledger = OffsetLedger(group_id="billing")
    ledger.assign(TP, 0, old)
    assert ledger.track_range(TP, range(5)).restored == frozenset({2, 3})
    # what it writes back is the bound version
    assert (ledger.encode_metadata(TP) or "").startswith("OL2;")


def test_a_budget_too_small_for_the_header_gives_empty_metadata() -> None:
    ledger = OffsetLedger(metadata_budget=32)
    ledger.assign(TP, 36**12)  # a 13-digit position leaves no room for the header
    assert ledger.encode_metadata(TP) == ""
    assert decode_finished("", 36**12) == []

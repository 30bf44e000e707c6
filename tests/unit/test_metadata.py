"""The commit-metadata codec: exact round trips within the budget, and nothing but
``[]`` for anything it did not write for that position."""

from __future__ import annotations

import logging
import zlib

import pytest
from hypothesis import assume, given, note
from hypothesis import strategies as st

from offsetledger.core import (
    DEFAULT_METADATA_BUDGET,
    Completion,
    OffsetLedger,
    TopicPartition,
    metadata_binding,
)
from offsetledger.core._metadata import MAGIC_V1, decode_finished, encode_finished
from tests.strategies import (
    chunks,
    foreign_metadata,
    garbage_metadata,
    mutated,
    mutated_encodings,
    positions,
    runs,
    valid_encodings,
    with_crc,
)

TP = TopicPartition("orders", 0)
UNLIMITED = 10**9


def _offsets(rs: list[tuple[int, int]]) -> set[int]:
    return {o for s, e in rs for o in range(s, e)}


# -- examples ---------------------------------------------------------------------


def test_format_is_the_documented_one() -> None:
    meta = encode_finished(10, [11, 12, 13, 20])
    body = "OL1;a;1.3,6"  # position 10 = "a"; run of 3 one above it; then 20 alone, 6 above 14
    assert meta == f"{body};{zlib.crc32(body.encode()):08x}"
    assert decode_finished(meta, 10) == [(11, 14), (20, 21)]


def test_empty_and_missing_metadata_decode_to_nothing_silently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="offsetledger.metadata"):
        assert decode_finished(None, 5) == []
        assert decode_finished("", 5) == []
        assert decode_finished(encode_finished(5, [6]), None) == []
    assert caplog.records == []


def test_unreadable_metadata_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    good = encode_finished(5, [6, 7])
    cases = {
        "hello": "no OL2 or OL1 prefix",
        good[:-1]: "checksum mismatch",
        good.replace("OL1;5;", "OL1;6;", 1): "checksum mismatch",
        encode_finished(6, [7]): "written for position 6, committed position is 5",
        "OL1;5;é;00000000": "not ASCII",
        with_crc("OL1;5;1;2"): "wrong number of fields",
        with_crc("OL1;5;1.0"): "empty run",
        with_crc("OL1;5;1,0"): "runs not separated",
        with_crc("OL1;5;1,,2"): "bad number",
        with_crc("OL1;5;A"): "bad number",
        with_crc("OL1;5; 1"): "bad number",
        with_crc("OL1;5;1_0"): "bad number",
        with_crc("OL1;5;" + "z" * 14): "bad number",
    }
    assert len(cases) == 13
    for meta, why in cases.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="offsetledger.metadata"):
            assert decode_finished(meta, 5) == [], meta
        assert why in caplog.text, (meta, caplog.text)


def test_oversized_metadata_is_ignored() -> None:
    meta = encode_finished(0, range(0, 10_000, 2), budget=UNLIMITED)
    assert len(meta) > 4096
    assert decode_finished(meta, 0, budget=UNLIMITED)  # well formed, only too long
    assert decode_finished(meta, 0) == []
    assert decode_finished(meta, 0, budget=4096) == []
    ledger = OffsetLedger()
    ledger.assign(TP, 0, meta)
    assert not any(ledger.track(TP, o).restored for o in range(20))


def test_encoder_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError, match=r"position must be >= 0, got -1"):
        encode_finished(-1, [])
    with pytest.raises(ValueError, match=r"metadata budget 10 is too small for the header"):
        encode_finished(0, [], budget=10)


def test_encoder_ignores_offsets_below_the_position_and_duplicates() -> None:
    assert decode_finished(encode_finished(10, [3, 10, 10, 11, 15, 15]), 10) == [(10, 12), (15, 16)]


def test_default_budget_is_below_kafkas_limit() -> None:
    assert DEFAULT_METADATA_BUDGET < 4096
    meta = encode_finished(0, range(1, 100_000, 2))
    assert len(meta.encode()) <= DEFAULT_METADATA_BUDGET


# -- properties -------------------------------------------------------------------


@given(valid_encodings())
def test_round_trip_is_exact_with_room(case: tuple[int, list[tuple[int, int]], str]) -> None:
    position, rs, meta = case
    assert meta.isascii()
    assert decode_finished(meta, position, budget=UNLIMITED) == rs


@given(data=st.data(), position=positions, budget=st.integers(min_value=32, max_value=200))
def test_budget_drops_whole_runs_from_the_top_only_when_needed(
    data: st.DataObject, position: int, budget: int
) -> None:
    rs = data.draw(runs(start=position))
    meta = encode_finished(position, runs=rs, budget=budget)
    note(meta)
    assert len(meta.encode()) <= budget
    got = decode_finished(meta, position, budget=max(budget, 4096))
    assert got == rs[: len(got)], "kept runs must be the lowest ones, unchanged"
    if len(got) < len(rs):
        one_more = encode_finished(position, runs=rs[: len(got) + 1], budget=UNLIMITED)
        assert len(one_more) > budget, f"dropped {rs[len(got)]} although it fits"


@given(position=positions, finished=st.lists(st.integers(0, 300)), budget=st.integers(32, 400))
def test_encoding_from_offsets_lists_only_those_offsets(
    position: int, finished: list[int], budget: int
) -> None:
    finished = [position + f for f in finished]
    meta = encode_finished(position, finished, budget=budget)
    listed = _offsets(decode_finished(meta, position, budget=4096))
    assert listed <= set(finished)
    if len(meta) + 20 < budget:  # plenty of room left: nothing was dropped
        assert listed == set(finished)


@given(meta=garbage_metadata, position=st.one_of(st.integers(0, 50), positions))
def test_garbage_never_raises_and_restores_nothing(meta: str, position: int) -> None:
    assert decode_finished(meta, position) == []
    assert decode_finished(meta, position, budget=UNLIMITED) == []


@given(meta=foreign_metadata, position=st.integers(0, 50))
def test_foreign_metadata_never_marks_a_record_finished(meta: str, position: int) -> None:
    ledger = OffsetLedger()
    ledger.assign(TP, position, meta)
    assert not any(ledger.track(TP, o).restored for o in range(position, position + 40))


@given(mutated_encodings())
def test_any_alteration_of_a_valid_encoding_is_rejected(case: tuple[int, str, str]) -> None:
    position, good, bad = case
    note(f"{good!r} -> {bad!r}")
    assert decode_finished(bad, position, budget=UNLIMITED) == []
    ledger = OffsetLedger()
    ledger.assign(TP, position, bad)
    assert not any(ledger.track(TP, position + i).restored for i in range(60))


@given(valid_encodings(), st.integers(-5, 5).filter(bool))
def test_metadata_for_another_position_is_rejected(
    case: tuple[int, list[tuple[int, int]], str], shift: int
) -> None:
    position, _, meta = case
    assume(position + shift >= 0)
    assert decode_finished(meta, position + shift, budget=UNLIMITED) == []


@given(
    body=st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz;,.", max_size=60),
    position=st.integers(0, 50),
)
def test_checksummed_nonsense_never_raises_and_stays_above_the_position(
    body: str, position: int
) -> None:
    """Well-formed-looking strings with a correct checksum: whatever is accepted is
    sorted, disjoint and above the position, and only what the encoder itself would
    write for those runs (so a tracked offset is only ``restored`` if a valid encoding
    for that exact position listed it)."""
    meta = with_crc(f"{MAGIC_V1};{body}")
    got = decode_finished(meta, position, budget=UNLIMITED)
    prev_end = position
    for start, end in got:
        assert prev_end <= start < end
        prev_end = end
    if got:
        assert int(body.split(";", maxsplit=1)[0], 36) == position
        again = encode_finished(position, runs=got, budget=UNLIMITED)
        assert decode_finished(again, position, budget=UNLIMITED) == got


@given(valid_encodings(), st.integers(0, 60))
def test_ledger_restores_exactly_the_listed_offsets(
    case: tuple[int, list[tuple[int, int]], str], count: int
) -> None:
    position, rs, meta = case
    assume(len(meta) <= 4096)
    ledger = OffsetLedger()
    ledger.assign(TP, position, meta)
    listed = _offsets(rs)
    for o in range(position, position + count):
        assert ledger.track(TP, o).restored is (o in listed)


# -- chunks and the binding -------------------------------------------------------


def _finish_some(
    ledger: OffsetLedger, polls: list[list[int]], finished: list[bool]
) -> tuple[set[int], set[int]]:
    """Track ``polls`` as chunks, complete those flagged in ``finished``; return the
    offsets of finished chunks (with the gaps inside them) and the unfinished ones."""
    done: set[int] = set()
    open_: set[int] = set()
    for chunk, finish in zip(polls, finished, strict=False):
        ticket = ledger.track_range(TP, chunk)
        if finish:
            assert ledger.complete(ticket) is Completion.COMPLETED
            done.update(range(chunk[0], chunk[-1] + 1))
        else:
            open_.update(chunk)
    return done, open_


@given(
    data=st.data(),
    position=st.integers(0, 10_000),
    budget=st.sampled_from([32, 48, 64, 128, DEFAULT_METADATA_BUDGET]),
    group=st.sampled_from([None, "g", "billing-v2"]),
)
def test_chunk_metadata_round_trips_into_restored_offsets(
    data: st.DataObject, position: int, budget: int, group: str | None
) -> None:
    """Finished chunks travel as intervals: a consumer of the same group that gets
    the partition with that metadata and polls the same chunks again is told exactly
    which offsets are finished (within the budget, lowest first), never an
    unfinished one."""
    polls = data.draw(chunks(position))
    finished = data.draw(st.lists(st.booleans(), min_size=len(polls), max_size=len(polls)))
    writer = OffsetLedger(metadata_budget=budget, group_id=group)
    writer.assign(TP, position)
    done, open_ = _finish_some(writer, polls, finished)
    stored = writer.stored_position(TP)
    assert stored is not None
    meta = stored.metadata
    note(f"{polls=} {finished=} -> {meta!r}")
    assert meta is not None
    assert len(meta.encode()) <= budget
    carried = _offsets(decode_finished(meta, stored.position, binding=metadata_binding(group, TP)))
    assert not carried & open_, "an unfinished offset was encoded"
    assert carried <= {o for o in done if o >= stored.position}
    if budget == DEFAULT_METADATA_BUDGET:
        assert carried == {o for o in done if o >= stored.position}, "nothing had to be dropped"

    reader = OffsetLedger(metadata_budget=budget, group_id=group)
    reader.assign(TP, stored.position, meta)
    restored: set[int] = set()
    for chunk in polls:
        if chunk[-1] < stored.position:
            continue  # below the committed position: never polled again
        again = [o for o in chunk if o >= stored.position]
        ticket = reader.track_range(TP, again)
        assert all(ticket.is_restored(o) is (o in carried) for o in again)
        restored |= ticket.restored
    assert restored == carried & {o for chunk in polls for o in chunk}


@given(
    data=st.data(),
    position=st.integers(0, 1000),
    reader=st.sampled_from(
        [("other-group", TP), ("g", TopicPartition("orders", 1)), ("g", TopicPartition("x", 0))]
    ),
)
def test_chunk_metadata_bound_elsewhere_restores_nothing(
    data: st.DataObject, position: int, reader: tuple[str, TopicPartition]
) -> None:
    polls = data.draw(chunks(position))
    writer = OffsetLedger(group_id="g")
    writer.assign(TP, position)
    _finish_some(writer, polls, [False] + [True] * (len(polls) - 1))
    meta = writer.encode_metadata(TP)
    group, tp = reader
    ledger = OffsetLedger(group_id=group)
    ledger.assign(tp, position, meta)
    for chunk in polls:
        assert ledger.track_range(tp, chunk).restored == frozenset()
    assert ledger.unfinished(tp) == sum(len(c) for c in polls)


@given(data=st.data(), position=st.integers(0, 1000))
def test_altered_chunk_metadata_restores_nothing(data: st.DataObject, position: int) -> None:
    polls = data.draw(chunks(position))
    writer = OffsetLedger(group_id="g")
    writer.assign(TP, position)
    _finish_some(writer, polls, [False] + [True] * (len(polls) - 1))
    good = writer.encode_metadata(TP)
    assert good is not None
    bad = data.draw(mutated(good))
    assume(bad != good)
    note(f"{good!r} -> {bad!r}")
    ledger = OffsetLedger(group_id="g")
    ledger.assign(TP, position, bad)
    for chunk in polls:
        assert ledger.track_range(TP, chunk).restored == frozenset()


def test_bound_format_is_the_documented_one() -> None:
    binding = metadata_binding("g", TP)
    assert binding == f"{zlib.crc32(b'g' + bytes(1) + b'orders' + bytes(1) + b'0'):08x}"
    meta = encode_finished(10, [11, 12, 13, 20], binding=binding)
    body = f"OL2;{binding};a;1.3,6"
    assert meta == f"{body};{zlib.crc32(body.encode()):08x}"
    assert decode_finished(meta, 10, binding=binding) == [(11, 14), (20, 21)]
    assert decode_finished(meta, 10) == [(11, 14), (20, 21)]  # unchecked without a binding
    with pytest.raises(ValueError, match=r"binding must be 8 lower-case hex digits"):
        encode_finished(10, [], binding="XYZ")


def test_a_foreign_binding_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    meta = encode_finished(5, [6, 7], binding=metadata_binding("g", TP))
    with caplog.at_level(logging.WARNING, logger="offsetledger.metadata"):
        assert decode_finished(meta, 5, binding=metadata_binding("h", TP)) == []
    assert len(caplog.records) == 1
    assert "written for another consumer group, topic or partition" in caplog.text

"""The history checker: for each anomaly a hand-made history that triggers it and
a similar one that must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offsetledger.checker import (
    AnomalyKind,
    Report,
    check,
    check_file,
    check_topics,
    load_history,
)
from offsetledger.core import Record, TopicPartition
from offsetledger.history import (
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    Append,
    Assign,
    Close,
    Commit,
    Crash,
    Delivery,
    Event,
    History,
    Join,
    Leave,
    Lost,
    Poll,
    Revoke,
    Truncate,
)

IN = "in"
OUT = "out"
DLQ = "in.dlq"
TP0 = (IN, 0)


def lineage(topic: str, partition: int, offset: int) -> tuple[tuple[str, bytes | None], ...]:
    return (
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    )


class Builder:
    """Hand-made histories in a few lines. Output offsets are allocated per
    partition; ``ok`` True records an ok delivery report, False a failed one
    (the record is still in the log: an ack-lost write), None no report."""

    def __init__(self) -> None:
        self.history = History()
        self._next: dict[tuple[str, int], int] = {}

    def _offset(self, topic: str, partition: int) -> int:
        n = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = n + 1
        return n

    def inputs(self, *offsets: int, partition: int = 0, control: tuple[int, ...] = ()) -> Builder:
        """Append input records at exactly these offsets (others are gaps)."""
        for o in sorted({*offsets, *control}):
            self.history.record(
                Append(
                    by="loader",
                    topic=IN,
                    partition=partition,
                    offset=o,
                    value=f"v{o}".encode(),
                    control=o in control,
                )
            )
        return self

    def output(
        self,
        source: int,
        *,
        partition: int = 0,
        topic: str = OUT,
        ok: bool | None = True,
        value: bytes | None = None,
        headers: tuple[tuple[str, bytes | None], ...] | None = None,
    ) -> Append:
        offset = self._offset(topic, 0)
        hdrs = lineage(IN, partition, source) if headers is None else headers
        a = self.history.record(
            Append(
                by="producer",
                topic=topic,
                partition=0,
                offset=offset,
                value=value if value is not None else f"r{source}".encode(),
                headers=hdrs,
            )
        )
        assert isinstance(a, Append)
        if ok is not None:
            self.history.record(
                Delivery(
                    by="producer",
                    topic=topic,
                    partition=0 if ok else None,
                    offset=offset if ok else None,
                    ok=ok,
                    error=None if ok else "ack lost",
                    headers=hdrs,
                )
            )
        return a

    def assign(self, member: str, gen: int = 1, *tps: tuple[str, int]) -> Builder:
        self.history.record(Assign(member=member, generation=gen, partitions=tps or (TP0,)))
        return self

    def revoke(self, member: str, gen: int = 1, *tps: tuple[str, int]) -> Builder:
        self.history.record(Revoke(member=member, generation=gen, partitions=tps or (TP0,)))
        return self

    def lost(self, member: str, gen: int = 1) -> Builder:
        self.history.record(Lost(member=member, generation=gen, partitions=(TP0,)))
        return self

    def poll(self, member: str, *offsets: int, gen: int = 1, partition: int = 0) -> Builder:
        for o in offsets:
            self.history.record(
                Poll(member=member, generation=gen, topic=IN, partition=partition, offset=o)
            )
        return self

    def process(self, member: str, *offsets: int, gen: int = 1) -> Builder:
        """Poll each offset and write its acknowledged output."""
        for o in offsets:
            self.poll(member, o, gen=gen)
            self.output(o)
        return self

    @property
    def last(self) -> Event:
        return self.history.events[-1]

    def commit(
        self, member: str, position: int, gen: int = 1, *, ok: bool = True, partition: int = 0
    ) -> Builder:
        self.history.record(
            Commit(
                member=member,
                generation=gen,
                topic=IN,
                partition=partition,
                position=position,
                ok=ok,
                error=None if ok else "fenced",
            )
        )
        return self

    def crash(self, member: str) -> Builder:
        self.history.record(Crash(member=member))
        return self

    def leave(self, member: str) -> Builder:
        self.history.record(Leave(member=member))
        return self

    def close(self, member: str) -> Builder:
        self.history.record(Close(member=member))
        return self

    def truncate(self, log_start: int, partition: int = 0) -> Builder:
        self.history.record(Truncate(topic=IN, partition=partition, log_start=log_start))
        return self

    def check(self, **kwargs: object) -> Report:
        params: dict[str, object] = {"inputs": [IN], "outputs": [OUT], "dead_letter": DLQ}
        params.update(kwargs)
        return check(self.history, **params)  # type: ignore[arg-type]


def kinds(report: Report) -> list[AnomalyKind]:
    return [a.kind for a in report.anomalies]


def only(report: Report, kind: AnomalyKind) -> tuple[TopicPartition | None, int | None]:
    assert kinds(report) == [kind], report.summary()
    a = report.anomalies[0]
    return a.tp, a.offset


def clean() -> Builder:
    b = Builder().inputs(0, 1, 2).assign("c1")
    b.process("c1", 0, 1, 2)
    b.commit("c1", 3)
    return b


# -- a clean run ----------------------------------------------------------------


def test_clean_history_gives_an_empty_report() -> None:
    b = clean()
    b.revoke("c1").close("c1")
    report = b.check(group="g")
    assert report.ok
    assert report.anomalies == ()
    s = report.stats
    assert (s.inputs, s.outputs, s.acknowledged, s.lost, s.duplicates) == (3, 3, 3, 0, 0)
    assert (s.commits, s.rebalances, s.crashes, s.expired) == (1, 1, 0, 0)
    assert "OK" in report.summary()
    json.dumps(report.to_dict())


# -- LOST -----------------------------------------------------------------------


def test_input_without_acknowledged_output_is_lost_after_final_drain() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1")
    b.process("c1", 0).poll("c1", 1)
    b.process("c1", 2)
    report = b.check()
    assert only(report, AnomalyKind.LOST) == (TopicPartition(IN, 0), 1)
    assert report.stats.lost == 1
    assert report.stats.unfinished == 1


def test_without_final_drain_unfinished_is_not_lost() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0)
    report = b.check(final_drain=False)
    assert report.ok
    assert report.stats.unfinished == 1
    assert report.stats.lost == 0
    assert "LOST not checked" in report.summary()


def test_ack_lost_output_does_not_finish_its_input_and_is_no_phantom() -> None:
    b = Builder().inputs(0).assign("c1").poll("c1", 0)
    b.output(0, ok=False)
    report = b.check()
    assert only(report, AnomalyKind.LOST) == (TopicPartition(IN, 0), 0)
    assert report.stats.outputs == 1
    assert report.stats.acknowledged == 0


def test_output_without_delivery_report_does_not_finish_its_input() -> None:
    b = Builder().inputs(0).assign("c1").poll("c1", 0)
    b.output(0, ok=None)
    assert only(b.check(), AnomalyKind.LOST) == (TopicPartition(IN, 0), 0)


def test_dead_letter_record_finishes_its_input() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0).poll("c1", 1)
    b.output(1, topic=DLQ)
    b.commit("c1", 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.dead_lettered == 1
    assert report.stats.dead_letter_records == 1


def test_gaps_and_control_offsets_are_neither_lost_nor_skipped() -> None:
    # offset 1 is a control record, 2 was never written (a gap)
    b = Builder().inputs(0, 3, 4, control=(1,)).assign("c1")
    b.process("c1", 0, 3, 4).commit("c1", 5)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.inputs == 3


def test_truncated_before_poll_is_expired_not_lost() -> None:
    b = Builder().inputs(0, 1, 2, 3).truncate(2).assign("c1")
    b.process("c1", 2, 3).commit("c1", 4)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.expired == 2
    assert report.stats.lost == 0


def test_truncated_after_poll_is_counted_but_not_lost() -> None:
    b = Builder().inputs(0, 1).assign("c1").poll("c1", 0).truncate(1)
    b.process("c1", 1).commit("c1", 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.truncated_unfinished == 1
    assert report.stats.expired == 0


# -- COMMIT_PAST_UNFINISHED -----------------------------------------------------


def test_commit_before_the_delivery_report_is_past_unfinished() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0).poll("c1", 1)
    out = b.output(1, ok=None)  # written, no report yet
    commit = b.commit("c1", 2).last  # stored before the delivery report
    b.history.record(Delivery(by="producer", topic=OUT, partition=0, offset=out.offset, ok=True))
    report = b.check()
    assert only(report, AnomalyKind.COMMIT_PAST_UNFINISHED) == (TopicPartition(IN, 0), 1)
    assert report.anomalies[0].seq == commit.seq
    assert report.anomalies[0].member == "c1"


def test_commit_past_a_record_finished_later_out_of_order() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").poll("c1", 0, 1, 2)
    b.output(1)
    b.output(2)
    b.commit("c1", 3)  # watermark = highest finished + 1: wrong, 0 is unfinished
    b.output(0)
    assert only(b.check(), AnomalyKind.COMMIT_PAST_UNFINISHED) == (TopicPartition(IN, 0), 0)


def test_commit_up_to_the_unfinished_record_is_fine() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").poll("c1", 0, 1, 2)
    b.output(1)
    b.output(2)
    b.commit("c1", 0)  # watermark stays at the lowest unfinished
    b.output(0)
    b.commit("c1", 3)
    assert b.check().ok


def test_commit_past_a_record_never_polled_is_past_unfinished() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").process("c1", 0)
    b.commit("c1", 3)
    b.process("c1", 1, 2)
    report = b.check()
    assert kinds(report) == [AnomalyKind.COMMIT_PAST_UNFINISHED]
    assert report.anomalies[0].offset == 1
    assert [r.seq for r in report.anomalies[0].records[1:]] == [1, 2]  # inputs 1 and 2


def test_commit_past_truncated_unfinished_record_is_fine() -> None:
    b = Builder().inputs(0, 1).assign("c1").poll("c1", 0).truncate(1)
    b.process("c1", 1).commit("c1", 2)
    assert b.check().ok


def test_rejected_commit_past_unfinished_is_fine() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0)
    b.commit("c1", 2, ok=False)
    b.process("c1", 1).commit("c1", 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.rejected_commits == 1


# -- COMMIT_BACKWARDS -----------------------------------------------------------


def test_commit_lower_than_the_previous_one_is_backwards() -> None:
    b = clean()
    c = b.commit("c1", 1).last
    report = b.check()
    assert only(report, AnomalyKind.COMMIT_BACKWARDS) == (TopicPartition(IN, 0), None)
    assert report.anomalies[0].seq == c.seq


def test_recommitting_the_same_position_and_a_rejected_lower_one_are_fine() -> None:
    b = clean()
    b.commit("c1", 3)
    b.commit("c1", 1, ok=False)
    assert b.check().ok


# -- COMMIT_AFTER_REVOKE --------------------------------------------------------


@pytest.mark.parametrize("end", ["revoke", "lost", "crash", "leave", "close"])
def test_commit_after_the_partition_left_the_member_is_flagged(end: str) -> None:
    b = Builder().inputs(0).assign("c1").process("c1", 0)
    if end in ("revoke", "lost"):
        getattr(b, end)("c1", 1)
    else:
        getattr(b, end)("c1")
    if end == "revoke":
        b.history.record(Join(member="c1"))  # the callback returned, rejoining
    c = b.commit("c1", 1).last
    report = b.check()
    if end == "lost":  # the client-side NoCommitAfterLost judges it too
        assert sorted(kinds(report)) == [
            AnomalyKind.COMMIT_AFTER_LOST,
            AnomalyKind.COMMIT_AFTER_REVOKE,
        ], report.summary()
        assert {a.seq for a in report.anomalies} == {c.seq}
        return
    assert only(report, AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)
    assert report.anomalies[0].seq == c.seq


@pytest.mark.parametrize("reason", ["max_poll_interval", "forced", "session_timeout"])
def test_commit_by_an_evicted_member_not_told_yet_is_fine_while_nobody_holds_it(
    reason: str,
) -> None:
    """KIP-848: the broker accepts it while the group is empty (observed on Kafka 4.x)."""
    b = Builder().inputs(0).assign("c1").process("c1", 0)
    b.history.record(Leave(member="c1", reason=reason))
    b.commit("c1", 1)
    report = b.check()
    assert report.ok, report.summary()


def test_commit_by_an_evicted_member_is_flagged_once_another_holds_the_partition() -> None:
    b = Builder().inputs(0).assign("c1").process("c1", 0)
    b.history.record(Leave(member="c1", reason="max_poll_interval"))
    b.assign("c2")
    c = b.commit("c1", 1).last
    report = b.check()
    assert only(report, AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)
    assert report.anomalies[0].seq == c.seq


def test_commit_before_and_inside_the_revoke_callback_is_fine() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0).commit("c1", 1)
    b.process("c1", 1).revoke("c1")
    b.commit("c1", 2)  # recorded after the Revoke event: the callback's commit
    b.close("c1")
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.commits == 2


def test_commit_of_a_revoked_partition_after_the_next_poll_is_flagged() -> None:
    other = (IN, 1)
    b = Builder().inputs(0).inputs(0, partition=1)
    b.assign("c1", 1, TP0, other).process("c1", 0).revoke("c1", 1, TP0)
    b.poll("c1", 0, partition=1)  # the callback has returned
    c = b.commit("c1", 1).last
    report = b.check(final_drain=False)
    assert only(report, AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)
    assert report.anomalies[0].seq == c.seq


def test_commit_in_the_revoke_window_with_another_generation_is_flagged() -> None:
    b = Builder().inputs(0).assign("c1", 1).process("c1", 0).revoke("c1", 1)
    b.commit("c1", 1, 0)
    assert only(b.check(), AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)


def test_commit_in_a_long_revoke_callback_with_a_newer_generation_is_fine() -> None:
    # swarm seed 11591: the callback drained for 40 s; meanwhile the client synced
    # generation 2, in which nobody else got the partition; the commit carries 2
    b = Builder().inputs(0).assign("c1", 1).process("c1", 0).revoke("c1", 1)
    b.commit("c1", 1, 2)
    assert b.check().ok


def test_commit_in_the_revoke_window_after_another_member_got_the_partition_is_flagged() -> None:
    b = Builder().inputs(0, 1).assign("c1", 1).process("c1", 0).revoke("c1", 1)
    b.assign("c2", 2).commit("c1", 1, 2)
    assert only(b.check(final_drain=False), AnomalyKind.COMMIT_AFTER_REVOKE) == (
        TopicPartition(IN, 0),
        None,
    )


def test_commit_of_a_held_partition_with_a_newer_generation_is_fine() -> None:
    # synced generation 2, its Assign not applied yet: auto-commit uses generation 2
    b = Builder().inputs(0).assign("c1", 1).process("c1", 0).commit("c1", 1, 2)
    assert b.check().ok


def test_rejected_commit_after_revoke_is_fine() -> None:
    b = Builder().inputs(0).assign("c1").process("c1", 0).revoke("c1")
    b.commit("c1", 1, ok=False)
    report = b.check(final_drain=True)
    assert report.ok, report.summary()


def test_commit_with_a_stale_generation_is_flagged() -> None:
    b = Builder().inputs(0).assign("c1", 1).process("c1", 0)
    b.revoke("c1", 1).assign("c1", 2)
    b.commit("c1", 1, 1)
    assert only(b.check(), AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)


def test_generation_bump_with_an_empty_assign_keeps_the_partition() -> None:
    # cooperative rebalance: c1 keeps in[0], its new generation comes with no additions
    b = Builder().inputs(0, 1).assign("c1", 1).process("c1", 0)
    b.history.record(Assign(member="c1", generation=2, partitions=()))
    b.process("c1", 1, gen=2).commit("c1", 2, 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.rebalances == 2


def test_commit_of_a_partition_never_assigned_is_flagged() -> None:
    b = Builder().inputs(0).assign("c1").process("c1", 0)
    b.commit("c2", 1)
    assert only(b.check(), AnomalyKind.COMMIT_AFTER_REVOKE) == (TopicPartition(IN, 0), None)


# -- POLL_SKIP / POLL_NON_MONOTONIC ---------------------------------------------


def test_poll_jumping_over_a_readable_record_is_a_skip() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").process("c1", 0, 2)
    report = b.check(final_drain=False)
    assert only(report, AnomalyKind.POLL_SKIP) == (TopicPartition(IN, 0), 1)
    poll = report.anomalies[0].records[0]
    assert isinstance(poll, Poll)
    assert poll.offset == 2


def test_poll_over_truncated_records_is_not_a_skip() -> None:
    b = Builder().inputs(0, 1, 2, 3).assign("c1").process("c1", 0).truncate(3)
    b.process("c1", 3).commit("c1", 4)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.expired == 2


def test_first_poll_above_the_committed_position_is_a_skip() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").process("c1", 0).commit("c1", 1)
    b.revoke("c1").assign("c2", 2).process("c2", 2, gen=2).commit("c2", 3, 2)
    report = b.check(final_drain=False)
    assert kinds(report) == [AnomalyKind.POLL_SKIP, AnomalyKind.COMMIT_PAST_UNFINISHED]
    assert report.anomalies[0].offset == 1
    assert report.anomalies[0].member == "c2"


def test_first_poll_at_the_committed_position_is_fine() -> None:
    b = Builder().inputs(0, 1, 2, control=(3,)).assign("c1").process("c1", 0).commit("c1", 1)
    b.revoke("c1").assign("c2", 2).process("c2", 1, 2, gen=2).commit("c2", 4, 2)
    assert b.check().ok


def test_first_poll_of_an_uncommitted_partition_depends_on_the_reset_policy() -> None:
    b = Builder().inputs(0, 1, 2).assign("c1").process("c1", 2).commit("c1", 3)
    earliest = b.check()
    assert kinds(earliest) == [
        AnomalyKind.LOST,
        AnomalyKind.LOST,
        AnomalyKind.POLL_SKIP,
        AnomalyKind.COMMIT_PAST_UNFINISHED,
    ]
    assert earliest.of(AnomalyKind.POLL_SKIP)[0].offset == 0
    latest = b.check(auto_offset_reset="latest")
    assert latest.ok, latest.summary()
    assert latest.stats.reset_skipped == 2


def test_first_poll_at_log_start_after_the_committed_position_was_truncated() -> None:
    b = Builder().inputs(0, 1, 2, 3).assign("c1").process("c1", 0).commit("c1", 1)
    b.revoke("c1").truncate(2).assign("c2", 2).process("c2", 2, 3, gen=2).commit("c2", 4, 2)
    assert b.check().ok


def test_reset_to_latest_within_an_epoch_after_truncation_is_not_a_skip() -> None:
    b = Builder().inputs(0, 1, 2, 3, 4).assign("c1").process("c1", 0).truncate(2)
    b.process("c1", 4).commit("c1", 5)  # position 1 fell out of range: reset to latest
    latest = b.check(auto_offset_reset="latest")
    assert latest.ok, latest.summary()
    assert (latest.stats.reset_skipped, latest.stats.truncated_unfinished) == (2, 0)
    assert latest.stats.expired == 1
    earliest = b.check(final_drain=False)
    assert kinds(earliest) == [AnomalyKind.POLL_SKIP, AnomalyKind.COMMIT_PAST_UNFINISHED]
    assert [a.offset for a in earliest.anomalies] == [2, 2]


def test_polling_the_same_offset_twice_in_one_epoch_is_non_monotonic() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0, 1).poll("c1", 1).commit("c1", 2)
    report = b.check()
    assert only(report, AnomalyKind.POLL_NON_MONOTONIC) == (TopicPartition(IN, 0), 1)


def test_first_poll_below_the_committed_position_is_non_monotonic() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0, 1).commit("c1", 2)
    b.revoke("c1").assign("c1", 2).poll("c1", 0, gen=2)
    report = b.check()
    assert only(report, AnomalyKind.POLL_NON_MONOTONIC) == (TopicPartition(IN, 0), 0)


def test_repoll_in_a_new_epoch_is_fine() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0, 1)
    b.revoke("c1").assign("c1", 2).process("c1", 0, 1, gen=2).commit("c1", 2, 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.duplicates == 2


def test_partition_already_held_keeps_its_epoch_on_a_repeated_assign() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0)
    b.assign("c1", 2).process("c1", 1, gen=2).commit("c1", 2, 2)
    assert b.check().ok


# -- PHANTOM_OUTPUT -------------------------------------------------------------


def test_output_without_lineage_is_a_phantom() -> None:
    b = clean()
    a = b.output(0, headers=())
    report = b.check()
    assert only(report, AnomalyKind.PHANTOM_OUTPUT) == (TopicPartition(OUT, 0), a.offset)
    assert "no lineage" in report.anomalies[0].message


def test_output_naming_an_input_never_appended_is_a_phantom() -> None:
    b = clean()
    a = b.output(99)
    assert only(b.check(), AnomalyKind.PHANTOM_OUTPUT) == (TopicPartition(OUT, 0), a.offset)


def test_output_written_before_its_input_is_a_phantom() -> None:
    b = Builder().assign("c1")
    a = b.output(0)
    b.inputs(0).process("c1", 0).commit("c1", 1)
    report = b.check()
    assert only(report, AnomalyKind.PHANTOM_OUTPUT) == (TopicPartition(OUT, 0), a.offset)


def test_dead_letter_record_without_lineage_is_a_phantom() -> None:
    b = clean()
    a = b.output(0, topic=DLQ, headers=(("other", b"x"),))
    assert only(b.check(), AnomalyKind.PHANTOM_OUTPUT) == (TopicPartition(DLQ, 0), a.offset)


# -- UNEXPLAINED_DUPLICATE ------------------------------------------------------


def test_duplicate_without_redelivery_is_unexplained() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0, 1)
    second = b.output(1)  # produced twice from one poll
    b.commit("c1", 2)
    report = b.check()
    assert only(report, AnomalyKind.UNEXPLAINED_DUPLICATE) == (TopicPartition(IN, 0), 1)
    assert report.anomalies[0].seq == second.seq
    assert report.stats.duplicates == 1
    assert dict(report.stats.duplicates_per_input) == {(IN, 0, 1): 1}


def test_redelivery_without_a_boundary_is_unexplained() -> None:
    # two members polling one partition with no assignment change between polls
    b = Builder().inputs(0).assign("c1").assign("c2")
    b.process("c1", 0).process("c2", 0)
    report = b.check()
    # the second Assign is itself a NoDoubleOwnership violation (registered in check())
    assert [a.kind for a in report.of(AnomalyKind.DOUBLE_OWNERSHIP)] == [
        AnomalyKind.DOUBLE_OWNERSHIP
    ], report.summary()
    dup = report.of(AnomalyKind.UNEXPLAINED_DUPLICATE)
    assert [(a.tp, a.offset) for a in dup] == [(TopicPartition(IN, 0), 0)], report.summary()
    assert len(report.anomalies) == 2, report.summary()


@pytest.mark.parametrize("end", ["crash", "revoke", "lost", "leave", "close"])
def test_duplicate_after_a_boundary_is_explained(end: str) -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0, 1)
    if end in ("revoke", "lost"):
        getattr(b, end)("c1", 1)
    else:
        getattr(b, end)("c1")
    b.assign("c2", 2).process("c2", 0, 1, gen=2).commit("c2", 2, 2)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.duplicates == 2
    assert dict(report.stats.duplicates_per_input) == {(IN, 0, 0): 1, (IN, 0, 1): 1}


def test_zombie_write_after_revoke_is_explained() -> None:
    b = Builder().inputs(0).assign("c1").poll("c1", 0).revoke("c1")
    b.assign("c2", 2).process("c2", 0, gen=2).commit("c2", 1, 2)
    b.output(0)  # c1's in-flight produce lands late
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.duplicates == 1


def test_ack_lost_write_then_retry_is_an_explained_duplicate() -> None:
    b = Builder().inputs(0).assign("c1").poll("c1", 0)
    b.output(0, ok=False)  # written, reported failed
    b.output(0)  # retried
    b.commit("c1", 1)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.duplicates == 1
    assert report.stats.acknowledged == 1


def test_fan_out_outputs_are_not_duplicates() -> None:
    b = Builder().inputs(0).assign("c1").poll("c1", 0)
    b.output(0, value=b"a")
    b.output(0, value=b"b")
    b.commit("c1", 1)
    report = b.check()
    assert report.ok, report.summary()
    assert report.stats.duplicates == 0


# -- stats, serialisation, loading ----------------------------------------------


def test_report_serialises_and_summarises_anomalies() -> None:
    b = Builder().inputs(0, 1).assign("c1").process("c1", 0).commit("c1", 2).crash("c1")
    report = b.check(group="g")
    # ordered by seq: LOST carries the seq of the input's append
    assert kinds(report) == [AnomalyKind.LOST, AnomalyKind.COMMIT_PAST_UNFINISHED]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["group"] == "g"
    assert data["counts"] == {"commit_past_unfinished": 1, "lost": 1}
    assert data["anomalies"][0]["tp"] == {"topic": IN, "partition": 0}
    assert data["anomalies"][0]["offset"] == 1
    assert data["anomalies"][0]["records"][0]["kind"] == "append"
    assert data["stats"]["crashes"] == 1
    text = report.summary()
    assert "2 anomalies" in text
    assert "[lost]" in text
    assert "[commit_past_unfinished]" in text


def test_load_history_and_check_file_round_trip(tmp_path: Path) -> None:
    b = clean()
    path = tmp_path / "history.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        b.history.dump(fh)
    assert load_history(path).events == b.history.events
    report = check_file(path, inputs=[IN], outputs=[OUT])
    assert report.ok
    assert report.stats.acknowledged == 3


def test_topics_must_not_be_both_input_and_output() -> None:
    with pytest.raises(ValueError, match="both input and output"):
        check(History(), inputs=[IN], outputs=[IN])
    with pytest.raises(TypeError):
        check(History(), inputs=IN, outputs=[OUT])


def test_events_out_of_seq_order_are_replayed_in_seq_order() -> None:
    b = clean()
    assert check(reversed(b.history.events), inputs=[IN], outputs=[OUT]).ok


def test_large_history_is_checked() -> None:
    n = 20_000
    b = Builder().inputs(*range(n)).assign("c1")
    for o in range(n):
        b.process("c1", o)
        b.commit("c1", o + 1)
    report = b.check()
    assert report.ok
    assert report.stats.commits == n


# -- check_topics ---------------------------------------------------------------


def rec(topic: str, offset: int, source: int | None = None, value: bytes = b"x") -> Record:
    headers = lineage(IN, 0, source) if source is not None else ()
    return Record(topic=topic, partition=0, offset=offset, value=value, headers=headers)


def test_check_topics_of_a_clean_run() -> None:
    inputs = [rec(IN, o) for o in range(3)]
    outputs = [rec(OUT, 0, 0), rec(OUT, 1, 1), rec(DLQ, 0, 2)]
    report = check_topics(inputs, outputs, {TopicPartition(IN, 0): 3}, dead_letter=DLQ)
    assert report.ok, report.summary()
    assert (report.stats.inputs, report.stats.acknowledged, report.stats.dead_lettered) == (3, 3, 1)
    # read back from topics: the summary does not pretend there were no commits
    assert report.source == "topics"
    assert report.to_dict()["source"] == "topics"
    assert "commits 0" not in report.summary()
    assert "not seen" in report.summary()


def test_check_topics_reports_lost_phantom_commit_past_and_duplicates() -> None:
    inputs = [rec(IN, o) for o in range(4)]
    outputs = [
        rec(OUT, 0, 0),
        rec(OUT, 1, 1),
        rec(OUT, 2, 1),  # duplicate of input 1's output
        rec(OUT, 3),  # no lineage
        rec(DLQ, 0, 3),
    ]
    report = check_topics(inputs, outputs, {TopicPartition(IN, 0): 4}, dead_letter=DLQ)
    got = sorted((a.kind, a.tp, a.offset) for a in report.anomalies)
    assert got == sorted(
        [
            (AnomalyKind.PHANTOM_OUTPUT, TopicPartition(OUT, 0), 3),
            (AnomalyKind.COMMIT_PAST_UNFINISHED, TopicPartition(IN, 0), 2),
            (AnomalyKind.LOST, TopicPartition(IN, 0), 2),
        ]
    )
    assert report.stats.duplicates == 1
    assert dict(report.stats.duplicates_per_input) == {(IN, 0, 1): 1}
    assert report.stats.dead_lettered == 1


def test_check_topics_commit_below_the_missing_record_is_fine() -> None:
    inputs = [rec(IN, o) for o in range(3)]
    outputs = [rec(OUT, 0, 0), rec(OUT, 1, 1)]
    report = check_topics(
        inputs, outputs, {TopicPartition(IN, 0): 2}, dead_letter=DLQ, final_drain=False
    )
    assert report.ok, report.summary()
    assert report.stats.unfinished == 1

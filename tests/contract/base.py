"""The contract suite: behaviour every ConsumerPort/ProducerPort implementation shares.

Subclass :class:`ConsumerContract` and provide a ``harness`` fixture (see
``tests/contract/harness.py``). Known departures of an implementation are marked
in its subclass with ``xfail(strict=True)`` and a reason.
"""

from __future__ import annotations

import contextlib

import pytest

from offsetledger.core import (
    ConfigError,
    DeliveryReport,
    Outbound,
    PartitionNotAssignedError,
    StoredPosition,
    TopicPartition,
)
from tests.contract.harness import Callbacks, Harness, poll_records, poll_until

__all__ = ["ConsumerContract"]

MANUAL = {
    "enable.auto.offset.store": False,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}


def _inputs(n: int, prefix: bytes = b"k") -> list[tuple[bytes | None, bytes | None]]:
    return [(prefix + str(i).encode(), b"value-%d" % i) for i in range(n)]


class ConsumerContract:
    """Behavioural contract of the consumer and producer ports."""

    # -- fixtures the tests share ----------------------------------------------------------

    @pytest.fixture
    def topic(self, harness: Harness) -> str:
        name = harness.unique("in")
        harness.create_topic(name, 2)
        return name

    @pytest.fixture
    def group(self, harness: Harness) -> str:
        return harness.unique("group")

    # -- polling ---------------------------------------------------------------------------

    def test_poll_returns_records_in_offset_order_per_partition(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        offsets0 = harness.produce_inputs(topic, 0, _inputs(5, b"a"))
        offsets1 = harness.produce_inputs(topic, 1, _inputs(4, b"b"))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        got = poll_records(harness, consumer, 9)
        assert [r.offset for r in got if r.partition == 0] == offsets0, harness.describe()
        assert [r.offset for r in got if r.partition == 1] == offsets1, harness.describe()
        assert [r.value for r in got if r.partition == 0] == [v for _, v in _inputs(5, b"a")]
        assert all(r.topic == topic for r in got)
        consumer.close()

    def test_poll_respects_max_records(self, harness: Harness, topic: str, group: str) -> None:
        harness.produce_inputs(topic, 0, _inputs(10))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        got: list[object] = []
        for _ in range(harness.max_attempts):
            batch = consumer.poll(3, harness.poll_timeout)
            assert len(batch) <= 3, harness.describe()
            got.extend(batch)
            if len(got) >= 10:
                break
        assert len(got) == 10, harness.describe()
        consumer.close()

    # -- positions -------------------------------------------------------------------------

    def test_committed_position_is_where_the_next_consumer_starts(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(6))
        tp = TopicPartition(topic, 0)
        first = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(first, [topic])
        poll_records(harness, first, 6)
        results = first.commit([StoredPosition(tp, 4)])
        assert [(r.tp, r.position, r.ok) for r in results] == [(tp, 4, True)], harness.describe()
        first.close()
        assert harness.committed(group, topic, 0).position == 4
        second = harness.consumer({"group.id": group, **MANUAL}, "m2")
        Callbacks().subscribe(second, [topic])
        got = poll_records(harness, second, 2)
        assert [r.offset for r in got if r.partition == 0] == [4, 5], harness.describe()
        second.close()

    def test_storing_for_an_unassigned_partition_fails(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(1))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_records(harness, consumer, 1)
        other = harness.unique("other")
        harness.create_topic(other, 1)
        with pytest.raises(PartitionNotAssignedError):
            consumer.store([StoredPosition(TopicPartition(other, 0), 1)])
        consumer.close()

    def test_valid_positions_of_a_partly_invalid_store_are_kept(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        """librdkafka stores per partition: the assigned one is stored even though
        the call names an unassigned one too."""
        harness.produce_inputs(topic, 0, _inputs(3))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_records(harness, consumer, 3)
        other = harness.unique("other")
        harness.create_topic(other, 1)
        tp = TopicPartition(topic, 0)
        with contextlib.suppress(PartitionNotAssignedError):
            consumer.store([StoredPosition(tp, 2), StoredPosition(TopicPartition(other, 0), 1)])
        results = consumer.commit()
        assert [(r.tp, r.position) for r in results if r.ok] == [(tp, 2)], harness.describe()
        consumer.close()

    def test_stored_positions_are_forgotten_when_partitions_are_reassigned(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(3))
        harness.produce_inputs(topic, 1, _inputs(3))
        first = harness.consumer({"group.id": group, **MANUAL}, "m1")
        cb1 = Callbacks()
        cb1.subscribe(first, [topic])
        poll_records(harness, first, 6)
        first.store([StoredPosition(TopicPartition(topic, p), 2) for p in (0, 1)])
        # a second member joins: the first's partitions are revoked and (some) reassigned
        second = harness.consumer({"group.id": group, **MANUAL}, "m2")
        cb2 = Callbacks()
        cb2.subscribe(second, [topic])
        poll_until(
            harness,
            [first, second],
            lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
            "the two members to split the partitions",
        )
        assert "revoke" in cb1.kinds(), harness.describe()
        # protocol-neutral: the partition that moved lost its stored position (an eager
        # rebalance forgets both; an incremental one keeps the partition that stayed)
        moved = second.assignment()
        results = first.commit()
        assert not [r for r in results if r.tp in moved], (
            f"a stored position survived its partition's move: {results} ({harness.describe()})"
        )
        for tp in moved:
            assert harness.committed(group, tp.topic, tp.partition).position is None
        first.close()
        second.close()

    def test_auto_commit_commits_stored_positions_not_polled_ones(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(10))
        config = {
            "group.id": group,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 200,
            "auto.offset.reset": "earliest",
        }
        consumer = harness.consumer(config, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_records(harness, consumer, 10)
        consumer.store([StoredPosition(TopicPartition(topic, 0), 3)])
        for _ in range(harness.max_attempts):
            consumer.poll(10, harness.poll_timeout)
            harness.advance(0.25)
            if harness.committed(group, topic, 0).position is not None:
                break
        assert harness.committed(group, topic, 0).position == 3, harness.describe()
        consumer.close()

    def test_commit_metadata_round_trips(self, harness: Harness, topic: str, group: str) -> None:
        harness.produce_inputs(topic, 1, _inputs(2))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_records(harness, consumer, 2)
        tp = TopicPartition(topic, 1)
        (result,) = consumer.commit([StoredPosition(tp, 2, metadata="OL1;hello")])
        assert result.ok, f"{result.error} ({harness.describe()})"
        seen = consumer.committed([tp], 5.0)[tp]
        assert (seen.position, seen.metadata) == (2, "OL1;hello"), harness.describe()
        committed = harness.committed(group, topic, 1)
        assert (committed.position, committed.metadata) == (2, "OL1;hello")
        consumer.close()

    def test_commit_without_positions_commits_the_stored_ones(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(4))
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_records(harness, consumer, 4)
        tp = TopicPartition(topic, 0)
        consumer.store([StoredPosition(tp, 4, metadata="m")])
        results = consumer.commit()
        assert [(r.tp, r.position, r.ok) for r in results] == [(tp, 4, True)], harness.describe()
        assert harness.committed(group, topic, 0).position == 4
        consumer.close()

    def test_close_commits_stored_positions_with_auto_commit(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        harness.produce_inputs(topic, 0, _inputs(5))
        config = {
            "group.id": group,
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 600_000,
            "auto.offset.reset": "earliest",
        }
        consumer = harness.consumer(config, "m1")
        cb = Callbacks()
        cb.subscribe(consumer, [topic])
        poll_records(harness, consumer, 5)
        consumer.store([StoredPosition(TopicPartition(topic, 0), 5)])
        assert harness.committed(group, topic, 0).position is None
        consumer.close()
        assert cb.kinds()[-1] == "revoke", harness.describe()
        assert harness.committed(group, topic, 0).position == 5, harness.describe()

    # -- groups ----------------------------------------------------------------------------

    def test_two_members_split_partitions_and_a_leaving_members_partitions_move(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        first = harness.consumer({"group.id": group, **MANUAL}, "m1")
        second = harness.consumer({"group.id": group, **MANUAL}, "m2")
        cb1, cb2 = Callbacks(), Callbacks()
        cb1.subscribe(first, [topic])
        cb2.subscribe(second, [topic])
        poll_until(
            harness,
            [first, second],
            lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
            "two members with one partition each",
        )
        assert first.assignment() | second.assignment() == {
            TopicPartition(topic, 0),
            TopicPartition(topic, 1),
        }
        first.close()
        poll_until(
            harness,
            [second],
            lambda: len(second.assignment()) == 2,
            "the leaver's partition to move",
        )
        assert cb2.kinds()[-1] == "assign", harness.describe()
        second.close()

    def test_eager_rebalance_revokes_before_assigning(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        config = {"group.id": group, **MANUAL, "partition.assignment.strategy": "range"}
        first = harness.consumer(config, "m1")
        cb1 = Callbacks()
        cb1.subscribe(first, [topic])
        poll_until(harness, [first], lambda: len(first.assignment()) == 2, "the first assignment")
        second = harness.consumer(config, "m2")
        Callbacks().subscribe(second, [topic])
        poll_until(
            harness,
            [first, second],
            lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
            "the split",
        )
        kinds = cb1.kinds()
        assert kinds[:3] == ["assign", "revoke", "assign"], f"{cb1.calls} ({harness.describe()})"
        assert len(cb1.calls[1][1]) == 2, "eager revokes everything"
        first.close()
        second.close()

    def test_a_restarted_static_member_gets_its_partitions_back_without_a_rebalance(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        """Static membership (KIP-345): a static member's close does not leave the
        group; a new client with the same ``group.instance.id`` that joins within the
        session timeout takes its partitions back, and the other member sees nothing."""
        mine = {"group.id": group, **MANUAL, "group.instance.id": harness.unique("a")}
        other = {"group.id": group, **MANUAL, "group.instance.id": harness.unique("b")}
        first, second = harness.consumer(mine, "m1"), harness.consumer(other, "m2")
        cb2 = Callbacks()
        Callbacks().subscribe(first, [topic])
        cb2.subscribe(second, [topic])
        poll_until(
            harness,
            [first, second],
            lambda: len(first.assignment()) == 1 and len(second.assignment()) == 1,
            "two static members with one partition each",
        )
        held, kept = first.assignment(), second.assignment()
        seen = len(cb2.calls)
        first.close()
        again = harness.consumer(mine, "m1-restarted")
        Callbacks().subscribe(again, [topic])
        poll_until(
            harness,
            [again, second],
            lambda: again.assignment() == held,
            "the restarted static member to get its partition back",
        )
        assert second.assignment() == kept, harness.describe()
        assert cb2.calls[seen:] == [], (
            f"the other member saw a rebalance: {cb2.calls[seen:]} ({harness.describe()})"
        )
        again.close()
        second.close()

    def test_the_producer_is_idempotent_by_default(self, harness: Harness) -> None:
        """The confluent adapter turns ``enable.idempotence`` on unless told not to:
        the client then resends retriable failures itself, in order, without
        duplicates."""
        producer = harness.producer()
        config = getattr(producer, "config", {})
        assert str(config.get("enable.idempotence")).lower() == "true", (
            f"enable.idempotence is {config.get('enable.idempotence')!r} ({harness.describe()})"
        )

    def test_pause_and_resume(self, harness: Harness, topic: str, group: str) -> None:
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        poll_until(harness, [consumer], lambda: len(consumer.assignment()) == 2, "the assignment")
        tp0 = TopicPartition(topic, 0)
        consumer.pause([tp0])
        harness.produce_inputs(topic, 0, _inputs(3, b"p"))
        harness.produce_inputs(topic, 1, _inputs(2, b"q"))
        got = poll_records(harness, consumer, 2)
        for _ in range(3):
            got.extend(consumer.poll(100, harness.poll_timeout))
        assert {r.partition for r in got} == {1}, (
            f"a paused partition was fetched ({harness.describe()})"
        )
        consumer.resume([tp0])
        more = poll_records(harness, consumer, 3)
        assert [r.offset for r in more if r.partition == 0] == [0, 1, 2], harness.describe()
        consumer.close()

    # -- producer --------------------------------------------------------------------------

    def test_delivery_reports_arrive_through_flush_in_order(
        self, harness: Harness, topic: str
    ) -> None:
        producer = harness.producer()
        reports: list[DeliveryReport] = []
        for i in range(5):
            producer.produce(Outbound(topic, b"v%d" % i, key=b"same-key"), reports.append)
        assert producer.flush(10.0) == 0, harness.describe()
        assert len(reports) == 5
        assert all(r.ok for r in reports), [str(r.error) for r in reports]
        assert len({r.partition for r in reports}) == 1, "same key, same partition"
        offsets = [r.offset for r in reports if r.offset is not None]
        assert offsets == sorted(offsets), offsets
        assert len(set(offsets)) == 5, offsets
        assert [r.message.value for r in reports] == [b"v%d" % i for i in range(5)]

    def test_produced_records_can_be_consumed(
        self, harness: Harness, topic: str, group: str
    ) -> None:
        producer = harness.producer()
        reports: list[DeliveryReport] = []
        producer.produce(
            Outbound(topic, b"hello", key=b"k", partition=1, headers=(("h", b"x"),)), reports.append
        )
        assert producer.flush(10.0) == 0
        (report,) = reports
        assert (report.ok, report.partition) == (True, 1)
        consumer = harness.consumer({"group.id": group, **MANUAL}, "m1")
        Callbacks().subscribe(consumer, [topic])
        (record,) = poll_records(harness, consumer, 1)
        assert (record.partition, record.offset, record.value, record.header("h")) == (
            1,
            report.offset,
            b"hello",
            b"x",
        )
        consumer.close()

    # -- configuration -----------------------------------------------------------------------

    def test_unknown_config_key_is_rejected(self, harness: Harness, group: str) -> None:
        with pytest.raises(ConfigError) as info:
            harness.consumer({"group.id": group, "enable.auto.offset.stor": False}, "m1")
        assert "enable.auto.offset.stor" in str(info.value)

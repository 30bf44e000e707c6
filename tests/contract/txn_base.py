"""The transactional contract: what every TransactionalProducerPort /
TransactionalConsumerPort pair does, run on the simulator and on a real broker.

The harness additionally provides ``transactional_producer(config, name)``.
Invisibility on a real broker can only be shown for a bounded time: a test that
can, polls until a later committed *sentinel* arrives, then asserts what it did
not see before it.
"""

from __future__ import annotations

from typing import Any

import pytest

from offsetledger.core import (
    ConsumerPort,
    DeliveryReport,
    Outbound,
    Record,
    StoredPosition,
    TopicPartition,
    TransactionalConsumerPort,
    TransactionalProducerPort,
    TransactionError,
)
from tests.contract.harness import Callbacks, poll_records, poll_until

__all__ = ["TransactionalContract"]

T = 10.0  # seconds for every transactional call


def _noop(_r: DeliveryReport) -> None:
    return None


class TransactionalContract:
    """Behaviour of transactions; ``harness`` fixture as in ``base.ConsumerContract``."""

    @pytest.fixture
    def topic(self, harness: Any) -> str:
        name: str = harness.unique("txn")
        harness.create_topic(name, 1)
        return name

    def _producer(self, harness: Any, tid: str, name: str = "p") -> TransactionalProducerPort:
        p: TransactionalProducerPort = harness.transactional_producer(
            {"transactional.id": tid, "transaction.timeout.ms": 20000}, name
        )
        p.init_transactions(T)
        return p

    def _reader(self, harness: Any, topic: str, isolation: str = "read_committed") -> ConsumerPort:
        c: ConsumerPort = harness.consumer(
            {
                "group.id": harness.unique("reader"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": isolation,
            },
            harness.unique("r"),
        )
        Callbacks().subscribe(c, [topic])
        return c

    def _txn(
        self, p: TransactionalProducerPort, topic: str, values: list[bytes], *, commit: bool = True
    ) -> None:
        p.begin_transaction()
        for v in values:
            p.produce(Outbound(topic, value=v, partition=0), _noop)
        p.flush(T)  # written before the outcome (an abort would purge unsent ones)
        if commit:
            p.commit_transaction(T)
        else:
            p.abort_transaction(T)

    def _until(self, harness: Any, c: ConsumerPort, value: bytes) -> list[Record]:
        got: list[Record] = []
        poll_until(harness, [c], lambda: any(r.value == value for r in got), repr(value), sink=got)
        return got

    def _for_a_while(self, harness: Any, c: ConsumerPort, rounds: int = 15) -> list[Record]:
        got: list[Record] = []
        for _ in range(rounds):
            got.extend(c.poll(100, harness.poll_timeout))
        return got

    # -- visibility ------------------------------------------------------------------

    def test_committed_transaction_is_visible_to_read_committed(
        self, harness: Any, topic: str
    ) -> None:
        p = self._producer(harness, harness.unique("tid"))
        self._txn(p, topic, [b"a", b"b"])
        got = poll_records(harness, self._reader(harness, topic), 2)
        assert [r.value for r in got] == [b"a", b"b"], harness.describe()

    def test_aborted_transaction_is_invisible_and_markers_are_gaps(
        self, harness: Any, topic: str
    ) -> None:
        p = self._producer(harness, harness.unique("tid"))
        self._txn(p, topic, [b"aborted"], commit=False)
        self._txn(p, topic, [b"sentinel"])
        got = self._until(harness, self._reader(harness, topic), b"sentinel")
        assert [r.value for r in got] == [b"sentinel"], harness.describe()
        # aborted record at 0, its abort marker at 1: the committed one is at 2
        assert got[0].offset == 2, harness.describe()

    def test_marker_is_a_gap_for_the_next_position(self, harness: Any, topic: str) -> None:
        p = self._producer(harness, harness.unique("tid"))
        self._txn(p, topic, [b"one"])
        self._txn(p, topic, [b"two"])
        got = poll_records(harness, self._reader(harness, topic), 2)
        assert [(r.value, r.offset) for r in got] == [(b"one", 0), (b"two", 2)], harness.describe()

    def test_open_transaction_invisible_to_read_committed_visible_uncommitted(
        self, harness: Any, topic: str
    ) -> None:
        p = self._producer(harness, harness.unique("tid"))
        p.begin_transaction()
        p.produce(Outbound(topic, value=b"open", partition=0), _noop)
        p.flush(T)
        uncommitted = self._reader(harness, topic, "read_uncommitted")
        assert [r.value for r in poll_records(harness, uncommitted, 1)] == [b"open"]
        committed = self._reader(harness, topic)
        assert self._for_a_while(harness, committed) == [], harness.describe()
        p.commit_transaction(T)
        assert [r.value for r in poll_records(harness, committed, 1)] == [b"open"]

    def test_last_stable_offset_blocks_later_records(self, harness: Any, topic: str) -> None:
        p = self._producer(harness, harness.unique("tid"))
        p.begin_transaction()
        p.produce(Outbound(topic, value=b"open", partition=0), _noop)
        p.flush(T)
        harness.produce_inputs(topic, 0, [(None, b"plain")])  # above the LSO
        committed = self._reader(harness, topic)
        assert self._for_a_while(harness, committed) == [], harness.describe()
        p.commit_transaction(T)
        got = poll_records(harness, committed, 2)
        assert [r.value for r in got] == [b"open", b"plain"], harness.describe()

    # -- offsets in the transaction --------------------------------------------------

    def _group_member(self, harness: Any, topic: str, group: str) -> TransactionalConsumerPort:
        c: TransactionalConsumerPort = harness.consumer(
            {"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False},
            harness.unique("m"),
        )
        Callbacks().subscribe(c, [topic])
        return c

    def test_offsets_commit_with_the_transaction_not_on_abort(
        self, harness: Any, topic: str
    ) -> None:
        harness.produce_inputs(topic, 0, [(None, b"in0"), (None, b"in1")])
        group = harness.unique("group")
        c = self._group_member(harness, topic, group)
        poll_records(harness, c, 2)
        tp = TopicPartition(topic, 0)
        p = self._producer(harness, harness.unique("tid"))
        p.begin_transaction()
        p.send_offsets_to_transaction([StoredPosition(tp, 1)], c.group_metadata(), T)
        p.abort_transaction(T)
        assert harness.committed(group, topic, 0).position is None, harness.describe()
        p.begin_transaction()
        p.send_offsets_to_transaction([StoredPosition(tp, 2)], c.group_metadata(), T)
        p.commit_transaction(T)
        assert harness.committed(group, topic, 0).position == 2, harness.describe()

    def test_stale_group_metadata_is_rejected(self, harness: Any, topic: str) -> None:
        harness.produce_inputs(topic, 0, [(None, b"in0")])
        group = harness.unique("group")
        first = self._group_member(harness, topic, group)
        poll_records(harness, first, 1)
        stale = first.group_metadata()
        first.close()  # leaves: the group moves on without it
        second = self._group_member(harness, topic, group)
        poll_records(harness, second, 1)
        p = self._producer(harness, harness.unique("tid"))
        p.begin_transaction()
        with pytest.raises(TransactionError) as info:
            p.send_offsets_to_transaction([StoredPosition(TopicPartition(topic, 0), 1)], stale, T)
        # observed on librdkafka 2.x / Kafka 4: UNKNOWN_MEMBER_ID, abortable
        assert info.value.abortable, (info.value, harness.describe())
        p.abort_transaction(T)
        assert harness.committed(group, topic, 0).position is None, harness.describe()

    # -- fencing ---------------------------------------------------------------------

    def test_init_transactions_fences_the_zombie(self, harness: Any, topic: str) -> None:
        tid = harness.unique("tid")
        old = self._producer(harness, tid, "old")
        old.begin_transaction()
        old.produce(Outbound(topic, value=b"zombie", partition=0), _noop)
        old.flush(T)
        self._producer(harness, tid, "new")
        with pytest.raises(TransactionError) as info:
            old.commit_transaction(T)
        assert info.value.fatal, (info.value, harness.describe())

    def test_reinit_aborts_the_predecessors_open_transaction(
        self, harness: Any, topic: str
    ) -> None:
        tid = harness.unique("tid")
        old = self._producer(harness, tid, "old")
        old.begin_transaction()
        old.produce(Outbound(topic, value=b"left-open", partition=0), _noop)
        old.flush(T)
        new = self._producer(harness, tid, "new")  # old is a crashed process here
        self._txn(new, topic, [b"sentinel"])
        got = self._until(harness, self._reader(harness, topic), b"sentinel")
        assert [r.value for r in got] == [b"sentinel"], harness.describe()

    # -- seek ------------------------------------------------------------------------

    def test_seek_rewinds(self, harness: Any, topic: str) -> None:
        harness.produce_inputs(topic, 0, [(None, b"a"), (None, b"b"), (None, b"c")])
        c = self._group_member(harness, topic, harness.unique("group"))
        assert [r.value for r in poll_records(harness, c, 3)] == [b"a", b"b", b"c"]
        c.seek(StoredPosition(TopicPartition(topic, 0), 1))
        got = poll_records(harness, c, 2)
        assert [r.value for r in got][:2] == [b"b", b"c"], harness.describe()

"""``ConfluentConsumer.seek`` on a real broker: after a seek the next poll starts at
the seek position, even when the adapter already holds fetched records of that
partition.

After an aborted transaction the runtime rewinds every partition with ``seek``;
a record buffered before the seek and delivered after it would be processed
again in the new epoch although its output was aborted: not a duplicate for
read_committed readers, but the rewind would not rewind. librdkafka itself drops
what it prefetched (its seek bumps the partition's op version); the records at
risk are the ones the adapter keeps behind an error event of a fetched batch
(``ConfluentConsumer._pending``: records are handed out first, the error is
raised on the next poll, the records after it wait there).

How the test gets records behind an error, deterministically: partition 0 has a
committed position and records stored one per batch, fetched one batch per
fetch (``max.partition.fetch.bytes=1``), so they trickle in one per fetch round
trip; partition 1 has no committed position and ``auto.offset.reset=error``, so
librdkafka reports ``_AUTO_OFFSET_RESET`` for it at the start, while partition 0
still has most of its records to fetch. The poll that raises that error leaves
the partition 0 records fetched after it in the adapter's buffer.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka
else:
    confluent_kafka = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer
from offsetledger.adapters.confluent_admin import create_topics
from offsetledger.core import BrokerError, Record, StoredPosition, TopicPartition

RECORDS = 30
SEEK_TO = 25  # above the buffered records the fetch left behind the error


def _noop(_parts: object) -> None:
    pass


@pytest.mark.kafka
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_seek_drops_records_buffered_for_the_partition(kafka_bootstrap: str, protocol: str) -> None:
    run = uuid.uuid4().hex[:10]
    topic, group = f"seek-{run}", f"seek-g-{run}"
    create_topics(kafka_bootstrap, {topic: 2})
    producer = confluent_kafka.Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(RECORDS):  # one batch per record
        producer.produce(topic, value=b"%d" % i, partition=0)
        producer.flush(30)
    # partition 0 committed at 0 (a group without members takes a simple commit)
    committer = confluent_kafka.Consumer(
        {"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    committer.commit(offsets=[confluent_kafka.TopicPartition(topic, 0, 0)], asynchronous=False)
    committer.close()

    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": group,
            "group.protocol": protocol,
            "enable.auto.commit": False,
            "auto.offset.reset": "error",  # partition 1: _AUTO_OFFSET_RESET at once
            "max.partition.fetch.bytes": 1,  # partition 0: one batch per fetch
        }
    )
    p0 = TopicPartition(topic, 0)
    try:
        consumer.subscribe([topic], on_assign=_noop, on_revoke=_noop, on_lost=_noop)
        before: list[Record] = []
        error: BrokerError | None = None
        deadline = time.monotonic() + 60
        while error is None and time.monotonic() < deadline:
            try:
                before += consumer.poll(1000, 1.0)
            except BrokerError as exc:
                error = exc
        assert error is not None, "no _AUTO_OFFSET_RESET for partition 1"
        assert error.name == "_AUTO_OFFSET_RESET", error
        # the records delivered before the error and those buffered behind it are
        # below SEEK_TO: a stale one would come first after the seek
        buffered = [
            m
            for m in consumer._pending  # the precondition under test
            if m.error() is None and m.partition() == 0
        ]
        assert any((m.offset() or 0) < SEEK_TO for m in buffered), (
            f"setup: no partition-0 record below {SEEK_TO} was buffered behind the error "
            f"({len(before)} delivered before it, buffered {[m.offset() for m in buffered]})"
        )

        consumer.seek(StoredPosition(p0, SEEK_TO))

        after: list[Record] = []
        deadline = time.monotonic() + 60
        while len(after) < RECORDS - SEEK_TO and time.monotonic() < deadline:
            after += [r for r in consumer.poll(1000, 0.5) if r.tp == p0]
        after += [r for r in consumer.poll(1000, 1.0) if r.tp == p0]  # nothing more
        offsets = [r.offset for r in after]
        assert offsets[:1] == [SEEK_TO], f"first records after seek({SEEK_TO}): {offsets[:5]}"
        assert offsets == list(range(SEEK_TO, RECORDS))
    finally:
        consumer.close()

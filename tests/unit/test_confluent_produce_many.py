"""produce_many's per-index reports: whatever the keys, value lengths, outcomes
and report order (shuffled, as across partitions), every index is reported exactly
once with its own outcome, and a message without headers is produced without the
``headers`` keyword. (A shared callback per call that found the index by
(topic, key, value length) was tried, caught by this test when its uniqueness
check was removed, and dropped: it did not pay, see docs/benchmarks.md.)"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

ck = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentProducer  # noqa: E402
from offsetledger.core import BrokerErrorInfo, Outbound  # noqa: E402

NOWHERE = {"bootstrap.servers": "127.0.0.1:9", "log_level": 0}
TIMED_OUT = ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT)


class ShufflingClient:
    """Keeps what produce() got; poll() serves the reports in a seeded random
    order (as across partitions), each with a Message carrying the topic, key and
    value as produced. A message fails iff its ``fail`` header is set."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.queued: list[tuple[dict[str, Any], Callable[[Any, Any], None]]] = []
        self.header_kw: list[bool] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Callable[[Any, Any], None] | None = None,
        **kw: Any,
    ) -> None:
        assert on_delivery is not None
        self.header_kw.append("headers" in kw)
        headers = dict(kw.get("headers") or [])
        self.queued.append(
            ({"topic": topic, "value": value, "key": key, "fail": "fail" in headers}, on_delivery)
        )

    def poll(self, _timeout: float = 0) -> int:
        queued, self.queued = self.queued, []
        self.rng.shuffle(queued)
        for sent, callback in queued:
            msg = ck.Message(
                topic=sent["topic"], partition=0, offset=1, key=sent["key"], value=sent["value"]
            )
            callback(TIMED_OUT if sent["fail"] else None, msg)
        return len(queued)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


def _producer(client: ShufflingClient) -> ConfluentProducer:
    producer = ConfluentProducer(NOWHERE, connect_timeout=None)
    producer._producer.flush(0)
    producer._producer = client  # type: ignore[assignment]
    producer._produce = client.produce
    return producer


messages = st.lists(
    st.tuples(
        st.sampled_from(["t", "u"]),
        st.sampled_from([None, b"", b"k1", b"k2"]),
        st.none() | st.binary(max_size=3),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@given(messages, st.integers(1, 30), st.integers(0, 2**32 - 1), st.booleans())
def test_every_index_reported_once_with_its_own_outcome(
    spec: list[tuple[str, bytes | None, bytes | None, bool]],
    chunk: int,
    seed: int,
    poll_between: bool,
) -> None:
    client = ShufflingClient(seed)
    producer = _producer(client)
    outbound = [
        Outbound(topic, key=key, value=value, headers=[("fail", b"1")] if fail else [])
        for topic, key, value, fail in spec
    ]
    got: dict[int, BrokerErrorInfo | None] = {}

    def on_report_from(base: int) -> Callable[[int, BrokerErrorInfo | None], None]:
        def on_report(i: int, error: BrokerErrorInfo | None) -> None:
            assert base + i not in got, f"message {base + i} reported twice"
            got[base + i] = error

        return on_report

    for base in range(0, len(outbound), chunk):
        producer.produce_many(outbound[base : base + chunk], on_report_from(base))
        if poll_between:
            producer.poll(0)
    producer.flush(1)
    note(f"reports: {got}")
    assert sorted(got) == list(range(len(spec)))
    for i, (_topic, _key, _value, fail) in enumerate(spec):
        error = got[i]
        if fail:
            assert error is not None, i
            assert error.name == "_MSG_TIMED_OUT", (i, error)
        else:
            assert error is None, (i, error)
    # a message without headers is produced without the headers keyword (its
    # keyword parsing alone cost ~1 µs per message)
    assert client.header_kw == [fail for *_, fail in spec]


def test_a_repeated_triple_reports_through_its_own_index() -> None:
    """Two messages with the same (topic, key, value length), the second failing:
    served in reverse order, each report still names its own index."""
    client = ShufflingClient(0)
    client.rng = random.Random(0)
    producer = _producer(client)
    got: list[tuple[int, str | None]] = []
    producer.produce_many(
        [
            Outbound("t", key=b"k", value=b"aa"),
            Outbound("t", key=b"k", value=b"bb", headers=[("fail", b"1")]),
        ],
        lambda i, e: got.append((i, None if e is None else e.name)),
    )
    client.queued.reverse()
    client.rng.shuffle = lambda _x: None  # type: ignore[method-assign,assignment]
    producer.flush(1)
    assert sorted(got) == [(0, None), (1, "_MSG_TIMED_OUT")]

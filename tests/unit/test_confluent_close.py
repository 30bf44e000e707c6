"""ConfluentConsumer.close() without a broker, over a hand-written stand-in for
``confluent_kafka.Consumer`` that records every call: the orderly revoke while
still a member, the unsubscribe-and-poll leave loop answering each rebalance event
with the call that matches it (incremental_unassign for cooperative, unassign for
eager, a real assign for an assign event), static members not leaving, an evicted
member getting on_lost, and librdkafka's close bounded by a daemon thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

ck = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import ConfluentConsumer  # noqa: E402
from offsetledger.core import TopicPartition  # noqa: E402

TOPIC = "t"
Callback = Callable[[Any, list[Any]], None]


class FakeClient:
    """Records calls; ``events`` are the rebalance events (kind, partitions) the
    next consume() serves, ``after_unsubscribe`` those an unsubscribe queues."""

    def __init__(self, assigned: Sequence[int], *, member: bool = True) -> None:
        self.calls: list[tuple[str, object]] = []
        self.held: set[int] = set(assigned)
        self.member = member
        self.events: list[tuple[str, list[int]]] = []
        self.after_unsubscribe: list[tuple[str, list[int]]] | None = None
        self.callbacks: dict[str, Callback] = {}
        self.close_blocks: threading.Event | None = None
        self.close_events: list[tuple[str, list[int]]] = []
        self.close_thread: str | None = None

    # what the adapter calls
    def subscribe(self, topics: list[str], **callbacks: Callback) -> None:
        self.calls.append(("subscribe", topics))
        self.callbacks = callbacks

    def assignment(self) -> list[Any]:
        return [ck.TopicPartition(TOPIC, p) for p in sorted(self.held)]

    def memberid(self) -> str:
        return "member-1" if self.member else ""

    def unsubscribe(self) -> None:
        self.calls.append(("unsubscribe", None))
        if self.after_unsubscribe is None:  # the default: the group revokes all
            kind = "lost" if not self.member else "revoke"
            self.events.append((kind, sorted(self.held)))
        else:
            self.events.extend(self.after_unsubscribe)

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        self.calls.append(("consume", None))
        self._serve()
        return []

    def _serve(self) -> None:
        events, self.events = self.events, []
        for kind, parts in events:
            cb = {"assign": "on_assign", "revoke": "on_revoke", "lost": "on_lost"}[kind]
            self.callbacks[cb](self, [ck.TopicPartition(TOPIC, p) for p in parts])

    def incremental_assign(self, parts: list[Any]) -> None:
        self.calls.append(("incremental_assign", sorted(p.partition for p in parts)))
        self.held |= {p.partition for p in parts}

    def incremental_unassign(self, parts: list[Any]) -> None:
        self.calls.append(("incremental_unassign", sorted(p.partition for p in parts)))
        self.held -= {p.partition for p in parts}

    def assign(self, parts: list[Any]) -> None:
        self.calls.append(("assign", sorted(p.partition for p in parts)))
        self.held = {p.partition for p in parts}

    def unassign(self) -> None:
        self.calls.append(("unassign", None))
        self.held = set()

    def resume(self, parts: list[Any]) -> None:
        pass

    def close(self) -> None:
        self.close_thread = threading.current_thread().name
        self.calls.append(("close", None))
        self.events.extend(self.close_events)
        self._serve()
        if self.close_blocks is not None:
            self.close_blocks.wait()


class App:
    """The application's callbacks, recording what they were given."""

    def __init__(self) -> None:
        self.log: list[tuple[str, list[int]]] = []

    def on_assign(self, parts: Sequence[TopicPartition]) -> None:
        self.log.append(("assign", sorted(tp.partition for tp in parts)))

    def on_revoke(self, parts: Sequence[TopicPartition]) -> None:
        self.log.append(("revoke", sorted(tp.partition for tp in parts)))

    def on_lost(self, parts: Sequence[TopicPartition]) -> None:
        self.log.append(("lost", sorted(tp.partition for tp in parts)))


def _consumer(
    monkeypatch: pytest.MonkeyPatch,
    client: FakeClient,
    strategy: str | None = "cooperative-sticky",
    **extra: object,
) -> tuple[ConfluentConsumer, App]:
    config: dict[str, object] = {
        "bootstrap.servers": "127.0.0.1:9",
        "group.id": "g",
        "log_level": 0,
        **extra,
    }
    if strategy is not None:
        config["partition.assignment.strategy"] = strategy
    consumer = ConfluentConsumer(config, connect_timeout=None)
    consumer._consumer.close()  # the real client, never used: replaced by the fake
    consumer._consumer = client  # type: ignore[assignment]
    app = App()
    consumer.subscribe(
        [TOPIC], on_assign=app.on_assign, on_revoke=app.on_revoke, on_lost=app.on_lost
    )
    # as after the first poll: the adapter keeps what librdkafka holds
    consumer._rebalance.assigned = {TopicPartition(TOPIC, p) for p in client.held}
    monkeypatch.setattr(ConfluentConsumer, "_LEAVE_POLL", 0.0)
    return consumer, app


def _names(client: FakeClient) -> list[str]:
    return [name for name, _ in client.calls if name != "consume"]


def test_cooperative_revokes_while_member_then_leaves_then_closes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient([0, 1])
    consumer, app = _consumer(monkeypatch, client)
    consumer.close()
    assert app.log == [("revoke", [0, 1])]
    assert _names(client) == ["subscribe", "unsubscribe", "incremental_unassign", "close"]
    assert ("incremental_unassign", [0, 1]) in client.calls
    assert client.close_thread == "offsetledger-consumer-close"
    consumer.close()  # idempotent
    assert _names(client).count("close") == 1


def test_eager_answers_the_revoke_with_unassign(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient([0, 1, 2])
    consumer, app = _consumer(monkeypatch, client, strategy="range")
    consumer.close()
    assert app.log == [("revoke", [0, 1, 2])]
    assert _names(client) == ["subscribe", "unsubscribe", "unassign", "close"]


def test_a_queued_assign_event_is_assigned_then_taken_back_without_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CI hang's situation: an assign event queued since the last poll. It is
    answered with its own partitions (not an empty assign) while the group handler
    runs, and the group's revoke takes them back before librdkafka's close."""
    client = FakeClient([0])
    client.events = [("assign", [1, 2])]  # queued before close, served in the leave loop
    client.after_unsubscribe = []
    consumer, app = _consumer(monkeypatch, client)

    real_consume = client.consume
    served: list[bool] = []

    def consume(num_messages: int, timeout: float) -> list[Any]:
        out = real_consume(num_messages, timeout)
        if not served:  # the group revokes what it had just assigned
            served.append(True)
            client.events.append(("revoke", sorted(client.held)))
        return out

    client.consume = consume  # type: ignore[method-assign]
    consumer.close()
    assert app.log == [("revoke", [0])]  # the app only ever hears of what it held
    calls = [c for c in client.calls if c[0] != "consume"]
    assert calls[1:] == [
        ("unsubscribe", None),
        ("incremental_assign", [1, 2]),
        ("incremental_unassign", [0, 1, 2]),
        ("close", None),
    ]
    assert not client.held


def test_the_leave_loop_is_bounded(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient([0])
    client.after_unsubscribe = []  # the group never takes the partition back
    consumer, app = _consumer(monkeypatch, client)
    monkeypatch.setattr(ConfluentConsumer, "LEAVE_TIMEOUT", 0.05)
    with caplog.at_level(logging.WARNING, logger="offsetledger"):
        consumer.close()
    assert app.log == [("revoke", [0])]
    assert _names(client)[-1] == "close"
    assert any("after unsubscribing" in r.getMessage() for r in caplog.records)


def test_static_member_does_not_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient([0, 1])
    client.close_events = [("revoke", [0, 1])]  # librdkafka's close unassigns locally
    consumer, app = _consumer(monkeypatch, client, **{"group.instance.id": "worker-1"})
    consumer.close()
    assert app.log == [("revoke", [0, 1])]  # once, before librdkafka's close
    assert "unsubscribe" not in _names(client)
    assert _names(client) == ["subscribe", "close", "incremental_unassign"]


def test_evicted_member_gets_on_lost_not_on_revoke(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient([0, 1], member=False)
    consumer, app = _consumer(monkeypatch, client)
    consumer.close()
    assert app.log == [("lost", [0, 1])]
    assert _names(client) == ["subscribe", "unsubscribe", "incremental_unassign", "close"]


def test_evicted_member_whose_loss_is_not_reported_still_gets_on_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient([3], member=False)
    client.after_unsubscribe = []
    consumer, app = _consumer(monkeypatch, client)
    monkeypatch.setattr(ConfluentConsumer, "LEAVE_TIMEOUT", 0.0)
    consumer.close()
    assert app.log == [("lost", [3])]


def test_events_inside_librdkafkas_close_never_reach_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient([0])
    client.close_events = [("assign", [5]), ("revoke", [5]), ("lost", [5])]
    consumer, app = _consumer(monkeypatch, client)
    consumer.close()
    assert app.log == [("revoke", [0])]
    assert client.calls[-3:] == [
        ("incremental_assign", [5]),
        ("incremental_unassign", [5]),
        ("incremental_unassign", [5]),
    ]


def test_a_hanging_librdkafka_close_is_bounded_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient([0])
    client.close_blocks = threading.Event()  # librdkafka's close never returns
    consumer, app = _consumer(monkeypatch, client)
    monkeypatch.setattr(ConfluentConsumer, "CLOSE_TIMEOUT", 0.1)
    try:
        with caplog.at_level(logging.WARNING, logger="offsetledger"):
            consumer.close()  # returns
        assert app.log == [("revoke", [0])]
        assert any("did not return within" in r.getMessage() for r in caplog.records)
    finally:
        client.close_blocks.set()


def test_an_error_from_librdkafkas_close_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = FakeClient([])
    consumer, _ = _consumer(monkeypatch, client)

    def close() -> None:
        raise RuntimeError("boom")

    client.close = close  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="boom"):
        consumer.close()


def test_never_subscribed_closes_without_leaving() -> None:
    consumer = ConfluentConsumer(
        {"bootstrap.servers": "127.0.0.1:9", "group.id": "g", "log_level": 0},
        connect_timeout=None,
    )
    client = FakeClient([])
    consumer._consumer.close()
    consumer._consumer = client  # type: ignore[assignment]
    consumer.close()
    assert _names(client) == ["close"]

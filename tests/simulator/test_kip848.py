"""KIP-848 (``group.protocol=consumer``), static membership and librdkafka's own
produce retries in the simulator."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from offsetledger.core import (
    BrokerError,
    ConfigError,
    DeliveryReport,
    Outbound,
    StoredPosition,
    TopicPartition,
)
from offsetledger.history import Assign, Leave, Revoke
from offsetledger.simulator import SimConsumer, World

SEED = 848
KIP848 = {
    "group.id": "g",
    "group.protocol": "consumer",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
}
CLASSIC = {
    "group.id": "g",
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": 6000,
}


class Calls:
    def __init__(self) -> None:
        self.log: list[tuple[str, list[int]]] = []

    def subscribe(self, consumer: SimConsumer, topic: str = "t") -> None:
        consumer.subscribe(
            [topic],
            on_assign=lambda p: self.log.append(("assign", _parts(p))),
            on_revoke=lambda p: self.log.append(("revoke", _parts(p))),
            on_lost=lambda p: self.log.append(("lost", _parts(p))),
        )


def _parts(partitions: Sequence[TopicPartition]) -> list[int]:
    return sorted(tp.partition for tp in partitions)


def _owned(consumer: SimConsumer) -> list[int]:
    return _parts(list(consumer.assignment()))


def _world(partitions: int = 4) -> World:
    world = World(SEED)
    world.create_topic("t", partitions)
    return world


def _poll_all(*consumers: SimConsumer, rounds: int = 5) -> None:
    for _ in range(rounds):
        for c in consumers:
            c.poll(10, 0.05)


# -- KIP-848 ------------------------------------------------------------------------


def test_a_joining_member_takes_partitions_incrementally_never_held_twice() -> None:
    world = _world()
    a, b = world.consumer(KIP848, "a"), world.consumer(KIP848, "b")
    ca, cb = Calls(), Calls()
    ca.subscribe(a)
    a.poll(10, 0.05)
    assert _owned(a) == [0, 1, 2, 3]
    cb.subscribe(b)
    _poll_all(a, b)
    assert (_owned(a), _owned(b)) == ([0, 1], [2, 3]), (ca.log, cb.log)
    assert ca.log == [("assign", [0, 1, 2, 3]), ("revoke", [2, 3])], "only what moves is revoked"
    assert cb.log == [("assign", [2, 3])]
    # the history never shows a partition held by two members
    owner: dict[tuple[str, int], str] = {}
    for e in world.history.events:
        if isinstance(e, Assign):
            for tp in e.partitions:
                assert owner.get(tp) in (None, e.member), f"{tp} held twice (seed {SEED})"
                owner[tp] = e.member
        elif isinstance(e, Revoke):
            for tp in e.partitions:
                owner.pop(tp, None)
    assert a.generation == b.generation == world.generation("g")


def test_the_new_owner_waits_until_the_old_one_revoked() -> None:
    world = _world(2)
    a, b = world.consumer(KIP848, "a"), world.consumer(KIP848, "b")
    Calls().subscribe(a)
    a.poll(10, 0.05)
    Calls().subscribe(b)
    b.poll(10, 0.05)  # the target gives b a partition, but a still holds it
    assert _owned(b) == []
    a.poll(10, 0.05)  # a revokes and releases it
    b.poll(10, 0.05)
    assert (_owned(a), _owned(b)) == ([0], [1])


def test_a_commit_with_a_stale_member_epoch_is_rejected() -> None:
    world = _world(1)
    a = world.consumer(KIP848, "a")
    Calls().subscribe(a)
    a.poll(10, 0.05)
    group = world._group("g")
    assert a.member_id is not None
    sp = StoredPosition(TopicPartition("t", 0), 0)
    (stale,) = group.commit("a", a.member_id, a.generation - 1, [sp])
    assert stale.error is not None
    assert stale.error.name == "STALE_MEMBER_EPOCH"
    (ok,) = a.commit([sp])
    assert ok.ok, ok


@pytest.mark.parametrize(
    ("config", "alone", "accepted"),
    [
        (KIP848, True, True),  # observed on Kafka 4.x: the empty group takes it
        (KIP848, False, False),
        ({**CLASSIC, "max.poll.interval.ms": 6000}, True, False),
        ({**CLASSIC, "max.poll.interval.ms": 6000}, False, False),
    ],
)
def test_a_commit_after_max_poll_interval(
    config: dict[str, object], alone: bool, accepted: bool
) -> None:
    world = _world(2)
    slow = world.consumer({**config, "max.poll.interval.ms": 6000}, "slow")
    calls = Calls()
    calls.subscribe(slow)
    slow.poll(10, 0.05)
    if not alone:
        other = world.consumer(config, "other")
        Calls().subscribe(other)
        other.poll(10, 0.05)
        slow.poll(10, 0.05)
        other.poll(10, 0.05)
    held = sorted(slow.assignment())
    assert held
    if not alone:
        for _ in range(140):  # the other member keeps polling; the slow one does not
            other.poll(10, 0.05)
    else:
        world.advance(7.0)
    assert any(
        isinstance(e, Leave) and e.reason == "max_poll_interval" for e in world.history.events
    )
    results = slow.commit([StoredPosition(tp, 0) for tp in held])
    assert all(r.ok for r in results) is accepted, results
    if not accepted:
        names = {r.error.name for r in results if r.error is not None}
        assert names <= {"UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION"}, names
    slow.poll(10, 0.05)
    assert calls.log[-2][0] == "lost" or calls.log[-1][0] == "lost", calls.log


def test_the_broker_session_timeout_applies_not_the_clients() -> None:
    world = _world(2)
    world.configure_group("g", session_timeout_ms=3000)
    a, b = world.consumer(KIP848, "a"), world.consumer(KIP848, "b")
    Calls().subscribe(a)
    Calls().subscribe(b)
    _poll_all(a, b)
    assert (_owned(a), _owned(b)) == ([0], [1])
    world.crash("b")
    for _ in range(50):  # 2.5 s: still in the group
        a.poll(10, 0.05)
    assert _owned(a) == [0]
    for _ in range(20):  # past 3 s
        a.poll(10, 0.05)
    assert _owned(a) == [0, 1]


def test_classic_only_keys_are_rejected_with_kip848() -> None:
    world = _world(1)
    with pytest.raises(ConfigError, match=r"session\.timeout\.ms"):
        world.consumer({**KIP848, "session.timeout.ms": 6000}, "a")
    consumer = world.consumer({**KIP848, "group.remote.assignor": "range"}, "b")
    assert consumer.config["group.remote.assignor"] == "range"


def test_a_classic_member_cannot_join_a_running_kip848_group() -> None:
    world = _world(1)
    a = world.consumer(KIP848, "a")
    Calls().subscribe(a)
    a.poll(10, 0.05)
    b = world.consumer(CLASSIC, "b")
    Calls().subscribe(b)
    with pytest.raises(ValueError, match="INCONSISTENT_GROUP_PROTOCOL"):
        b.poll(10, 0.05)


# -- static membership -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "end"),
    [(CLASSIC, "crash"), (CLASSIC, "close"), (KIP848, "close")],
    ids=["classic-crash", "classic-close", "kip848-close"],
)
def test_a_static_member_restarted_in_time_gets_its_partitions_back_without_a_rebalance(
    base: dict[str, object], end: str
) -> None:
    world = _world(2)
    world.configure_group("g", session_timeout_ms=6000)
    a = world.consumer({**base, "group.instance.id": "a"}, "a")
    b = world.consumer({**base, "group.instance.id": "b"}, "b")
    cb = Calls()
    Calls().subscribe(a)
    cb.subscribe(b)
    _poll_all(a, b)
    before = (_owned(a), _owned(b))
    generation = world.generation("g")
    assert sorted(before[0] + before[1]) == [0, 1]
    seen = len(cb.log)
    if end == "crash":
        world.crash("a")
    else:
        a.close()
    world.advance(2.0)
    again = world.consumer({**base, "group.instance.id": "a"}, "a")
    Calls().subscribe(again)
    _poll_all(again, b)
    assert (_owned(again), _owned(b)) == before
    assert world.generation("g") == generation, "a static rejoin does not rebalance"
    assert cb.log[seen:] == [], f"the other member saw {cb.log[seen:]}"
    assert not [e for e in world.history.events if isinstance(e, Leave)]


@pytest.mark.parametrize("base", [CLASSIC, KIP848], ids=["classic", "kip848"])
def test_a_closed_static_member_keeps_its_partitions_until_the_session_times_out(
    base: dict[str, object],
) -> None:
    world = _world(2)
    world.configure_group("g", session_timeout_ms=6000)
    a = world.consumer({**base, "group.instance.id": "a"}, "a")
    b = world.consumer({**base, "group.instance.id": "b"}, "b")
    Calls().subscribe(a)
    Calls().subscribe(b)
    _poll_all(a, b)
    a.close()
    for _ in range(40):  # 2 s
        b.poll(10, 0.05)
    assert len(_owned(b)) == 1, "a static member's close does not leave the group"
    for _ in range(200):  # past the session timeout
        b.poll(10, 0.05)
    assert _owned(b) == [0, 1]
    assert [e.reason for e in world.history.events if isinstance(e, Leave)] == ["session_timeout"]


def test_kip848_a_crashed_static_members_id_is_unreleased_until_its_session_times_out() -> None:
    """Kafka 4.x (found by the chaos run on the real broker): a restart with the id
    of a static member that crashed is refused, fatally, until the broker's session
    timeout removes the crashed one; a later restart then joins (a new epoch)."""
    world = _world(2)
    world.configure_group("g", session_timeout_ms=6000)
    static = {**KIP848, "group.instance.id": "a"}
    a = world.consumer(static, "a")
    Calls().subscribe(a)
    a.poll(10, 0.05)
    world.crash("a")
    early = world.consumer(static, "a")
    Calls().subscribe(early)
    with pytest.raises(BrokerError, match="UNRELEASED_INSTANCE_ID"):
        early.poll(10, 0.05)
    with pytest.raises(BrokerError, match="UNRELEASED_INSTANCE_ID"):
        early.poll(10, 0.05)  # fatal: the client stays failed
    early.close()
    generation = world.generation("g")
    world.advance(6.5)
    late = world.consumer(static, "a")
    Calls().subscribe(late)
    late.poll(10, 0.05)
    assert _owned(late) == [0, 1]
    assert world.generation("g") > generation


def test_kip848_a_duplicate_live_instance_is_refused() -> None:
    world = _world(2)
    first = world.consumer({**KIP848, "group.instance.id": "i"}, "first")
    Calls().subscribe(first)
    first.poll(10, 0.05)
    second = world.consumer({**KIP848, "group.instance.id": "i"}, "second")
    Calls().subscribe(second)
    with pytest.raises(BrokerError, match="UNRELEASED_INSTANCE_ID"):
        second.poll(10, 0.05)
    first.poll(10, 0.05)
    assert _owned(first) == [0, 1], "the first keeps its partitions"


def test_classic_a_duplicate_instance_fences_the_older_member() -> None:
    base = CLASSIC
    world = _world(2)
    old = world.consumer({**base, "group.instance.id": "i"}, "old")
    Calls().subscribe(old)
    old.poll(10, 0.05)
    new = world.consumer({**base, "group.instance.id": "i"}, "new")
    Calls().subscribe(new)
    new.poll(10, 0.05)
    assert _owned(new) == [0, 1]
    with pytest.raises(BrokerError, match="FENCED_INSTANCE_ID"):
        old.poll(10, 0.05)
    with pytest.raises(BrokerError, match="FENCED_INSTANCE_ID"):
        old.commit([StoredPosition(TopicPartition("t", 0), 0)])
    old.close()  # no leave: the instance belongs to the new client
    assert world.members("g") == {"new": frozenset(TopicPartition("t", p) for p in (0, 1))}


# -- librdkafka's internal produce retries ---------------------------------------------


def _produce(
    config: dict[str, object], fault: str, n: int = 4
) -> tuple[list[DeliveryReport], World]:
    world = World(SEED)
    world.create_topic("o", 1)
    producer = world.producer(config)
    world.faults.schedule(fault, times=1)
    reports: list[DeliveryReport] = []
    for i in range(n):
        producer.produce(Outbound("o", value=b"%d" % i, partition=0), reports.append)
    assert producer.flush(60) == 0
    return reports, world


def _values(world: World) -> list[bytes | None]:
    return [e.value for e in world.log("o", 0) if not e.control]


def test_idempotent_retry_after_a_lost_ack_is_no_duplicate_and_keeps_order() -> None:
    reports, world = _produce({"enable.idempotence": True}, "ack_lost")
    assert [r.error for r in reports] == [None] * 4
    assert _values(world) == [b"0", b"1", b"2", b"3"], "no duplicate, in order"
    assert [r.message.value for r in reports] == [b"0", b"1", b"2", b"3"]
    assert [r.offset for r in reports] == [0, 1, 2, 3]


def test_idempotent_retry_of_a_retriable_failure_keeps_order() -> None:
    reports, world = _produce({"enable.idempotence": True}, "delivery_retriable")
    assert all(r.error is None for r in reports)
    assert _values(world) == [b"0", b"1", b"2", b"3"]


def test_a_retry_without_idempotence_after_a_lost_ack_duplicates() -> None:
    reports, world = _produce({"retries": 3}, "ack_lost")
    assert all(r.error is None for r in reports)
    assert _values(world) == [b"0", b"1", b"2", b"3", b"0"], "the resend wrote a second copy"


def test_without_retries_the_failure_reaches_the_application() -> None:
    """The simulator's default (a documented departure: librdkafka retries)."""
    reports, world = _produce({}, "delivery_retriable")
    assert [r.error is not None for r in reports] == [True, False, False, False]
    assert world.producer({}).config["message.send.max.retries"] == 0


def test_retries_stop_at_message_timeout() -> None:
    world = World(SEED)
    world.create_topic("o", 1)
    producer = world.producer({"enable.idempotence": True, "message.timeout.ms": 1000})
    world.faults.set_probability("delivery_retriable", 1.0)
    reports: list[DeliveryReport] = []
    producer.produce(Outbound("o", value=b"x", partition=0), reports.append)
    producer.flush(10)
    assert len(reports) == 1
    assert reports[0].error is not None
    assert reports[0].error.name == "_MSG_TIMED_OUT"
    assert world.clock.now() >= 1.0


def test_kip848_runs_are_deterministic() -> None:
    def run() -> str:
        world = _world(3)
        world.faults.set_probability("assignment_lost", 0.2)
        world.faults.set_probability("rebalance", 0.2)
        consumers = [world.consumer(KIP848, name) for name in ("a", "b", "c")]
        for c in consumers:
            Calls().subscribe(c)
        for i in range(30):
            world.append("t", i % 3, value=b"%d" % i)
            _poll_all(*consumers, rounds=1)
        return world.trace()

    assert run() == run()

"""Group coordinator, consumer and executor behaviour specific to the simulator."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import pytest

from offsetledger.core import (
    BrokerError,
    ConfigError,
    PartitionNotAssignedError,
    StoredPosition,
    TopicPartition,
)
from offsetledger.history import Commit, Poll
from offsetledger.simulator import World, partition_for_key
from tests.simulator.helpers import joined, new_world, poll_all, tps

SEED = 5
TP0 = TopicPartition("in", 0)


def settle(*consumers: object, rounds: int = 5) -> None:
    for _ in range(rounds):
        for c in consumers:
            c.poll(10, 0.01)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("strategy", "a_gets", "b_gets"),
    [("range", tps(0, 1), tps(2, 3)), ("roundrobin", tps(0, 2), tps(1, 3))],
)
def test_eager_assignors(
    strategy: str, a_gets: tuple[TopicPartition, ...], b_gets: tuple[TopicPartition, ...]
) -> None:
    world = new_world(SEED, partitions=4)
    a, cba = joined(world, "a", {"partition.assignment.strategy": strategy})
    b, _ = joined(world, "b", {"partition.assignment.strategy": strategy})
    settle(a, b)
    assert tuple(sorted(a.assignment())) == a_gets
    assert tuple(sorted(b.assignment())) == b_gets
    assert cba.kinds() == ["assign", "revoke", "assign"], "eager: revoke everything, then assign"


def test_cooperative_sticky_moves_only_what_must_move() -> None:
    world = new_world(SEED, partitions=4)
    config = {"partition.assignment.strategy": "cooperative-sticky"}
    a, cba = joined(world, "a", config)
    settle(a)
    assert len(a.assignment()) == 4
    b, cbb = joined(world, "b", config)
    settle(a, b)
    assert len(a.assignment()) == 2
    assert len(b.assignment()) == 2
    kinds = cba.kinds()
    assert "revoke" in kinds
    revoked = next(p for k, p in cba.calls if k == "revoke")
    assert len(revoked) == 2, "cooperative: only the moving partitions are revoked"
    assert set(revoked) == set(b.assignment())
    assert [k for k, _ in cbb.calls] == ["assign", "assign"], (
        "empty assign, then the moved partitions"
    )
    assert a.assignment().isdisjoint(b.assignment())


def test_no_partition_is_owned_by_two_members_at_once() -> None:
    for strategy in ("range", "cooperative-sticky"):
        world = new_world(SEED, partitions=6)
        config = {"partition.assignment.strategy": strategy}
        members = [joined(world, f"m{i}", config)[0] for i in range(3)]
        for _ in range(10):
            for c in members:
                c.poll(10, 0.01)
                owned = [m.assignment() for m in members]
                for i in range(3):
                    for j in range(i + 1, 3):
                        assert owned[i].isdisjoint(owned[j]), f"{strategy}: overlap (seed={SEED})"
        assert sum(len(m.assignment()) for m in members) == 6


def test_mixed_eager_and_cooperative_members_are_rejected() -> None:
    world = new_world(SEED)
    a, _ = joined(world, "a", {"partition.assignment.strategy": "range"})
    a.poll(1, 0.0)
    b, _ = joined(world, "b", {"partition.assignment.strategy": "cooperative-sticky"})
    with pytest.raises(ValueError, match="INCONSISTENT_GROUP_PROTOCOL"):
        b.poll(1, 0.0)


def test_commit_from_an_evicted_member_is_fenced() -> None:
    world = new_world(SEED, records=2)
    consumer, _ = joined(world, "m1")
    consumer.poll(1, 0.0)
    world.faults.schedule("assignment_lost", target="m1")
    # evicted at the start of the next poll; a commit before that poll still works
    assert consumer.commit([StoredPosition(TP0, 1)])[0].ok
    world._groups["g"].leave(
        consumer.member_id or "", "forced"
    )  # evict now, as a session timeout would
    (result,) = consumer.commit([StoredPosition(TP0, 2)])
    assert result.error is not None
    assert result.error.name == "UNKNOWN_MEMBER_ID"
    assert world.committed("g", "in", 0).position == 1
    (event,) = [e for e in world.history if isinstance(e, Commit) and not e.ok]
    assert event.error == "UNKNOWN_MEMBER_ID"


def test_auto_commit_skips_unchanged_positions() -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1", {"enable.auto.commit": True, "auto.commit.interval.ms": 100})
    poll_all(consumer, 1)
    consumer.store([StoredPosition(TP0, 2)])
    world.advance(1.0)
    commits = [e for e in world.history if isinstance(e, Commit)]
    assert [(e.partition, e.position) for e in commits] == [(0, 2)], "committed once, then skipped"


def test_auto_offset_store_true_stores_on_poll_and_refuses_explicit_stores() -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1", {"enable.auto.offset.store": True})
    poll_all(consumer, 2)
    with pytest.raises(BrokerError, match="_INVALID_ARG"):
        consumer.store([StoredPosition(TP0, 1)])
    results = consumer.commit()
    assert sorted((r.tp.partition, r.position) for r in results) == [(0, 2), (1, 2)]


def test_store_and_pause_for_unassigned_partitions_fail() -> None:
    world = new_world(SEED)
    consumer, _ = joined(world, "m1")
    with pytest.raises(PartitionNotAssignedError, match="_STATE"):
        consumer.store([StoredPosition(TP0, 1)])
    with pytest.raises(PartitionNotAssignedError):
        consumer.pause([TP0])


@pytest.mark.parametrize(("reset", "first"), [("earliest", 3), ("latest", 6)])
def test_auto_offset_reset_after_truncation(reset: str, first: int) -> None:
    world = new_world(SEED, partitions=1, records=6)
    world.truncate("in", 0, log_start=3)
    consumer, _ = joined(world, "m1", {"auto.offset.reset": reset})
    records = consumer.poll(1, 0.0)
    world.append("in", 0, value=b"late")
    records += poll_all(consumer, 2)
    assert records[0].offset == first


def test_auto_offset_reset_error_raises_out_of_range() -> None:
    world = new_world(SEED, partitions=1, records=6)
    consumer, _ = joined(world, "m1", {"auto.offset.reset": "error"})
    consumer.commit([StoredPosition(TP0, 1)])
    world.truncate("in", 0, log_start=4)
    with pytest.raises(BrokerError, match="OFFSET_OUT_OF_RANGE") as info:
        consumer.poll(10, 0.0)
    assert info.value.name == "_AUTO_OFFSET_RESET"
    assert consumer.poll(10, 0.0) == [], "the partition stays stopped"


def test_control_offsets_are_never_delivered() -> None:
    world = new_world(SEED, partitions=1)
    world.append("in", 0, value=b"a")
    gap = world.append_gap("in", 0)
    world.append("in", 0, value=b"b")
    consumer, _ = joined(world, "m1")
    records = poll_all(consumer, 2)
    assert [r.offset for r in records] == [0, 2]
    assert gap == 1
    assert [e.control for e in world.log("in", 0)] == [False, True, False]
    assert [e.offset for e in world.history if isinstance(e, Poll)] == [0, 2]


def test_poll_without_data_advances_virtual_time_by_its_timeout_only() -> None:
    world = new_world(SEED)
    consumer, _ = joined(world, "m1")
    consumer.poll(1, 0.0)
    before = world.clock.now()
    assert consumer.poll(10, 2.5) == []
    assert world.clock.now() - before == pytest.approx(2.5)


def test_poll_returns_early_when_a_produced_record_arrives() -> None:
    from offsetledger.core import Outbound

    world = new_world(SEED, partitions=1)
    consumer, _ = joined(world, "m1", topics=("out",))
    consumer.poll(1, 0.0)
    producer = world.producer(name="p")
    producer.produce(Outbound("out", b"x"), lambda r: None)
    before = world.clock.now()
    records = consumer.poll(10, 5.0)
    assert len(records) == 1
    assert world.clock.now() - before < 0.1


def test_key_partitioner_is_stable_crc32() -> None:
    assert partition_for_key(b"abc", 4) == partition_for_key(b"abc", 4)
    world = new_world(SEED, partitions=4)
    producer = world.producer(name="p")
    from offsetledger.core import DeliveryReport, Outbound

    reports: list[DeliveryReport] = []
    for key in (b"a", b"b", b"a", b"c", b"a"):
        producer.produce(Outbound("out", b"v", key=key), reports.append)
    producer.flush(5.0)
    assert [r.partition for r in reports] == [
        partition_for_key(k, 4) for k in (b"a", b"b", b"a", b"c", b"a")
    ]


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"group.id": "g", "enable.auto.commitx": True}, "enable.auto.commitx"),
        ({"enable.auto.commit": True}, "group.id"),
        ({"group.id": "g", "auto.offset.reset": "sometimes"}, "auto.offset.reset"),
        ({"group.id": "g", "session.timeout.ms": -1}, "session.timeout.ms"),
        ({"group.id": "g", "enable.auto.commit": "yes"}, "enable.auto.commit"),
        (
            {"group.id": "g", "partition.assignment.strategy": "range,cooperative-sticky"},
            "partition.assignment.strategy",
        ),
        ({"group.id": "g", "group.protocol": "magic"}, "group.protocol"),
        (
            {"group.id": "g", "group.protocol": "consumer", "session.timeout.ms": 6000},
            "session.timeout.ms",
        ),
        (
            {
                "group.id": "g",
                "group.protocol": "consumer",
                "partition.assignment.strategy": "range",
            },
            "partition.assignment.strategy",
        ),
        ({"group.id": "g", "group.remote.assignor": "uniform"}, "group.remote.assignor"),
        ({"group.id": "g", "group.instance.id": " "}, "group.instance.id"),
        (
            {"group.id": "g", "session.timeout.ms": 60000, "max.poll.interval.ms": 30000},
            "max.poll.interval.ms",
        ),
    ],
)
def test_bad_consumer_config_names_the_key(config: dict[str, object], key: str) -> None:
    world = World(SEED)
    with pytest.raises(ConfigError) as info:
        world.consumer(config, "m1")
    assert info.value.key == key


def test_bad_producer_config_names_the_key() -> None:
    world = World(SEED)
    with pytest.raises(ConfigError, match="'acks'"):
        world.producer({"acks": 2})
    with pytest.raises(ConfigError, match="'linger'"):
        world.producer({"linger": 5})


def test_effective_config_has_librdkafka_defaults() -> None:
    world = World(SEED)
    consumer = world.consumer({"group.id": "g", "bootstrap.servers": "ignored:9092"}, "m1")
    assert consumer.config["enable.auto.offset.store"] is False  # as the confluent adapter
    assert consumer.config["auto.commit.interval.ms"] == 5000
    assert consumer.config["partition.assignment.strategy"] == "range,roundrobin"


def test_world_rejects_bad_topics_and_duplicate_members() -> None:
    world = World(SEED)
    world.create_topic("t", 1)
    with pytest.raises(ValueError, match="TOPIC_ALREADY_EXISTS"):
        world.create_topic("t", 1)
    with pytest.raises(ValueError, match="partitions"):
        world.create_topic("u", 0)
    world.consumer({"group.id": "g"}, "m")
    with pytest.raises(ValueError, match="live consumer"):
        world.consumer({"group.id": "g"}, "m")


def test_executor_finishes_tasks_out_of_order_reproducibly() -> None:
    def order(seed: int) -> list[int]:
        world = World(seed)
        executor = world.executor("e", task_cost=0.01)
        done: list[int] = []

        def task(i: int) -> Callable[[], None]:
            return lambda: done.append(i)

        futures: list[Future[None]] = [executor.submit(task(i)) for i in range(20)]
        while not all(f.done() for f in futures):
            executor.wait(futures, 1.0)
        assert world.clock.now() == pytest.approx(0.2)
        return done

    first = order(SEED)
    assert sorted(first) == list(range(20))
    assert first != list(range(20)), f"no reordering (seed={SEED})"
    assert first == order(SEED)


def test_executor_puts_task_exceptions_into_the_future() -> None:
    world = World(SEED)
    executor = world.executor("e")

    def boom() -> None:
        raise RuntimeError("handler failed")

    future = executor.submit(boom)
    executor.wait([future], 1.0)
    with pytest.raises(RuntimeError, match="handler failed"):
        future.result()
    executor.shutdown(cancel_pending=True)
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(boom)


def test_creating_a_subscribed_topic_later_triggers_an_assignment() -> None:
    world = World(SEED)
    consumer = world.consumer({"group.id": "g"}, "m1")
    consumer.subscribe(
        ["late"], on_assign=lambda p: None, on_revoke=lambda p: None, on_lost=lambda p: None
    )
    consumer.poll(1, 0.0)
    assert consumer.assignment() == frozenset()
    world.create_topic("late", 2)
    consumer.poll(1, 0.0)
    assert consumer.assignment() == {TopicPartition("late", 0), TopicPartition("late", 1)}


def _double_owners(events: list[object]) -> list[str]:
    """Moments when a partition is assigned to a member while another still holds
    it (holding ends at its Revoke or Lost, or the member's Crash, Leave or Close)."""
    from offsetledger.history import Assign, Close, Crash, Leave, Lost, Revoke

    holder: dict[tuple[str, int], str] = {}
    problems: list[str] = []
    for e in events:
        if isinstance(e, Assign):
            for tp in e.partitions:
                other = holder.get(tp)
                if other is not None and other != e.member:
                    problems.append(
                        f"seq {e.seq}: {tp} assigned to {e.member}, still held by {other}"
                    )
                holder[tp] = e.member
        elif isinstance(e, Revoke | Lost):
            for tp in e.partitions:
                if holder.get(tp) == e.member:
                    del holder[tp]
        elif isinstance(e, Crash | Leave | Close):
            for tp in [tp for tp, m in holder.items() if m == e.member]:
                del holder[tp]
    return problems


@pytest.mark.parametrize("seed", [2362, 1, 2, 3, 4, 5, 6, 7])
def test_no_partition_is_held_by_two_members(seed: int) -> None:
    """Regression (swarm seed 2362): an eager member whose synced assignment was not
    yet delivered when a new rebalance started rejoined without revoking it, so the
    next generation gave one of its partitions to another member while the app
    still processed it (the two then committed over each other)."""
    import logging

    from offsetledger.scenario import run_simulation
    from offsetledger.swarm import draw_config

    logging.disable(logging.CRITICAL)
    try:
        result = run_simulation(draw_config(seed))
    finally:
        logging.disable(logging.NOTSET)
    problems = _double_owners(list(result.world.history.events))
    assert not problems, f"seed={seed}: " + "; ".join(problems[:5])
    assert result.ok, f"seed={seed}: {result.report.summary()}"


def test_a_rebalance_callback_longer_than_max_poll_interval_does_not_hang() -> None:
    """Regression (swarm seed 3348): a revoke callback inside poll that ran past
    max.poll.interval.ms made the poll-interval timer reschedule itself in the past,
    so the virtual clock ran that timer for ever. Run in a subprocess so that a
    hang fails the test instead of stalling the suite."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "offsetledger.swarm", "--replay", "3348"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 seeds, 0 failed" in proc.stdout


def test_poll_interval_does_not_run_inside_a_long_callback() -> None:
    """As librdkafka: time spent inside poll (here a revoke callback that takes 40 s
    against max.poll.interval.ms=30 s) does not evict the member."""
    world = World(seed=9)
    world.create_topic("t", 2)
    config = {
        "group.id": "g",
        "enable.auto.offset.store": False,
        "max.poll.interval.ms": 30_000,
        "session.timeout.ms": 6000,
    }
    first = world.consumer(config, "a")
    lost: list[object] = []

    def slow_revoke(_parts: object) -> None:
        world.clock.sleep(40.0)

    first.subscribe(["t"], on_assign=lambda _p: None, on_revoke=slow_revoke, on_lost=lost.append)
    first.poll(10, 0.1)
    second = world.consumer(config, "b")
    second.subscribe(
        ["t"], on_assign=lambda _p: None, on_revoke=lambda _p: None, on_lost=lambda _p: None
    )
    second.poll(10, 0.1)
    import signal

    def hung(_signum: int, _frame: object) -> None:
        raise AssertionError("the virtual clock hung inside a long poll callback")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        first.poll(10, 0.1)  # the rebalance: revoke runs for 40 s of virtual time
        first.poll(10, 0.1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not lost, "evicted for time spent inside poll"

"""Each fault of the menu, scheduled or drawn with a seeded probability, shows its effect."""

from __future__ import annotations

import pytest

from offsetledger.core import DeliveryReport, Outbound, StoredPosition, TopicPartition
from offsetledger.history import Crash, Leave, Truncate
from offsetledger.simulator import FAULT_KINDS, ProcessCrashed, World
from tests.simulator.helpers import joined, new_world, poll_all, produce_one, tps

SEED = 11
TP0 = TopicPartition("in", 0)


def test_fault_menu_rejects_unknown_kinds_and_bad_probabilities() -> None:
    world = World(SEED)
    with pytest.raises(ValueError, match="unknown fault kind 'meteor'"):
        world.faults.schedule("meteor")
    with pytest.raises(ValueError, match="within"):
        world.faults.set_probability("crash", 1.5)


def test_seeded_probability_fires_reproducibly_at_about_its_rate() -> None:
    def draws(seed: int) -> list[bool]:
        world = World(seed)
        world.faults.set_probability("empty_poll", 0.25)
        return [world.faults.fires("empty_poll", "m") for _ in range(2000)]

    first = draws(SEED)
    assert first == draws(SEED), f"same seed, different fault pattern (seed={SEED})"
    assert 400 < sum(first) < 600, f"rate far from 0.25: {sum(first)}/2000 (seed={SEED})"
    assert first != draws(SEED + 1)


def test_scheduled_fault_targets_one_member_and_counts_down() -> None:
    world = World(SEED)
    world.faults.schedule("empty_poll", target="b", times=2)
    assert not world.faults.fires("empty_poll", "a")
    assert world.faults.fires("empty_poll", "b")
    assert world.faults.fires("empty_poll", "b")
    assert not world.faults.fires("empty_poll", "b")
    assert [(f.kind, f.target) for f in world.faults.fired] == [("empty_poll", "b")] * 2


# -- crash ---------------------------------------------------------------------------------


def test_crash_loses_memory_keeps_commits_and_evicts_after_session_timeout() -> None:
    world = new_world(SEED, records=10)
    consumer, _ = joined(world, "m1", {"session.timeout.ms": 6000})
    producer = world.producer(name="m1")
    got = poll_all(consumer)
    assert len(got) == 10
    consumer.commit([StoredPosition(TP0, 2)])
    consumer.store([StoredPosition(TP0, 4)])
    reports: list[DeliveryReport] = []
    for i in range(20):
        producer.produce(Outbound("out", b"o%d" % i, partition=0), reports.append)
    world.crash("m1")
    assert isinstance(world.history.events[-1], Crash)
    with pytest.raises(ProcessCrashed):
        consumer.poll(1, 0.0)
    with pytest.raises(ProcessCrashed):
        producer.flush(1.0)
    assert reports == [], "a crashed producer serves no reports"
    written = world.end_offset("out", 0)
    assert 0 < written < 20, (
        f"buffered messages are written or lost at random (seed={SEED}): {written}"
    )
    assert world.committed("g", "in", 0).position == 2, "the stored (uncommitted) 4 must be lost"
    assert "m1" in world.members("g")
    world.advance(5.9)
    assert "m1" in world.members("g"), "evicted before session.timeout.ms"
    world.advance(0.2)
    assert "m1" not in world.members("g")
    leave = [e for e in world.history.events if isinstance(e, Leave)]
    assert [(e.member, e.reason) for e in leave] == [("m1", "session_timeout")]
    restarted, _ = joined(world, "m1")
    again = poll_all(restarted)
    assert next(r.offset for r in again if r.partition == 0) == 2, (
        "restart resumes at the committed position"
    )


def test_scheduled_crash_fault_kills_the_process_at_that_call() -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1")
    poll_all(consumer, 2)
    world.faults.schedule("crash", target="m1")
    with pytest.raises(ProcessCrashed, match="m1"):
        consumer.store([StoredPosition(TP0, 1)])
    assert consumer.crashed
    assert any(isinstance(e, Crash) and e.member == "m1" for e in world.history)


def test_graceful_close_moves_partitions_at_once_but_a_kill_waits_for_the_session_timeout() -> None:
    for how in ("close", "kill"):
        world = new_world(SEED)
        a, _ = joined(world, "a", {"session.timeout.ms": 10000})
        b, _ = joined(world, "b", {"session.timeout.ms": 10000})
        for _ in range(3):
            a.poll(10, 0.01)
            b.poll(10, 0.01)
        assert len(b.assignment()) == 1
        if how == "close":
            a.close()
        else:
            world.crash("a")
        b.poll(10, 0.01)
        if how == "close":
            assert len(b.assignment()) == 2, "close hands partitions over at once"
        else:
            assert len(b.assignment()) == 1, (
                "a killed member holds its partitions until its session expires"
            )
            b.poll(10, 10.0)
            assert len(b.assignment()) == 2, f"no takeover after session.timeout.ms (seed={SEED})"


# -- producer faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "retriable", "written", "late"),
    [
        ("delivery_retriable", "NOT_ENOUGH_REPLICAS", True, False, False),
        ("delivery_fatal", "MSG_SIZE_TOO_LARGE", False, False, False),
        ("delivery_timeout", "_MSG_TIMED_OUT", True, False, True),
        ("ack_lost", "_MSG_TIMED_OUT", True, True, True),
    ],
)
def test_delivery_faults(kind: str, error: str, retriable: bool, written: bool, late: bool) -> None:
    world = new_world(SEED)
    producer = world.producer({"message.timeout.ms": 30000}, name="p")
    world.faults.schedule(kind, target="p")
    start = world.clock.now()
    report = produce_one(producer, Outbound("out", b"x", partition=1))
    assert report.error is not None, f"{kind} did not fail the report (seed={SEED})"
    assert (report.error.name, report.error.retriable) == (error, retriable)
    assert report.offset is None
    assert (world.end_offset("out", 1) == 1) is written, f"{kind}: written={written} expected"
    took = world.clock.now() - start
    assert (took >= 30.0) is late, f"{kind}: report after {took}s"
    ok = produce_one(producer, Outbound("out", b"y", partition=1))
    assert ok.ok, "the fault fires once"


def test_unknown_topic_fails_delivery() -> None:
    world = new_world(SEED)
    producer = world.producer(name="p")
    report = produce_one(producer, Outbound("nope", b"x"))
    assert report.error is not None
    assert report.error.name == "UNKNOWN_TOPIC_OR_PART"


def test_acks_zero_reports_success_even_when_the_message_was_dropped() -> None:
    world = new_world(SEED)
    producer = world.producer({"acks": 0}, name="p")
    world.faults.schedule("delivery_retriable", target="p")
    report = produce_one(producer, Outbound("out", b"x", partition=0))
    assert report.ok
    assert report.offset is None
    assert world.end_offset("out", 0) == 0, "acks=0: the dropped message is gone, yet reported ok"


# -- commit faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "retriable"),
    [
        ("commit_unavailable", "COORDINATOR_NOT_AVAILABLE", True),
        ("commit_fenced", "ILLEGAL_GENERATION", False),
    ],
)
def test_commit_faults(kind: str, error: str, retriable: bool) -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1")
    poll_all(consumer, 2)
    world.faults.schedule(kind, target="m1")
    results = consumer.commit([StoredPosition(TP0, 1), StoredPosition(TopicPartition("in", 1), 1)])
    assert [(r.ok, r.error.name if r.error else None) for r in results] == [(False, error)] * 2
    assert all(r.error is not None and r.error.retriable is retriable for r in results)
    assert world.committed("g", "in", 0).position is None
    (again,) = consumer.commit([StoredPosition(TP0, 1)])
    assert again.ok
    assert world.committed("g", "in", 0).position == 1


def test_auto_commit_failure_is_reported_and_retried_at_the_next_interval() -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1", {"enable.auto.commit": True, "auto.commit.interval.ms": 1000})
    poll_all(consumer, 2)
    consumer.store([StoredPosition(TP0, 2)])
    world.faults.schedule("commit_unavailable", target="m1")
    world.advance(1.0)
    assert [r.ok for r in consumer.auto_commit_results] == [False]
    assert world.committed("g", "in", 0).position is None
    world.advance(1.0)
    assert world.committed("g", "in", 0).position == 2


# -- group faults -------------------------------------------------------------------------------


def test_assignment_lost_serves_on_lost_and_rejoins() -> None:
    world = new_world(SEED, records=4)
    consumer, callbacks = joined(world, "m1")
    poll_all(consumer, 2)
    consumer.store([StoredPosition(TP0, 2)])
    world.faults.schedule("assignment_lost", target="m1")
    consumer.poll(10, 0.01)
    assert callbacks.kinds() == ["assign", "lost", "assign"], callbacks.calls
    assert callbacks.calls[1][1] == tps(0, 1)
    assert consumer.commit() == [], "stored positions of lost partitions are gone"


def test_forced_rebalance_revokes_and_reassigns() -> None:
    world = new_world(SEED)
    consumer, callbacks = joined(world, "m1")
    consumer.poll(1, 0.0)
    gen = consumer.generation
    world.faults.schedule("rebalance", target="m1")
    consumer.poll(1, 0.0)
    assert callbacks.kinds() == ["assign", "revoke", "assign"]
    assert consumer.generation == gen + 1


def test_slow_task_past_max_poll_interval_gets_the_member_evicted() -> None:
    world = new_world(SEED, records=2)
    consumer, callbacks = joined(
        world, "m1", {"session.timeout.ms": 6000, "max.poll.interval.ms": 10000}
    )
    executor = world.executor("m1")
    records = poll_all(consumer, 1)
    world.faults.slow_task_seconds = 11.0
    world.faults.schedule("slow_task", target="m1")
    future = executor.submit(lambda: len(records))
    executor.wait([future], 60.0)
    assert future.result() == 2
    assert world.members("g") == {}, "max.poll.interval.ms exceeded: the member left"
    results = consumer.commit([StoredPosition(TP0, 1)])
    assert results[0].error is not None
    assert results[0].error.name == "UNKNOWN_MEMBER_ID"
    consumer.poll(1, 0.0)
    assert callbacks.kinds() == ["assign", "lost", "assign"], callbacks.calls
    assert any(isinstance(e, Leave) and e.reason == "max_poll_interval" for e in world.history)


def test_empty_poll_returns_nothing_although_records_are_there() -> None:
    world = new_world(SEED, records=4)
    consumer, _ = joined(world, "m1")
    consumer.poll(1, 0.0)
    world.faults.schedule("empty_poll", target="m1")
    before = world.clock.now()
    assert consumer.poll(10, 0.5) == []
    assert world.clock.now() - before == pytest.approx(0.5)
    assert len(consumer.poll(10, 0.5)) > 0


def test_clock_jump_fires_overdue_timers_late() -> None:
    world = new_world(SEED, records=2)
    consumer, _ = joined(world, "m1", {"enable.auto.commit": True, "auto.commit.interval.ms": 1000})
    poll_all(consumer, 1)
    consumer.store([StoredPosition(TP0, 1)])
    world.faults.clock_jump_seconds = 30.0
    world.faults.schedule("clock_jump", target="m1")
    before = world.clock.now()
    consumer.poll(1, 0.0)
    assert world.clock.now() - before == pytest.approx(30.0)
    commits = [e for e in world.history if type(e).kind == "commit"]
    assert len(commits) == 1, "the overdue auto-commit ran once, not once per missed interval"
    assert commits[0].time == pytest.approx(before + 30.0)


def test_truncate_fault_moves_the_log_start_and_the_consumer_resets() -> None:
    world = new_world(SEED, partitions=1, records=10)
    consumer, _ = joined(world, "m1")
    consumer.poll(2, 0.0)
    world.faults.schedule("truncate", target="m1")
    records = poll_all(consumer, 3)
    (truncate,) = [e for e in world.history if isinstance(e, Truncate)]
    assert truncate.log_start > 0
    assert world.log_start("in", 0) == truncate.log_start
    assert records[0].offset >= truncate.log_start, "reset to earliest after truncation"
    assert [r.offset for r in records] == list(range(records[0].offset, 10))


def test_every_fault_kind_has_a_test_here() -> None:
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    here = __import__("pathlib").Path(__file__).parent
    source += "".join(p.read_text() for p in sorted(here.glob("test_txn*.py")))  # txn faults
    missing = [kind for kind in FAULT_KINDS if f'"{kind}"' not in source]
    assert missing == [], f"fault kinds without a test: {missing}"

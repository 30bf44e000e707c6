"""Lifecycle, shutdown and configuration: stop() drains and commits, a second stop()
aborts, the context manager, run(), illegal transitions, configuration errors."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from offsetledger.core import ConfigError, Outbound, Record
from offsetledger.history import Close, Commit
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
    ProcessorStateError,
    RetryPolicy,
    check_consumer_config,
)
from tests.processor.helpers import (
    all_committed,
    consumer_config,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
    upper,
)
from tests.processor.invariants import assert_invariants


@pytest.mark.parametrize("mode", [CommitMode.AUTO, CommitMode.PERIODIC])
def test_stop_drains_in_flight_flushes_and_commits(mode: CommitMode) -> None:
    world = seed_world(3, partitions=2, records=40)
    cfg = ProcessorConfig(
        poll_timeout=0.05, ordering=OrderingMode.UNORDERED, commit_mode=mode, commit_interval=60.0
    )
    metrics = InMemoryMetrics()
    p = make_processor(world, "m1", config=cfg, metrics=metrics, task_cost=0.001)
    drive(world, [p], lambda: p.in_flight >= 5)
    p.stop()
    assert p.state is ProcessorState.CLOSED
    assert p.in_flight == 0
    # everything dispatched was finished and committed; undispatched records were
    # abandoned (not started) and stay uncommitted: they are redelivered later
    finished = {o for _, _, o in output_sources(world)}
    for part in range(2):
        c = world.committed("g", "in", part).position
        assert c is not None
        assert c > 0
    assert metrics.count("records_done") >= 5
    assert any(isinstance(e, Close) for e in world.history)
    assert finished
    assert_invariants(world, final_drain=False)
    # a restarted member finishes the rest: nothing was lost
    p2 = make_processor(world, "m2", config=cfg)
    drive(world, [p2], lambda: inputs(world) <= set(output_sources(world)))
    p2.stop()
    assert_invariants(world)


def test_second_stop_aborts_without_draining() -> None:
    world = seed_world(3, partitions=1, records=30)
    holder: dict[str, Processor] = {}
    seen: list[int] = []

    def handler(record: Record) -> Iterable[Outbound]:
        seen.append(record.offset)
        p = holder["p"]
        if p.state is ProcessorState.DRAINING:
            p.stop()  # second stop while the first one drains: abort
        return upper(record)

    metrics = InMemoryMetrics()
    # few handlers at a time, each taking a while: some still run (and some records
    # were not started) when the first stop() drains
    cfg = ProcessorConfig(poll_timeout=0.05, ordering=OrderingMode.UNORDERED, max_in_flight_total=4)
    holder["p"] = p = make_processor(
        world, "m1", handler, config=cfg, metrics=metrics, task_cost=0.01
    )
    drive(world, [p], lambda: p.in_flight >= 3)
    p.stop()
    assert p.state is ProcessorState.CLOSED
    assert metrics.count("abandoned") > 0
    # committed only what finished (the checker's CommitSafety), and the rest is redelivered
    assert_invariants(world, final_drain=False)
    p2 = make_processor(world, "m2", config=cfg)
    drive(world, [p2], lambda: all_committed(world))
    p2.stop()
    assert_invariants(world)


def test_context_manager_stops_and_closes() -> None:
    world = seed_world(2, partitions=2, records=10)
    with make_processor(world, "m1") as p:
        drive(world, [p], lambda: len(output_sources(world)) == 10)
    assert p.state is ProcessorState.CLOSED
    assert all_committed(world)
    with pytest.raises(ProcessorStateError, match="RUNNING"):
        p.step()
    p.stop()  # stopping a closed processor is harmless
    assert_invariants(world)


def test_run_loops_until_a_handler_stops_it() -> None:
    world = seed_world(2, partitions=1, records=10)
    holder: dict[str, Processor] = {}

    def handler(record: Record) -> Iterable[Outbound]:
        if record.offset == 9:
            holder["p"].stop()
        return upper(record)

    holder["p"] = p = make_processor(world, "m1", handler)
    p.run()
    assert p.state is ProcessorState.CLOSED
    assert world.committed("g", "in", 0).position == 10
    assert_invariants(world)


def test_close_without_running_closes_the_consumer() -> None:
    world = seed_world(2, partitions=1, records=1)
    p = make_processor(world, "m1")
    p.stop()
    assert p.state is ProcessorState.CLOSED
    assert not world.history.of(Commit)


def test_illegal_lifecycle_transition_raises() -> None:
    world = seed_world(2, partitions=1, records=1)
    p = make_processor(world, "m1")
    p.start()
    with pytest.raises(
        ProcessorStateError, match="illegal processor transition RUNNING -> RUNNING"
    ):
        p.start()
    p.stop()


# -- configuration ---------------------------------------------------------------------


def _config(**overrides: object) -> dict[str, object]:
    c = consumer_config()
    c.update(overrides)
    return c


def test_consumer_without_manual_offset_store_is_rejected() -> None:
    c = consumer_config()
    del c["enable.auto.offset.store"]  # librdkafka's default is true
    with pytest.raises(ConfigError) as err:
        check_consumer_config(c, CommitMode.AUTO)
    assert err.value.key == "enable.auto.offset.store"
    assert "must be false" in str(err.value)
    with pytest.raises(ConfigError, match=r"enable\.auto\.offset\.store"):
        check_consumer_config(_config(**{"enable.auto.offset.store": "true"}), CommitMode.AUTO)


def test_processor_checks_the_consumer_configuration_at_construction() -> None:
    world = seed_world(2, partitions=1, records=1)
    consumer = world.consumer({"group.id": "g", "enable.auto.offset.store": True}, "m1")
    with pytest.raises(ConfigError, match=r"enable\.auto\.offset\.store"):
        Processor(consumer, world.producer(), upper, topics=["in"], clock=world.clock)


def test_commit_mode_must_match_auto_commit() -> None:
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit.*AUTO"):
        check_consumer_config(_config(**{"enable.auto.commit": False}), CommitMode.AUTO)
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit.*PERIODIC"):
        check_consumer_config(_config(**{"enable.auto.commit": True}), CommitMode.PERIODIC)
    check_consumer_config(_config(**{"enable.auto.commit": "false"}), CommitMode.PERIODIC)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"poll_timeout": -1}, "poll_timeout"),
        ({"max_in_flight_total": 0}, "max_in_flight_total"),
        ({"max_in_flight_per_partition": 20_000}, "max_in_flight_per_partition"),
        ({"processing_timeout": 0}, "processing_timeout"),
        ({"dead_letter_topic": ""}, "dead_letter_topic"),
        ({"commit_every_records": 0}, "commit_every_records"),
        (
            {
                "commit_mode": CommitMode.PERIODIC,
                "commit_every_records": None,
                "commit_interval": None,
            },
            "commit_interval",
        ),
        ({"ordering": "key"}, "ordering"),
        ({"metadata_budget": 8}, "metadata_budget"),
        ({"metadata_budget": 4097}, "metadata_budget"),
        ({"auto_commit_interval": 0}, "auto_commit_interval"),
    ],
)
def test_invalid_processor_config_names_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        ProcessorConfig(**kwargs)  # type: ignore[arg-type]
    assert err.value.key == key


def test_dead_letter_topic_must_not_be_an_input() -> None:
    world = seed_world(2, partitions=1, records=1)
    with pytest.raises(ConfigError, match="dead_letter_topic"):
        make_processor(world, "m1", config=ProcessorConfig(dead_letter_topic="in"))


def test_retry_policy_delays_are_deterministic_and_capped() -> None:
    policy = RetryPolicy(max_attempts=10, backoff_base=0.1, backoff_max=1.0, backoff_multiplier=3.0)
    assert [round(policy.delay(n), 6) for n in range(1, 5)] == [0.1, 0.3, 0.9, 1.0]
    jittered = RetryPolicy(backoff_base=1.0, backoff_max=1.0, jitter=0.5, rng=random.Random(7))
    again = RetryPolicy(backoff_base=1.0, backoff_max=1.0, jitter=0.5, rng=random.Random(7))
    a = [jittered.delay(1) for _ in range(5)]
    assert a == [again.delay(1) for _ in range(5)]
    assert all(0.5 <= d <= 1.0 for d in a)


def test_retry_policy_classifies_exceptions() -> None:
    policy = RetryPolicy(retriable=(OSError,), fatal=(FileNotFoundError,))
    assert not policy.is_fatal(ConnectionError())
    assert policy.is_fatal(FileNotFoundError())
    assert policy.is_fatal(ValueError())  # not listed as retriable
    with pytest.raises(ConfigError, match=r"retry\.backoff_max"):
        RetryPolicy(backoff_base=2.0, backoff_max=1.0)
    with pytest.raises(ConfigError, match=r"retry\.retriable"):
        RetryPolicy(retriable=(int,))  # type: ignore[arg-type]


def test_stop_from_another_thread_ends_run_gracefully() -> None:
    """run() on a worker thread (the only thread touching the simulator), handlers on
    a real thread pool, stop() from the test's thread."""
    import threading

    from offsetledger.runtime import SystemClock, ThreadPoolExecutorAdapter

    world = seed_world(2, partitions=2, records=20)
    all_handled = threading.Event()
    handled: set[int] = set()
    lock = threading.Lock()

    def handler(record: Record) -> Iterable[Outbound]:
        with lock:
            handled.add(record.partition * 1000 + record.offset)
            if len(handled) == 20:
                all_handled.set()
        return upper(record)

    p = Processor(
        world.consumer(consumer_config(), "m1"),
        world.producer(name="m1-producer", member="m1"),
        handler,
        topics=["in"],
        executor=ThreadPoolExecutorAdapter(4),
        clock=SystemClock(),
        config=ProcessorConfig(poll_timeout=0.01, ordering=OrderingMode.KEY),
    )
    runner = threading.Thread(target=p.run)
    runner.start()
    assert all_handled.wait(20), "handlers did not run"
    p.stop()  # from another thread: asks; run() drains, commits and closes
    runner.join(20)
    assert not runner.is_alive()
    assert p.state is ProcessorState.CLOSED
    assert all_committed(world)
    assert_invariants(world)


def test_context_manager_keeps_the_original_error_after_a_crash() -> None:
    from offsetledger.simulator import ProcessCrashed

    world = seed_world(2, partitions=1, records=10)
    p = make_processor(world, "m1")
    with pytest.raises(ProcessCrashed), p:  # noqa: PT012 - the crash happens inside the block
        drive(world, [p], lambda: len(output_sources(world)) >= 3)
        world.crash("m1")
        p.step()
    assert p.state is ProcessorState.CLOSED
    p2 = make_processor(world, "m2")
    drive(world, [p2], lambda: all_committed(world), max_steps=20_000)
    p2.stop()
    assert_invariants(world)

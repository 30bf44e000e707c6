"""Filters are legitimate (a Done event with no outputs finishes its input), topics
are inferred from the history, and a check with nothing to check is never OK.

Each of these failed on main: a filter reported lost + commit_past_unfinished, a
forgotten dead-letter topic reported lost, a wrong topic name or an empty history
passed."""

from __future__ import annotations

import pytest

from offsetledger.checker import AnomalyKind, check, infer_topics
from offsetledger.core import Outbound, Record
from offsetledger.history import Done, History, dumps_event, loads_event
from offsetledger.runtime import Processor, ProcessorConfig, RetryPolicy
from offsetledger.simulator import World
from offsetledger.testing import observer
from tests.processor.helpers import all_committed, consumer_config, drive, seed_world

SEED = 11


def odd_filter(record: Record) -> list[Outbound]:
    """Drops odd numbers on purpose."""
    if int((record.value or b"v0")[1:]) % 2:
        return []
    return [Outbound("out", value=record.value, key=record.key)]


def poison_evens(record: Record) -> list[Outbound]:
    if int((record.value or b"v0")[1:]) % 2 == 0:
        raise ValueError("even")
    return [Outbound("out", value=record.value)]


def run(handler: object, *, observe: bool = True, dlq: bool = False, records: int = 20) -> World:
    world = seed_world(SEED, partitions=2, records=records, topics=("out", "dlq"))
    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic="dlq" if dlq else None,
        retry=RetryPolicy(max_attempts=1, backoff_base=0.01, backoff_max=0.01),
    )
    processor = Processor(
        world.consumer(consumer_config(), "m1"),
        world.producer(name="m1", member="m1"),
        handler,  # type: ignore[arg-type]
        topics=["in"],
        executor=world.executor("m1"),
        clock=world.clock,
        config=config,
        observer=observer(world, "m1") if observe else None,
    )
    drive(world, [processor], lambda: all_committed(world))
    processor.stop()
    return world


def test_a_filter_that_drains_and_commits_is_ok() -> None:
    report = check(run(odd_filter).history, inputs=["in"], outputs=["out"])
    assert report.ok, f"seed={SEED}\n{report.summary()}"
    assert report.stats.filtered == 10
    assert report.stats.acknowledged == 10
    assert "filtered 10" in report.summary()


def test_without_done_events_a_filter_still_looks_lost() -> None:
    """The Done events are what tell 'nothing to produce' from 'lost'."""
    report = check(run(odd_filter, observe=False).history, inputs=["in"], outputs=["out"])
    assert report.counts()[AnomalyKind.LOST] == 10, f"seed={SEED}"
    assert AnomalyKind.COMMIT_PAST_UNFINISHED in report.counts()


def test_topics_and_the_dead_letter_topic_are_inferred() -> None:
    world = run(poison_evens, dlq=True)
    assert infer_topics(world.history) == (frozenset({"in"}), frozenset({"out"}), "dlq")
    report = check(world.history)
    assert report.ok, f"seed={SEED}\n{report.summary()}"
    assert (report.inputs, report.outputs, report.dead_letter) == (("in",), ("out",), "dlq")
    assert report.stats.dead_lettered == 10
    assert "dead-letter dlq" in report.summary()


def test_forgetting_the_dead_letter_topic_is_no_false_alarm() -> None:
    report = check(run(poison_evens, dlq=True).history, inputs=["in"], outputs=["out"])
    assert report.ok, f"seed={SEED}\n{report.summary()}"


@pytest.mark.parametrize(
    ("inputs", "outputs", "what"),
    [(["input"], ["out"], "input topic 'input'"), (["in"], ["outt"], "output topic 'outt'")],
)
def test_a_named_topic_absent_from_the_history_is_never_ok(
    inputs: list[str], outputs: list[str], what: str
) -> None:
    history = run(odd_filter).history
    report = check(history, inputs=inputs, outputs=outputs, strict=True)
    assert not report.ok
    assert any(what in p and "does not occur" in p for p in report.problems), report.problems
    assert "problem:" in report.summary()


def test_an_empty_history_is_never_ok() -> None:
    report = check(History())
    assert not report.ok
    assert "no input topic could be inferred" in report.problems[0]
    named = check(History(), inputs=["in"], outputs=["out"], strict=True)
    assert not named.ok
    assert check(History(), inputs=["in"], outputs=["out"]).ok  # a harness's empty run


def test_a_history_without_inputs_is_never_ok() -> None:
    world = seed_world(SEED, records=0)
    world.consumer(consumer_config(), "m1").subscribe(
        ["in"], on_assign=lambda _: None, on_revoke=lambda _: None, on_lost=lambda _: None
    )
    report = check(world.history, inputs=["in"], outputs=["out"], strict=True)
    assert not report.ok


def test_done_events_round_trip_through_json_lines() -> None:
    event = Done(seq=3, time=1.5, member="m", topic="in", partition=1, offset=9, outputs=0)
    assert loads_event(dumps_event(event)) == event

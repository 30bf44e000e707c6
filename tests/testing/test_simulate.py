"""The one call on the getting-started application and on the broken handlers of
issue 11's "Where it stands": each of these got a plain OK on main."""

from __future__ import annotations

import pytest

from offsetledger import Outbound, Record
from offsetledger.runtime import OrderingMode, ProcessorConfig, RetryPolicy
from offsetledger.scenario import FAULTS
from offsetledger.testing import Fault, SimulationFailedError, assert_no_loss, simulate

CONFIG = ProcessorConfig(
    ordering=OrderingMode.KEY,
    max_in_flight_total=32,
    retry=RetryPolicy(max_attempts=5, backoff_base=0.2, backoff_max=5.0),
    dead_letter_topic="numbers.dlq",
)
KW: dict[str, object] = {
    "config": CONFIG,
    "topics": ["numbers"],
    "outputs": ["doubled"],
    "seeds": 3,
    "records": 60,
}


def handle(record: Record) -> list[Outbound]:
    total = int(record.value or b"0") * 2
    return [Outbound("doubled", value=str(total).encode(), key=record.key)]


def test_the_getting_started_handler_passes() -> None:
    report = assert_no_loss(handle, **KW)
    assert len(report.runs) == 3
    assert all(r.report.stats.inputs == 60 for r in report.runs)
    assert sum(r.crashes for r in report.runs) > 0, "the runs must include crashes"


def _fail(handler: object, **extra: object) -> str:
    report = simulate(handler, **{**KW, **extra})  # type: ignore[arg-type]
    assert not report.ok
    with pytest.raises(SimulationFailedError) as info:
        report.assert_ok()
    text = str(info.value)
    assert "seed 0:" in text
    assert "reproduce:" in text
    return text


def test_an_output_topic_typo_fails() -> None:
    text = _fail(lambda r: [Outbound("dobuled", value=r.value)])
    assert "dead-lettered" in text
    assert "UNKNOWN_TOPIC_OR_PART" in text


@pytest.mark.parametrize(
    "handler",
    [
        lambda r: Outbound("doubled", value=r.value),
        lambda r: None,
        lambda r: [Outbound("doubled", value=r.value.decode())],  # str value
        lambda r: [Outbound("doubled", value={"n": 1})],  # type: ignore[arg-type]  # dict value
        lambda r: (("doubled", r.value),),
    ],
    ids=["one-outbound", "none", "str-value", "dict-value", "tuple"],
)
def test_programming_errors_fail_even_when_dead_letters_are_expected(handler: object) -> None:
    text = _fail(handler, expected_dead_letters=1.0)
    assert "programming error in the handler" in text


def test_a_wrong_partition_is_dead_lettered_and_fails() -> None:
    text = _fail(lambda r: [Outbound("doubled", value=r.value, partition=99)])
    assert "dead-lettered" in text


def test_dead_letters_within_the_expected_share_pass() -> None:
    def poison_sevens(record: Record) -> list[Outbound]:
        if int(record.value or b"0") % 10 == 7:
            raise ValueError("bad number")
        return handle(record)

    _fail(poison_sevens)
    assert simulate(poison_sevens, expected_dead_letters=0.2, **KW).ok  # type: ignore[arg-type]


def test_filters_fail_unless_declared() -> None:
    def evens(record: Record) -> list[Outbound]:
        return [] if int(record.value or b"0") % 2 else handle(record)

    assert "produced nothing" in _fail(evens)
    report = simulate(evens, filters=True, **KW)  # type: ignore[arg-type]
    assert report.ok, report.summary()
    assert all(r.report.stats.filtered == 30 for r in report.runs)


def test_a_handler_without_a_dead_letter_topic_that_fails_does_not_drain() -> None:
    def boom(record: Record) -> list[Outbound]:
        raise RuntimeError("down")

    config = ProcessorConfig(retry=RetryPolicy(max_attempts=2, backoff_base=0.01))
    text = _fail(boom, config=config, seeds=1, records=5, max_rounds=300)
    assert "did not drain" in text


def test_the_same_seed_gives_the_same_history() -> None:
    one = simulate(handle, **{**KW, "seeds": [7]})  # type: ignore[arg-type]
    two = simulate(handle, **{**KW, "seeds": [7]})  # type: ignore[arg-type]
    assert one.runs[0].world.trace() == two.runs[0].world.trace()


def test_the_users_real_consumer_configuration_runs() -> None:
    consumer = {
        "bootstrap.servers": "broker:9092",
        "group.id": "doubler",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "p",
        "ssl.ca.location": "/etc/ca.pem",
        "fetch.min.bytes": 1,
        "client.id": "doubler-1",
        "auto.offset.reset": "earliest",
    }
    assert simulate(handle, consumer_config=consumer, **KW).ok  # type: ignore[arg-type]


def test_one_fault_vocabulary() -> None:
    assert {f.value for f in Fault} == set(FAULTS)
    for name, (kinds, _) in FAULTS.items():
        assert Fault.parse(name).kinds == kinds
    assert Fault.parse("ack_lost") is Fault.ACK_LOST
    assert Fault.parse("assignment_lost") is Fault.LOST
    with pytest.raises(ValueError, match="known: crash"):
        Fault.parse("meteor")


@pytest.mark.parametrize(
    "consumer_config",
    [
        {"group.protocol": "consumer"},
        {"group.protocol": "consumer", "group.instance.id": "app"},
        {"group.instance.id": "app", "session.timeout.ms": 6000},
    ],
    ids=["kip848", "kip848-static", "classic-static"],
)
def test_both_group_protocols_and_static_members_run(consumer_config: dict[str, object]) -> None:
    """KIP-848 and static membership (one instance id per process) through
    ``simulate``; with the planted commit-on-lost the KIP-848 runs fail."""
    from tests.simulator.test_lost_commit import commit_on_lost

    kw = {**KW, "consumer_config": consumer_config, "faults": ["lost", "crash"]}
    report = simulate(handle, **kw)  # type: ignore[arg-type]
    report.assert_ok()
    if consumer_config.get("group.protocol") == "consumer":
        with commit_on_lost():
            planted = simulate(handle, **kw)  # type: ignore[arg-type]
        assert not planted.ok, "simulate passed a runtime that commits on lost (KIP-848)"
        assert "commit_after_lost" in planted.summary(), planted.summary()

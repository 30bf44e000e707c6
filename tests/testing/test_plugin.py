"""The pytest plugin, run through pytester: the verdicts a user gets for a correct
handler, a handler dropping a record on one path, an output-topic typo and a
declared filter; failing ones print the seed and the command replaying it."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

HEADER = """
from offsetledger import Outbound, Record
from offsetledger.runtime import ProcessorConfig, RetryPolicy

CONFIG = ProcessorConfig(
    retry=RetryPolicy(max_attempts=5, backoff_base=0.2, backoff_max=5.0),
    dead_letter_topic="numbers.dlq",
)
KW = dict(config=CONFIG, topics=["numbers"], outputs=["doubled"], records=60)
"""

CASES = """
def correct(record: Record) -> list[Outbound]:
    return [Outbound("doubled", value=b"%d" % (int(record.value) * 2), key=record.key)]


def drops_one_path(record: Record) -> list[Outbound]:
    n = int(record.value)
    if n % 10 == 7:
        return []  # a forgotten branch
    return [Outbound("doubled", value=b"%d" % (n * 2))]


def typo(record: Record) -> list[Outbound]:
    return [Outbound("dobuled", value=record.value)]


def odd_filter(record: Record) -> list[Outbound]:
    n = int(record.value)
    return [] if n % 2 else [Outbound("doubled", value=b"%d" % n)]


def test_correct(offsetledger_simulate):
    offsetledger_simulate(correct, **KW)


def test_drops_one_path(offsetledger_simulate):
    offsetledger_simulate(drops_one_path, **KW)


def test_typo(offsetledger_simulate):
    offsetledger_simulate(typo, **KW)


def test_declared_filter(offsetledger_simulate):
    offsetledger_simulate(odd_filter, filters=True, **KW)


def test_undeclared_filter(offsetledger_simulate):
    offsetledger_simulate(odd_filter, **KW)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_app=HEADER + CASES)
    return pytester


def test_each_handler_gets_its_verdict(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--offsetledger-seeds=3", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=3)
    out = result.stdout.str()
    assert "FAILED test_app.py::test_correct" not in out
    assert "FAILED test_app.py::test_declared_filter" not in out
    assert "FAILED test_app.py::test_drops_one_path" in out
    assert "FAILED test_app.py::test_typo" in out
    assert "FAILED test_app.py::test_undeclared_filter" in out
    assert "produced nothing" in out
    assert "dead-lettered" in out
    assert "UNKNOWN_TOPIC_OR_PART" in out
    assert "reproduce: pytest test_app.py::test_typo --offsetledger-seed=0" in out


def test_a_failing_seed_replays_alone(suite: pytest.Pytester) -> None:
    result = suite.runpytest(
        "test_app.py::test_drops_one_path", "--offsetledger-seed=2", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "1 seeds, 1 failed" in out
    assert "seed 2:" in out
    assert "seed 0:" not in out


def test_the_world_fixture_is_seeded(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_world="""
def test_world(offsetledger_world):
    assert offsetledger_world.seed == 5
"""
    )
    pytester.runpytest("--offsetledger-seed=5", "-p", "no:cacheprovider").assert_outcomes(passed=1)

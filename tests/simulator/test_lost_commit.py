"""The runtime's "lost means no commit" rule has a test that fails without it.

Under the classic protocol the coordinator fences a commit from an evicted
member (UNKNOWN_MEMBER_ID), so a runtime that commits in ``on_lost`` only shows
up in a client-side rule. Under KIP-848 (``group.protocol=consumer``) the broker
*accepts* that commit while the group is empty (observed on Kafka 4.x, see
tests/integration/test_confluent_adapter.py): the bug lands. This file plants
that bug (:func:`commit_on_lost`, a patch of the Processor's construction that
only uses the ports, so it survives the runtime's rebuild) and shows the
scenario, the swarm and the checker's registered NoCommitAfterLost catch it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from offsetledger.checker import AnomalyKind, check
from offsetledger.core import AssignmentCallback, ConsumerPort, StoredPosition, TopicPartition
from offsetledger.history import Commit, Lost
from offsetledger.runtime import Processor
from offsetledger.scenario import SimulationConfig, SimulationResult, run_simulation
from offsetledger.swarm import draw_config, run_swarm

#: the fault mix that evicts members (and nothing else that hides the bug)
_LOST_ONLY = frozenset({"lost"})


class _CommitsOnLost:
    """A consumer port whose user commits the lost partitions' last stored
    positions inside ``on_lost`` (the planted bug), then runs the real callback."""

    def __init__(self, inner: ConsumerPort) -> None:
        self._inner = inner
        self._stored: dict[TopicPartition, StoredPosition] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def store(self, positions: Any) -> None:
        batch = list(positions)
        self._inner.store(batch)
        for sp in batch:
            self._stored[sp.tp] = sp

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        def lost(partitions: Sequence[TopicPartition]) -> None:
            positions = [self._stored.pop(tp) for tp in partitions if tp in self._stored]
            if positions:
                with contextlib.suppress(Exception):
                    self._inner.commit(positions)
            on_lost(partitions)

        self._inner.subscribe(topics, on_assign=on_assign, on_revoke=on_revoke, on_lost=lost)


@contextlib.contextmanager
def commit_on_lost() -> Iterator[None]:
    """Plant the bug: every Processor built inside the block commits on lost."""
    original: Callable[..., None] = Processor.__init__

    @functools.wraps(original)
    def init(self: Processor, consumer: ConsumerPort, *args: Any, **kwargs: Any) -> None:
        original(self, _CommitsOnLost(consumer), *args, **kwargs)

    Processor.__init__ = init  # type: ignore[method-assign]
    try:
        yield
    finally:
        Processor.__init__ = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _config(protocol: str, seed: int) -> SimulationConfig:
    return SimulationConfig(
        seed=seed,
        records=150,
        partitions=3,
        consumers=1,
        workers=4,
        crash_rate=0.0,
        fault_rate=0.05,
        faults=_LOST_ONLY,
        group_protocol=protocol,
        max_rounds=5000,
    )


def _late_commits(result: SimulationResult) -> list[Commit]:
    """Commits by a member for a partition it was told is lost, before it got it back."""
    told: set[tuple[str, tuple[str, int]]] = set()
    out = []
    for e in result.world.history.events:
        if isinstance(e, Lost):
            told.update((e.member, tp) for tp in e.partitions)
        elif hasattr(e, "partitions") and e.__class__.__name__ == "Assign":
            told.difference_update((e.member, tp) for tp in e.partitions)  # type: ignore[attr-defined]
        elif isinstance(e, Commit) and (e.member, (e.topic, e.partition)) in told:
            out.append(e)
    return out


SEED = 7


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_without_the_bug_both_protocols_pass(protocol: str) -> None:
    result = run_simulation(_config(protocol, SEED))
    assert result.ok, f"seed {SEED} ({protocol}): {result.report.summary(limit=5)}"
    assert any(isinstance(e, Lost) for e in result.world.history.events), (
        f"seed {SEED} ({protocol}): no partition was lost; the test means nothing"
    )


def test_kip848_accepts_the_commit_on_lost_and_the_checker_catches_it() -> None:
    with commit_on_lost():
        result = run_simulation(_config("consumer", SEED))
    late = _late_commits(result)
    assert any(c.ok for c in late), f"seed {SEED}: no commit on lost was accepted: {late}"
    assert not result.ok, f"seed {SEED}: the planted commit-on-lost passed"
    kinds = result.report.counts()
    assert kinds.get(AnomalyKind.COMMIT_AFTER_LOST, 0) >= 1, f"seed {SEED}: {kinds}"
    # the plain check() has the rule registered too (not only the workload check)
    base = check(result.world.history, inputs=["in"], outputs=["out", "out2"], dead_letter="dlq")
    assert base.of(AnomalyKind.COMMIT_AFTER_LOST), f"seed {SEED}: {base.summary(limit=5)}"
    # ... and, since the broker took it, the history shows a non-holder's commit
    assert base.of(AnomalyKind.COMMIT_AFTER_REVOKE), f"seed {SEED}: {base.summary(limit=5)}"


def test_classic_fences_the_commit_on_lost_and_only_the_client_side_rule_sees_it() -> None:
    with commit_on_lost():
        result = run_simulation(_config("classic", SEED))
    late = _late_commits(result)
    assert late, f"seed {SEED}: the planted bug never committed on lost"
    assert not any(c.ok for c in late), f"seed {SEED}: classic accepted {late}"
    base = check(result.world.history, inputs=["in"], outputs=["out", "out2"], dead_letter="dlq")
    assert not base.of(AnomalyKind.COMMIT_AFTER_REVOKE), f"seed {SEED}: fenced commits judged"
    assert base.of(AnomalyKind.COMMIT_AFTER_LOST), f"seed {SEED}: {base.summary(limit=5)}"


def test_the_swarm_catches_the_commit_on_lost() -> None:
    """The swarm draws both protocols; the first failing seed names the bug."""
    with commit_on_lost():
        outcome = run_swarm(range(60), stop_on_failure=True)
    assert not outcome.ok, "the swarm passed the planted commit-on-lost in 60 seeds"
    failed = outcome.failures[0]
    kinds = failed.report.counts()
    assert AnomalyKind.COMMIT_AFTER_LOST in kinds, (
        f"swarm seed {failed.config.seed}: {kinds} (replay: python -m offsetledger.swarm "
        f"--replay {failed.config.seed})"
    )


def test_the_swarm_draws_both_protocols() -> None:
    drawn = {draw_config(seed).group_protocol for seed in range(20)}
    assert drawn == {"classic", "consumer"}


def test_the_model_test_catches_the_commit_on_lost() -> None:
    """The whole-system model test (which draws KIP-848 among its strategies)."""
    from benchmarks.planted_bugs import run_model

    from tests.model.planted import PlantedBug

    bug = PlantedBug(
        "commit_on_lost", "on_lost commits the stored positions", "extra", commit_on_lost
    )
    outcome = run_model(bug)
    assert outcome.caught, "the model test passed the planted commit-on-lost"
    assert "commit_after_lost" in outcome.failure or "commit_after_revoke" in outcome.failure, (
        outcome.failure
    )

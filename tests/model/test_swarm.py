"""The swarm in CI: a few hundred seeded whole-system simulations, each with its
own drawn configuration and fault mix, must all pass the checker; and a seed
replays byte for byte.

``OFFSETLEDGER_SWARM_SEEDS`` changes the number of seeds (default 300); ``make
soak`` runs 5000 through ``python -m offsetledger.swarm``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator

import pytest

from offsetledger.checker import AnomalyKind
from offsetledger.scenario import SimulationResult, run_simulation
from offsetledger.swarm import draw_config, run_swarm
from tests.model.planted import txn_no_split_partial

SEEDS = int(os.environ.get("OFFSETLEDGER_SWARM_SEEDS", "300"))


@pytest.fixture
def quiet() -> Iterator[None]:
    """The processors' warnings are expected under faults; do not collect them."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _describe(result: SimulationResult) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.report.counts().items()))
    return (
        f"seed {result.config.seed}: {counts or 'not drained within max_rounds'}\n"
        f"  config: {json.dumps(result.config.to_dict(), sort_keys=True)}\n"
        f"  replay: python -m offsetledger.swarm --replay {result.config.seed}\n"
        + "\n".join("  " + line for line in result.report.summary(limit=5).splitlines())
    )


@pytest.mark.usefixtures("quiet")
def test_swarm_seeds_pass() -> None:
    """Every seed of the swarm drains and its history has no anomaly."""
    outcome = run_swarm(range(SEEDS))
    assert len(outcome.seeds) == SEEDS
    failing = " ".join(str(r.config.seed) for r in outcome.failures)
    assert outcome.ok, (
        f"{len(outcome.failures)} of {SEEDS} swarm seeds failed: {failing}\n"
        + "\n".join(_describe(r) for r in outcome.failures[:5])
    )


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize("seed", [3, 17, 80])  # 80: KIP-848 with static members
def test_replaying_a_seed_gives_the_same_trace(seed: int) -> None:
    """Determinism: the same seed gives a byte-identical history, with faults."""
    config = draw_config(seed)
    first = run_simulation(config)
    second = run_simulation(config)
    trace = first.world.trace()
    assert len(first.world.history) > 100, f"seed {seed}: too short a run to mean anything"
    assert trace == second.world.trace(), f"seed {seed}: the replay diverged"
    assert first.to_dict() == second.to_dict()


@pytest.mark.usefixtures("quiet")
def test_transactional_commit_covers_the_done_records_of_a_partly_finished_chunk() -> None:
    """Swarm seed 1 (transactional): a transaction commits while a chunk is partly
    finished; its done records' outputs are in the transaction, so their positions
    (the commit metadata) must be too. Without the split (planted
    ``txn_no_split_partial``) they are processed again: EO_DUPLICATE."""
    config = draw_config(1)
    assert config.transactional
    result = run_simulation(config)
    assert result.ok, _describe(result)
    with txn_no_split_partial():
        planted = run_simulation(config)
    assert AnomalyKind.EO_DUPLICATE in planted.report.counts(), planted.report.counts()


@pytest.mark.usefixtures("quiet")
@pytest.mark.parametrize(
    "seed",
    [
        15,  # an abort while leaving (shutdown, revoke): the partitions are forgotten
        21,  # BOUNDS judged on the whole history, not on the read_committed view
        125,  # BOUNDS again, and ORDERING across a rewind (a Seek starts afresh)
        244,  # a producer fenced at produce: ProcessorMustRestartError, the process restarts
        253,  # async + transactional: a Seek ends the member's attempts of the partition
        88,  # async + KIP-848: a retry running through a removal judges the record's done
    ],
)
def test_transactional_seeds_found_by_the_swarm_pass(seed: int) -> None:
    """Seeds of the transactional swarm that found a runtime or checker bug."""
    config = draw_config(seed)
    assert config.transactional
    result = run_simulation(config)
    assert result.ok, _describe(result)

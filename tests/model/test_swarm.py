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

from offsetledger.scenario import SimulationResult, run_simulation
from offsetledger.swarm import draw_config, run_swarm

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

"""The swarm with ``async def`` handlers forced on: the drawn configurations of a few
seeds stay correct, and the planted async bugs are caught from the history alone:
``timeout_counts_as_done`` (a cancelled attempt counted as done, so its outputs are
lost), ``timeout_reported_early`` (a retry started beside its still-running
attempt) and ``revoke_does_not_wait`` (the next owner starts a record while the
revoked coroutine still runs), the last two through the ``Attempt`` events that
the checker's ATTEMPT_OVERLAP reads. ``key_bound_dropped`` is caught in
``test_async_model``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import attrs
import pytest

from offsetledger.checker import AnomalyKind
from offsetledger.scenario import SimulationResult, run_simulation
from offsetledger.swarm import draw_config
from tests.aio.planted_async import PLANTED

#: forced-async seeds that once failed (each fixed at its root): 350, EO_DUPLICATE
#: under TRANSACTIONAL + KEY, a started chunk cut at a revoke without dooming the
#: transaction its outputs were in (see ``Rebalancer.cut``)
REGRESSIONS = (350,)
SEEDS = (*range(8), *REGRESSIONS)
PLANTED_SEEDS = range(12)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # the processors' warnings are expected under faults
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def run_async(seed: int) -> SimulationResult:
    return run_simulation(attrs.evolve(draw_config(seed), asynchronous=True))


@pytest.mark.parametrize("seed", SEEDS)
def test_forced_async_seed_is_correct(seed: int) -> None:
    result = run_async(seed)
    assert result.ok, (
        f"seed={seed} (asynchronous forced): drained={result.drained}\n"
        + result.report.summary(limit=10)
    )


def test_swarm_catches_a_timed_out_attempt_counted_as_done() -> None:
    with PLANTED["timeout_counts_as_done"]():
        for seed in PLANTED_SEEDS:
            result = run_async(seed)
            if not result.ok:
                print(
                    f"timeout_counts_as_done caught at swarm seed={seed}: {result.report.counts()}"
                )
                return
    pytest.fail(f"timeout_counts_as_done not caught in swarm seeds {list(PLANTED_SEEDS)}")


@pytest.mark.parametrize(
    ("bug", "seeds"), [("timeout_reported_early", range(16)), ("revoke_does_not_wait", range(16))]
)
def test_swarm_catches_an_attempt_overlap(bug: str, seeds: range) -> None:
    """ATTEMPT_OVERLAP, two attempts of one record running at once.

    * ``timeout_reported_early``: a timeout reported while the cancelled coroutine
      still runs its cleanup (caught at forced-async swarm seed 4, by a slow cleanup:
      past the scenario's largest retry backoff): the retry starts the record next to
      its still-running attempt. It was seed 3 while the virtual loop ran every
      overdue timer in one shuffled batch, which let a deadline beat a wake-up due
      before it.
    * ``revoke_does_not_wait``: a stuck coroutine cut off by the revoke's drain
      timeout, and the partition gone before the cancelled coroutine ended, so its
      next owner starts the record beside it (caught at seed 15). Only seeds with
      ``short_drain`` (a drain below the async processing_timeout) reach that path;
      with the long one the coroutine always timed out first, and the swarm did not
      catch this bug in 150 forced-async seeds.
    """
    with PLANTED[bug]():
        for seed in seeds:
            result = run_async(seed)
            if AnomalyKind.ATTEMPT_OVERLAP in result.report.counts():
                print(f"{bug} caught at swarm seed={seed}: {result.report.counts()}")
                return
    pytest.fail(f"{bug} not caught (ATTEMPT_OVERLAP) in swarm seeds {list(seeds)}")

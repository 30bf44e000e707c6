"""Generated tests with ``async def`` handlers forced on catch the planted async bugs
whose symptom reaches the history the checker reads:

* the whole-system model test (``tests/model/test_system_model.py``, ``ci``
  settings, no shrinking) with every example async (per record or per batch, half of
  them with ``processing_timeout``), on the simulator's virtual loop; a catch must
  come before the example where the model fails with nothing planted;
* the swarm with ``asynchronous`` forced on (``key_bound_dropped``: its drawn KEY
  configurations keep several records of a key polled at once).

Each test names the anomaly it must see, so a catch for another reason does not
count, and prints the simulator seed (model) or swarm seed that caught the bug.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import Phase, settings
from hypothesis.stateful import run_state_machine_as_test

import tests.model.test_system_model as model
from offsetledger.checker import AnomalyKind
from offsetledger.runtime import OrderingMode
from offsetledger.scenario import run_simulation
from offsetledger.swarm import draw_config
from tests.aio.planted_async import PLANTED

#: planted bug -> the anomaly the model test must report for it (and where it was
#: first caught with the ``ci`` settings: simulator seed)
MODEL_CATCHES = {
    # a timed-out attempt counted as done: its outputs are never written (seed 354076)
    "timeout_counts_as_done": "lost",
    # two records of one key awaited at once: an output of the later one is written
    # before the earlier one is finished (seed 17294)
    "key_bound_dropped": "ordering",
    # a timeout reported while the cancelled coroutine still cleans up: its retry
    # starts next to it (seed 2023)
    "timeout_reported_early": "attempt_overlap",
    # a revoke that does not wait for running coroutines: the next owner's attempt
    # starts beside the old owner's (seed 1035941255)
    "revoke_does_not_wait": "attempt_overlap",
}

#: forced-async swarm seeds searched for ``key_bound_dropped`` (caught at seed 2)
SWARM_SEEDS = range(8)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # the processors' warnings are expected under faults
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def run_model_async() -> str | None:
    """The model test with every example async; the failure's message, or None."""
    chosen = settings(
        model.machine_settings("ci"), phases=tuple(p for p in Phase if p is not Phase.shrink)
    )
    fraction = model.ASYNC_FRACTION
    model.ASYNC_FRACTION = 1.0
    try:
        run_state_machine_as_test(model.SystemMachine, settings=chosen)
    except AssertionError as exc:
        return str(exc)
    finally:
        model.ASYNC_FRACTION = fraction
    return None


@functools.cache
def control_failure() -> str | None:
    """The simulator seed of the async model test's first failure with nothing
    planted (None: it passes).

    It passes since ATTEMPT_OVERLAP ends the attempts of a member removed from the
    group at its ``Leave`` (before: a false ``ATTEMPT_OVERLAP`` at simulator seed
    732863227, a member evicted by max.poll.interval.ms while its coroutines were
    suspended, excused only from its later ``Lost`` event)."""
    failure = run_model_async()
    return None if failure is None else _seed(failure)


def _seed(failure: str) -> str | None:
    found = re.search(r"simulator seed (\d+)", failure)
    return found.group(1) if found else None


def test_model_with_async_handlers_passes_with_nothing_planted() -> None:
    assert control_failure() is None, f"async model fails unplanted at seed {control_failure()}"


@pytest.mark.parametrize("bug", sorted(MODEL_CATCHES))
def test_model_with_async_handlers_catches(bug: str) -> None:
    with PLANTED[bug]():
        failure = run_model_async()
    assert failure is not None, f"planted bug {bug!r} not caught by the async model test"
    first = failure.splitlines()[0]
    print(f"planted bug {bug!r} caught by the async model test: {first}")
    assert MODEL_CATCHES[bug] in first, f"{bug!r}: caught, but not as {MODEL_CATCHES[bug]}"
    # the examples before a failure are the control's: a catch at the control's own
    # failing example would not be the bug's
    assert _seed(first) != control_failure(), f"{bug!r}: failed where the control fails"


def test_forced_async_swarm_catches_two_records_of_a_key_at_once() -> None:
    with PLANTED["key_bound_dropped"]():
        for seed in SWARM_SEEDS:
            config = attrs.evolve(draw_config(seed), asynchronous=True)
            if config.ordering is not OrderingMode.KEY:
                continue
            result = run_simulation(config)
            if AnomalyKind.ORDERING in result.report.counts():
                print(f"key_bound_dropped caught at swarm seed={seed}: {result.report.counts()}")
                return
    pytest.fail(f"key_bound_dropped not caught (ORDERING) in swarm seeds {list(SWARM_SEEDS)}")

"""Evidence the tests bite, in CI: every planted bug of ``tests/model/planted.py``
is caught by the whole-system model test or by the swarm; with nothing planted
(and under the control patches) the same budget passes.

Each bug runs the model test with the ``ci`` settings (no shrinking) and the
swarm up to the bug's ``swarm_seeds`` budget, stopping at the first failing seed.
The table with the figures: ``python -m benchmarks.planted_bugs``.
"""

from __future__ import annotations

import pytest
from benchmarks.planted_bugs import run_model, run_planted, run_swarm_until_failure

from tests.model.planted import CATALOGUE, CONTROLS, TXN_BUGS, TXN_CATALOGUE, PlantedBug
from tests.processor import test_transactional

#: the control's swarm budget: the largest any bug gets
CONTROL_SEEDS = max(bug.swarm_seeds for bug in CATALOGUE)


@pytest.mark.parametrize("bug", CATALOGUE, ids=lambda bug: bug.name)
def test_planted_bug_is_caught(bug: PlantedBug) -> None:
    """The model test or the swarm fails with the bug planted."""
    outcome = run_planted(bug, seeds=bug.swarm_seeds)
    assert outcome.caught, (
        f"planted bug {bug.name} ({bug.summary}) went unnoticed: the model test "
        f"passed and the swarm passed {outcome.swarm.seeds_run} seeds"
    )


@pytest.mark.parametrize("control", CONTROLS, ids=lambda bug: bug.name)
def test_control_patch_passes(control: PlantedBug) -> None:
    """A patch that is not a bug (it relies on a guarantee the real code gives)
    is not reported: the tests do not cry wolf."""
    outcome = run_planted(control, seeds=CONTROL_SEEDS)
    assert not outcome.model.caught, outcome.model.failure
    assert not outcome.swarm.caught, (
        f"seed {outcome.swarm.first_failing_seed}: {outcome.swarm.failure}"
    )


def test_control_nothing_planted_swarm_budget_passes() -> None:
    """With nothing planted, the swarm passes the largest per-bug budget (the
    model test's control is ``test_system_model`` itself, same settings)."""
    result = run_swarm_until_failure(None, CONTROL_SEEDS)
    assert not result.caught, f"seed {result.first_failing_seed}: {result.failure}"
    assert result.seeds_run == CONTROL_SEEDS


def test_model_runner_reports_a_clean_run() -> None:
    """The runner itself: no bug, no catch (guards against a runner that always
    says "caught")."""
    outcome = run_model(None, profile="dev")
    assert not outcome.caught, outcome.failure


@pytest.mark.parametrize("bug", TXN_CATALOGUE, ids=lambda bug: bug.name)
def test_transactional_planted_bug_is_caught_by_the_swarm_at_its_seed(bug: PlantedBug) -> None:
    """Each exactly-once planted bug is caught by the swarm, first at the recorded
    seed (a change of the swarm's draws that moves it shows up here)."""
    assert bug.first_seed is not None
    result = run_swarm_until_failure(bug, bug.first_seed + 1)
    assert result.first_failing_seed == bug.first_seed, (
        f"planted bug {bug.name}: first caught at swarm seed {result.first_failing_seed} "
        f"(recorded: {bug.first_seed}); {result.failure}"
    )


@pytest.mark.parametrize("bug", TXN_CATALOGUE, ids=lambda bug: bug.name)
def test_transactional_planted_bug_is_caught_by_the_model(bug: PlantedBug) -> None:
    """Each exactly-once planted bug is caught by the transactional model test."""
    outcome = run_model(bug)
    assert outcome.caught, f"planted bug {bug.name} ({bug.summary}) passed the txn model test"


@pytest.mark.parametrize(("bug", "tests"), TXN_BUGS, ids=lambda x: getattr(x, "name", ""))
def test_transactional_planted_bug_is_caught(bug: PlantedBug, tests: tuple[str, ...]) -> None:
    """Each exactly-once planted bug also makes a targeted transactional test (over
    recording fakes) fail; the same tests pass without it (in tests/processor)."""
    for name in tests:
        test = getattr(test_transactional, name)
        with bug.plant():
            try:
                test()
            except Exception:
                continue
        pytest.fail(f"planted bug {bug.name} ({bug.summary}) went unnoticed by {name}")

"""The pytest plugin of :mod:`offsetledger.testing` (entry point ``offsetledger``;
it only adds options and fixtures, nothing runs unless a test uses them).

Options:

* ``--offsetledger-seeds=N``: seeds per :func:`simulate` call (default 10);
* ``--offsetledger-seed=S``: replay one seed only (what a failure tells you).

Fixtures:

* ``offsetledger_simulate``: :func:`~offsetledger.testing.simulate` with the seeds
  from the options and a failure message whose reproducer is this test's
  ``pytest`` command line with ``--offsetledger-seed``;
* ``offsetledger_world``: a fresh seeded :class:`~offsetledger.simulator.World`.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

import pytest

from offsetledger.simulator import World
from offsetledger.testing._simulate import Handler, SimulationReport, simulate

__all__ = ["pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("offsetledger", "offsetledger deterministic simulation")
    group.addoption(
        "--offsetledger-seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds per offsetledger simulate() call (default: 10)",
    )
    group.addoption(
        "--offsetledger-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="replay one seed of offsetledger simulate() (as a failure prints it)",
    )


def _seeds(config: pytest.Config) -> list[int] | int:
    one = config.getoption("--offsetledger-seed")
    if one is not None:
        return [one]
    count = config.getoption("--offsetledger-seeds")
    return count if count is not None else 10


@pytest.fixture
def offsetledger_simulate(
    request: pytest.FixtureRequest,
) -> Callable[..., SimulationReport]:
    """``offsetledger_simulate(handler, **simulate_kwargs)``: runs and *asserts*
    (raises :class:`~offsetledger.testing.SimulationFailedError` naming the seed and
    the pytest command replaying it); returns the report. Pass ``check=False`` to
    get the report without the assertion."""
    nodeid = request.node.nodeid

    def run(handler: Handler, *, check: bool = True, **kwargs: Any) -> SimulationReport:
        kwargs.setdefault("seeds", _seeds(request.config))
        kwargs.setdefault("reproduce", f"pytest {shlex.quote(nodeid)} --offsetledger-seed={{seed}}")
        report = simulate(handler, **kwargs)
        if check:
            report.assert_ok()
        return report

    return run


@pytest.fixture
def offsetledger_world(request: pytest.FixtureRequest) -> World:
    """A fresh World seeded with ``--offsetledger-seed`` (default 0)."""
    seed = request.config.getoption("--offsetledger-seed")
    return World(seed=seed if seed is not None else 0)

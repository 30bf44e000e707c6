"""Deterministic simulation testing of your own application.

The one call runs your handler, with your configuration, through seeded faulty
simulations and judges every run::

    from offsetledger.testing import simulate

    result = simulate(handle, config=config, topics=["numbers"], outputs=["doubled"])
    result.assert_ok()   # names the seed, the problem, the record and the replay command

With pytest, the plugin (``pytest -p offsetledger.testing.plugin`` or the
``offsetledger_simulate`` fixture once the package is installed) adds
``--offsetledger-seeds`` and ``--offsetledger-seed``. The faults are one
vocabulary, :class:`Fault`, shared with the CLI.
"""

import logging

from offsetledger.runtime._contract import HandlerContractError
from offsetledger.testing._faults import DEFAULT_FAULTS, Fault, parse_faults
from offsetledger.testing._observer import HistoryObserver, observer
from offsetledger.testing._simulate import (
    PROGRAMMING_ERRORS,
    SeedResult,
    SimulationFailedError,
    SimulationReport,
    assert_no_loss,
    simulate,
)

# a library's loggers stay quiet unless the application configures logging (the
# simulated faults would otherwise print thousands of warnings to stderr)
logging.getLogger("offsetledger").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_FAULTS",
    "PROGRAMMING_ERRORS",
    "Fault",
    "HandlerContractError",
    "HistoryObserver",
    "SeedResult",
    "SimulationFailedError",
    "SimulationReport",
    "assert_no_loss",
    "observer",
    "parse_faults",
    "simulate",
]

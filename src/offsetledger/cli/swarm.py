"""``offsetledger swarm``: many seeded whole-system simulations, each with its own
drawn configuration and fault mix; a failing seed replays with ``--replay SEED``."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, TextIO

from offsetledger.cli._common import EXIT_ANOMALY, EXIT_OK, add_verbose, int_at_least

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "swarm",
        help="run many seeded simulations with drawn configurations and faults",
        description="Run seeded whole-system simulations of the demo pipeline, each with "
        "a configuration and fault mix drawn from its seed, and check every history; exit "
        "1 when any has an anomaly. A failing seed is replayed with --replay SEED.",
    )
    p.add_argument("--seeds", type=int_at_least(1), default=200, help="how many (default 200)")
    p.add_argument("--start", type=int_at_least(0), default=0, help="first seed (default 0)")
    p.add_argument("--replay", type=int_at_least(0), default=None, help="run this seed only")
    p.add_argument("--stop-on-failure", action="store_true", help="stop at the first failure")
    p.add_argument("--json", action="store_true", help="one JSON object per seed")
    add_verbose(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.scenario import SimulationResult
    from offsetledger.swarm import run_swarm

    if not getattr(args, "verbose", False):
        logging.disable(logging.CRITICAL)  # the processors' warnings are expected under faults
    seeds = (
        [args.replay]
        if args.replay is not None
        else list(range(args.start, args.start + args.seeds))
    )

    def show(result: SimulationResult) -> None:
        if args.json:
            out.write(json.dumps(result.to_dict(), sort_keys=True) + "\n")
        elif not result.ok:
            counts = ", ".join(f"{k.value} {n}" for k, n in result.report.counts().items())
            out.write(
                f"seed {result.config.seed} FAILED ({counts or 'not drained'}); "
                f"replay: offsetledger swarm --replay {result.config.seed}\n"
            )

    outcome = run_swarm(seeds, on_result=show, stop_on_failure=args.stop_on_failure)
    if not args.json:
        out.write(
            f"swarm: {len(outcome.seeds)} seeds, {len(outcome.failures)} failed\n"
            + (
                "failing seeds: " + " ".join(str(r.config.seed) for r in outcome.failures) + "\n"
                if outcome.failures
                else ""
            )
        )
    err.write(f"(wall time {outcome.wall_seconds:.1f} s)\n")
    return EXIT_OK if outcome.ok else EXIT_ANOMALY

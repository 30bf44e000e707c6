"""Swarm testing: many seeded whole-system simulations, each with its own drawn
configuration and fault mix, every history checked.

A seed determines the drawn configuration *and* the run, so a failing seed is
replayed exactly with ``python -m offsetledger.swarm --replay SEED``.

Usage::

    python -m offsetledger.swarm --seeds 300            # seeds 0..299
    python -m offsetledger.swarm --start 5000 --seeds 1000
    python -m offsetledger.swarm --replay 1234 --json
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from offsetledger.runtime import CommitMode, OrderingMode
from offsetledger.scenario import (
    FAULTS,
    PROTOCOLS,
    TXN_FAULTS,
    SimulationConfig,
    SimulationResult,
    run_simulation,
)

__all__ = [
    "ASYNC_FRACTION",
    "TRANSACTIONAL_FRACTION",
    "SwarmOutcome",
    "draw_config",
    "main",
    "run_swarm",
]

#: the fraction of seeds whose handler is an ``async def`` one (on the virtual loop)
ASYNC_FRACTION = 0.25
#: the fraction of seeds whose revoke drain is shorter than the async handlers'
#: processing_timeout (``SimulationConfig.short_drain``: only async seeds use it)
SHORT_DRAIN_FRACTION = 0.5
#: the fraction of seeds that run exactly-once (``CommitMode.TRANSACTIONAL``)
TRANSACTIONAL_FRACTION = 0.2


def draw_config(seed: int) -> SimulationConfig:
    """The configuration swarm seed ``seed`` runs: a random size, membership
    (group protocol, static or dynamic members), ordering, commit mode, in-flight
    and buffer limits, handler shape (outputs per input, filters, dead-letter
    topic or not; ``async def`` for a quarter of the seeds, half of them with a
    revoke drain shorter than their processing timeout), idempotent producers
    or not, and fault mix (each fault kind
    is in or out, the swarm way, so rare interactions get room). A fifth of the
    seeds run exactly-once (:func:`_draw_transactional`)."""
    rng = random.Random(f"offsetledger-swarm-{seed}")
    plain = sorted(FAULTS.keys() - TXN_FAULTS.keys())
    faults = frozenset(name for name in plain if rng.random() < 0.5)
    config = SimulationConfig(
        seed=seed,
        records=rng.choice([20, 60, 150, 400]),
        partitions=rng.randint(1, 6),
        consumers=rng.randint(1, 3),
        workers=rng.choice([1, 2, 4, 16]),
        ordering=rng.choice(list(OrderingMode)),
        commit_mode=rng.choice([CommitMode.AUTO, CommitMode.PERIODIC]),
        crash_rate=rng.choice([0.0, 0.001, 0.005, 0.02]),
        fault_rate=rng.choice([0.0, 0.005, 0.02, 0.08]),
        faults=faults,
        poison_rate=rng.choice([0.0, 0.02, 0.1]),
        gap_rate=rng.choice([0.0, 0.05, 0.3]),
        max_rounds=20_000,
        # drawn from their own streams, so the other choices of a seed stay as they were
        inline=random.Random(f"offsetledger-swarm-inline-{seed}").random() < 0.25,
        asynchronous=random.Random(f"offsetledger-swarm-async-{seed}").random() < ASYNC_FRACTION,
        short_drain=random.Random(f"offsetledger-swarm-drain-{seed}").random()
        < SHORT_DRAIN_FRACTION,
        **_draw_workload(seed),
        **_draw_membership(seed),
    )
    return _draw_transactional(seed, config)


def _draw_transactional(seed: int, config: SimulationConfig) -> SimulationConfig:
    """``config`` in ``CommitMode.TRANSACTIONAL`` for a fifth of the seeds, with each
    fault of :data:`~offsetledger.scenario.TXN_FAULTS` in or out (half each), drawn
    from its own stream: the other draws of every seed stay as they were."""
    rng = random.Random(f"offsetledger-swarm-transactional-{seed}")
    if rng.random() >= TRANSACTIONAL_FRACTION:
        return config
    txn_faults = frozenset(name for name in sorted(TXN_FAULTS) if rng.random() < 0.5)
    return attrs.evolve(
        config, commit_mode=CommitMode.TRANSACTIONAL, faults=config.faults | txn_faults
    )


def _draw_membership(seed: int) -> dict[str, Any]:
    """The group protocol (classic or KIP-848, half each), static membership (a
    quarter) and idempotent producers (a third) of seed ``seed``."""
    rng = random.Random(f"offsetledger-swarm-membership-{seed}")
    return {
        "group_protocol": rng.choice(PROTOCOLS),
        "static_membership": rng.random() < 0.25,
        "idempotence": rng.random() < 0.33,
    }


def _draw_workload(seed: int) -> dict[str, Any]:
    """The handler and limits of seed ``seed``: 1..4 outputs per input (or exactly
    one, as before), filters, with or without a dead-letter topic, and buffer
    limits small enough to bind, per partition or in total, separately."""
    rng = random.Random(f"offsetledger-swarm-workload-{seed}")
    workers = rng.choice([None, 1, 2, 8])
    per_partition = rng.choice([200, 200, 5, 20])
    total = rng.choice([1000, 1000, 10, 40])
    return {
        "max_outputs": rng.choice([1, 2, 3, 4]),
        "filter_rate": rng.choice([0.0, 0.0, 0.1, 0.3]),
        "dead_letter": rng.random() < 0.75,
        "workers_per_partition": workers,
        "buffer_per_partition": per_partition,
        "buffer_total": total,
    }


@attrs.frozen
class SwarmOutcome:
    """Seeds run, the failing ones (with their results), and timing."""

    seeds: tuple[int, ...]
    failures: tuple[SimulationResult, ...]
    wall_seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def seeds_per_second(self) -> float:
        return len(self.seeds) / self.wall_seconds if self.wall_seconds > 0 else 0.0


def run_swarm(
    seeds: Sequence[int],
    *,
    simulate: Callable[[SimulationConfig], SimulationResult] = run_simulation,
    on_result: Callable[[SimulationResult], None] | None = None,
    stop_on_failure: bool = False,
) -> SwarmOutcome:
    """Run every seed's drawn configuration; collect the failing results."""
    failures: list[SimulationResult] = []
    started = time.perf_counter()
    ran: list[int] = []
    for seed in seeds:
        result = simulate(draw_config(seed))
        ran.append(seed)
        if on_result is not None:
            on_result(result)
        if not result.ok:
            failures.append(result)
            if stop_on_failure:
                break
    return SwarmOutcome(tuple(ran), tuple(failures), time.perf_counter() - started)


def _describe(result: SimulationResult) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.report.counts().items()))
    why = counts if counts else "not drained within max_rounds"
    return (
        f"seed {result.config.seed} FAILED: {why}\n"
        f"  config: {json.dumps(result.config.to_dict(), sort_keys=True)}\n"
        f"  replay: python -m offsetledger.swarm --replay {result.config.seed}\n"
        + "\n".join("  " + line for line in result.report.summary(limit=10).splitlines())
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m offsetledger.swarm",
        description="Run seeded whole-system simulations with drawn configurations and "
        "faults; exit 1 when any history has an anomaly.",
    )
    parser.add_argument("--seeds", type=int, default=200, help="how many seeds (default 200)")
    parser.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--replay", type=int, default=None, help="run this one seed only")
    parser.add_argument("--stop-on-failure", action="store_true")
    parser.add_argument("--json", action="store_true", help="one JSON object per seed")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    logging.disable(logging.CRITICAL)  # the processors' warnings are expected under faults
    seeds = (
        [args.replay]
        if args.replay is not None
        else list(range(args.start, args.start + args.seeds))
    )

    def show(result: SimulationResult) -> None:
        if args.json:
            print(json.dumps(result.to_dict(), sort_keys=True))
        elif not result.ok:
            print(_describe(result))

    outcome = run_swarm(seeds, on_result=show, stop_on_failure=args.stop_on_failure)
    if not args.json:
        print(
            f"swarm: {len(outcome.seeds)} seeds, {len(outcome.failures)} failed, "
            f"{outcome.wall_seconds:.1f}s ({outcome.seeds_per_second:.1f} seeds/s)"
        )
        if outcome.failures:
            print("failing seeds: " + " ".join(str(r.config.seed) for r in outcome.failures))
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``offsetledger chaos``: kill -9 worker processes on a real broker, then check."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from offsetledger.cli._common import (
    EXIT_ANOMALY,
    EXIT_OK,
    UsageError,
    add_verbose,
    bootstrap,
    check_reachable,
    int_at_least,
)

__all__ = ["add_parser", "run"]


# -- chaos ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "chaos",
        help="kill -9 worker processes on a real broker and check for loss",
        description="Run a consume-transform-produce pipeline in worker processes on a real "
        "Kafka broker, SIGKILL a random worker again and again, then read the topics back "
        "and check that nothing was lost.",
    )
    p.add_argument("--bootstrap", type=bootstrap, required=True, help="broker HOST:PORT")
    p.add_argument("--records", type=int_at_least(1), default=50_000, help="inputs (default 50000)")
    p.add_argument(
        "--workers", type=int_at_least(1), default=3, help="worker processes (default 3)"
    )
    p.add_argument("--kills", type=int_at_least(0), default=10, help="SIGKILLs (default 10)")
    p.add_argument("--partitions", type=int_at_least(1), default=6, help="partitions (default 6)")
    p.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the kill schedule")
    p.add_argument(
        "--timeout",
        type=float,
        default=240.0,
        help="seconds to wait, after the last kill, for the group to commit every input "
        "(default 240)",
    )
    p.add_argument(
        "--protocol",
        choices=["classic", "consumer"],
        default="classic",
        help="group protocol: classic, or consumer (KIP-848) (default classic)",
    )
    p.add_argument(
        "--work-ms",
        type=float,
        default=20.0,
        help="milliseconds each record's handler takes, so kills land mid-work (default 20)",
    )
    p.add_argument(
        "--max-in-flight",
        type=int_at_least(1),
        default=16,
        help="records in flight per worker (default 16)",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="static members: a group.instance.id per worker slot, kept by its restarts",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_verbose(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.chaos import ChaosError, run_chaos

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be > 0, got {args.timeout:g}")
    if args.work_ms < 0:
        raise UsageError(f"--work-ms must be >= 0, got {args.work_ms:g}")
    check_reachable(args.bootstrap)

    def progress(message: str) -> None:
        if err.isatty():
            err.write(message + "\n")

    try:
        result = run_chaos(
            args.bootstrap,
            records=args.records,
            workers=args.workers,
            kills=args.kills,
            partitions=args.partitions,
            seed=args.seed,
            timeout=args.timeout,
            protocol=args.protocol,
            work_ms=args.work_ms,
            max_in_flight=args.max_in_flight,
            progress=progress,
            static=args.static,
        )
    except ChaosError as exc:  # the run could not be carried out: no verdict on the data
        err.write(f"offsetledger chaos: the run failed: {exc}\n")
        return EXIT_ANOMALY
    if args.json:
        out.write(json.dumps(result.to_dict(), sort_keys=True, default=str) + "\n")
    else:
        out.write(result.summary() + "\n")
    return EXIT_OK if result.ok else EXIT_ANOMALY

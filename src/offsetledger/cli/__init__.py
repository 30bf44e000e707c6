"""The ``offsetledger`` command, one module per subcommand.

* ``offsetledger simulate``: no broker needed. The demo pipeline (topics ``in`` ->
  ``out``/``out2``, dead letters to ``dlq``), or your handler with ``--handler
  pkg.module:function`` and ``--config pkg.module:CONFIG``, on the embedded
  simulator with faults, drained and checked for loss.
* ``offsetledger swarm``: many seeded simulations with drawn configurations.
* ``offsetledger chaos --bootstrap HOST:PORT``: worker processes on a real broker,
  killed with SIGKILL again and again, then checked for loss.
* ``offsetledger check``: the checker over a recorded history file (topics
  inferred) or over topics on a broker.

Exit status: 0 clean, 1 an anomaly was found (or the run did not drain),
2 bad usage, an unreadable file or an unreachable broker: one line, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from offsetledger.cli import chaos, check, simulate, swarm
from offsetledger.cli._common import EXIT_USAGE, Parser, UsageError
from offsetledger.core import BrokerError, ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from offsetledger import __version__

    parser = Parser(
        prog="offsetledger",
        description="At-least-once Kafka processing, proven not to lose a record.",
    )
    parser.add_argument("--version", action="version", version=f"offsetledger {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the processors' warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in (simulate, swarm, chaos, check):
        module.add_parser(sub)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command line; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
        stream=err,
    )
    try:
        status: int = args.run(args, out, err)
    except UsageError as exc:
        err.write(f"offsetledger {args.command}: error: {exc}\n")
        err.write(f"(see 'offsetledger {args.command} --help' for usage)\n")
        return EXIT_USAGE
    except (BrokerError, ConfigError) as exc:
        err.write(f"offsetledger {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("offsetledger: interrupted\n")
        return 130
    return status

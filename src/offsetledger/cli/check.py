"""``offsetledger check``: the checker over a history file or over topics on a broker.

On a history file the input, output and dead-letter topics are inferred unless
named (see :func:`offsetledger.checker.infer_topics`). A file that cannot be
read as a history (missing, a directory, binary, truncated, a bad line), an
empty history, or a named topic that does not occur in it is one line on stderr
and exit status 2: never a traceback, never OK.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, TextIO

from offsetledger.cli._common import (
    EXIT_ANOMALY,
    EXIT_OK,
    UsageError,
    add_verbose,
    bootstrap,
    check_reachable,
)
from offsetledger.history import History

__all__ = ["add_parser", "load_history_file", "run"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check a recorded history file, or topics on a broker, for anomalies",
        description="Check a history (JSON lines, as written by 'simulate --history') or, "
        "with --bootstrap, the input and output topics and the group's committed positions "
        "on a broker. Reports lost records, unsafe commits, duplicates and more. On a "
        "history the topics are inferred: inputs are the topics polled, the dead-letter "
        "topic is the one whose records carry the offsetledger.error header, outputs the "
        "other topics written with lineage headers ('simulate' uses in, out, out2 and dlq).",
        epilog="report lines: 'topics' what was checked; 'inputs' readable input records "
        "and how each ended (acknowledged output, dead-lettered, filtered = done with no "
        "outputs, unfinished, lost after a final drain, expired/truncated by retention, "
        "skipped by auto.offset.reset); 'outputs' output and dead-letter records written "
        "and duplicates; 'commits' commit attempts, rebalances (generations) and crashes; "
        "then one line per anomaly kind and the first anomalies.",
    )
    p.add_argument("history", nargs="?", help="history file (JSON lines)")
    p.add_argument("--bootstrap", type=bootstrap, help="check topics on this broker instead")
    p.add_argument(
        "--inputs", help="comma-separated input topics (history: inferred when left out)"
    )
    p.add_argument(
        "--outputs", help="comma-separated output topics (history: inferred when left out)"
    )
    p.add_argument("--dead-letter", help="the dead-letter topic (history: inferred)")
    p.add_argument("--group", help="consumer group (required with --bootstrap)")
    p.add_argument(
        "--not-drained",
        action="store_true",
        help="the run was not drained: do not report unfinished inputs as lost",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_verbose(p)
    p.set_defaults(run=run)


def _topics(option: str, text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError(f"{option}: expected comma-separated topic names, got {text!r}")
    return names


def load_history_file(path: str) -> History:
    """Read a history file or raise UsageError with one line saying why not."""
    if not os.path.exists(path):
        raise UsageError(f"history file not found: {path}")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a directory, not a history file")
    try:
        with open(path, encoding="utf-8") as fh:
            history = History.load(fh)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a text file (not UTF-8): not a history") from None
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not history.events:
        raise UsageError(f"{path} is empty: no events to check")
    return history


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.checker import check, check_broker

    inputs = _topics("--inputs", args.inputs)
    outputs = _topics("--outputs", args.outputs)
    if (args.history is None) == (args.bootstrap is None):
        raise UsageError("give either a history file or --bootstrap HOST:PORT (one of them)")
    if args.history is not None:
        history = load_history_file(args.history)
        try:
            report = check(
                history,
                inputs=inputs,
                outputs=outputs,
                dead_letter=args.dead_letter,
                group=args.group,
                final_drain=not args.not_drained,
                strict=True,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if report.problems:
            raise UsageError(f"{args.history}: {'; '.join(report.problems)}")
    else:
        if not args.group:
            raise UsageError("--group is required with --bootstrap")
        if inputs is None or outputs is None:
            raise UsageError("--inputs and --outputs are required with --bootstrap")
        check_reachable(args.bootstrap)
        report = check_broker(
            args.bootstrap,
            inputs=inputs,
            outputs=outputs,
            group=args.group,
            dead_letter=args.dead_letter,
            final_drain=not args.not_drained,
        )
    if args.json:
        out.write(json.dumps(report.to_dict(), sort_keys=True, default=str) + "\n")
    else:
        out.write(report.summary() + "\n")
    return EXIT_OK if report.ok else EXIT_ANOMALY

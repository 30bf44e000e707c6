"""The ``offsetledger`` command.

* ``offsetledger simulate``: the main job, no broker needed — a consume-transform-
  produce pipeline on the embedded simulator with faults, checked for loss.
* ``offsetledger chaos --bootstrap HOST:PORT``: worker processes on a real broker,
  killed with SIGKILL again and again, then checked for loss.
* ``offsetledger check``: the checker over a recorded history file or over topics
  on a broker.

Exit status: 0 clean, 1 an anomaly was found (or the run did not drain),
2 bad usage or an unreachable broker.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TextIO

from offsetledger.core import BrokerError, ConfigError

__all__ = ["main"]

EXIT_OK, EXIT_ANOMALY, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one clear error line, a usage hint and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message}\n(see '{self.prog} --help' for usage)\n",
        )


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {value:g}")
    return value


def _bootstrap(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


class _Progress:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.enabled = stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = int(100 * done / total)
        if pct == self.last:
            return
        self.last = pct
        width = 30
        filled = width * done // total
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {done}/{total}"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last >= 0:
            self.stream.write("\n")
            self.stream.flush()


# -- simulate ---------------------------------------------------------------------------


def _faults(text: str) -> frozenset[str]:
    from offsetledger.scenario import FAULTS

    if text == "none":
        return frozenset()
    if text == "all":
        return frozenset(FAULTS)
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - FAULTS.keys())
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault {', '.join(unknown)}; choose from {', '.join(sorted(FAULTS))}, "
            "or 'all' / 'none'"
        )
    return names


def _add_simulate(sub: Any) -> None:
    from offsetledger.scenario import DEFAULT_FAULTS, FAULTS

    p = sub.add_parser(
        "simulate",
        help="run a pipeline on the embedded simulator with faults and check it (no broker)",
        description="Run a consume-transform-produce pipeline of several Processors on the "
        "deterministic simulator while faults fire, drain it, and check the history for "
        "lost records and other anomalies. The same seed gives the same report.",
        epilog="faults: "
        + "; ".join(f"{name}: {meaning}" for name, (_, meaning) in sorted(FAULTS.items())),
    )
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="the run's seed (default 0)")
    p.add_argument("--records", type=_int_at_least(1), default=5_000, help="inputs (default 5000)")
    p.add_argument(
        "--partitions", type=_int_at_least(1), default=4, help="input partitions (default 4)"
    )
    p.add_argument(
        "--consumers", type=_int_at_least(1), default=3, help="group members (default 3)"
    )
    p.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=8,
        help="records in flight per member (default 8)",
    )
    p.add_argument(
        "--ordering",
        choices=["partition", "key", "unordered"],
        default="key",
        help="in order per partition, per key, or not at all (default key)",
    )
    p.add_argument(
        "--executor",
        choices=["sim", "inline"],
        default="sim",
        help="run handlers on the simulator's executor (finishing in a seeded order) or "
        "inline on the poll thread (default sim)",
    )
    p.add_argument(
        "--commit-mode",
        choices=["auto", "periodic"],
        default="auto",
        help="auto-commit of stored positions, or periodic sync commits (default auto)",
    )
    p.add_argument(
        "--crash-rate",
        type=_rate,
        default=0.002,
        help="probability that a client call is a kill -9 (default 0.002)",
    )
    p.add_argument(
        "--fault-rate", type=_rate, default=0.01, help="scale of the other faults (default 0.01)"
    )
    p.add_argument(
        "--faults",
        type=_faults,
        default=DEFAULT_FAULTS,
        help="comma-separated fault mix, 'all' or 'none' (default: "
        + ",".join(sorted(DEFAULT_FAULTS))
        + ")",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw positions over virtual time (.png or .svg)")
    p.add_argument("--history", metavar="FILE", help="write the recorded history (JSON lines)")
    p.set_defaults(run=_simulate)


def _simulate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.runtime import CommitMode, OrderingMode
    from offsetledger.scenario import SimulationConfig, run_simulation

    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise _UsageError(f"--plot file must end in .png or .svg, got {args.plot!r}")
    config = SimulationConfig(
        seed=args.seed,
        records=args.records,
        partitions=args.partitions,
        consumers=args.consumers,
        workers=args.workers,
        ordering=OrderingMode[args.ordering.upper()],
        commit_mode=CommitMode[args.commit_mode.upper()],
        crash_rate=args.crash_rate,
        fault_rate=args.fault_rate,
        faults=args.faults,
        inline=args.executor == "inline",
    )
    progress = _Progress(err, "simulating")
    started = time.perf_counter()
    try:
        result = run_simulation(config, progress=progress)
    finally:
        progress.close()
    wall = time.perf_counter() - started
    data = result.to_dict()
    virtual = result.virtual_seconds
    data["throughput_per_virtual_second"] = (
        round(result.report.stats.inputs / virtual, 3) if virtual else None
    )
    if args.history:
        with open(args.history, "w", encoding="utf-8") as fh:
            result.world.history.dump(fh)
    if args.plot:
        from offsetledger._plot import plot_history

        plot_history(
            result.world.history.events,
            "in",
            args.plot,
            title=f"offsetledger simulate --seed {args.seed}: {data['lost']} lost, "
            f"{data['duplicates']} duplicates, {data['crashes']} crashes",
        )
    if args.json:
        out.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        out.write(_simulate_text(data, result.report.summary(limit=10) if not result.ok else ""))
    err.write(
        f"(wall time {wall:.2f} s, {result.report.stats.inputs / wall if wall else 0:,.0f} "
        "input records/s)\n"
    )
    return EXIT_OK if result.ok else EXIT_ANOMALY


def _simulate_text(d: dict[str, Any], anomalies: str) -> str:
    cfg = d["config"]
    verdict = "OK: nothing lost" if d["ok"] else "FAILED"
    lines = [
        f"offsetledger simulate — {verdict}",
        (
            f"  seed {d['seed']}: {cfg['records']} records, {cfg['partitions']} partitions, "
            f"{cfg['consumers']} consumers x {cfg['workers']} workers, "
            f"ordering {cfg['ordering']}, commit {cfg['commit_mode']}, "
            f"executor {'inline' if cfg['inline'] else 'sim'}"
        ),
        (
            f"  faults: {', '.join(cfg['faults']) or 'none'} "
            f"(crash rate {cfg['crash_rate']:g}, fault rate {cfg['fault_rate']:g})"
        ),
        "",
        f"  inputs          {d['inputs']:>10}",
        f"  outputs         {d['outputs']:>10}",
        f"  dead letters    {d['dead_letters']:>10}",
        f"  lost            {d['lost']:>10}",
        f"  unfinished      {d['unfinished']:>10}",
        f"  duplicates      {d['duplicates']:>10}",
        f"  crashes         {d['crashes']:>10}",
        f"  rebalances      {d['rebalances']:>10}",
        f"  joins / leaves  {d['joins']:>5} / {d['leaves']}",
        f"  commits         {d['commits']:>10}  ({d['rejected_commits']} rejected)",
        f"  skipped (meta)  {d['skipped_restored']:>10}",
        f"  virtual time    {d['virtual_seconds']:>10.1f} s",
        f"  throughput      {d['throughput_per_virtual_second'] or 0:>10.1f} records per virtual s",
        "",
    ]
    if not d["drained"]:
        lines.append("  the run did not drain within its round budget")
    if anomalies:
        lines.append(anomalies)
    lines.append(f"  reproduce: offsetledger simulate --seed {d['seed']} (same options)")
    return "\n".join(lines) + "\n"


# -- chaos ------------------------------------------------------------------------------


def _add_chaos(sub: Any) -> None:
    p = sub.add_parser(
        "chaos",
        help="kill -9 worker processes on a real broker and check for loss",
        description="Run a consume-transform-produce pipeline in worker processes on a real "
        "Kafka broker, SIGKILL a random worker again and again, then read the topics back "
        "and check that nothing was lost.",
    )
    p.add_argument("--bootstrap", type=_bootstrap, required=True, help="broker HOST:PORT")
    p.add_argument(
        "--records", type=_int_at_least(1), default=50_000, help="inputs (default 50000)"
    )
    p.add_argument(
        "--workers", type=_int_at_least(1), default=3, help="worker processes (default 3)"
    )
    p.add_argument("--kills", type=_int_at_least(0), default=10, help="SIGKILLs (default 10)")
    p.add_argument("--partitions", type=_int_at_least(1), default=6, help="partitions (default 6)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, help="seed of the kill schedule")
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
        type=_int_at_least(1),
        default=16,
        help="records in flight per worker (default 16)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_chaos)


def _check_reachable(bootstrap: str, timeout: float = 10.0) -> None:
    from offsetledger.adapters.confluent_admin import topic_partitions

    try:
        topic_partitions(bootstrap, "__offsetledger_probe", timeout=timeout)
    except BrokerError as exc:
        if exc.name == "UNKNOWN_TOPIC_OR_PART":
            return  # the broker answered
        raise


def _chaos(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.chaos import ChaosError, run_chaos

    if args.timeout <= 0:
        raise _UsageError(f"--timeout must be > 0, got {args.timeout:g}")
    if args.work_ms < 0:
        raise _UsageError(f"--work-ms must be >= 0, got {args.work_ms:g}")
    _check_reachable(args.bootstrap)

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
        )
    except ChaosError as exc:  # the run could not be carried out: no verdict on the data
        err.write(f"offsetledger chaos: the run failed: {exc}\n")
        return EXIT_ANOMALY
    if args.json:
        out.write(json.dumps(result.to_dict(), sort_keys=True, default=str) + "\n")
    else:
        out.write(result.summary() + "\n")
    return EXIT_OK if result.ok else EXIT_ANOMALY


# -- check ------------------------------------------------------------------------------


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="check a recorded history file, or topics on a broker, for anomalies",
        description="Check a history (JSON lines, as written by 'simulate --history') or, "
        "with --bootstrap, the input and output topics and the group's committed positions "
        "on a broker. Reports lost records, unsafe commits, duplicates and more.",
    )
    p.add_argument("history", nargs="?", help="history file (JSON lines)")
    p.add_argument("--bootstrap", type=_bootstrap, help="check topics on this broker instead")
    p.add_argument("--inputs", required=True, help="comma-separated input topics")
    p.add_argument("--outputs", required=True, help="comma-separated output topics")
    p.add_argument("--dead-letter", help="the dead-letter topic")
    p.add_argument("--group", help="consumer group (required with --bootstrap)")
    p.add_argument(
        "--not-drained",
        action="store_true",
        help="the run was not drained: do not report unfinished inputs as lost",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=_check)


def _topics(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise _UsageError(f"expected comma-separated topic names, got {text!r}")
    return names


def _check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.checker import check_broker, check_file

    inputs, outputs = _topics(args.inputs), _topics(args.outputs)
    if (args.history is None) == (args.bootstrap is None):
        raise _UsageError("give either a history file or --bootstrap HOST:PORT (one of them)")
    if args.history is not None:
        try:
            report = check_file(
                args.history,
                inputs=inputs,
                outputs=outputs,
                dead_letter=args.dead_letter,
                group=args.group,
                final_drain=not args.not_drained,
            )
        except FileNotFoundError:
            raise _UsageError(f"history file not found: {args.history}") from None
    else:
        if not args.group:
            raise _UsageError("--group is required with --bootstrap")
        _check_reachable(args.bootstrap)
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


# -- main -------------------------------------------------------------------------------


class _UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    from offsetledger import __version__

    parser = _Parser(
        prog="offsetledger",
        description="At-least-once Kafka processing, proven not to lose a record.",
    )
    parser.add_argument("--version", action="version", version=f"offsetledger {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the processors' warnings")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_simulate(sub)
    _add_chaos(sub)
    _add_check(sub)
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
    except _UsageError as exc:
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


if __name__ == "__main__":
    sys.exit(main())

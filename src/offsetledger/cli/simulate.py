"""``offsetledger simulate``: the demo pipeline, or your own handler, on the
deterministic simulator with faults, drained and checked.

Without ``--handler`` it runs the built-in demo pipeline: inputs in topic ``in``,
0 to N outputs per input (drawn from the seed) to ``out`` and ``out2``, poison
records to the dead-letter topic ``dlq``. With ``--handler pkg.module:function`` (and ``--config
pkg.module:CONFIG`` for your ProcessorConfig) it runs your handler through
:func:`offsetledger.testing.simulate`: ``--topics`` (default ``in``) and
``--outputs`` (default ``out``) name your topics, the dead-letter topic is your
config's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from typing import Any, TextIO

from offsetledger.cli._common import (
    EXIT_ANOMALY,
    EXIT_OK,
    Progress,
    UsageError,
    add_verbose,
    int_at_least,
    output_path,
    rate,
)

__all__ = ["add_parser", "load_object", "run"]


def load_object(option: str, spec: str) -> Any:
    """``pkg.module:name`` (dots after the colon walk attributes) -> the object;
    UsageError with one line otherwise. The current folder is importable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{option}: expected pkg.module:name, got {spec!r}")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{option}: cannot import {module_name!r}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"{option}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def _faults(text: str) -> frozenset[str]:
    """Fault names in any spelling (``ack-lost``, ``ack_lost``, ``assignment_lost``)
    as the :class:`offsetledger.testing.Fault` values."""
    from offsetledger.testing import Fault

    if text == "none":
        return frozenset()
    if text == "all":
        return frozenset(f.value for f in Fault)
    names: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            names.add(Fault.parse(part).value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"unknown fault {part}; choose from {', '.join(f.value for f in Fault)}, "
                "or 'all' / 'none'"
            ) from None
    return frozenset(names)


def add_parser(sub: Any) -> None:
    from offsetledger.scenario import DEFAULT_FAULTS, FAULTS

    p = sub.add_parser(
        "simulate",
        help="run a pipeline on the embedded simulator with faults and check it (no broker)",
        description="Run a consume-transform-produce pipeline of several Processors on the "
        "deterministic simulator while faults fire, drain it, and check the history for "
        "lost records and other anomalies. The same seed gives the same report. Topics: "
        "the demo pipeline reads 'in', writes 'out' and dead-letters to 'dlq'; with "
        "--handler your handler reads --topics, writes --outputs and dead-letters to your "
        "config's dead_letter_topic.",
        epilog="faults: "
        + "; ".join(f"{name}: {meaning}" for name, (_, meaning) in sorted(FAULTS.items()))
        + ". Report lines: inputs = records appended to the input topic; outputs = "
        "records written to the output topic (duplicates included); dead letters = records "
        "in the dead-letter topic; lost = inputs with no acknowledged output or dead letter "
        "after the final drain (must be 0); unfinished = the same before the drain "
        "finished; duplicates = output copies beyond the first (at-least-once allows "
        "them); skipped (meta) = redelivered records skipped because the commit metadata "
        "said they were already done (so it can exceed the inputs); throughput = inputs "
        "per second of virtual time (the wall-clock rate is printed on stderr).",
    )
    p.add_argument(
        "--handler",
        metavar="MOD:FUNC",
        help="run your handler (pkg.module:function) instead of the demo pipeline",
    )
    p.add_argument(
        "--config",
        metavar="MOD:NAME",
        help="with --handler: your ProcessorConfig (pkg.module:NAME)",
    )
    p.add_argument(
        "--topics", default="in", help="with --handler: comma-separated input topics (in)"
    )
    p.add_argument(
        "--outputs", default="out", help="with --handler: comma-separated output topics (out)"
    )
    p.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=1,
        help="with --handler: run seeds SEED..SEED+N-1 (default 1)",
    )
    p.add_argument(
        "--filters",
        action="store_true",
        help="with --handler: it may return no outputs on purpose",
    )
    p.add_argument(
        "--expected-dead-letters",
        type=rate,
        default=0.0,
        help="with --handler: share of inputs allowed in the dead-letter topic (default 0)",
    )
    p.add_argument("--seed", type=int_at_least(0), default=0, help="the run's seed (default 0)")
    p.add_argument("--records", type=int_at_least(1), default=5_000, help="inputs (default 5000)")
    p.add_argument(
        "--partitions", type=int_at_least(1), default=4, help="input partitions (default 4)"
    )
    p.add_argument("--consumers", type=int_at_least(1), default=3, help="group members (default 3)")
    p.add_argument(
        "--workers",
        type=int_at_least(1),
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
        choices=["auto", "periodic", "transactional"],
        default="auto",
        help="auto-commit of stored positions, periodic sync commits, or exactly-once "
        "transactions (judged by the exactly-once verdicts; default auto)",
    )
    p.add_argument(
        "--crash-rate",
        type=rate,
        default=0.002,
        help="probability that a client call is a kill -9 (default 0.002)",
    )
    p.add_argument(
        "--fault-rate", type=rate, default=0.01, help="scale of the other faults (default 0.01)"
    )
    p.add_argument(
        "--faults",
        type=_faults,
        default=DEFAULT_FAULTS,
        help="comma-separated fault mix, 'all' or 'none' (default: "
        + ",".join(sorted(DEFAULT_FAULTS))
        + ")",
    )
    p.add_argument(
        "--group-protocol",
        choices=["classic", "consumer"],
        default="classic",
        help="consumer group protocol: classic, or consumer (KIP-848, broker-side "
        "incremental assignment) (default classic)",
    )
    p.add_argument(
        "--static",
        action="store_true",
        help="static members (group.instance.id): a restart within the session timeout "
        "takes its partitions back without a rebalance",
    )
    p.add_argument(
        "--idempotence",
        action="store_true",
        help="idempotent producers (librdkafka resends retriable failures itself)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw positions over virtual time (.png or .svg)")
    p.add_argument("--history", metavar="FILE", help="write the recorded history (JSON lines)")
    add_verbose(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.runtime import CommitMode, OrderingMode
    from offsetledger.scenario import SimulationConfig, run_simulation

    if args.plot and not args.plot.lower().endswith((".png", ".svg")):
        raise UsageError(f"--plot file must end in .png or .svg, got {args.plot!r}")
    output_path("--history", args.history)
    output_path("--plot", args.plot)
    if args.handler is not None:
        return _run_handler(args, out, err)
    if args.config is not None:
        raise UsageError("--config needs --handler")
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
        group_protocol=args.group_protocol,
        static_membership=args.static,
        idempotence=args.idempotence,
    )
    progress = Progress(err, "simulating")
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
        err.write(f"wrote plot of committed/stored positions over virtual time: {args.plot}\n")
    if args.history:
        err.write(f"wrote history ({len(result.world.history)} events): {args.history}\n")
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


def _run_handler(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from offsetledger.runtime import ProcessorConfig
    from offsetledger.runtime._contract import HandlerContractError, check_handler
    from offsetledger.testing import simulate

    handler = load_object("--handler", args.handler)
    try:
        check_handler(handler, name="--handler")
    except HandlerContractError as exc:
        raise UsageError(str(exc)) from None
    config: Any = None
    if args.config is not None:
        config = load_object("--config", args.config)
        if not isinstance(config, ProcessorConfig):
            raise UsageError(
                f"--config {args.config} is a {type(config).__name__}, not a ProcessorConfig"
            )
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    outputs = [t.strip() for t in args.outputs.split(",") if t.strip()]
    if not topics or not outputs:
        raise UsageError("--topics and --outputs need at least one topic name each")
    overlap = sorted(set(topics) & set(outputs))
    if overlap:
        raise UsageError(f"topics both input and output: {', '.join(overlap)}")
    if config is not None and config.dead_letter_topic in {*topics, *outputs}:
        raise UsageError(
            f"the config's dead_letter_topic {config.dead_letter_topic!r} is also an input "
            "or output topic"
        )
    command = [
        "offsetledger simulate",
        f"--handler {args.handler}",
        *([f"--config {args.config}"] if args.config else []),
        f"--topics {','.join(topics)}",
        f"--outputs {','.join(outputs)}",
        f"--records {args.records}",
        *(["--filters"] if args.filters else []),
        "--seed {seed}",
    ]
    started = time.perf_counter()
    report = simulate(
        handler,
        config=config,
        topics=topics,
        outputs=outputs,
        seeds=range(args.seed, args.seed + args.seeds),
        records=args.records,
        partitions=args.partitions,
        consumers=args.consumers,
        faults=args.faults,
        crash_rate=args.crash_rate,
        fault_rate=args.fault_rate,
        filters=args.filters,
        expected_dead_letters=args.expected_dead_letters,
        reproduce=" ".join(command),
    )
    wall = time.perf_counter() - started
    first = report.runs[0]
    if args.history:
        with open(args.history, "w", encoding="utf-8") as fh:
            first.world.history.dump(fh)
        err.write(f"wrote history of seed {first.seed}: {args.history}\n")
    if args.plot:
        from offsetledger._plot import plot_history

        plot_history(first.world.history.events, topics[0], args.plot, title=args.handler)
        err.write(f"wrote plot of seed {first.seed}: {args.plot}\n")
    if args.json:
        data = {
            "ok": report.ok,
            "seeds": [
                {
                    "seed": r.seed,
                    "ok": r.ok,
                    "failures": list(r.failures),
                    "report": r.report.to_dict()["stats"],
                }
                for r in report.runs
            ],
        }
        out.write(json.dumps(data, sort_keys=True) + "\n")
    else:
        for r in report.runs:
            s = r.report.stats
            out.write(
                f"seed {r.seed}: {'OK' if r.ok else 'FAILED'} - inputs {s.inputs}, outputs "
                f"{s.outputs}, dead-lettered {s.dead_lettered}, filtered {s.filtered}, "
                f"lost {s.lost}, duplicates {s.duplicates}, crashes {s.crashes}\n"
            )
        out.write(report.summary() + "\n")
    err.write(f"(wall time {wall:.2f} s)\n")
    return EXIT_OK if report.ok else EXIT_ANOMALY

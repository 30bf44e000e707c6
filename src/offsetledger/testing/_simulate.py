"""The one call: run your handler through seeded faulty simulations and judge them.

>>> result = simulate(handle, config=config, topics=["numbers"], outputs=["doubled"])
>>> result.assert_ok()

Each seed builds a fresh :class:`~offsetledger.simulator.World` with your input,
output and dead-letter topics, appends inputs while ``consumers`` Processors
(your handler, your :class:`~offsetledger.runtime.ProcessorConfig`, your consumer
configuration) run under crashes, rebalances, delivery and commit faults; a
crashed member restarts under a new member name. Then faults stop, every member
drains until each input partition's committed position is its end, and the
checker judges the history. A seed fails on:

* any anomaly of the checker (a lost record, a commit past unfinished work, ...)
  or a check problem (no inputs), or a run that did not drain;
* a programming error in the handler (a :class:`HandlerContractError`, a
  ``TypeError``, ``AttributeError``, ``KeyError``, ``NameError``...), dead-lettered
  or not;
* dead-lettered records above ``expected_dead_letters`` (a share of the inputs,
  default 0: none expected);
* inputs finished with no output unless ``filters=True`` is declared.

The failure message names the seed, the problem, the record and a command that
replays that one seed.
"""

from __future__ import annotations

import random
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from offsetledger.checker import Report, check
from offsetledger.core import Outbound, Record
from offsetledger.history import ERROR_HEADER, Append, Done
from offsetledger.runtime import (
    CommitMode,
    Processor,
    ProcessorConfig,
)
from offsetledger.simulator import World
from offsetledger.testing._faults import DEFAULT_FAULTS, Fault, parse_faults
from offsetledger.testing._members import MemberPool, SimulatedMember
from offsetledger.testing._observer import observer

__all__ = [
    "PROGRAMMING_ERRORS",
    "SeedResult",
    "SimulationFailedError",
    "SimulationReport",
    "assert_no_loss",
    "simulate",
]

Handler = Callable[[Record], Iterable[Outbound]]

#: Error names (in the dead-letter ``offsetledger.error`` header) that mean a bug
#: in the handler rather than a bad record or a transient failure.
PROGRAMMING_ERRORS = (
    "HandlerContractError",
    "TypeError",
    "AttributeError",
    "KeyError",
    "NameError",
    "IndexError",
    "UnboundLocalError",
    "AssertionError",
)

#: Per-opportunity probability of each simulator fault kind, scaled by fault_rate.
_WEIGHT: dict[str, float] = {
    "delivery_retriable": 1.0,
    "delivery_timeout": 0.3,
    "ack_lost": 0.5,
    "commit_unavailable": 2.0,
    "commit_fenced": 1.0,
    "rebalance": 0.5,
    "assignment_lost": 0.3,
    "slow_task": 0.02,
    "empty_poll": 2.0,
    "clock_jump": 0.05,
    "truncate": 0.02,
    # (fire only with transactional producers)
    "txn_abortable": 0.5,
    "txn_coordinator_unavailable": 0.2,
    "txn_fenced": 0.05,
}


class SimulationFailedError(AssertionError):
    """Raised by :meth:`SimulationReport.assert_ok`: the message names every failing
    seed, what went wrong, the record and the command replaying it."""


def _default_value(i: int) -> bytes:
    return b"%d" % i


def _default_key(i: int) -> bytes | None:
    return b"k%d" % (i % 16)


@attrs.frozen(kw_only=True)
class SeedResult:
    """The verdict of one seed. ``failures`` are one-line reasons (empty: passed)."""

    seed: int
    report: Report
    drained: bool
    failures: tuple[str, ...]
    dead_letters: tuple[tuple[str, int, int, str], ...]  # input topic, partition, offset, error
    filtered: tuple[tuple[str, int, int], ...]
    crashes: int
    world: World = attrs.field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.failures


@attrs.frozen(kw_only=True)
class SimulationReport:
    """The verdicts of every seed of one :func:`simulate` call."""

    runs: tuple[SeedResult, ...]
    reproduce: str  #: the command replaying one seed, with ``{seed}`` to fill in

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def failed(self) -> tuple[SeedResult, ...]:
        return tuple(r for r in self.runs if not r.ok)

    def command(self, seed: int) -> str:
        """The command replaying ``seed``."""
        return self.reproduce.format(seed=seed)

    def summary(self) -> str:
        """One line per seed run, then the failures with their reproducer."""
        failed = self.failed
        head = f"offsetledger.testing: {len(self.runs)} seeds, " + (
            "all passed" if not failed else f"{len(failed)} failed"
        )
        lines = [head]
        for run in failed:
            lines.append(f"seed {run.seed}:")
            lines.extend(f"  - {f}" for f in run.failures)
            lines.append(f"  reproduce: {self.command(run.seed)}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        """Raise :class:`SimulationFailedError` with :meth:`summary` unless every seed passed."""
        if not self.ok:
            raise SimulationFailedError(self.summary())


class _Run:
    def __init__(self, seed: int, spec: _Spec) -> None:
        self.seed = seed
        self.spec = spec
        self.world = World(seed=seed)
        self.rng = random.Random(f"offsetledger-testing-{seed}")
        self.handler = spec.handler
        self.config = spec.config
        self.topics = list(spec.topics)
        group = str(spec.consumer_config.get("group.id", "offsetledger-test"))
        self.group = group
        consumer: dict[str, object] = {
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": spec.config.commit_mode is CommitMode.AUTO,
        }
        consumer.update(spec.consumer_config)
        consumer.setdefault("auto.commit.interval.ms", 500)
        self.consumer_config = consumer
        self.producer_config = dict(spec.producer_config)
        self.producer_config.setdefault("message.timeout.ms", 2000)
        self.pool = MemberPool(
            self.rng,
            self._new_member,
            churn=Fault.MEMBERSHIP in spec.faults,
            max_members=spec.consumers + 2,
        )
        self.readable_end: dict[tuple[str, int], int] = {}
        for name in (*spec.topics, *spec.outputs):
            self.world.create_topic(name, spec.partitions)
        dlq = spec.config.dead_letter_topic
        if dlq is not None and dlq not in spec.outputs:
            self.world.create_topic(dlq, spec.partitions)

    def _new_member(self, name: str) -> SimulatedMember:
        # a restarted process is a new member (m0.r1, ...)
        return SimulatedMember(name, self._processor, rename_on_restart=True, exit=self.world.crash)

    def _processor(self, member: SimulatedMember) -> Processor:
        world, name = self.world, member.name
        config = self.consumer_config
        instance = config.get("group.instance.id")
        if instance is not None:  # one id per process, kept across its restarts
            config = {**config, "group.instance.id": f"{instance}-{member.base}"}
        return Processor(
            world.consumer(config, name),
            world.producer(self.producer_config, name=name),
            self.handler,
            topics=self.topics,
            executor=world.executor(name, task_cost=0.0005),
            clock=world.clock,
            config=self.config,
            metrics=member.metrics,
            observer=observer(world, name),
        )

    def append_some(self, appended: int, count: int) -> int:
        spec = self.spec
        end = min(appended + count, spec.records)
        for i in range(appended, end):
            topic = self.topics[i % len(self.topics)]
            partition = self.rng.randrange(spec.partitions)
            offset = self.world.append(topic, partition, key=spec.key(i), value=spec.value(i))
            self.readable_end[(topic, partition)] = offset + 1
            if Fault.GAPS in spec.faults and self.rng.random() < 0.02:
                self.world.append_gap(topic, partition)
        return end

    def arm_faults(self) -> None:
        spec, faults = self.spec, self.world.faults
        if Fault.CRASH in spec.faults and spec.crash_rate > 0:
            faults.set_probability("crash", spec.crash_rate)
        for fault in sorted(spec.faults):
            for kind in fault.kinds:
                if kind != "crash" and spec.fault_rate > 0:
                    faults.set_probability(kind, min(1.0, spec.fault_rate * _WEIGHT[kind]))
        faults.slow_task_seconds = 40.0
        faults.clock_jump_seconds = 3.0

    def drained(self) -> bool:
        world = self.world
        for (topic, p), end in self.readable_end.items():
            if end <= world.log_start(topic, p):
                continue
            position = world.committed(self.group, topic, p).position
            if position is None or position < end:
                return False
        return self.pool.idle()

    def run(self) -> SeedResult:
        spec = self.spec
        for _ in range(spec.consumers):
            self.pool.add()
        self.arm_faults()
        appended = rounds = 0
        chunk = max(1, spec.records // 50)
        while rounds < spec.max_rounds:
            if appended < spec.records:
                appended = self.append_some(appended, self.rng.randrange(1, 2 * chunk + 1))
            elif self.drained():
                break
            self.pool.round(rounds, chaos=True)
            rounds += 1
            if appended >= spec.records and rounds >= spec.max_rounds // 2:
                break
        self.world.faults.clear()
        self.pool.restart_dead()
        drain_rounds = 0
        drained = self.drained()
        while not drained and drain_rounds < spec.max_rounds:
            self.pool.round(rounds, chaos=False)
            rounds += 1
            drain_rounds += 1
            drained = self.drained()
        self.pool.stop_all()
        return self.judge(drained)

    def judge(self, drained: bool) -> SeedResult:
        spec = self.spec
        history = self.world.history
        dlq = spec.config.dead_letter_topic
        report = check(
            history,
            inputs=self.topics,
            outputs=spec.outputs,
            dead_letter=dlq,
            group=self.group,
            final_drain=drained,
            strict=True,
        )
        dead: dict[tuple[str, int, int], str] = {}
        with_output: set[tuple[str, int, int]] = set()
        empty: dict[tuple[str, int, int], None] = {}
        for e in history:
            if isinstance(e, Append) and not e.control:
                src = e.source()
                if src is None:
                    continue
                if e.topic == dlq:
                    error = (e.header(ERROR_HEADER) or b"").decode("utf-8", "replace")
                    dead.setdefault(src, error)
                else:
                    with_output.add(src)
            elif isinstance(e, Done) and e.outputs == 0 and not e.dead_lettered:
                empty.setdefault((e.topic, e.partition, e.offset), None)
        filtered = tuple(k for k in empty if k not in with_output and k not in dead)
        failures = [f"check problem: {problem}" for problem in report.problems]
        failures.extend(f"{a.kind.value}: {a.message}" for a in report.anomalies[:5])
        if len(report.anomalies) > 5:
            failures.append(f"... {len(report.anomalies) - 5} more anomalies")
        if not drained:
            failures.append(
                f"did not drain within {spec.max_rounds} rounds: "
                f"{report.stats.unfinished} inputs unfinished (a record retried forever "
                "without a dead_letter_topic stalls its partition)"
            )
        bugs = [(k, err) for k, err in dead.items() if err.split(":", 1)[0] in PROGRAMMING_ERRORS]
        if bugs:
            (t, p, o), err = bugs[0]
            failures.append(
                f"programming error in the handler for {len(bugs)} input(s), first "
                f"{t}[{p}]@{o}: {err}"
            )
        inputs = max(1, report.stats.inputs)
        allowed = int(spec.expected_dead_letters * inputs)
        if len(dead) > allowed and len(dead) > len(bugs):
            (t, p, o), err = next(iter(dead.items()))
            failures.append(
                f"{len(dead)} of {report.stats.inputs} inputs dead-lettered (expected at "
                f"most {allowed}: pass expected_dead_letters=...), first {t}[{p}]@{o}: {err}"
            )
        if filtered and not spec.filters:
            t, p, o = filtered[0]
            failures.append(
                f"{len(filtered)} input(s) produced nothing, first {t}[{p}]@{o} (the handler "
                "returned no outputs); pass filters=True if the handler filters on purpose"
            )
        return SeedResult(
            seed=self.seed,
            report=report,
            drained=drained,
            failures=tuple(failures),
            dead_letters=tuple((t, p, o, err) for (t, p, o), err in dead.items()),
            filtered=filtered,
            crashes=report.stats.crashes,
            world=self.world,
        )


@attrs.frozen(kw_only=True)
class _Spec:
    handler: Handler
    config: ProcessorConfig
    consumer_config: Mapping[str, object]
    producer_config: Mapping[str, object]
    topics: tuple[str, ...]
    outputs: tuple[str, ...]
    records: int
    partitions: int
    consumers: int
    faults: frozenset[Fault]
    crash_rate: float
    fault_rate: float
    filters: bool
    expected_dead_letters: float
    max_rounds: int
    value: Callable[[int], bytes | None]
    key: Callable[[int], bytes | None]


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError(f"seeds must be a count or an iterable of ints, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise ValueError(f"seeds must be a non-empty iterable of ints, got {out!r}")
    return out


def _default_reproduce(handler: Handler) -> str:
    module = getattr(handler, "__module__", None)
    name = getattr(handler, "__qualname__", None)
    if module and name and "<" not in name and module != "__main__":
        return f"offsetledger simulate --handler {shlex.quote(f'{module}:{name}')} --seed {{seed}}"
    return "simulate(handler, ..., seeds=[{seed}])"


def simulate(
    handler: Handler,
    *,
    config: ProcessorConfig | None = None,
    topics: Sequence[str] = ("in",),
    outputs: Sequence[str] = ("out",),
    consumer_config: Mapping[str, object] | None = None,
    producer_config: Mapping[str, object] | None = None,
    seeds: int | Iterable[int] = 10,
    records: int = 100,
    partitions: int = 3,
    consumers: int = 2,
    faults: Iterable[Fault | str] = DEFAULT_FAULTS,
    crash_rate: float = 0.003,
    fault_rate: float = 0.02,
    filters: bool = False,
    expected_dead_letters: float = 0.0,
    value: Callable[[int], bytes | None] = _default_value,
    key: Callable[[int], bytes | None] = _default_key,
    max_rounds: int = 20_000,
    reproduce: str | None = None,
) -> SimulationReport:
    """Run ``handler`` with ``config`` through one simulation per seed and judge each.

    * ``topics``: the input topics (as given to the Processor); ``outputs``: the
      topics the handler writes to. Both are created with ``partitions``
      partitions, plus ``config.dead_letter_topic``. A handler writing anywhere
      else gets ``UNKNOWN_TOPIC_OR_PART``, as on a real cluster.
    * ``consumer_config`` / ``producer_config``: your real client configuration
      (librdkafka keys; keys the simulator does not model are accepted). Default:
      group ``offsetledger-test``, ``auto.offset.reset=earliest``. Both group
      protocols run (``group.protocol=consumer``: KIP-848). A
      ``group.instance.id`` makes every member static, each with its own id
      (``<id>-m0``, ``<id>-m1``, ...; a restart keeps its member's id).
    * ``records`` inputs, the i-th with ``key(i)`` and ``value(i)`` (default
      ``k{i % 16}`` and the decimal ``i``), spread over the input partitions.
    * ``faults`` (:class:`Fault` or names in any spelling), ``crash_rate`` (per
      client call) and ``fault_rate`` (scales the others).
    * ``filters``: the handler may return no outputs for an input on purpose.
    * ``expected_dead_letters``: the share of inputs allowed to be dead-lettered
      (0.0: none; programming errors fail regardless).
    * ``reproduce``: the replay command shown on failure, with ``{seed}``.

    Deterministic: the same arguments give the same histories.
    """
    cfg = config if config is not None else ProcessorConfig(dead_letter_topic="dlq")
    if isinstance(topics, str) or isinstance(outputs, str):
        raise TypeError("topics and outputs must be sequences of topic names, not a string")
    if not 0.0 <= expected_dead_letters <= 1.0:
        raise ValueError(
            f"expected_dead_letters must be within [0, 1], got {expected_dead_letters}"
        )
    for name, number, low in (("records", records, 1), ("partitions", partitions, 1)):
        if isinstance(number, bool) or not isinstance(number, int) or number < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {number!r}")
    if isinstance(consumers, bool) or not isinstance(consumers, int) or consumers < 1:
        raise ValueError(f"consumers must be an integer >= 1, got {consumers!r}")
    spec = _Spec(
        handler=handler,
        config=cfg,
        consumer_config=dict(consumer_config or {}),
        producer_config=dict(producer_config or {}),
        topics=tuple(topics),
        outputs=tuple(outputs),
        records=records,
        partitions=partitions,
        consumers=consumers,
        faults=parse_faults(faults) - {Fault.POISON},
        crash_rate=crash_rate,
        fault_rate=fault_rate,
        filters=filters,
        expected_dead_letters=expected_dead_letters,
        max_rounds=max_rounds,
        value=value,
        key=key,
    )
    runs = tuple(_Run(seed, spec).run() for seed in _seeds(seeds))
    return SimulationReport(
        runs=runs, reproduce=reproduce if reproduce is not None else _default_reproduce(handler)
    )


def assert_no_loss(handler: Handler, **kwargs: Any) -> SimulationReport:
    """:func:`simulate` and :meth:`~SimulationReport.assert_ok`: raises
    :class:`SimulationFailedError` naming the failing seeds; returns the report."""
    report = simulate(handler, **kwargs)
    report.assert_ok()
    return report

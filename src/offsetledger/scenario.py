"""Whole-system simulations: a consume-transform-produce pipeline of several
Processors on the simulator, with seeded faults, checked by the checker.

One :class:`SimulationConfig` and a seed determine everything: the same config
gives the same history, byte for byte. The CLI's ``simulate`` runs one; the
swarm (:mod:`offsetledger.swarm`) runs thousands with drawn configurations.

The run has two phases:

1. **chaos**: inputs are appended to topic ``in`` a few at a time while the
   members step round-robin; the chosen faults fire with their rates (crashes
   at client calls, failed and lost deliveries, failed commits, rebalances, lost
   assignments, slow tasks, empty polls, clock jumps, retention truncation); a
   crashed member restarts a few rounds later with fresh clients; members join
   and leave.
2. **drain**: faults stop, dead members restart, the members step until every
   input partition's committed position is its log end, then each stops
   gracefully. The checker then runs with ``final_drain=True``.

Poison records (a fraction of inputs the handler always rejects) go to the
dead-letter topic ``dlq``; gaps are control offsets in ``in``.

The handler (:class:`PipelineHandler`) writes 0..``max_outputs`` outputs per input,
to topics ``out`` and ``out2`` (by key, or to an explicit partition), the count
drawn per input and written into its value (``value-<i>-n<count>``), so the
checker knows every output each input needs (:func:`expected_outputs`). Without
a dead-letter topic poison inputs are *flaky* instead: they fail their first three
attempts and then succeed (a record that always fails would stall its partition
for ever, which is what that configuration promises).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from offsetledger.checker import BufferLimits, Report, check_pipeline
from offsetledger.core import Outbound, Record, TopicPartition
from offsetledger.history import Append, Crash, Event
from offsetledger.runtime import (
    CommitMode,
    InlineExecutor,
    OrderingMode,
    Processor,
    ProcessorConfig,
    RetryPolicy,
)
from offsetledger.simulator import World
from offsetledger.testing._members import MemberPool, SimulatedMember
from offsetledger.testing._observer import observer

__all__ = [
    "FAULTS",
    "GROUP",
    "OUTPUTS",
    "PROTOCOLS",
    "TXN_FAULTS",
    "AsyncPipelineHandler",
    "PipelineHandler",
    "SimulationConfig",
    "SimulationResult",
    "check_run",
    "consumer_config",
    "expected_outputs",
    "pipeline_handler",
    "run_simulation",
]

GROUP = "pipeline"
#: the consumer group protocols a simulation may run
PROTOCOLS = ("classic", "consumer")
_SESSION_TIMEOUT_MS = 6000
_BATCH_SIZE = 50
#: an async handler's processing_timeout (virtual seconds; a first attempt of 2% of the
#: inputs is stuck for twice as long and is cancelled, its retry is not)
_ASYNC_TIMEOUT = 1.0
#: how long a revoke's (or a shutdown's) drain waits for running work, virtual seconds;
#: ``SimulationConfig.short_drain`` picks the short one for async handlers, below
#: ``_ASYNC_TIMEOUT``
DRAIN_TIMEOUT = 2.0
SHORT_DRAIN_TIMEOUT = 0.3
INPUT, OUTPUT, DEAD_LETTER = "in", "out", "dlq"
#: the topics the pipeline writes to (output ``j`` of an input goes to ``OUTPUTS[j % 2]``)
OUTPUTS = (OUTPUT, "out2")

#: The fault mix a simulation may draw from: name -> (simulator fault kinds, meaning).
FAULTS: dict[str, tuple[tuple[str, ...], str]] = {
    "crash": (("crash",), "kill -9 of a member at a client call; it restarts later"),
    "delivery": (
        ("delivery_retriable", "delivery_timeout"),
        "an output's delivery fails (retriable error or timeout)",
    ),
    "fatal-delivery": (
        ("delivery_fatal",),
        "an output's or dead-letter record's delivery fails non-retriably",
    ),
    "ack-lost": (("ack_lost",), "an output is written but its report says it failed"),
    "commit": (("commit_unavailable",), "a commit fails with COORDINATOR_NOT_AVAILABLE"),
    "fenced": (("commit_fenced",), "a commit is rejected with ILLEGAL_GENERATION"),
    "rebalance": (("rebalance",), "the group rebalances"),
    "lost": (("assignment_lost",), "a member is evicted: its partitions are lost"),
    "slow": (("slow_task",), "a handler takes longer than max.poll.interval.ms"),
    "empty-poll": (("empty_poll",), "a poll returns nothing"),
    "clock-jump": (("clock_jump",), "the clock jumps forward"),
    "truncate": (("truncate",), "retention truncates a partition"),
    "membership": ((), "members join and leave gracefully"),
    "poison": ((), "some inputs always fail in the handler and go to the dead-letter topic"),
    "gaps": ((), "control offsets (transaction markers) in the input log"),
}
#: The faults only a transactional run (``CommitMode.TRANSACTIONAL``) meets; part of
#: :data:`FAULTS`. (A crash, a rebalance or a loss mid-transaction are the plain
#: ``crash``, ``rebalance`` and ``lost`` faults firing while a transaction is open.)
TXN_FAULTS: dict[str, tuple[tuple[str, ...], str]] = {
    "txn-abortable": (
        ("txn_abortable",),
        "commit_transaction fails abortably: the transaction is aborted, the partitions rewound",
    ),
    "txn-coordinator": (
        ("txn_coordinator_unavailable",),
        "the transaction coordinator is unavailable for a transactional call",
    ),
    "txn-fenced": (
        ("txn_fenced",),
        "a newer instance of the transactional.id fences the producer: the process restarts",
    ),
}
FAULTS.update(TXN_FAULTS)
DEFAULT_FAULTS = frozenset(
    {"crash", "delivery", "ack-lost", "commit", "rebalance", "lost", "membership", "poison", "gaps"}
)
#: Per-opportunity probability of each simulator fault kind, scaled by ``fault_rate``.
_WEIGHT: dict[str, float] = {
    "delivery_retriable": 1.0,
    "delivery_timeout": 0.3,
    "delivery_fatal": 1.0,
    "ack_lost": 0.5,
    "commit_unavailable": 2.0,
    "commit_fenced": 1.0,
    "rebalance": 0.5,
    "assignment_lost": 0.3,
    "slow_task": 0.02,
    "empty_poll": 2.0,
    "clock_jump": 0.05,
    "truncate": 0.02,
    "txn_abortable": 0.5,
    "txn_coordinator_unavailable": 0.2,
    "txn_fenced": 0.05,
}


def _fault_set(value: Iterable[str]) -> frozenset[str]:
    names = frozenset(value)
    unknown = sorted(names - FAULTS.keys())
    if unknown:
        raise ValueError(
            f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}"
        )
    return names


def _at_least(minimum: int) -> Callable[[Any, attrs.Attribute[Any], int], None]:
    def check_(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}, got {value!r}")

    return check_


def _rate(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be within [0, 1], got {value!r}")


@attrs.frozen(kw_only=True)
class SimulationConfig:
    """Everything that shapes one simulated run (with ``seed``, all of it).

    * ``records``: inputs appended to topic ``in`` over the run.
    * ``partitions``: partitions of ``in`` (``out`` and ``dlq`` get the same).
    * ``consumers``: members at the start (membership faults add and remove some).
    * ``workers``: records in flight per member (the Processor's in-flight limit).
    * ``ordering``, ``commit_mode``: the Processor's modes. ``CommitMode.TRANSACTIONAL``:
      each member has a transactional producer (``transactional.id`` = its name, so a
      restarted process fences its old self), its consumer reads ``read_committed``, a
      member whose producer is fenced exits and restarts, and the history is checked
      with the exactly-once verdicts (:func:`check_run`).
    * ``crash_rate``: probability that one client call of a member is a kill -9.
    * ``fault_rate``: scale of the other faults' probabilities.
    * ``faults``: names from :data:`FAULTS`.
    * ``poison_rate``, ``gap_rate``: fractions of inputs that are poison / followed
      by a control offset (when ``poison`` / ``gaps`` are in ``faults``).
    * ``max_rounds``: bound on rounds (one step of every member) for each phase.
    * ``inline``: handlers run on :class:`~offsetledger.runtime.InlineExecutor`
      (in submission order, on the poll thread) instead of the simulator's
      executor (seeded out-of-order completion).
    * ``max_outputs``: each input gets a drawn number of outputs in
      ``0..max_outputs`` (0 only when ``filter_rate`` draws it; else at least 1).
    * ``filter_rate``: fraction of inputs with no output at all (default 0: a
      history with filters is only judged right by :func:`check_run`, since
      :func:`~offsetledger.checker.check` cannot tell a filter from a lost record
      until the history records "done, no outputs"; the swarm draws filters).
    * ``dead_letter``: the Processor has a dead-letter topic (else poison inputs
      are flaky, see the module docstring).
    * ``workers_per_partition``: the per-partition in-flight limit (None:
      ``workers``); ``buffer_per_partition``, ``buffer_total``: the buffer limits.
    * ``group_protocol``: ``classic`` (the assignment strategy is drawn from the
      seed) or ``consumer`` (KIP-848: broker-side incremental assignment; the
      group's session timeout is set on the broker, 6 s like the classic members').
    * ``static_membership``: every member has ``group.instance.id`` = its name, so a
      member restarted within the session timeout takes its partitions back
      without a rebalance.
    * ``chaos_tail_rounds``: after the last input, faults keep firing for at most
      this many rounds (or until the run is drained) before the drain phase.
    * ``idempotence``: the producers set ``enable.idempotence`` (librdkafka resends
      retriable failures itself, in order and without duplicates).
    * ``asynchronous``: the handler is an ``async def`` one (the same workload,
      :class:`AsyncPipelineHandler`), run on the simulator's virtual event loop; each
      attempt awaits a seeded virtual sleep of 0..5 ms, so completion order varies
      by seed (``inline`` is then ignored: the simulator's executor picks the loop).
    * ``short_drain``: with ``asynchronous``, a revoke's drain gives up after
      :data:`SHORT_DRAIN_TIMEOUT` instead of :data:`DRAIN_TIMEOUT`, shorter than the
      async ``processing_timeout``: a revoke then cuts a stuck coroutine off itself
      and must wait for its cancellation to end before the partition goes (with the
      long drain the coroutine always timed out first, so that wait was never
      exercised). Ignored by sync handlers, which have no stuck attempts to cut.
    """

    seed: int = 0
    records: int = attrs.field(default=2_000, validator=_at_least(0))
    partitions: int = attrs.field(default=4, validator=_at_least(1))
    consumers: int = attrs.field(default=2, validator=_at_least(1))
    workers: int = attrs.field(default=8, validator=_at_least(1))
    ordering: OrderingMode = OrderingMode.PARTITION
    commit_mode: CommitMode = CommitMode.AUTO
    crash_rate: float = attrs.field(default=0.002, validator=_rate)
    fault_rate: float = attrs.field(default=0.01, validator=_rate)
    faults: frozenset[str] = attrs.field(default=DEFAULT_FAULTS, converter=_fault_set)
    poison_rate: float = attrs.field(default=0.01, validator=_rate)
    gap_rate: float = attrs.field(default=0.02, validator=_rate)
    max_rounds: int = attrs.field(default=200_000, validator=_at_least(1))
    inline: bool = False
    max_outputs: int = attrs.field(default=3, validator=_at_least(1))
    filter_rate: float = attrs.field(default=0.0, validator=_rate)
    dead_letter: bool = True
    workers_per_partition: int | None = None
    buffer_per_partition: int = attrs.field(default=200, validator=_at_least(1))
    buffer_total: int = attrs.field(default=1000, validator=_at_least(1))
    group_protocol: str = attrs.field(default="classic", validator=attrs.validators.in_(PROTOCOLS))
    static_membership: bool = False
    idempotence: bool = False
    chaos_tail_rounds: int = attrs.field(default=3000, validator=_at_least(1))
    asynchronous: bool = False
    short_drain: bool = False

    @property
    def drain_timeout(self) -> float:
        """The Processor's ``drain_timeout`` (see ``short_drain``)."""
        return SHORT_DRAIN_TIMEOUT if self.asynchronous and self.short_drain else DRAIN_TIMEOUT

    @property
    def transactional(self) -> bool:
        """Exactly-once: ``commit_mode`` is ``CommitMode.TRANSACTIONAL``."""
        return self.commit_mode is CommitMode.TRANSACTIONAL

    @property
    def in_flight_per_partition(self) -> int:
        w = self.workers if self.workers_per_partition is None else self.workers_per_partition
        return min(w, self.buffer_per_partition)

    @property
    def in_flight_total(self) -> int:
        return min(self.workers, self.buffer_total)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "records": self.records,
            "partitions": self.partitions,
            "consumers": self.consumers,
            "workers": self.workers,
            "ordering": self.ordering.name.lower(),
            "commit_mode": self.commit_mode.name.lower(),
            "crash_rate": self.crash_rate,
            "fault_rate": self.fault_rate,
            "faults": sorted(self.faults),
            "poison_rate": self.poison_rate,
            "gap_rate": self.gap_rate,
            "max_rounds": self.max_rounds,
            "inline": self.inline,
            "max_outputs": self.max_outputs,
            "filter_rate": self.filter_rate,
            "dead_letter": self.dead_letter,
            "workers_per_partition": self.workers_per_partition,
            "buffer_per_partition": self.buffer_per_partition,
            "buffer_total": self.buffer_total,
            "group_protocol": self.group_protocol,
            "static_membership": self.static_membership,
            "idempotence": self.idempotence,
            "chaos_tail_rounds": self.chaos_tail_rounds,
            "asynchronous": self.asynchronous,
            "short_drain": self.short_drain,
        }


@attrs.frozen(kw_only=True)
class SimulationResult:
    """What a run produced: its history (in ``world``), the checker's report and
    counts. ``drained`` is False when the drain did not finish within
    ``max_rounds`` (the report then shows what is unfinished)."""

    config: SimulationConfig
    world: World
    report: Report
    drained: bool
    rounds: int
    crashes: int
    joins: int
    leaves: int
    dead_letters: int
    skipped_restored: int
    virtual_seconds: float

    @property
    def ok(self) -> bool:
        return self.drained and self.report.ok

    def to_dict(self) -> dict[str, Any]:
        stats = self.report.stats
        return {
            "ok": self.ok,
            "seed": self.config.seed,
            "config": self.config.to_dict(),
            "drained": self.drained,
            "inputs": stats.inputs,
            "outputs": stats.outputs,
            "dead_letters": stats.dead_letter_records,
            "lost": stats.lost,
            "unfinished": stats.unfinished,
            "expired": stats.expired,
            "duplicates": stats.duplicates,
            "crashes": stats.crashes,
            "rebalances": stats.rebalances,
            "commits": stats.commits,
            "rejected_commits": stats.rejected_commits,
            "joins": self.joins,
            "leaves": self.leaves,
            "skipped_restored": self.skipped_restored,
            "rounds": self.rounds,
            "virtual_seconds": round(self.virtual_seconds, 6),
            "history_events": len(self.world.history),
            "anomalies": self.report.counts(),
        }


def _output_count(value: bytes) -> int:
    """The output count written into an input's value (``...-n<count>``); 1 without one."""
    head, sep, tail = value.rpartition(b"-n")
    if sep and head and tail.isdigit():
        return int(tail)
    return 1


def expected_outputs(append: Append) -> int | None:
    """How many distinct outputs :class:`PipelineHandler` writes for an input (its
    poison inputs are judged by their dead-letter record instead)."""
    return _output_count(append.value or b"")


class PipelineHandler:
    """The pipeline's handler: per input, the outputs its value names (``-n<count>``,
    default 1), each its upper-cased value with ``#j`` appended; output ``j`` goes
    to ``OUTPUTS[j % 2]``, by key, except that every third output names a partition
    explicitly (``out_partitions`` of them). A value starting with ``poison``
    always fails; one starting with ``flaky`` fails its first three attempts (this
    handler remembers attempts, as the world outside a process would)."""

    def __init__(self, out_partitions: int = 1) -> None:
        self.out_partitions = out_partitions
        self.attempts: dict[tuple[str, int, int], int] = {}

    def __call__(self, record: Record) -> list[Outbound]:
        value = record.value or b""
        if value.startswith(b"poison"):
            raise ValueError(f"poison record {record.topic}[{record.partition}]@{record.offset}")
        if value.startswith(b"flaky"):
            where = (record.topic, record.partition, record.offset)
            seen = self.attempts.get(where, 0)
            self.attempts[where] = seen + 1
            if seen < 3:
                raise ValueError(f"flaky record {where}, attempt {seen + 1}")
        upper = value.upper()
        return [
            Outbound(
                OUTPUTS[j % 2],
                value=b"%s#%d" % (upper, j),
                key=record.key,
                partition=(record.offset + j) % self.out_partitions if j % 3 == 2 else None,
            )
            for j in range(_output_count(value))
        ]


#: the fraction of cancelled async attempts whose cleanup is slow, and how slow
#: (virtual seconds; see :class:`AsyncPipelineHandler`)
SLOW_CLEANUP_RATE = 0.2
SLOW_CLEANUP_SECONDS = 0.2


class AsyncPipelineHandler:
    """:class:`PipelineHandler` as an ``async def`` handler: each attempt first awaits
    a virtual sleep of 0..``max_sleep`` seconds drawn from its own seeded stream
    (on the simulator's virtual loop: no wall clock), then does what the
    synchronous handler does."""

    def __init__(
        self,
        inner: PipelineHandler,
        seed: int,
        max_sleep: float = 0.005,
        *,
        stuck_rate: float = 0.0,
        stuck_seconds: float = 0.0,
    ) -> None:
        self.inner = inner
        self.max_sleep = max_sleep
        self.stuck_rate = stuck_rate
        self.stuck_seconds = stuck_seconds
        self._rng = random.Random(f"offsetledger-async-handler-{seed}")
        # a stream of its own: drawing cleanups leaves the other draws as they were
        self._cleanup_rng = random.Random(f"offsetledger-async-cleanup-{seed}")
        self._started: set[tuple[str, int, int]] = set()

    async def __call__(self, record: Record) -> list[Outbound]:
        where = (record.topic, record.partition, record.offset)
        first = where not in self._started
        self._started.add(where)
        stuck = first and self._rng.random() < self.stuck_rate
        pause = self._rng.uniform(0.0, self.max_sleep)
        try:
            if stuck:
                await asyncio.sleep(self.stuck_seconds)  # past processing_timeout: cancelled
            await asyncio.sleep(pause)
        except asyncio.CancelledError:
            # cleanup takes a moment (closing a connection): the cancelled attempt
            # ends 1 ms after its cancellation, so nothing may start it again meanwhile;
            # one cleanup in five is slow (a rollback), past the scenario's largest retry
            # backoff, so a retry started before the attempt really ended runs beside it
            slow = self._cleanup_rng.random() < SLOW_CLEANUP_RATE
            await asyncio.sleep(SLOW_CLEANUP_SECONDS if slow else 0.001)
            raise
        return self.inner(record)


def pipeline_handler(record: Record) -> list[Outbound]:
    """:class:`PipelineHandler` with one output partition and no memory: a
    ``flaky`` input always fails here, like a poison one."""
    return PipelineHandler()(record)


def consumer_config(config: SimulationConfig, strategy: str, member: str) -> dict[str, object]:
    """The librdkafka configuration of a pipeline member's consumer."""
    conf: dict[str, object] = {
        "group.id": GROUP,
        "enable.auto.offset.store": False,
        "enable.auto.commit": config.commit_mode is CommitMode.AUTO,
        "auto.commit.interval.ms": 500,
        "auto.offset.reset": "earliest",
        "max.poll.interval.ms": 30_000,
    }
    if config.group_protocol == "consumer":
        conf["group.protocol"] = "consumer"
    else:
        conf["session.timeout.ms"] = _SESSION_TIMEOUT_MS
        conf["partition.assignment.strategy"] = strategy
    if config.static_membership:
        conf["group.instance.id"] = member
    if config.transactional:
        conf["isolation.level"] = "read_committed"
    return conf


def _processor(sim: _Simulation, member: SimulatedMember) -> Processor:
    """A pipeline member's Processor, with fresh clients of the world."""
    cfg, name = sim.config, member.name
    producer: Any
    if cfg.transactional:
        producer = sim.world.transactional_producer(
            {
                "transactional.id": f"txn-{name}",
                "message.timeout.ms": 2000,
                "transaction.timeout.ms": 10_000,
            },
            name,
            member=name,
        )
    else:
        producer = sim.world.producer(
            {"message.timeout.ms": 2000, "enable.idempotence": cfg.idempotence}, name=name
        )
    return Processor(
        sim.world.consumer(consumer_config(cfg, sim.strategy, name), name),
        producer,
        sim.handler,
        topics=[INPUT],
        executor=InlineExecutor()
        if cfg.inline and not cfg.asynchronous
        else sim.world.executor(name, task_cost=0.0005),
        clock=sim.world.clock,
        config=ProcessorConfig(
            batch_size=_BATCH_SIZE,
            poll_timeout=0.05,
            ordering=cfg.ordering,
            max_in_flight_total=cfg.in_flight_total,
            max_in_flight_per_partition=cfg.in_flight_per_partition,
            max_buffered_per_partition=cfg.buffer_per_partition,
            max_buffered_total=cfg.buffer_total,
            retry=RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.1),
            dead_letter_topic=DEAD_LETTER if cfg.dead_letter else None,
            processing_timeout=_ASYNC_TIMEOUT if cfg.asynchronous else None,
            drain_timeout=cfg.drain_timeout,
            shutdown_timeout=5.0,
            commit_mode=cfg.commit_mode,
            commit_every_records=100,
            commit_interval=0.5,
            transaction_interval=0.2,
            transaction_records=100,
            transaction_call_timeout=1.0,
        ),
        metrics=member.metrics,
        # "done, no outputs" in the history: the exactly-once verdicts need it for filters
        observer=observer(sim.world, name) if cfg.transactional else None,
    )


class _Simulation:
    def __init__(
        self, config: SimulationConfig, progress: Callable[[int, int], None] | None
    ) -> None:
        self.config = config
        self.progress = progress
        self.world = World(seed=config.seed)
        self.rng = random.Random(f"offsetledger-driver-{config.seed}")
        self.strategy = self.rng.choice(["range", "roundrobin", "cooperative-sticky"])
        self.skipped = 0
        self.pool = MemberPool(
            self.rng,
            self._new_member,
            churn="membership" in config.faults,
            max_members=config.consumers + 2,
        )
        #: per input partition, the position after its last readable record: a
        #: consumer never polls trailing control offsets, so that is where a
        #: drained partition's committed position stands
        self.readable_end = [0] * config.partitions
        self.input_tps = [TopicPartition(INPUT, p) for p in range(config.partitions)]
        for name in (INPUT, *OUTPUTS, DEAD_LETTER):
            self.world.create_topic(name, config.partitions)
        self.world.configure_group(GROUP, session_timeout_ms=_SESSION_TIMEOUT_MS)
        self.pipeline = PipelineHandler(config.partitions)
        self.handler: Callable[[Record], Any] = (
            AsyncPipelineHandler(
                self.pipeline, config.seed, stuck_rate=0.02, stuck_seconds=2 * _ASYNC_TIMEOUT
            )
            if config.asynchronous
            else self.pipeline
        )
        #: the workload's own stream: output counts do not shift the other draws
        self.workload_rng = random.Random(f"offsetledger-workload-{config.seed}")

    # -- inputs -------------------------------------------------------------------------

    def append_some(self, appended: int, count: int) -> int:
        cfg = self.config
        for i in range(appended, min(appended + count, cfg.records)):
            partition = self.rng.randrange(cfg.partitions)
            poison = "poison" in cfg.faults and self.rng.random() < cfg.poison_rate
            wr = self.workload_rng
            outputs = 0 if wr.random() < cfg.filter_rate else wr.randint(1, cfg.max_outputs)
            bad = b"poison" if cfg.dead_letter else b"flaky"
            value = b"%s-%d-n%d" % (bad if poison else b"value", i, outputs)
            offset = self.world.append(INPUT, partition, key=b"k%d" % (i % 64), value=value)
            self.readable_end[partition] = offset + 1
            if "gaps" in cfg.faults and self.rng.random() < cfg.gap_rate:
                self.world.append_gap(INPUT, partition)
        return min(appended + count, cfg.records)

    # -- members ------------------------------------------------------------------------

    def _new_member(self, name: str) -> SimulatedMember:
        return SimulatedMember(
            name, lambda m: _processor(self, m), on_end=self._ended, exit=self.world.crash
        )

    def _ended(self, member: SimulatedMember) -> None:
        self.skipped += member.metrics.count("skipped_duplicates")

    def arm_faults(self) -> None:
        cfg, faults = self.config, self.world.faults
        if "crash" in cfg.faults and cfg.crash_rate > 0:
            faults.set_probability("crash", cfg.crash_rate)
        for name in sorted(cfg.faults):
            for kind in FAULTS[name][0]:
                if kind != "crash" and cfg.fault_rate > 0:
                    faults.set_probability(kind, min(1.0, cfg.fault_rate * _WEIGHT[kind]))
        faults.slow_task_seconds = 40.0
        faults.clock_jump_seconds = 3.0

    def drained(self) -> bool:
        world = self.world
        for p, end in enumerate(self.readable_end):
            if end <= world.log_start(INPUT, p):
                continue  # nothing readable is left (retention)
            position = world.committed_offset(GROUP, self.input_tps[p])
            if position is None or position < end:
                return False
        return self.pool.idle()

    def acknowledged_estimate(self) -> int:
        world = self.world
        done = 0
        for p in range(self.config.partitions):
            pos = world.committed(GROUP, INPUT, p).position
            if pos is not None:
                done += max(0, pos - world.log_start(INPUT, p))
        return done

    # -- the run ------------------------------------------------------------------------

    def run(self) -> SimulationResult:
        cfg = self.config
        for _ in range(cfg.consumers):
            self.pool.add()
        self.arm_faults()
        appended = 0
        rounds = 0
        chunk = max(1, cfg.records // 200)
        # chaos: inputs arrive while faults fire
        all_in = 0 if cfg.records == 0 else None  # the round the last input arrived
        while rounds < cfg.max_rounds:
            if appended < cfg.records:
                appended = self.append_some(appended, self.rng.randrange(1, 2 * chunk + 1))
                if appended >= cfg.records:
                    all_in = rounds
            elif self.drained():
                break
            self.pool.round(rounds, chaos=True)
            rounds += 1
            if self.progress is not None and rounds % 50 == 0:
                self.progress(min(self.acknowledged_estimate(), cfg.records), cfg.records)
            if all_in is not None and (
                rounds >= 2 * cfg.max_rounds // 3 or rounds - all_in >= cfg.chaos_tail_rounds
            ):
                break
        # drain: no more faults; everyone restarts; finish everything
        self.world.faults.clear()
        self.pool.restart_dead()
        drain_rounds = 0
        drained = self.drained()
        while not drained and drain_rounds < cfg.max_rounds:
            self.pool.round(rounds, chaos=False)
            rounds += 1
            drain_rounds += 1
            drained = self.drained()
            if self.progress is not None and drain_rounds % 50 == 0:
                self.progress(min(self.acknowledged_estimate(), cfg.records), cfg.records)
        self.pool.stop_all()
        if self.progress is not None:
            self.progress(min(self.acknowledged_estimate(), cfg.records), cfg.records)
        report = check_run(self.world.history, cfg, final_drain=drained)
        events: list[Event] = self.world.history.events
        return SimulationResult(
            config=cfg,
            world=self.world,
            report=report,
            drained=drained,
            rounds=rounds,
            crashes=sum(1 for e in events if isinstance(e, Crash)),
            joins=self.pool.joins,
            leaves=self.pool.leaves,
            dead_letters=sum(
                len([e for e in self.world.log(DEAD_LETTER, p) if not e.control])
                for p in range(cfg.partitions)
            ),
            skipped_restored=self.skipped,
            virtual_seconds=self.world.clock.now(),
        )


def check_run(history: Iterable[Event], config: SimulationConfig, *, final_drain: bool) -> Report:
    """Check a pipeline run's history with :func:`~offsetledger.checker.check_pipeline`:
    the outputs every input needs, the ordering mode, the configured buffer limits,
    and the exactly-once verdicts when the run is transactional."""
    ordering = {OrderingMode.KEY: "key", OrderingMode.PARTITION: "partition"}.get(config.ordering)
    return check_pipeline(
        history,
        inputs=[INPUT],
        outputs=OUTPUTS,
        dead_letter=DEAD_LETTER,
        group=GROUP,
        expected_outputs=expected_outputs,
        final_drain=final_drain,
        ordering=ordering,  # type: ignore[arg-type]
        limits=BufferLimits(
            per_partition=config.buffer_per_partition,
            total=config.buffer_total,
            batch_size=_BATCH_SIZE,
        ),
        exactly_once=config.transactional,
    )


def run_simulation(
    config: SimulationConfig, *, progress: Callable[[int, int], None] | None = None
) -> SimulationResult:
    """Run one whole-system simulation and check its history.

    ``progress(done, total)`` is called now and then with the number of inputs
    covered by committed positions. Deterministic: the same config gives the
    same ``result.world.trace()``.
    """
    return _Simulation(config, progress).run()

"""Model-based test of the whole system: Processors on the simulator under an
arbitrary interleaving of inputs, steps, executor runs, delivery reports, faults,
crashes, restarts, membership changes, retention and time.

Hypothesis draws the simulator seed and a program of rules. After every rule the
history so far is checked (``check(..., final_drain=False)``): no commit past
unfinished work, no commit going backwards, no commit for a partition the member
did not hold, contiguous polls, no phantom output, no unexplained duplicate. At
the end (``teardown``) the faults stop, the dead restart and every member steps
until each input partition is committed up to its last readable record; then
everyone stops gracefully and ``check(..., final_drain=True)`` must find nothing,
no LOST record in particular.

A quarter of the runs (drawn from the simulator seed) have ``async def``
handlers, per record or per batch, on the simulator's virtual event loop, half of
those with a ``processing_timeout`` below the handler's longest sleep.

A failure prints the step program (hypothesis) and the simulator seed (``note``
and the assertion message). The settings per ``HYPOTHESIS_PROFILE`` are in
:func:`machine_settings`; ``benchmarks/planted_bugs.py`` runs the same machine
against planted bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from typing import ClassVar, Literal

from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from offsetledger.checker import BufferLimits, Report, check, check_workload
from offsetledger.core import Outbound, Record
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
    RetryPolicy,
    batch_handler,
)
from offsetledger.scenario import OUTPUTS, PipelineHandler, expected_outputs
from offsetledger.simulator import ProcessCrashed, SimExecutor, SimProducer, World

__all__ = ["SystemMachine", "machine_settings", "run_machine"]

GROUP = "model"

INPUT, DEAD_LETTER = "in", "dlq"
MAX_MEMBERS = 4
#: bound on drain rounds (one step of every member) in ``teardown``
DRAIN_ROUNDS = 3_000

#: Faults a rule may schedule: simulator fault kind -> whose opportunity it is.
SCHEDULABLE = (
    "delivery_retriable",
    "delivery_timeout",
    "delivery_fatal",
    "ack_lost",
    "commit_unavailable",
    "commit_fenced",
    "rebalance",
    "assignment_lost",
    "empty_poll",
    "slow_task",
    "clock_jump",
    "crash",
)
#: Faults a rule may give a probability (per opportunity, for anyone).
RATED = (
    "delivery_retriable",
    "delivery_timeout",
    "delivery_fatal",
    "ack_lost",
    "commit_unavailable",
    "empty_poll",
)
#: the machine's poll batch (the bounds check allows one batch over a limit)
BATCH = 5


def machine_settings(profile: str | None = None) -> settings:
    """The machine's hypothesis settings for ``profile`` (default: the
    ``HYPOTHESIS_PROFILE`` environment variable, else ``ci``).

    ``ci`` is derandomized and sized to stay well under two minutes; ``nightly``
    is random and long; ``dev`` is quick. No example database: a run depends on
    nothing but the code and the profile.
    """
    name = profile if profile is not None else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    common: dict[str, object] = {
        "deadline": None,
        "database": None,
        "print_blob": True,
        "suppress_health_check": list(HealthCheck),
    }
    if name == "nightly":
        return settings(max_examples=1_000, stateful_step_count=100, **common)  # type: ignore[arg-type]
    if name == "dev":
        return settings(max_examples=15, stateful_step_count=30, **common)  # type: ignore[arg-type]
    return settings(derandomize=True, max_examples=100, stateful_step_count=50, **common)  # type: ignore[arg-type]


_ORDERING: dict[OrderingMode, Literal["key", "partition"]] = {
    OrderingMode.KEY: "key",
    OrderingMode.PARTITION: "partition",
}


def as_batch_handler(handler: PipelineHandler) -> object:
    """``handler`` as a batch handler: one entry per record, the record's outputs or
    the exception it raised (a per-record failure). A batch of several records whose
    first offset is 3 modulo 7 raises as a whole (every record then retries alone,
    where the per-record handler decides)."""

    @batch_handler
    def handle(records: list[Record]) -> list[list[Outbound] | Exception]:
        if len(records) > 1 and records[0].offset % 7 == 3:
            raise RuntimeError("the whole batch failed")
        out: list[list[Outbound] | Exception] = []
        for record in records:
            try:
                out.append(list(handler(record)))
            except Exception as exc:  # that record's failure, not the batch's
                out.append(exc)
        return out

    return handle


#: the fraction of runs with ``async def`` handlers (see ``setup``), per record or
#: per batch as ``batch`` is drawn
ASYNC_FRACTION = 0.25
#: an async run's ``processing_timeout``, for half of them (drawn like the handler):
#: below the handler's 5 ms maximum sleep, so about a fifth of their attempts time
#: out (cancelled on the virtual loop, retried or dead-lettered)
ASYNC_TIMEOUT = 0.004
#: what an async handler's cleanup takes once cancelled (virtual seconds); a fifth of
#: them are slow (a rollback, a connection torn down), past the retry policy's
#: largest backoff, so an attempt reported ended before its cleanup is over has its
#: retry (or the partition's next owner) start beside it
ASYNC_CLEANUP = 0.002
ASYNC_SLOW_CLEANUP = 0.2
ASYNC_SLOW_CLEANUP_SECONDS = 0.3
#: the fraction of async calls stuck on a slow dependency, and for how long: past the
#: drain timeout, so a revoke cancels them mid-flight
ASYNC_STUCK = 0.02
ASYNC_STUCK_SECONDS = 1.0


def as_async_handler(handler: PipelineHandler, rng: random.Random, *, batch: bool) -> object:
    """``handler`` (or its batch form, see :func:`as_batch_handler`) as an ``async def``
    handler on the simulator's virtual loop: each call first awaits a virtual sleep of
    0..5 ms drawn from ``rng`` (seeded), so completion order varies by seed; a
    cancelled call cleans up for :data:`ASYNC_CLEANUP` (or, drawn, for
    :data:`ASYNC_SLOW_CLEANUP_SECONDS`) before it ends."""
    sync_batch = as_batch_handler(handler)

    async def wait() -> None:
        try:
            stuck = rng.random() < ASYNC_STUCK
            await asyncio.sleep(ASYNC_STUCK_SECONDS if stuck else rng.uniform(0.0, 0.005))
        except asyncio.CancelledError:
            # cleanup after a cancellation (timeout, revoke) takes time too: the
            # attempt has not ended until it is over, so nothing may overlap it
            slow = rng.random() < ASYNC_SLOW_CLEANUP
            await asyncio.sleep(ASYNC_SLOW_CLEANUP_SECONDS if slow else ASYNC_CLEANUP)
            raise

    if batch:

        @batch_handler
        async def handle_batch(records: list[Record]) -> list[list[Outbound] | Exception]:
            await wait()
            return sync_batch(records)  # type: ignore[operator,no-any-return]

        return handle_batch

    async def handle(record: Record) -> list[Outbound]:
        await wait()
        return list(handler(record))

    return handle


def _counts(report: Report) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(report.counts().items()))


class _Member:
    """One application process: a Processor with its own clients (None when dead)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processor: Processor | None = None
        self.executor: SimExecutor | None = None
        self.producer: SimProducer | None = None


class SystemMachine(RuleBasedStateMachine):
    """Processors, the simulated cluster and its faults, driven by hypothesis."""

    #: rules run in the current example (the last run is the reported program)
    steps_run: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        self.world = World(seed=0)
        self.members: dict[str, _Member] = {}
        self.next_member = 0
        self.partitions = 1
        self.readable_end: list[int] = []
        self.appended = 0
        self.ordering = OrderingMode.PARTITION
        self.commit_mode = CommitMode.AUTO
        self.workers = 1
        self.strategy = "range"
        self.dead_letter = True
        self.batch = False
        self.asynchronous = False
        self.processing_timeout: float | None = None
        self.limits = BufferLimits(per_partition=8, total=16, batch_size=BATCH)
        self.handler = PipelineHandler()
        self._log_level = logging.NOTSET

    # -- set-up -----------------------------------------------------------------------

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        partitions=st.integers(1, 3),
        members=st.integers(1, 2),
        ordering=st.sampled_from(list(OrderingMode)),
        commit_mode=st.sampled_from([CommitMode.AUTO, CommitMode.PERIODIC]),
        workers=st.sampled_from([1, 3]),
        # "kip848": group.protocol=consumer (broker-side incremental assignment)
        strategy=st.sampled_from(["range", "roundrobin", "cooperative-sticky", "kip848"]),
        dead_letter=st.booleans(),
        limits=st.sampled_from([(8, 16), (3, 16), (8, 4), (2, 3)]),
        batch=st.booleans(),
    )
    def setup(  # noqa: PLR0917 - hypothesis passes the drawn values by keyword
        self,
        seed: int,
        partitions: int,
        members: int,
        ordering: OrderingMode,
        commit_mode: CommitMode,
        workers: int,
        strategy: str,
        dead_letter: bool,
        limits: tuple[int, int],
        batch: bool,
    ) -> None:
        # async handlers (and their timeout) are drawn from the seed, not by another
        # hypothesis draw, so the programs hypothesis draws stay as they were; their
        # coroutines run on the simulator's VirtualLoop (virtual time, seeded order).
        # With ASYNC_FRACTION 0.25 and ASYNC_TIMEOUT the ci run alone catches every
        # bug of tests/model/planted.py's CATALOGUE (at 0 it missed five, left to the
        # swarm); tests/aio/test_async_model.py forces every example async
        self.async_rng = random.Random(f"model-async-{seed}")
        self.asynchronous = self.async_rng.random() < ASYNC_FRACTION
        self.processing_timeout = (
            ASYNC_TIMEOUT if self.asynchronous and self.async_rng.random() < 0.5 else None
        )
        note(
            f"simulator seed {seed}, asynchronous handlers {self.asynchronous}, "
            f"processing_timeout {self.processing_timeout}"
        )
        self.batch = batch
        type(self).steps_run = 0
        logger = logging.getLogger("offsetledger")
        self._log_level = logger.level
        logger.setLevel(logging.CRITICAL)  # warnings are expected under faults
        self.world = World(seed=seed)
        self.world.faults.slow_task_seconds = 40.0  # past max.poll.interval.ms below
        self.world.faults.clock_jump_seconds = 3.0
        self.partitions = partitions
        self.readable_end = [0] * partitions
        self.ordering, self.commit_mode, self.workers = ordering, commit_mode, workers
        self.strategy = strategy
        self.dead_letter = dead_letter
        self.limits = BufferLimits(per_partition=limits[0], total=limits[1], batch_size=BATCH)
        self.handler = PipelineHandler(partitions)
        for topic in (INPUT, *OUTPUTS, DEAD_LETTER):
            self.world.create_topic(topic, partitions)
        self.world.configure_group(GROUP, session_timeout_ms=1500)  # KIP-848: the broker's
        for _ in range(members):
            self._add_member()

    def _handler(self) -> object:
        if self.asynchronous:
            return as_async_handler(self.handler, self.async_rng, batch=self.batch)
        return as_batch_handler(self.handler) if self.batch else self.handler

    def _add_member(self) -> _Member:
        member = _Member(f"m{self.next_member}")
        self.next_member += 1
        self.members[member.name] = member
        self._start(member)
        return member

    def _start(self, member: _Member) -> None:
        world, name = self.world, member.name
        auto = self.commit_mode is CommitMode.AUTO
        consumer = world.consumer(
            {
                "group.id": GROUP,
                "enable.auto.offset.store": False,
                "enable.auto.commit": auto,
                "auto.commit.interval.ms": 500,
                "auto.offset.reset": "earliest",
                "max.poll.interval.ms": 30_000,
                **(
                    {"group.protocol": "consumer"}
                    if self.strategy == "kip848"
                    else {
                        "session.timeout.ms": 1500,
                        "partition.assignment.strategy": self.strategy,
                    }
                ),
            },
            name,
        )
        member.producer = world.producer({"message.timeout.ms": 2000}, name=name)
        member.executor = world.executor(name, task_cost=0.0005)
        member.processor = Processor(
            consumer,
            member.producer,
            self._handler(),  # type: ignore[arg-type]
            topics=[INPUT],
            executor=member.executor,
            clock=world.clock,
            config=ProcessorConfig(
                batch_size=BATCH,
                poll_timeout=0.05,
                ordering=self.ordering,
                max_in_flight_total=min(self.workers, self.limits.total),
                max_in_flight_per_partition=min(self.workers, self.limits.per_partition),
                max_buffered_per_partition=self.limits.per_partition,
                max_buffered_total=self.limits.total,
                retry=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.05),
                dead_letter_topic=DEAD_LETTER if self.dead_letter else None,
                processing_timeout=self.processing_timeout,
                drain_timeout=0.5,
                shutdown_timeout=2.0,
                commit_mode=self.commit_mode,
                commit_every_records=3,
                commit_interval=0.3,
            ),
            metrics=InMemoryMetrics(),
        )

    # -- helpers ----------------------------------------------------------------------

    def _pick(self, who: int, *, alive: bool | None = True) -> _Member | None:
        names = [
            n
            for n, m in self.members.items()
            if alive is None or (m.processor is not None) == alive
        ]
        return self.members[names[who % len(names)]] if names else None

    def _live(self) -> list[_Member]:
        return [m for m in self.members.values() if m.processor is not None]

    def _dead(self) -> list[_Member]:
        return [m for m in self.members.values() if m.processor is None]

    def _guard(self, member: _Member, action: str) -> None:
        """Run ``action`` on ``member``; a crash (a fault at a client call) kills it."""
        assert member.processor is not None
        try:
            if action == "step":
                if member.processor.state is ProcessorState.CLOSED:
                    member.processor = None
                    return
                member.processor.step()
            elif action == "executor":
                assert member.executor is not None
                member.executor.run_all()
            elif action == "reports":
                assert member.producer is not None
                member.producer.poll(0.0)
        except ProcessCrashed:
            self._discard(member)

    def _discard(self, member: _Member) -> None:
        member.processor = None
        member.executor = None
        member.producer = None

    def _append(self, partition: int, *, poison: bool, outputs: int = 1) -> None:
        n = self.appended
        self.appended += 1
        bad = b"poison" if self.dead_letter else b"flaky"  # without a DLQ poison stalls
        value = b"%s-%d-n%d" % (bad if poison else b"value", n, outputs)
        offset = self.world.append(INPUT, partition, key=b"k%d" % (n % 5), value=value)
        self.readable_end[partition] = offset + 1

    def _bump(self) -> None:
        type(self).steps_run += 1

    # -- rules ------------------------------------------------------------------------

    @rule(
        partition=st.integers(0, 2),
        count=st.integers(1, 8),
        poison=st.booleans(),
        gap=st.booleans(),
        outputs=st.lists(st.integers(0, 4), min_size=1, max_size=8),
    )
    def produce_input(
        self, partition: int, count: int, poison: bool, gap: bool, outputs: list[int]
    ) -> None:
        """Append ``count`` inputs to one partition, with 0..4 outputs each (cycling
        through ``outputs``); the first may be poison (it goes to the dead-letter
        topic, or without one fails three times and then succeeds); a control offset
        (gap) may follow."""
        self._bump()
        p = partition % self.partitions
        for i in range(count):
            self._append(p, poison=poison and i == 0, outputs=outputs[i % len(outputs)])
        if gap:
            self.world.append_gap(INPUT, p)

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS), times=st.integers(1, 8))
    def step_one(self, who: int, times: int) -> None:
        """Step one live processor (poll, dispatch, collect, produce, store, commit)."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        for _ in range(times):
            if member.processor is None:
                break
            self._guard(member, "step")

    @precondition(lambda self: bool(self._live()))
    @rule(rounds=st.integers(1, 10))
    def step_all(self, rounds: int) -> None:
        """Step every live processor round-robin."""
        self._bump()
        for _ in range(rounds):
            for member in self._live():
                self._guard(member, "step")

    @precondition(lambda self: bool(self._live()))
    @rule(rounds=st.integers(10, 40), produce=st.integers(0, 2))
    def run_for_a_while(self, rounds: int, produce: int) -> None:
        """Step every live processor for many rounds, appending ``produce`` inputs to
        a seeded partition each round (the steady state between the events)."""
        self._bump()
        for _ in range(rounds):
            for _ in range(produce):
                rng = self.world.rng
                self._append(rng.randrange(self.partitions), poison=False, outputs=rng.randrange(4))
            for member in self._live():
                self._guard(member, "step")

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def run_executor(self, who: int) -> None:
        """Finish every queued handler task of one member now (in a seeded order),
        as a thread pool would in the background; the Processor sees them later."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        self._guard(member, "executor")

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def serve_reports(self, who: int) -> None:
        """Serve one member's ready delivery reports outside its step."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        self._guard(member, "reports")

    @rule(
        kind=st.sampled_from(SCHEDULABLE),
        who=st.integers(0, MAX_MEMBERS),
        anyone=st.booleans(),
        times=st.integers(1, 3),
    )
    def schedule_fault(self, kind: str, who: int, anyone: bool, times: int) -> None:
        """Arm a fault for the next ``times`` opportunities of one member (or of anyone)."""
        self._bump()
        member = self._pick(who, alive=None)
        target = None if anyone or member is None else member.name
        self.world.faults.schedule(kind, target=target, times=times)

    @rule(
        kind=st.sampled_from(RATED),
        probability=st.sampled_from([0.0, 0.1, 0.3]),
    )
    def fault_rate(self, kind: str, probability: float) -> None:
        """Fire a fault kind at every opportunity with ``probability`` (0: stop),
        drawn from the world's seeded random stream, until changed."""
        self._bump()
        self.world.faults.set_probability(kind, probability)

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def crash(self, who: int) -> None:
        """kill -9 of one member's process; its Processor is discarded."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        self.world.crash(member.name)
        self._discard(member)

    @precondition(lambda self: bool(self._dead()))
    @rule(who=st.integers(0, MAX_MEMBERS), new_name=st.booleans())
    def restart(self, who: int, new_name: bool) -> None:
        """Restart a dead member with fresh clients, under its name or a new one."""
        self._bump()
        member = self._pick(who, alive=False)
        assert member is not None
        if new_name:
            del self.members[member.name]
            self._add_member()
        else:
            self._start(member)

    @precondition(lambda self: len(self.members) < MAX_MEMBERS)
    @rule()
    def join(self) -> None:
        """A new member joins the group."""
        self._bump()
        self._add_member()

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def leave(self, who: int) -> None:
        """A member stops gracefully (drain, flush, commit, close) and leaves."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        assert member.processor is not None
        with contextlib.suppress(ProcessCrashed):  # a scheduled crash during the close
            member.processor.stop()
        del self.members[member.name]

    @rule(partition=st.integers(0, 2), amount=st.integers(1, 3))
    def truncate(self, partition: int, amount: int) -> None:
        """Retention moves an input partition's log start forward."""
        self._bump()
        p = partition % self.partitions
        start, end = self.world.log_start(INPUT, p), self.world.end_offset(INPUT, p)
        if end > start:
            self.world.truncate(INPUT, p, min(start + amount, end))

    @rule(seconds=st.sampled_from([0.05, 0.4, 2.0, 7.0, 35.0]))
    def advance(self, seconds: float) -> None:
        """Let virtual time pass: auto-commits, delivery reports, session timeouts of
        crashed members, max.poll.interval evictions of members that do not poll."""
        self._bump()
        self.world.advance(seconds)

    # -- invariants -------------------------------------------------------------------

    def _check(self, *, final_drain: bool) -> Report:
        events = self.world.history.events
        base = check(
            events,
            inputs=[INPUT],
            outputs=OUTPUTS,
            dead_letter=DEAD_LETTER,
            group=GROUP,
            final_drain=final_drain,
        )
        return check_workload(
            events,
            base,
            inputs=[INPUT],
            outputs=OUTPUTS,
            dead_letter=DEAD_LETTER,
            expected_outputs=expected_outputs,
            final_drain=final_drain,
            ordering=_ORDERING.get(self.ordering),
            limits=self.limits,
        )

    @invariant()
    def history_is_safe(self) -> None:
        """CommitSafety, CommitMonotonic, NoCommitAfterRevoke, PollContiguity,
        NoPhantom and DuplicatesExplained over the history so far."""
        report = self._check(final_drain=False)
        assert report.ok, (
            f"simulator seed {self.world.seed}: anomalies in the history so far: "
            f"{_counts(report)}\n" + report.summary(limit=5)
        )

    # -- final drain ------------------------------------------------------------------

    def _drained(self) -> bool:
        world = self.world
        for p, end in enumerate(self.readable_end):
            if end <= world.log_start(INPUT, p):
                continue  # nothing readable is left (retention)
            position = world.committed(GROUP, INPUT, p).position
            if position is None or position < end:
                return False
        return all(m.processor is None or m.processor.in_flight == 0 for m in self.members.values())

    def teardown(self) -> None:
        """Stop the faults, restart the dead, step until every input partition is
        committed to its last readable record, stop everyone, then check for LOST
        and every other anomaly."""
        try:
            self._final_drain()
        finally:
            logging.getLogger("offsetledger").setLevel(self._log_level)

    def _final_drain(self) -> None:
        self.world.faults.clear()
        for member in self._dead():
            self._start(member)
        if not self.members:
            self._add_member()
        rounds = 0
        drained = self._drained()
        while not drained and rounds < DRAIN_ROUNDS:
            for member in self._live():
                self._guard(member, "step")
            rounds += 1
            drained = self._drained()
        for member in self._live():
            assert member.processor is not None
            member.processor.stop()
        report = self._check(final_drain=drained)
        positions = {
            p: (
                self.world.committed(GROUP, INPUT, p).position,
                self.readable_end[p],
                self.world.log_start(INPUT, p),
            )
            for p in range(self.partitions)
        }
        assert drained, (
            f"simulator seed {self.world.seed}: not drained after {DRAIN_ROUNDS} rounds; "
            f"partition -> (committed, readable end, log start): {positions}\n"
            + report.summary(limit=5)
        )
        assert report.ok, (
            f"simulator seed {self.world.seed}: anomalies after the final drain: "
            f"{_counts(report)}\n" + report.summary(limit=5)
        )


def run_machine(profile: str | None = None) -> None:
    """Run the machine as a test with :func:`machine_settings` (raises on failure)."""
    run_state_machine_as_test(SystemMachine, settings=machine_settings(profile))


def test_system_model() -> None:
    """The whole system keeps every invariant under any program of the machine."""
    run_machine()

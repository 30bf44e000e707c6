"""Model-based test of the whole system in exactly-once mode
(``CommitMode.TRANSACTIONAL``): Processors with transactional producers on the
simulator's transactions, read_committed consumers, under an arbitrary interleaving
of inputs, steps, executor runs, delivery reports, faults (the transactional ones
included: an abortable commit, an unavailable coordinator, a fenced producer),
crashes mid-transaction, restarts, membership changes, retention and time.

After every rule the history so far is checked with the exactly-once verdicts
(:func:`~offsetledger.checker.check_pipeline` with ``exactly_once=True``,
``final_drain=False``): no commit past an input without committed outputs, no
output outside a transaction, nothing read uncommitted, no input with outputs in
two committed transactions, and the at-least-once invariants over what a
read_committed reader sees. At the end (``teardown``) the faults stop, the dead
restart, every member steps until each input partition is committed up to its last
readable record, everyone stops, and the whole verdict (EO_LOST and LOST included)
must find nothing.

A member whose producer is fenced (``ProcessorMustRestartError``) exits: its
process is killed, as a supervisor would, and a ``restart`` rule brings it back
(under its name: the new producer's ``init_transactions`` fences what is left).
The machine is its own (``tests/model/test_system_model.py`` is the at-least-once
one); ``benchmarks/planted_bugs.py`` runs it against the exactly-once planted bugs.
"""

from __future__ import annotations

import contextlib
import logging
import os
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

from offsetledger.checker import BufferLimits, Report, check_pipeline
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorMustRestartError,
    ProcessorState,
    RetryPolicy,
)
from offsetledger.scenario import OUTPUTS, PipelineHandler, expected_outputs
from offsetledger.simulator import ProcessCrashed, SimExecutor, SimTransactionalProducer, World
from offsetledger.testing._observer import observer

__all__ = ["TransactionalSystemMachine", "run_txn_machine", "txn_machine_settings"]

GROUP = "model-txn"
INPUT, DEAD_LETTER = "in", "dlq"
MAX_MEMBERS = 3
DRAIN_ROUNDS = 3_000
BATCH = 5

#: Faults a rule may schedule (for one member's opportunity, or anyone's).
SCHEDULABLE = (
    "delivery_retriable",
    "delivery_timeout",
    "delivery_fatal",
    "ack_lost",
    "rebalance",
    "assignment_lost",
    "empty_poll",
    "slow_task",
    "clock_jump",
    "crash",
    "txn_abortable",
    "txn_coordinator_unavailable",
    "txn_fenced",
)
#: Faults a rule may give a probability (per opportunity, for anyone).
RATED = ("delivery_retriable", "ack_lost", "empty_poll", "txn_abortable")

_ORDERING: dict[OrderingMode, Literal["key", "partition"]] = {
    OrderingMode.KEY: "key",
    OrderingMode.PARTITION: "partition",
}


def txn_machine_settings(profile: str | None = None) -> settings:
    """The machine's hypothesis settings for ``profile`` (default: the
    ``HYPOTHESIS_PROFILE`` environment variable, else ``ci``): ``ci`` derandomized,
    ``nightly`` random and long, ``dev`` quick; no example database."""
    name = profile if profile is not None else os.environ.get("HYPOTHESIS_PROFILE", "ci")
    common: dict[str, object] = {
        "deadline": None,
        "database": None,
        "print_blob": True,
        "suppress_health_check": list(HealthCheck),
    }
    if name == "nightly":
        return settings(max_examples=500, stateful_step_count=100, **common)  # type: ignore[arg-type]
    if name == "dev":
        return settings(max_examples=10, stateful_step_count=30, **common)  # type: ignore[arg-type]
    return settings(derandomize=True, max_examples=100, stateful_step_count=50, **common)  # type: ignore[arg-type]


def _counts(report: Report) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(report.counts().items()))


class _Member:
    """One application process: a Processor with its own clients (None when dead)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.processor: Processor | None = None
        self.executor: SimExecutor | None = None
        self.producer: SimTransactionalProducer | None = None


class TransactionalSystemMachine(RuleBasedStateMachine):
    """Transactional Processors, the simulated cluster and its faults, driven by
    hypothesis; every history judged by the exactly-once verdicts."""

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
        self.workers = 1
        self.strategy = "range"
        self.dead_letter = True
        self.limits = BufferLimits(per_partition=8, total=16, batch_size=BATCH)
        self.handler = PipelineHandler()
        #: (transaction_interval, transaction_records): short or long transactions
        self.transaction = (0.3, 3)
        self._log_level = logging.NOTSET

    # -- set-up -----------------------------------------------------------------------

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        partitions=st.integers(1, 3),
        members=st.integers(1, 2),
        ordering=st.sampled_from(list(OrderingMode)),
        workers=st.sampled_from([1, 3]),
        strategy=st.sampled_from(["range", "cooperative-sticky", "kip848"]),
        dead_letter=st.booleans(),
        limits=st.sampled_from([(8, 16), (3, 16), (2, 3)]),
        transaction=st.sampled_from([(0.3, 3), (2.0, 20)]),
    )
    def setup(  # noqa: PLR0917 - hypothesis passes the drawn values by keyword
        self,
        seed: int,
        partitions: int,
        members: int,
        ordering: OrderingMode,
        workers: int,
        strategy: str,
        dead_letter: bool,
        limits: tuple[int, int],
        transaction: tuple[float, int],
    ) -> None:
        note(f"simulator seed {seed}")
        self.transaction = transaction
        type(self).steps_run = 0
        logger = logging.getLogger("offsetledger")
        self._log_level = logger.level
        logger.setLevel(logging.CRITICAL)  # warnings are expected under faults
        self.world = World(seed=seed)
        self.world.faults.slow_task_seconds = 40.0
        self.world.faults.clock_jump_seconds = 3.0
        self.partitions = partitions
        self.readable_end = [0] * partitions
        self.ordering, self.workers, self.strategy = ordering, workers, strategy
        self.dead_letter = dead_letter
        self.limits = BufferLimits(per_partition=limits[0], total=limits[1], batch_size=BATCH)
        self.handler = PipelineHandler(partitions)
        for topic in (INPUT, *OUTPUTS, DEAD_LETTER):
            self.world.create_topic(topic, partitions)
        self.world.configure_group(GROUP, session_timeout_ms=1500)
        for _ in range(members):
            self._add_member()

    def _add_member(self) -> _Member:
        member = _Member(f"m{self.next_member}")
        self.next_member += 1
        self.members[member.name] = member
        self._start(member)
        return member

    def _start(self, member: _Member) -> None:
        world, name = self.world, member.name
        consumer = world.consumer(
            {
                "group.id": GROUP,
                "enable.auto.offset.store": False,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
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
        member.producer = world.transactional_producer(
            {
                "transactional.id": f"txn-{name}",
                "message.timeout.ms": 2000,
                "transaction.timeout.ms": 5000,
            },
            name,
            member=name,
        )
        member.executor = world.executor(name, task_cost=0.0005)
        member.processor = Processor(
            consumer,
            member.producer,
            self.handler,
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
                drain_timeout=0.5,
                shutdown_timeout=2.0,
                commit_mode=CommitMode.TRANSACTIONAL,
                transaction_interval=self.transaction[0],
                transaction_records=self.transaction[1],
                transaction_call_timeout=1.0,
            ),
            metrics=InMemoryMetrics(),
            observer=observer(world, name),
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
        """Run ``action`` on ``member``; a crash kills it, and so does a producer that
        must restart (the process exits: its clients die with it)."""
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
        except ProcessorMustRestartError:
            self.world.crash(member.name)
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
        """Append ``count`` inputs to one partition, with 0..4 outputs each; the first
        may be poison; a control offset (gap) may follow."""
        self._bump()
        p = partition % self.partitions
        for i in range(count):
            self._append(p, poison=poison and i == 0, outputs=outputs[i % len(outputs)])
        if gap:
            self.world.append_gap(INPUT, p)

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS), times=st.integers(1, 8))
    def step_one(self, who: int, times: int) -> None:
        """Step one live processor."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        for _ in range(times):
            if member.processor is None:
                break
            self._guard(member, "step")

    @precondition(lambda self: bool(self._live()))
    @rule(rounds=st.integers(1, 30), produce=st.integers(0, 2))
    def run_for_a_while(self, rounds: int, produce: int) -> None:
        """Step every live processor round-robin, appending ``produce`` inputs to a
        seeded partition each round."""
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
        """Finish every queued handler task of one member now (in a seeded order)."""
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
        """Arm a fault for the next ``times`` opportunities of one member (or anyone)."""
        self._bump()
        member = self._pick(who, alive=None)
        target = None if anyone or member is None else member.name
        self.world.faults.schedule(kind, target=target, times=times)

    @rule(kind=st.sampled_from(RATED), probability=st.sampled_from([0.0, 0.1, 0.3]))
    def fault_rate(self, kind: str, probability: float) -> None:
        """Fire a fault kind at every opportunity with ``probability`` (0: stop)."""
        self._bump()
        self.world.faults.set_probability(kind, probability)

    def _in_transaction(self) -> list[_Member]:
        return [m for m in self._live() if m.producer is not None and m.producer.in_transaction]

    @precondition(lambda self: bool(self._in_transaction()))
    @rule(
        who=st.integers(0, MAX_MEMBERS),
        kind=st.sampled_from(["assignment_lost", "rebalance", "crash", "txn_abortable"]),
    )
    def fault_mid_transaction(self, who: int, kind: str) -> None:
        """While a member's transaction is open (outputs in it): at its next step it
        loses its partitions, its group rebalances (a revoke mid-transaction), it
        crashes, or its commit fails abortably."""
        self._bump()
        members = self._in_transaction()
        member = members[who % len(members)]
        self.world.faults.schedule(kind, target=member.name)
        self._guard(member, "step")

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def crash(self, who: int) -> None:
        """kill -9 of one member's process (mid-transaction, when one is open)."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        self.world.crash(member.name)
        self._discard(member)

    @precondition(lambda self: bool(self._dead()))
    @rule(who=st.integers(0, MAX_MEMBERS), new_name=st.booleans())
    def restart(self, who: int, new_name: bool) -> None:
        """Restart a dead member with fresh clients, under its name (its new producer
        fences the old one) or a new one (the old transaction is left to time out)."""
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
        """A new member joins the group (a revoke mid-transaction for the others)."""
        self._bump()
        self._add_member()

    @precondition(lambda self: bool(self._live()))
    @rule(who=st.integers(0, MAX_MEMBERS))
    def leave(self, who: int) -> None:
        """A member stops gracefully (drain, flush, commit its transaction, close)."""
        self._bump()
        member = self._pick(who)
        assert member is not None
        assert member.processor is not None
        try:
            with contextlib.suppress(ProcessCrashed):
                member.processor.stop()
        except ProcessorMustRestartError:
            self.world.crash(member.name)
        del self.members[member.name]

    @rule(partition=st.integers(0, 2), amount=st.integers(1, 3))
    def truncate(self, partition: int, amount: int) -> None:
        """Retention moves an input partition's log start forward."""
        self._bump()
        p = partition % self.partitions
        start, end = self.world.log_start(INPUT, p), self.world.end_offset(INPUT, p)
        if end > start:
            self.world.truncate(INPUT, p, min(start + amount, end))

    @rule(seconds=st.sampled_from([0.05, 0.4, 2.0, 7.0]))
    def advance(self, seconds: float) -> None:
        """Let virtual time pass: delivery reports, session timeouts of crashed
        members, transaction timeouts of their open transactions."""
        self._bump()
        self.world.advance(seconds)

    # -- invariants -------------------------------------------------------------------

    def _check(self, *, final_drain: bool) -> Report:
        return check_pipeline(
            self.world.history.events,
            inputs=[INPUT],
            outputs=OUTPUTS,
            dead_letter=DEAD_LETTER,
            group=GROUP,
            expected_outputs=expected_outputs,
            final_drain=final_drain,
            ordering=_ORDERING.get(self.ordering),
            limits=self.limits,
            exactly_once=True,
        )

    @invariant()
    def history_is_exactly_once(self) -> None:
        """The exactly-once and at-least-once verdicts over the history so far."""
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
                continue
            position = world.committed(GROUP, INPUT, p).position
            if position is None or position < end:
                return False
        return all(m.processor is None or m.processor.in_flight == 0 for m in self.members.values())

    def teardown(self) -> None:
        """Stop the faults, restart the dead, step until drained, stop everyone, then
        the whole verdict (EO_LOST and LOST included) must find nothing."""
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
            for member in self._dead():  # a producer fenced during the drain: restart
                self._start(member)
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


def run_txn_machine(profile: str | None = None) -> None:
    """Run the machine as a test with :func:`txn_machine_settings` (raises on failure)."""
    run_state_machine_as_test(TransactionalSystemMachine, settings=txn_machine_settings(profile))


def test_transactional_system_model() -> None:
    """The whole system keeps the exactly-once verdicts under any program."""
    run_txn_machine()

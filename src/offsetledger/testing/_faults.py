"""One fault vocabulary for the testing API, the CLI and the scenario.

:class:`Fault` names what can go wrong in a simulated run; each member maps to the
simulator's fault kinds (:data:`offsetledger.simulator.FAULT_KINDS`) that realise
it. :meth:`Fault.parse` accepts the enum's value (``ack-lost``), its name
(``ACK_LOST``, ``ack_lost``) and the simulator's kind names (``assignment_lost``,
``commit_unavailable``), so every spelling a user has met means one thing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from offsetledger.simulator import FAULT_KINDS

__all__ = ["DEFAULT_FAULTS", "Fault", "parse_faults"]


class Fault(enum.StrEnum):
    """A kind of fault a simulation injects."""

    #: kill -9 of a member at a client call; it restarts (under a new name) later
    CRASH = "crash"
    #: an output's delivery fails (retriable error or timeout)
    DELIVERY = "delivery"
    #: an output's or dead-letter record's delivery fails non-retriably
    FATAL_DELIVERY = "fatal-delivery"
    #: an output is written but its delivery report says it failed
    ACK_LOST = "ack-lost"
    #: a commit fails with COORDINATOR_NOT_AVAILABLE
    COMMIT = "commit"
    #: a commit is rejected with ILLEGAL_GENERATION
    FENCED = "fenced"
    #: the group rebalances
    REBALANCE = "rebalance"
    #: a member is evicted: its partitions are lost
    LOST = "lost"
    #: a handler takes longer than max.poll.interval.ms
    SLOW = "slow"
    #: a poll returns nothing
    EMPTY_POLL = "empty-poll"
    #: the clock jumps forward
    CLOCK_JUMP = "clock-jump"
    #: retention truncates a partition
    TRUNCATE = "truncate"
    #: members join and leave gracefully
    MEMBERSHIP = "membership"
    #: some inputs always fail in the handler (the scenario's workload only)
    POISON = "poison"
    #: control offsets (transaction markers) in the input log
    GAPS = "gaps"
    #: (transactional mode) commit_transaction fails abortably: abort and rewind
    TXN_ABORTABLE = "txn-abortable"
    #: (transactional mode) the transaction coordinator is unavailable for a call
    TXN_COORDINATOR = "txn-coordinator"
    #: (transactional mode) a newer instance of the transactional.id fences the producer
    TXN_FENCED = "txn-fenced"

    @property
    def kinds(self) -> tuple[str, ...]:
        """The simulator fault kinds this fault arms (none: the driver does it)."""
        return _KINDS[self]

    @property
    def meaning(self) -> str:
        return _MEANING[self]

    @classmethod
    def parse(cls, name: str | Fault) -> Fault:
        """The fault a name means, in any of its spellings; ValueError naming the
        known ones otherwise."""
        if isinstance(name, Fault):
            return name
        text = str(name).strip().lower()
        for candidate in (text, text.replace("_", "-")):
            try:
                return cls(candidate)
            except ValueError:
                pass
        for fault, kinds in _KINDS.items():
            if text in kinds:
                return fault
        known = ", ".join(f.value for f in cls)
        raise ValueError(f"unknown fault {name!r}; known: {known}")


_KINDS: dict[Fault, tuple[str, ...]] = {
    Fault.CRASH: ("crash",),
    Fault.DELIVERY: ("delivery_retriable", "delivery_timeout"),
    Fault.FATAL_DELIVERY: ("delivery_fatal",),
    Fault.ACK_LOST: ("ack_lost",),
    Fault.COMMIT: ("commit_unavailable",),
    Fault.FENCED: ("commit_fenced",),
    Fault.REBALANCE: ("rebalance",),
    Fault.LOST: ("assignment_lost",),
    Fault.SLOW: ("slow_task",),
    Fault.EMPTY_POLL: ("empty_poll",),
    Fault.CLOCK_JUMP: ("clock_jump",),
    Fault.TRUNCATE: ("truncate",),
    Fault.MEMBERSHIP: (),
    Fault.POISON: (),
    Fault.GAPS: (),
    Fault.TXN_ABORTABLE: ("txn_abortable",),
    Fault.TXN_COORDINATOR: ("txn_coordinator_unavailable",),
    Fault.TXN_FENCED: ("txn_fenced",),
}
_MEANING: dict[Fault, str] = {
    Fault.CRASH: "kill -9 of a member at a client call; it restarts later",
    Fault.DELIVERY: "an output's delivery fails (retriable error or timeout)",
    Fault.FATAL_DELIVERY: "an output's or dead-letter record's delivery fails non-retriably",
    Fault.ACK_LOST: "an output is written but its report says it failed",
    Fault.COMMIT: "a commit fails with COORDINATOR_NOT_AVAILABLE",
    Fault.FENCED: "a commit is rejected with ILLEGAL_GENERATION",
    Fault.REBALANCE: "the group rebalances",
    Fault.LOST: "a member is evicted: its partitions are lost",
    Fault.SLOW: "a handler takes longer than max.poll.interval.ms",
    Fault.EMPTY_POLL: "a poll returns nothing",
    Fault.CLOCK_JUMP: "the clock jumps forward",
    Fault.TRUNCATE: "retention truncates a partition",
    Fault.MEMBERSHIP: "members join and leave gracefully",
    Fault.POISON: "some inputs always fail in the handler (scenario workload)",
    Fault.GAPS: "control offsets (transaction markers) in the input log",
    Fault.TXN_ABORTABLE: "commit_transaction fails abortably: the transaction is aborted "
    "and the partitions rewound (transactional mode)",
    Fault.TXN_COORDINATOR: "the transaction coordinator is unavailable for a transactional "
    "call (transactional mode)",
    Fault.TXN_FENCED: "a newer instance of the transactional.id fences the producer: the "
    "process must restart (transactional mode)",
}
assert all(k in FAULT_KINDS for kinds in _KINDS.values() for k in kinds)

#: What :func:`offsetledger.testing.simulate` injects unless told otherwise.
DEFAULT_FAULTS: frozenset[Fault] = frozenset(
    {
        Fault.CRASH,
        Fault.DELIVERY,
        Fault.ACK_LOST,
        Fault.COMMIT,
        Fault.REBALANCE,
        Fault.LOST,
        Fault.MEMBERSHIP,
        Fault.GAPS,
    }
)


def parse_faults(names: Iterable[str | Fault]) -> frozenset[Fault]:
    """A set of faults from names in any spelling (see :meth:`Fault.parse`)."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    return frozenset(Fault.parse(n) for n in names)

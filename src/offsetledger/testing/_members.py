"""The application processes of a simulated run, shared by the scenario runner
(:mod:`offsetledger.scenario`, the swarm and the CLI) and
:func:`offsetledger.testing.simulate`: a Processor with its own clients that can
crash, be restarted a few rounds later, stop gracefully, and members that join
and leave while the run is under way."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

from offsetledger.core import BrokerError
from offsetledger.runtime import (
    InMemoryMetrics,
    Processor,
    ProcessorMustRestartError,
    ProcessorState,
)
from offsetledger.simulator import ProcessCrashed

__all__ = ["MemberPool", "SimulatedMember"]

#: builds a member's Processor (with fresh clients) for its current name
Build = Callable[["SimulatedMember"], Processor]

_LIVE = (ProcessorState.CREATED, ProcessorState.RUNNING, ProcessorState.REBALANCING)
#: errors that are fatal for the client: the process exits (and is restarted later)
FATAL = frozenset({"UNRELEASED_INSTANCE_ID", "FENCED_INSTANCE_ID"})


class SimulatedMember:
    """One application process. ``rename_on_restart``: a restarted process is a
    new member (``m0.r1``, ``m0.r2``, ...) rather than the same name again.
    ``on_end(member)`` runs when a process ends (crash or stop), before its
    metrics are replaced. A client error in :data:`FATAL` (a static member's
    instance id still in use, or fenced) ends the process: ``exit(name)`` kills
    its clients (the world's crash), as a process exiting with that error would
    be, and it is restarted like a crashed one; so does a
    :class:`~offsetledger.runtime.ProcessorMustRestartError` (a transactional
    producer fenced by a newer instance, or unusable)."""

    def __init__(
        self,
        base: str,
        build: Build,
        *,
        rename_on_restart: bool = False,
        on_end: Callable[[SimulatedMember], None] | None = None,
        exit: Callable[[str], None] | None = None,  # noqa: A002 - what it models
    ) -> None:
        self.base = base
        self.incarnation = 0
        self.metrics = InMemoryMetrics()
        self.processor: Processor | None = None
        self.restart_at: int | None = None
        self._build = build
        self._rename = rename_on_restart
        self._on_end = on_end
        self._exit = exit
        self.start()

    @property
    def name(self) -> str:
        return self.base if self.incarnation == 0 else f"{self.base}.r{self.incarnation}"

    def start(self) -> None:
        self.processor = self._build(self)
        self.restart_at = None

    @property
    def alive(self) -> bool:
        return self.processor is not None and self.processor.state in _LIVE

    def _ended(self) -> None:
        if self._on_end is not None:
            self._on_end(self)
        self.metrics = InMemoryMetrics()

    def step(self) -> bool:
        """One step; False when the process crashed during it."""
        assert self.processor is not None
        try:
            self.processor.step()
        except BrokerError as exc:
            if exc.name not in FATAL or self._exit is None:
                raise
            self._exit_now()
            return False
        except ProcessorMustRestartError:
            if self._exit is None:
                raise
            self._exit_now()
            return False
        except ProcessCrashed:
            self._ended()
            self.processor = None
            if self._rename:
                self.incarnation += 1
            return False
        return True

    def _exit_now(self) -> None:
        assert self._exit is not None
        self._exit(self.name)
        self._ended()
        self.processor = None
        if self._rename:
            self.incarnation += 1

    def stop(self) -> None:
        """Stop gracefully (a crash fault during close is a crash; a producer that
        must restart during close exits the process)."""
        if self.processor is not None and self.alive:
            try:
                with contextlib.suppress(ProcessCrashed):
                    self.processor.stop()
            except ProcessorMustRestartError:
                if self._exit is None:
                    raise
                self._exit(self.name)
            self._ended()
        self.processor = None


class MemberPool:
    """The members of a run and the rounds that step them.

    A round steps every live member once; a member that crashed restarts
    ``1..19`` rounds later (at once outside chaos). With ``churn`` one round in a
    hundred either stops a random live member (when more than one is alive) or
    adds a new one (up to ``max_members``). Every choice comes from ``rng``."""

    def __init__(
        self,
        rng: random.Random,
        new_member: Callable[[str], SimulatedMember],
        *,
        churn: bool,
        max_members: int,
    ) -> None:
        self.rng = rng
        self.members: list[SimulatedMember] = []
        self.joins = 0
        self.leaves = 0
        self._new = new_member
        self._churn = churn
        self._max = max_members
        self._next = 0

    def add(self) -> SimulatedMember:
        member = self._new(f"m{self._next}")
        self._next += 1
        self.members.append(member)
        return member

    def round(self, rounds: int, *, chaos: bool) -> None:
        rng = self.rng
        for member in list(self.members):
            if member.processor is None:
                if member.restart_at is not None and rounds >= member.restart_at:
                    member.start()
                continue
            if not member.step():
                member.restart_at = rounds + (rng.randrange(1, 20) if chaos else 0)
        if chaos and self._churn and rng.random() < 0.01:
            alive = [m for m in self.members if m.alive]
            if len(alive) > 1 and rng.random() < 0.5:
                victim = rng.choice(alive)
                victim.stop()
                self.members.remove(victim)
                self.leaves += 1
            elif len(self.members) < self._max:
                self.add()
                self.joins += 1

    def restart_dead(self) -> None:
        for member in self.members:
            if member.processor is None:
                member.start()

    def idle(self) -> bool:
        """No member has a record in flight."""
        return all(m.processor is None or m.processor.in_flight == 0 for m in self.members)

    def stop_all(self) -> None:
        for member in self.members:
            member.stop()

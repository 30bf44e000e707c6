"""An async-handler scenario on the simulator, shared by the scenario tests and the
planted-bug tests: members join, one is killed, outputs fail to deliver, attempts
time out, revokes cut coroutines off mid-flight; every coroutine runs on the
simulator's virtual loop (virtual time, seeded order).

The handler (:class:`Probe`) keeps what the checker cannot see:

* the virtual-time interval of every attempt, from its first line to the end of its
  last ``finally`` (cleanup after a cancellation included), per member, so
  :meth:`Probe.overlaps` finds two attempts of one key (KEY) or one partition
  (PARTITION) running at once anywhere in the group;
* a marker in the output value of an attempt that was cancelled and returned
  anyway (``b"CANCELLED"``): such an output must never be produced.

Every draw (latency, stuck, stubborn) comes from a ``random.Random`` seeded by the
scenario's seed; nothing reads the wall clock.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any

import attrs

from offsetledger.core import Outbound, Record
from offsetledger.runtime import (
    OrderingMode,
    Processor,
    ProcessorConfig,
    ProcessorState,
    RetryPolicy,
)
from offsetledger.simulator import ProcessCrashed, World
from tests.processor.helpers import all_committed, make_processor, seed_world

CANCELLED = b"CANCELLED"

#: the scenario's processing_timeout: above what a member waits while the others step
TIMEOUT = 0.15


@attrs.define
class Interval:
    member: str
    record: Record
    start: float
    end: float | None = None
    delay: float = 0.0


class Probe:
    """The async handler of every member, and what it saw."""

    def __init__(
        self,
        seed: int,
        world: World,
        *,
        stuck: float = 0.1,
        stubborn: float = 0.3,
        max_latency: float = 0.02,
        cleanup: float = 0.05,
    ) -> None:
        self._rng = random.Random(seed * 7919 + 1)
        self._world = world
        self.stuck = stuck
        self.stubborn = stubborn
        self.max_latency = max_latency
        self.cleanup = cleanup
        self.intervals: list[Interval] = []
        self.cancelled = 0
        #: attempts cancelled at processing_timeout (seen from inside the handler)
        self.timeouts = 0

    def handler(self, member: str) -> Callable[[Record], Any]:
        async def handle(record: Record) -> list[Outbound]:
            return await self._handle(member, record)

        return handle

    async def _handle(self, member: str, record: Record) -> list[Outbound]:
        loop = asyncio.get_running_loop()
        interval = Interval(member, record, loop.time())
        self.intervals.append(interval)
        rng = self._rng
        delay = 2.0 if rng.random() < self.stuck else rng.uniform(0.001, self.max_latency)
        stubborn = rng.random() < self.stubborn
        interval.delay = delay
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            if loop.time() - interval.start >= TIMEOUT - 1e-6:
                self.timeouts += 1
            await asyncio.sleep(self.cleanup)  # e.g. closing a connection
            if stubborn:  # swallows the cancellation and returns: must not count
                return [Outbound("out", value=CANCELLED, key=record.key)]
            raise
        finally:
            if interval.end is None:  # (not already ended by a crash)
                interval.end = loop.time()
        return [Outbound("out", value=(record.value or b"").upper(), key=record.key)]

    def crashed(self, member: str) -> None:
        """``member`` was killed: its coroutines are gone with it."""
        now = self._world.clock.now()
        for interval in self.intervals:
            if interval.member == member and interval.end is None:
                interval.end = now

    def overlaps(self, ordering: OrderingMode) -> list[str]:
        """Attempts of one ordering slot that ran at the same time (any members)."""
        if ordering is OrderingMode.UNORDERED:
            return []
        slots: dict[Hashable, list[Interval]] = defaultdict(list)
        for interval in self.intervals:
            rec = interval.record
            slot: Hashable = (
                (rec.topic, rec.partition)
                if ordering is OrderingMode.PARTITION
                else (rec.topic, rec.partition, rec.key)
            )
            slots[slot].append(interval)
        problems = []
        for name, intervals in slots.items():
            intervals.sort(key=lambda i: i.start)
            busy_until, busy_by = -1.0, None
            for i in intervals:
                if i.start < busy_until - 1e-9:
                    problems.append(
                        f"slot {name!r}: {i.member} started offset {i.record.offset} at "
                        f"{i.start:.6f} while {busy_by} ran until {busy_until:.6f}"
                    )
                end = i.end if i.end is not None else float("inf")
                if end > busy_until:
                    busy_until = end
                    busy_by = f"{i.member} offset {i.record.offset}"
        return problems


def config(ordering: OrderingMode) -> ProcessorConfig:
    return ProcessorConfig(
        poll_timeout=0.01,
        ordering=ordering,
        # well above what a member waits while the others step (their idle polls)
        processing_timeout=TIMEOUT,
        drain_timeout=0.03,  # revokes cut coroutines off mid-flight
        retry=RetryPolicy(max_attempts=6, backoff_base=0.005, backoff_max=0.02),
        dead_letter_topic="dlq",
        max_in_flight_total=200,
    )


@attrs.define
class Outcome:
    world: World
    probe: Probe
    processors: dict[str, Processor]


def run_scenario(
    seed: int,
    ordering: OrderingMode,
    *,
    records: int = 40,
    arriving: int = 80,
    faults: bool = True,
) -> Outcome:
    """Two members, a third joins, the first is killed, a fourth joins; delivery
    faults throughout; ``records`` inputs at the start and one more each round for
    ``arriving`` rounds (so work spans every membership change); run until every
    input is committed, then stop gracefully."""
    world = seed_world(seed, partitions=4, records=records, keys=10, topics=("out", "dlq"))
    appended = records
    if faults:
        world.faults.set_probability("delivery_retriable", 0.05)
        world.faults.set_probability("delivery_timeout", 0.02)
    probe = Probe(seed, world)
    cfg = config(ordering)
    procs: dict[str, Processor] = {}

    def start(member: str) -> None:
        producer = world.producer(
            {"message.timeout.ms": 2000}, name=f"{member}-producer", member=member
        )
        procs[member] = make_processor(
            world, member, probe.handler(member), config=cfg, producer=producer
        )

    def run(rounds: int) -> None:
        nonlocal appended
        for _ in range(rounds):
            if appended < records + arriving:
                key = f"k{appended % 10}".encode()
                world.append("in", appended % 4, key=key, value=f"v{appended}".encode())
                appended += 1
            for member, p in list(procs.items()):
                if p.state in (ProcessorState.CREATED, ProcessorState.RUNNING):
                    try:
                        p.step()
                    except ProcessCrashed:
                        del procs[member]

    start("m1")
    start("m2")
    run(15)
    start("m3")
    run(15)
    world.crash("m1")
    probe.crashed("m1")
    procs.pop("m1")
    run(10)
    start("m4")
    for _ in range(20_000):
        if appended >= records + arriving and all_committed(world):
            break
        run(1)
    else:
        raise AssertionError(f"seed={seed}: not every input committed")
    world.faults.clear()
    for p in procs.values():
        p.stop()
    return Outcome(world, probe, procs)

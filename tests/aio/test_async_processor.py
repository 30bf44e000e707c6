"""Async handlers in the Processor, on the simulator with the virtual event loop:
every ordering mode, delivery faults, processing timeouts, revokes that cut
coroutines off mid-flight, a member killed. Deterministic and seeded: every failure
names its seed. The planted bugs of ``planted_async`` are each caught."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.runtime import OrderingMode, batch_handler
from tests.aio.planted_async import PLANTED
from tests.aio.scenario import CANCELLED, Outcome, config, run_scenario
from tests.processor.helpers import (
    all_committed,
    drive,
    inputs,
    make_processor,
    output_sources,
    seed_world,
)
from tests.processor.invariants import assert_invariants

SEEDS = range(4)

#: the ordering mode each planted bug is searched under, and its seed budget
PLANTED_ORDERING = {
    "timeout_counts_as_done": OrderingMode.UNORDERED,
    "timeout_reported_early": OrderingMode.KEY,
    "revoke_does_not_wait": OrderingMode.KEY,
    "key_bound_dropped": OrderingMode.KEY,
}
PLANTED_SEEDS = range(12)


def problems(outcome: Outcome, ordering: OrderingMode) -> list[str]:
    """What is wrong with a finished scenario (empty: nothing)."""
    world = outcome.world
    found: list[str] = []
    try:
        assert_invariants(world, outputs=("out",), dead_letter="dlq")
    except AssertionError as exc:
        found.append(str(exc))
    found += outcome.probe.overlaps(ordering)
    values = [e.value for p in range(world.topics()["out"]) for e in world.log("out", p)]
    if CANCELLED in values:
        found.append(f"{values.count(CANCELLED)} outputs of cancelled attempts were produced")
    dead = {
        (
            (dict(e.headers)["offsetledger.source.topic"] or b"").decode(),
            int(dict(e.headers)["offsetledger.source.partition"] or b"-1"),
            int(dict(e.headers)["offsetledger.source.offset"] or b"-1"),
        )
        for p in range(world.topics()["dlq"])
        for e in world.log("dlq", p)
    }
    missing = inputs(world) - set(output_sources(world)) - dead
    if missing:  # the handler never filters: every input has an output or a dead letter
        found.append(f"inputs with neither output nor dead letter: {sorted(missing)[:5]}")
    return found


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ordering", list(OrderingMode), ids=lambda o: o.name)
def test_async_handlers_keep_every_guarantee(ordering: OrderingMode, seed: int) -> None:
    outcome = run_scenario(seed, ordering)
    found = problems(outcome, ordering)
    assert not found, f"seed={seed} ordering={ordering.name}:\n" + "\n".join(found)
    assert outcome.probe.cancelled > 0, f"seed={seed}: no attempt was cut off"
    assert outcome.probe.timeouts > 0, f"seed={seed}: no attempt timed out"


@pytest.mark.parametrize("ordering", list(OrderingMode), ids=lambda o: o.name)
def test_same_seed_same_history(ordering: OrderingMode) -> None:
    first = run_scenario(11, ordering).world.trace()
    second = run_scenario(11, ordering).world.trace()
    assert first == second, f"seed=11 ordering={ordering.name}: histories differ"


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_planted_bug_is_caught(bug: str) -> None:
    ordering = PLANTED_ORDERING[bug]
    with PLANTED[bug]():
        for seed in PLANTED_SEEDS:
            found = problems(run_scenario(seed, ordering), ordering)
            if found:
                print(f"planted bug {bug!r} caught at seed={seed}: {found[0][:200]}")
                return
    pytest.fail(f"planted bug {bug!r} not caught in seeds {list(PLANTED_SEEDS)}")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("ordering", list(OrderingMode), ids=lambda o: o.name)
def test_an_async_batch_handler(ordering: OrderingMode, seed: int) -> None:
    """An ``async def`` batch handler: one coroutine per run; a record it fails retries
    on its own (alone), the others are done; nothing lost, deterministic."""

    def run() -> tuple[str, list[str]]:
        world = seed_world(seed, partitions=4, records=60, keys=10, topics=("out", "dlq"))
        world.faults.set_probability("delivery_retriable", 0.05)
        rng = random.Random(seed)
        sizes: list[int] = []

        @batch_handler
        async def handle(records: Sequence[Record]) -> list[Any]:
            sizes.append(len(records))
            await asyncio.sleep(rng.uniform(0.001, 0.02))
            return [
                ValueError("flaky") if rng.random() < 0.2 else [Outbound("out", value=r.value)]
                for r in records
            ]

        p = make_processor(world, "m1", handle, config=config(ordering))  # type: ignore[arg-type]
        drive(world, [p], lambda: all_committed(world), max_steps=20_000)
        p.stop()
        world.faults.clear()
        missing = inputs(world) - set(output_sources(world))
        found = [f"inputs without output: {sorted(missing)[:5]}"] if missing else []
        try:
            assert_invariants(world, outputs=("out",), dead_letter="dlq")
        except AssertionError as exc:
            found.append(str(exc))
        if max(sizes) < 2:
            found.append("no batch of more than one record")
        return world.trace(), found

    trace, found = run()
    assert not found, f"seed={seed} ordering={ordering.name}:\n" + "\n".join(found)
    assert run()[0] == trace, f"seed={seed}: not deterministic"

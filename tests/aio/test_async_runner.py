"""The Runner for async handlers, driven directly with hand-made runs (no Processor):
records come back as they finish, batches whole, abandoned runs never, cancelled
attempts as failures only. Virtual loop, seeded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.runtime._contract import HandlerContractError
from offsetledger.runtime._runners import Run
from offsetledger.runtime._runners.aio import AsyncLoop, AsyncRunner, AttemptCancelledError
from offsetledger.simulator import SimClock, World
from offsetledger.simulator._aio import VirtualLoop

SEEDS = range(8)


class _FakeChunk:
    """Stands in for the Processor's chunk: only ``dead`` is read."""

    dead = False


def _Chunk() -> Any:
    return _FakeChunk()


def _records(n: int) -> list[Record]:
    return [Record("in", 0, i, key=f"k{i}".encode(), value=str(i).encode()) for i in range(n)]


def _runner(
    seed: int, handler: Any, *, batch: bool = False, timeout: float | None = None
) -> AsyncRunner:
    loop = VirtualLoop(SimClock(), random.Random(seed))
    return AsyncRunner(handler, batch=batch, processing_timeout=timeout, executor=AsyncLoop(loop))


def _collect_all(runner: AsyncRunner, rounds: int = 200) -> list[Run]:
    out: list[Run] = []
    for _ in range(rounds):
        if not runner.running():
            return out
        out.extend(runner.collect(1.0))
    raise AssertionError("runs still running")


async def _slow_upper(record: Record) -> list[Outbound]:
    await asyncio.sleep(0.001 * (record.offset % 5))
    return [Outbound("out", value=(record.value or b"").upper())]


@pytest.mark.parametrize("seed", SEEDS)
def test_records_come_back_as_they_finish(seed: int) -> None:
    runner = _runner(seed, _slow_upper)
    chunk = _Chunk()
    run = Run(_records(10), batch=False, chunk=chunk)
    runner.submit(run)
    back = _collect_all(runner)
    offsets = sorted(rec.offset for r in back for rec in r.records)
    assert offsets == list(range(10)), f"seed={seed}: {back}"
    for part in back:
        assert len(part.results) == len(part.records), f"seed={seed}"
        assert part.chunk is chunk, f"seed={seed}"
        for rec, res in zip(part.records, part.results, strict=True):
            assert res == [Outbound("out", value=str(rec.offset).encode())], f"seed={seed}"


def test_a_run_finished_at_once_comes_back_whole() -> None:
    async def fast(record: Record) -> list[Outbound]:
        return []

    runner = _runner(1, fast)
    run = Run(_records(4), batch=False, chunk=_Chunk())
    runner.submit(run)
    assert runner.collect(0.0) == [run]
    assert run.results == [[], [], [], []]
    assert not runner.running()


def test_a_batch_run() -> None:
    async def batch(records: Sequence[Record]) -> list[Any]:
        await asyncio.sleep(0.01)
        return [ValueError("bad") if r.offset == 1 else [] for r in records]

    runner = _runner(2, batch, batch=True)
    run = Run(_records(3), batch=True, chunk=_Chunk())
    runner.submit(run)
    (back,) = _collect_all(runner)
    assert back is run
    assert run.results[0] == []
    assert isinstance(run.results[1], ValueError)


def test_a_contract_breach_fails_the_record() -> None:
    async def wrong(record: Record) -> Any:
        return "not a list"

    runner = _runner(3, wrong)
    run = Run(_records(1), batch=False, chunk=_Chunk())
    runner.submit(run)
    (back,) = _collect_all(runner)
    assert isinstance(back.results[0], HandlerContractError)


@pytest.mark.parametrize("seed", SEEDS)
def test_an_abandoned_run_never_comes_back(seed: int) -> None:
    async def stubborn(record: Record) -> list[Outbound]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return [Outbound("out", value=b"cancelled")]
        return []

    runner = _runner(seed, stubborn)
    run = Run(_records(3), batch=False, chunk=_Chunk())
    runner.submit(run)
    assert runner.collect(1.0) == [], f"seed={seed}"
    runner.abandon(run)
    assert run.abandoned, f"seed={seed}"
    assert not runner.running(), f"seed={seed}"
    assert runner.collect(10.0) == [], f"seed={seed}"
    assert runner.attempts.running == 0, f"seed={seed}: coroutines left running"


@pytest.mark.parametrize("seed", SEEDS)
def test_cancel_abandoned_waits_and_reports_failures(seed: int) -> None:
    ended: list[int] = []

    async def slow_cleanup(record: Record) -> list[Outbound]:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            await asyncio.sleep(0.3)  # cleanup that takes a while
            ended.append(record.offset)
            return [Outbound("out", value=b"cancelled")]  # swallowed: still a failure
        return []

    runner = _runner(seed, slow_cleanup)
    alive, dead = _Chunk(), _Chunk()
    keep = Run(_records(2), batch=False, chunk=alive)
    gone = Run(_records(3), batch=False, chunk=dead)
    runner.submit(keep)
    runner.submit(gone)
    assert runner.collect(1.0) == [], f"seed={seed}"
    dead.dead = True
    assert runner.cancel_abandoned(1.0) == 0, f"seed={seed}"
    assert sorted(ended) == [0, 1, 2], f"seed={seed}: cancel_abandoned did not wait"
    back = runner.collect(0.0)
    assert {id(r.chunk) for r in back} == {id(dead)}, f"seed={seed}"
    assert all(isinstance(r.results[0], AttemptCancelledError) for r in back), f"seed={seed}"
    assert runner.attempts.running == 2, f"seed={seed}: the live run was touched"


def test_a_base_exception_is_raised_at_collect() -> None:
    class Boom(BaseException):
        pass

    async def crash(record: Record) -> list[Outbound]:
        raise Boom

    runner = _runner(4, crash)
    runner.submit(Run(_records(1), batch=False, chunk=_Chunk()))
    with pytest.raises(Boom):
        runner.collect(1.0)


def test_the_simulators_executor_gives_a_virtual_loop() -> None:
    world = World(seed=5)
    runner = AsyncRunner(
        _slow_upper, batch=False, processing_timeout=None, executor=world.executor(name="e")
    )
    assert isinstance(runner.loop, VirtualLoop)
    runner.submit(Run(_records(3), batch=False, chunk=_Chunk()))
    assert sum(len(r.records) for r in _collect_all(runner)) == 3
    runner.close(cancel_pending=True)


def test_close_cancels_and_closes_an_owned_loop() -> None:
    async def forever(record: Record) -> list[Outbound]:
        await asyncio.sleep(3600)
        return []

    runner = AsyncRunner(forever, batch=False, processing_timeout=None, executor=AsyncLoop())
    runner.submit(Run(_records(2), batch=False, chunk=_Chunk()))
    assert runner.collect(0.0) == []
    runner.close(cancel_pending=True)
    assert runner.loop.is_closed()


def test_a_loop_on_a_thread_of_its_own() -> None:
    async def quick(record: Record) -> list[Outbound]:
        await asyncio.sleep(0.001)
        return []

    runner = AsyncRunner(
        quick, batch=False, processing_timeout=5.0, executor=AsyncLoop(in_thread=True)
    )
    runner.submit(Run(_records(20), batch=False, chunk=_Chunk()))
    back = _collect_all(runner, rounds=5000)
    assert sum(len(r.records) for r in back) == 20
    assert all(res == [] for r in back for res in r.results)
    runner.close(cancel_pending=True)
    assert runner.loop.is_closed()

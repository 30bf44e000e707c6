"""The simulator's virtual-time event loop: deterministic order, virtual time,
timeouts and cancellation as asyncio documents them. No wall clock, no global random;
every assertion names the seed."""

from __future__ import annotations

import asyncio
import random

import pytest

from offsetledger.simulator import SimClock
from offsetledger.simulator._aio import VirtualLoop, VirtualLoopError

SEEDS = range(20)


def _loop(seed: int, clock: SimClock | None = None) -> VirtualLoop:
    return VirtualLoop(clock if clock is not None else SimClock(), random.Random(seed))


def _completion_order(seed: int, n: int = 50) -> list[tuple[int, float]]:
    loop = _loop(seed)
    order: list[tuple[int, float]] = []

    async def worker(i: int) -> None:
        # three hops at equal virtual times: ties are broken by the seed
        for _ in range(3):
            await asyncio.sleep(0.005 * (i % 3))
            await asyncio.sleep(0)
        order.append((i, loop.time()))

    async def main() -> None:
        await asyncio.gather(*(worker(i) for i in range(n)))

    loop.run_until_complete(main())
    loop.close()
    return order


@pytest.mark.parametrize("seed", SEEDS)
def test_same_seed_same_completion_order(seed: int) -> None:
    first, second = _completion_order(seed), _completion_order(seed)
    assert first == second, f"seed={seed}: two runs gave different orders"
    assert sorted(i for i, _ in first) == list(range(50)), f"seed={seed}"


def test_different_seeds_give_different_orders() -> None:
    orders = {tuple(i for i, _ in _completion_order(seed)) for seed in SEEDS}
    assert len(orders) == len(SEEDS), f"seeds {list(SEEDS)} gave only {len(orders)} orders"


@pytest.mark.parametrize("seed", SEEDS)
def test_sleep_moves_virtual_time_only(seed: int) -> None:
    clock = SimClock()
    loop = _loop(seed, clock)
    woke: list[float] = []

    async def sleeper(delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append(loop.time())

    async def main() -> None:
        await asyncio.gather(sleeper(3600.0), sleeper(0.25), sleeper(0.25))

    loop.run_until_complete(main())
    assert woke == [0.25, 0.25, 3600.0], f"seed={seed}: {woke}"
    assert clock.now() == 3600.0, f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_simulator_timers_run_between_coroutine_steps(seed: int) -> None:
    """The loop moves the SimClock, so the broker's timers fire at their times."""
    clock = SimClock()
    loop = _loop(seed, clock)
    events: list[tuple[str, float]] = []
    clock.call_later(0.5, lambda: events.append(("sim-timer", clock.now())))

    async def main() -> None:
        await asyncio.sleep(1.0)
        events.append(("coroutine", loop.time()))

    loop.run_until_complete(main())
    assert events == [("sim-timer", 0.5), ("coroutine", 1.0)], f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_wait_for_times_out_on_virtual_time(seed: int) -> None:
    loop = _loop(seed)
    seen: list[str] = []

    async def slow() -> str:
        try:
            await asyncio.sleep(10.0)
        except asyncio.CancelledError:
            seen.append(f"cancelled at {loop.time()}")
            raise
        return "finished"

    async def main() -> str:
        try:
            return await asyncio.wait_for(slow(), timeout=2.0)
        except TimeoutError:
            return f"timeout at {loop.time()}"

    assert loop.run_until_complete(main()) == "timeout at 2.0", f"seed={seed}"
    assert seen == ["cancelled at 2.0"], f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_asyncio_timeout_and_a_result_in_time(seed: int) -> None:
    loop = _loop(seed)

    async def main() -> list[str]:
        out = []
        try:
            async with asyncio.timeout(1.0):
                await asyncio.sleep(1.5)
        except TimeoutError:
            out.append(f"timeout {loop.time()}")
        async with asyncio.timeout(1.0):
            await asyncio.sleep(0.5)
        out.append(f"in time {loop.time()}")
        return out

    assert loop.run_until_complete(main()) == ["timeout 1.0", "in time 1.5"], f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_cancellation_runs_handlers_and_is_seen(seed: int) -> None:
    loop = _loop(seed)
    cleaned: list[float] = []

    async def victim() -> None:
        try:
            await asyncio.sleep(5.0)
        finally:
            cleaned.append(loop.time())

    task = loop.create_task(victim())
    loop.advance_to(1.0)
    assert not task.done(), f"seed={seed}"
    task.cancel()
    loop.run_ready()
    assert task.cancelled(), f"seed={seed}"
    assert cleaned == [1.0], f"seed={seed}"
    assert loop.next_due() is None, f"seed={seed}: the cancelled sleep's timer stayed live"


def test_run_until_stops_at_the_deadline_or_when_done() -> None:
    loop = _loop(7)
    task = loop.create_task(asyncio.sleep(3.0, result="r"))
    assert not loop.run_until(task.done, 1.0)
    assert loop.time() == 1.0
    assert loop.run_until(task.done, 10.0)
    assert loop.time() == 3.0
    assert task.result() == "r"


def test_crash_drops_everything_without_running_it() -> None:
    loop = _loop(3)
    ran: list[str] = []

    async def victim() -> None:
        try:
            await asyncio.sleep(1.0)
            ran.append("body")
        finally:
            ran.append("finally")

    loop.create_task(victim())
    loop.run_ready()
    loop.crash()
    assert loop.pending == 0
    assert ran == []
    with pytest.raises(VirtualLoopError, match="crashed"):
        loop.call_soon(ran.append, "late")


def test_deadlock_and_livelock_are_reported() -> None:
    loop = _loop(1)

    async def forever() -> None:
        await loop.create_future()

    with pytest.raises(VirtualLoopError, match="will ever complete"):
        loop.run_until_complete(forever())

    spin_loop = VirtualLoop(SimClock(), random.Random(1), max_batches=100)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    spin_loop.create_task(spin())
    with pytest.raises(VirtualLoopError, match="without the clock moving"):
        spin_loop.run_ready()


def test_errors_in_callbacks_go_to_the_exception_handler() -> None:
    loop = _loop(2)

    def boom() -> None:
        raise ValueError("boom")

    loop.call_soon(boom)
    loop.run_ready()
    assert len(loop.errors) == 1
    assert isinstance(loop.errors[0]["exception"], ValueError)


def test_run_in_executor_runs_inline() -> None:
    loop = _loop(4)

    async def main() -> int:
        return await loop.run_in_executor(None, sum, [1, 2, 3])

    assert loop.run_until_complete(main()) == 6
    assert loop.time() == 0.0


def test_current_task_and_running_loop_inside() -> None:
    loop = _loop(5)

    async def main() -> bool:
        return asyncio.get_running_loop() is loop and asyncio.current_task() is not None

    assert loop.run_until_complete(main())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # restored outside


def test_task_delay_holds_a_new_task_back_in_virtual_time() -> None:
    """``task_delay`` (the simulator's slow_task fault for async handlers): the
    coroutine's first step waits that long; a delayed task cancelled meanwhile never
    runs its body."""
    clock = SimClock()
    delays = iter([5.0, 0.0, 5.0])
    loop = VirtualLoop(clock, random.Random(1), task_delay=lambda: next(delays))
    started: list[tuple[str, float]] = []

    async def body(name: str) -> str:
        started.append((name, loop.time()))
        return name

    slow = loop.create_task(body("slow"))
    fast = loop.create_task(body("fast"))
    cancelled = loop.create_task(body("cancelled"))
    loop.run_until(fast.done, 1.0)
    cancelled.cancel()
    loop.run_until(lambda: slow.done() and cancelled.done(), 10.0)
    assert (slow.result(), fast.result()) == ("slow", "fast")
    assert cancelled.cancelled()
    assert sorted(started) == [("fast", 0.0), ("slow", 5.0)], started


@pytest.mark.parametrize("seed", SEEDS)
def test_timers_that_fell_due_while_not_driven_run_in_due_order(seed: int) -> None:
    """The clock is shared: it moves while another member of the simulated group waits
    and this loop is not driven. The next run first replays the overdue instants in
    due order, as if the loop had been running: a wake-up due before a deadline wins
    over it (lumped into one shuffled batch, the deadline would cancel the woken task
    before its next step, every time)."""
    clock = SimClock()
    loop = _loop(seed, clock)
    woke: list[float] = []

    async def call() -> str:
        await asyncio.sleep(0.001)
        woke.append(loop.time())
        return "answer"

    task = loop.create_task(call())
    loop.call_later(0.004, task.cancel)  # its deadline, after the wake-up
    loop.run_ready()  # the task starts and sleeps
    clock.sleep(0.1)  # another member's poll: this loop is not driven meanwhile
    loop.run_ready()
    assert task.done(), f"seed {seed}"
    assert not task.cancelled(), f"seed {seed}: the overdue deadline beat the wake-up"
    assert task.result() == "answer"
    assert woke == [pytest.approx(0.001)], f"seed {seed}: the task saw time {woke}"
    assert loop.time() == pytest.approx(0.1), f"seed {seed}: after catching up, now again"
    loop.close()

"""The async runner driven directly: outcomes, timeouts, abandon, on the virtual
loop (seeded) and on real loops (driven here, and running in another thread)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Iterator

import pytest

from offsetledger.core import ConfigError
from offsetledger.runtime._runners import ProcessingTimeoutError
from offsetledger.runtime._runners.aio import (
    AsyncLoop,
    AsyncOutcome,
    AttemptCancelledError,
    AttemptRunner,
)
from offsetledger.simulator import SimClock
from offsetledger.simulator._aio import VirtualLoop

SEEDS = range(10)


def _virtual(seed: int, **kwargs: object) -> tuple[AttemptRunner, VirtualLoop]:
    loop = VirtualLoop(SimClock(), random.Random(seed))
    return AttemptRunner(loop, **kwargs), loop  # type: ignore[arg-type]


def _drain(runner: AttemptRunner, rounds: int = 1000) -> list[AsyncOutcome]:
    out: list[AsyncOutcome] = []
    for _ in range(rounds):
        if not runner.outstanding:
            return out
        out.extend(runner.poll(1.0))
    raise AssertionError(f"{runner.outstanding} attempts still outstanding")


async def _echo(x: tuple[int, float]) -> int:
    await asyncio.sleep(x[1])
    return x[0]


@pytest.mark.parametrize("seed", SEEDS)
def test_outcomes_in_a_seeded_order(seed: int) -> None:
    def run() -> list[object]:
        runner, _ = _virtual(seed)
        for i in range(100):
            runner.submit(i, _echo, (i, 0.001 * (i % 4)))
        outcomes = _drain(runner)
        assert sorted(o.value for o in outcomes) == list(range(100)), f"seed={seed}"
        assert all(o.token == o.value and o.error is None for o in outcomes), f"seed={seed}"
        return [o.token for o in outcomes]

    assert run() == run(), f"seed={seed}: not deterministic"


@pytest.mark.parametrize("seed", SEEDS)
def test_timeout_fails_after_the_coroutine_ended(seed: int) -> None:
    runner, loop = _virtual(seed, processing_timeout=0.5)
    ended: list[float] = []

    async def slow(_: object) -> list[object]:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.1)  # cleanup that itself awaits
            ended.append(loop.time())
        return []

    runner.submit("a", slow, None)
    (outcome,) = _drain(runner)
    assert isinstance(outcome.error, ProcessingTimeoutError), f"seed={seed}: {outcome}"
    assert ended == [pytest.approx(0.6)], f"seed={seed}"
    assert outcome.finished == pytest.approx(0.6), f"seed={seed}"
    assert runner.running == 0, f"seed={seed}"
    assert runner.timed_out_count == 1, f"seed={seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_a_timeout_whose_cancellation_is_swallowed_still_fails(seed: int) -> None:
    runner, _ = _virtual(seed, processing_timeout=0.5)

    async def stubborn(_: object) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "pretend success"
        return "real success"

    runner.submit("a", stubborn, None)
    (outcome,) = _drain(runner)
    assert isinstance(outcome.error, ProcessingTimeoutError), f"seed={seed}: {outcome}"


def test_the_handlers_own_timeout_error_is_an_ordinary_failure() -> None:
    runner, _ = _virtual(1, processing_timeout=5.0)

    async def own(_: object) -> None:
        await asyncio.sleep(0.1)
        raise TimeoutError("upstream said no")

    runner.submit("a", own, None)
    (outcome,) = _drain(runner)
    assert type(outcome.error) is TimeoutError
    assert str(outcome.error) == "upstream said no"


@pytest.mark.parametrize("seed", SEEDS)
def test_an_abandoned_attempt_is_never_reported(seed: int) -> None:
    runner, loop = _virtual(seed)
    ended: list[str] = []

    async def stubborn(name: str) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # keeps running a while after the cancel
            ended.append(name)
            return "pretend success"
        return "real success"

    for name in ("a", "b", "c"):
        runner.submit(name, stubborn, name)
    assert runner.poll(1.0) == [], f"seed={seed}"
    assert runner.abandon("a"), f"seed={seed}"
    assert runner.abandon("b"), f"seed={seed}"
    assert not runner.abandon("a"), f"seed={seed}: abandoned twice"
    assert runner.outstanding == 1, f"seed={seed}"
    assert runner.running == 3, f"seed={seed}"
    assert runner.cancelled_running == 2, f"seed={seed}"
    assert runner.wait_cancelled(1.0), f"seed={seed}"
    assert sorted(ended) == ["a", "b"], f"seed={seed}"
    assert runner.running == 1, f"seed={seed}"
    # the token of an abandoned attempt can be reused for the record's next attempt
    runner.submit("a", _echo, (7, 0.0))
    outcomes = _drain(runner, rounds=30)
    assert [(o.token, o.value) for o in outcomes] == [("a", 7), ("c", "real success")], (
        f"seed={seed}: {outcomes}"
    )
    assert loop.errors == [], f"seed={seed}"


def test_abandon_before_start_and_self_cancel() -> None:
    runner, _ = _virtual(2)
    runner.submit("never", _echo, (1, 0.0))
    assert runner.abandon("never")
    assert runner.running == 0

    async def suicide(_: object) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    runner.submit("self", suicide, None)
    (outcome,) = _drain(runner)
    assert isinstance(outcome.error, AttemptCancelledError)


def test_exceptions_travel_in_the_outcome() -> None:
    runner, loop = _virtual(3)

    async def bad(_: object) -> None:
        raise ValueError("bad record")

    runner.submit("x", bad, None)
    (outcome,) = _drain(runner)
    assert isinstance(outcome.error, ValueError)
    assert loop.errors == []


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        AsyncLoop(max_concurrency=0)
    for bad in (0, True, 2.0):  # one check for both layers (AsyncLoop, AttemptRunner)
        with pytest.raises(ConfigError, match="max_concurrency"):
            _virtual(0, max_concurrency=bad)
    with pytest.raises(ConfigError, match="processing_timeout"):
        _virtual(0, processing_timeout=0)
    runner, _ = _virtual(0, max_concurrency=2)
    runner.submit(1, _echo, (1, 1.0))
    assert runner.capacity() == 1
    with pytest.raises(ValueError, match="already outstanding"):
        runner.submit(1, _echo, (1, 1.0))


def test_a_real_loop_driven_on_this_thread() -> None:
    loop = asyncio.new_event_loop()
    runner = AttemptRunner(loop, max_concurrency=50)
    try:
        for i in range(50):
            runner.submit(i, _echo, (i, 0.001))
        outcomes = _drain(runner)
        assert sorted(o.value for o in outcomes) == list(range(50))
    finally:
        runner.close()
        loop.close()


@pytest.mark.parametrize("begun", [False, True], ids=["after-submit", "after-another-pass"])
def test_a_late_driven_loop_does_not_time_out_an_attempt_that_finished_in_time(
    begun: bool,
) -> None:
    """A driven loop is only run while the Processor waits for its handlers, and it
    may be away for a while (a commit, a rebalance). The submit runs the coroutine's
    first step at once (else its deadline, which runs from the task's creation, would
    pass while it sat unstarted). Away while it sleeps: its wake-up (due at 10 ms) and
    its deadline (50 ms) fire in the same pass; the wake-up only schedules the task's
    next step, so the deadline waits one pass. The attempt finished in time."""
    loop = asyncio.new_event_loop()
    runner = AttemptRunner(loop, processing_timeout=0.05)
    try:
        runner.submit("a", _echo, ("answer", 0.01))
        runner.poll(None)  # its task is created and starts: it sleeps 10 ms
        if begun:
            runner.poll(0.0)  # one more pass of the loop before it is away
        time.sleep(0.1)  # the Processor's thread is elsewhere; the loop is not run
        (outcome,) = _drain(runner)
        assert outcome.error is None, f"counted as timed out: {outcome.error!r}"
        assert outcome.value == "answer"
        assert runner.timed_out_count == 0
    finally:
        runner.close()
        loop.close()


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_loop_running_in_another_thread(loop_thread: asyncio.AbstractEventLoop) -> None:
    runner = AttemptRunner(loop_thread, threaded=True, processing_timeout=5.0)
    for i in range(50):
        runner.submit(i, _echo, (i, 0.001))
    outcomes = _drain(runner)
    assert sorted(o.value for o in outcomes) == list(range(50))

    release = threading.Event()

    async def blocked(_: object) -> None:
        while not release.is_set():
            await asyncio.sleep(0.001)

    runner.submit("stuck", blocked, None)
    assert runner.poll(0.01) == []
    runner.abandon("stuck")
    assert runner.wait_cancelled(5.0)
    assert runner.running == 0
    runner.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_max_concurrency_caps_live_tasks(seed: int) -> None:
    runner, _ = _virtual(seed, max_concurrency=3)
    live: list[int] = []
    peak = [0]

    async def track(i: int) -> int:
        live.append(i)
        peak[0] = max(peak[0], len(live))
        await asyncio.sleep(0.01)
        live.remove(i)
        return i

    for i in range(10):
        runner.submit(i, track, i)
    outcomes = _drain(runner)
    assert sorted(o.value for o in outcomes) == list(range(10)), f"seed={seed}"
    assert peak[0] == 3, f"seed={seed}: {peak[0]} tasks at once"


@pytest.mark.parametrize("seed", SEEDS)
def test_deadlines_a_microsecond_apart_expire_without_a_livelock(seed: int) -> None:
    """Two attempts started 1 µs apart: their deadlines are within the virtual loop's
    timer resolution, so the timer for the first fires the second too. The expiry
    counts its own deadline as passed (before: it compared with now + 1 ns, set the
    timer again for the second deadline, and the loop ran it again at once, forever)."""
    clock = SimClock()
    loop = VirtualLoop(clock, random.Random(seed), max_batches=10_000)
    runner = AttemptRunner(loop, processing_timeout=0.004)

    async def stuck(_: object) -> None:
        await asyncio.sleep(10.0)

    runner.submit("a", stuck, None)
    runner.poll(None)
    clock.sleep(0.000_001)
    runner.submit("b", stuck, None)
    runner.poll(None)
    outcomes = _drain(runner)
    assert sorted(str(o.token) for o in outcomes) == ["a", "b"], f"seed {seed}"
    assert all(isinstance(o.error, ProcessingTimeoutError) for o in outcomes), f"seed {seed}"
    assert runner.timed_out_count == 2


def test_a_task_delay_counts_against_the_processing_timeout() -> None:
    """The simulator's ``slow_task`` fault holds a new task back (``task_delay``) to
    model a slow dependency: the deadline runs from the task's creation, so the
    attempt times out (it did not while the deadline ran from the first step)."""
    loop = VirtualLoop(SimClock(), random.Random(0), task_delay=lambda: 1.0)
    runner = AttemptRunner(loop, processing_timeout=0.5)
    runner.submit("a", _echo, ("answer", 0.01))
    (outcome,) = _drain(runner)
    assert isinstance(outcome.error, ProcessingTimeoutError), outcome
    assert outcome.finished == pytest.approx(0.5)

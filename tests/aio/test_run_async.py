"""``await run_async(processor)``: the Processor on its own thread, the handler's
coroutines on the application's loop; stop from another task, cancellation, errors.

The simulated world is touched by the Processor's thread only while it runs; the
tests read it after ``run_async`` returned."""

from __future__ import annotations

import asyncio

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.runtime import Processor, ProcessorConfig
from offsetledger.runtime._aio import run_async
from offsetledger.runtime._runners.aio import AsyncLoop
from offsetledger.simulator import World
from tests.processor.helpers import (
    all_committed,
    consumer_config,
    inputs,
    output_sources,
    seed_world,
)


def _processor(world: World, handler: object, executor: object) -> Processor:
    return Processor(
        world.consumer(consumer_config("g"), "m1"),
        world.producer(name="m1-producer", member="m1"),
        handler,  # type: ignore[arg-type]
        topics=["in"],
        executor=executor,  # type: ignore[arg-type]
        clock=world.clock,
        config=ProcessorConfig(poll_timeout=0.01, max_in_flight_total=100),
    )


def test_run_async_processes_on_the_applications_loop() -> None:
    world = seed_world(1, records=40)
    seen: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        app_loop = asyncio.get_running_loop()
        done = asyncio.Event()

        async def handler(record: Record) -> list[Outbound]:
            seen.append(asyncio.get_running_loop())
            await asyncio.sleep(0.001)
            if len(seen) >= 40:
                done.set()
            return [Outbound("out", value=record.value, key=record.key)]

        processor = _processor(world, handler, AsyncLoop.current())
        task = asyncio.create_task(run_async(processor))
        await asyncio.wait_for(done.wait(), 30)
        processor.stop()  # from another task
        await asyncio.wait_for(task, 30)
        assert {id(loop) for loop in seen} == {id(app_loop)}

    asyncio.run(main())
    assert inputs(world) <= set(output_sources(world))
    assert all_committed(world)


def test_cancelling_run_async_stops_the_processor_gracefully() -> None:
    world = seed_world(2, records=20)

    async def main() -> None:
        started = asyncio.Event()

        async def handler(record: Record) -> list[Outbound]:
            started.set()
            return [Outbound("out", value=record.value)]

        processor = _processor(world, handler, AsyncLoop.current())
        task = asyncio.create_task(run_async(processor))
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert processor.state.value == "closed"

    asyncio.run(main())


def test_the_processors_error_is_raised_from_run_async() -> None:
    world = seed_world(3, records=5)

    async def main() -> None:
        async def handler(record: Record) -> list[Outbound]:
            return []

        processor = _processor(world, handler, AsyncLoop.current())
        world.crash("m1")  # every client call now raises ProcessCrashed (a BaseException)
        with pytest.raises(BaseException, match="m1"):
            await run_async(processor)

    asyncio.run(main())


def test_running_on_the_handlers_loop_thread_is_refused() -> None:
    world = seed_world(4, records=5)

    async def main() -> None:
        async def handler(record: Record) -> list[Outbound]:
            await asyncio.sleep(0.001)
            return []

        processor = _processor(world, handler, AsyncLoop.current())
        with pytest.raises(RuntimeError, match="run_async"):
            processor.run()  # blocking the loop its handlers need: a deadlock, refused

    asyncio.run(main())

"""Set-up shared by the ops tests: a simulated world and a Processor on it."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from offsetledger.core import Executor, Outbound, ProducerPort, Record
from offsetledger.runtime import CommitMode, MetricsHook, Processor, ProcessorConfig, ProcessorState
from offsetledger.simulator import World

Handler = Callable[[Record], Iterable[Outbound]]


def world_with(seed: int, *, partitions: int = 2, records: int = 20) -> World:
    """Topic ``in`` with ``records`` records round-robin over its partitions; ``out``."""
    world = World(seed=seed)
    world.create_topic("in", partitions=partitions)
    world.create_topic("out", partitions=partitions)
    for i in range(records):
        world.append("in", i % partitions, key=f"k{i}".encode(), value=f"v{i}".encode())
    return world


def copy(record: Record) -> Iterable[Outbound]:
    return [Outbound("out", value=record.value, key=record.key)]


def processor(
    world: World,
    handler: Handler = copy,
    *,
    metrics: MetricsHook,
    config: ProcessorConfig | None = None,
    executor: Executor | None = None,
    producer: ProducerPort | None = None,
    member: str = "m1",
) -> Processor:
    cfg = config if config is not None else ProcessorConfig(poll_timeout=0.05)
    consumer = world.consumer(
        {
            "group.id": "g",
            "enable.auto.offset.store": False,
            "enable.auto.commit": cfg.commit_mode is CommitMode.AUTO,
            "auto.offset.reset": "earliest",
        },
        member,
    )
    return Processor(
        consumer,
        producer if producer is not None else world.producer(name=f"{member}-p", member=member),
        handler,
        topics=["in"],
        executor=executor if executor is not None else world.executor(name="x", member=member),
        clock=world.clock,
        config=cfg,
        metrics=metrics,
    )


def drive(world: World, proc: Processor, until: Callable[[], bool], max_steps: int = 5000) -> int:
    """Step ``proc`` until ``until()``; fail naming the seed after ``max_steps``."""
    for n in range(max_steps):
        if until():
            return n
        if proc.state in (ProcessorState.CREATED, ProcessorState.RUNNING):
            proc.step()
    raise AssertionError(f"seed={world.seed}: condition not reached after {max_steps} steps")


def steps(proc: Processor, n: int) -> None:
    for _ in range(n):
        proc.step()

"""Shared set-up for the Processor scenario tests on the simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from offsetledger.core import Outbound, ProducerPort, Record
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    ProcessorState,
)
from offsetledger.simulator import World
from offsetledger.testing import observer


def consumer_config(
    group: str = "g", *, auto_commit: bool = True, **extra: object
) -> dict[str, object]:
    config: dict[str, object] = {
        "group.id": group,
        "enable.auto.offset.store": False,
        "enable.auto.commit": auto_commit,
        "auto.offset.reset": "earliest",
    }
    config.update(extra)
    return config


def seed_world(
    seed: int,
    *,
    partitions: int = 4,
    records: int = 40,
    keys: int = 8,
    topics: Sequence[str] = ("out",),
) -> World:
    """A world with topic ``in`` holding ``records`` records spread round-robin over
    its partitions (keys k0..k{keys-1}), and empty output topics."""
    world = World(seed=seed)
    world.create_topic("in", partitions=partitions)
    for name in topics:
        world.create_topic(name, partitions=partitions)
    for i in range(records):
        world.append("in", i % partitions, key=f"k{i % keys}".encode(), value=f"v{i}".encode())
    return world


def upper(record: Record) -> Iterable[Outbound]:
    """The default handler: one output per input, value upper-cased."""
    return [Outbound("out", value=(record.value or b"").upper(), key=record.key)]


def make_processor(
    world: World,
    member: str,
    handler: Callable[[Record], Iterable[Outbound]] = upper,
    *,
    config: ProcessorConfig | None = None,
    group: str = "g",
    metrics: InMemoryMetrics | None = None,
    consumer_extra: Mapping[str, object] | None = None,
    producer: ProducerPort | None = None,
    task_cost: float = 0.0,
) -> Processor:
    cfg = config if config is not None else ProcessorConfig(poll_timeout=0.05)
    consumer = world.consumer(
        consumer_config(
            group, auto_commit=cfg.commit_mode is CommitMode.AUTO, **(consumer_extra or {})
        ),
        member,
    )
    return Processor(
        consumer,
        producer
        if producer is not None
        else world.producer(name=f"{member}-producer", member=member),
        handler,
        topics=["in"],
        executor=world.executor(name=f"{member}-executor", member=member, task_cost=task_cost),
        clock=world.clock,
        config=cfg,
        metrics=metrics if metrics is not None else InMemoryMetrics(),
        # the history records which records finished (filters included)
        observer=observer(world, member),
    )


def drive(
    world: World,
    processors: Sequence[Processor],
    until: Callable[[], bool],
    *,
    max_steps: int = 5_000,
) -> int:
    """Step the processors round-robin until ``until()``; fail (naming the seed)
    after ``max_steps`` rounds. Returns the rounds taken."""
    for n in range(max_steps):
        if until():
            return n
        for p in processors:
            if p.state in (ProcessorState.CREATED, ProcessorState.RUNNING):
                p.step()
    raise AssertionError(f"seed={world.seed}: condition not reached after {max_steps} rounds")


def output_sources(world: World, topic: str = "out") -> list[tuple[str, int, int]]:
    """The (topic, partition, offset) lineage of every record in ``topic``."""
    out = []
    for p in range(world.topics()[topic]):
        for entry in world.log(topic, p):
            if entry.control:
                continue
            h = dict(entry.headers)
            out.append(
                (
                    h["offsetledger.source.topic"].decode(),  # type: ignore[union-attr]
                    int(h["offsetledger.source.partition"]),  # type: ignore[arg-type]
                    int(h["offsetledger.source.offset"]),  # type: ignore[arg-type]
                )
            )
    return out


def inputs(world: World, topic: str = "in") -> set[tuple[str, int, int]]:
    return {
        (topic, p, e.offset)
        for p in range(world.topics()[topic])
        for e in world.log(topic, p)
        if not e.control
    }


def all_committed(world: World, group: str = "g", topic: str = "in") -> bool:
    """True when every partition's committed position is its log end."""
    return all(
        world.committed(group, topic, p).position == world.end_offset(topic, p)
        for p in range(world.topics()[topic])
    )


def dead_letters(world: World, topic: str = "dlq") -> list[dict[str, bytes | None]]:
    """Headers (as a dict) plus ``key``/``value`` of every record in ``topic``."""
    out = []
    for p in range(world.topics()[topic]):
        for entry in world.log(topic, p):
            h: dict[str, bytes | None] = dict(entry.headers)
            h["key"] = entry.key
            h["value"] = entry.value
            out.append(h)
    return out

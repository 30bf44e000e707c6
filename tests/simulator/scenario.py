"""A small at-least-once workload over the simulator's ports, for determinism and fault tests.

Each member polls, runs one task per record on its SimExecutor (the task produces
one output carrying the lineage headers), waits for the delivery report and only
then stores offset + 1 (per partition, when everything below is finished).
Crashes (seeded or scheduled) restart the member with fresh clients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future

from offsetledger.core import DeliveryReport, Outbound, Record, StoredPosition, TopicPartition
from offsetledger.history import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from offsetledger.simulator import ProcessCrashed, SimConsumer, SimExecutor, SimProducer, World

__all__ = ["Member", "run_workload"]

CONSUMER_CONFIG: dict[str, object] = {
    "group.id": "app",
    "enable.auto.offset.store": False,
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 500,
    "auto.offset.reset": "earliest",
    "session.timeout.ms": 6000,
    "max.poll.interval.ms": 10000,
}


class Member:
    """One process: consumer, producer and executor sharing a member name."""

    def __init__(self, world: World, name: str, config: dict[str, object]) -> None:
        self.world = world
        self.name = name
        self.config = config
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        self.consumer: SimConsumer = self.world.consumer(self.config, self.name)
        self.producer: SimProducer = self.world.producer(name=self.name)
        self.executor: SimExecutor = self.world.executor(self.name, task_cost=0.001)
        self.done: dict[TopicPartition, dict[int, bool]] = {}
        self.consumer.subscribe(
            ["in"], on_assign=self._assigned, on_revoke=self._forget, on_lost=self._forget
        )

    def _assigned(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self.done[tp] = {}

    def _forget(self, partitions: Sequence[TopicPartition]) -> None:
        for tp in partitions:
            self.done.pop(tp, None)

    def restart(self) -> None:
        self.restarts += 1
        self._start()

    def step(self) -> None:
        """One poll-process-store round."""
        records = self.consumer.poll(20, 0.05)
        futures: list[Future[None]] = [self.executor.submit(self._task(r)) for r in records]
        for r in records:
            self.done.setdefault(r.tp, {})[r.offset] = False
        while futures:
            self.executor.wait(futures, 1.0)
            futures = [f for f in futures if not f.done()]
        self.producer.flush(1.0)
        self._store()

    def _task(self, record: Record) -> Callable[[], None]:
        def run() -> None:
            def delivered(report: DeliveryReport) -> None:
                offsets = self.done.get(record.tp)
                if report.ok and offsets is not None and record.offset in offsets:
                    offsets[record.offset] = True

            headers = (
                (SOURCE_TOPIC, record.topic.encode()),
                (SOURCE_PARTITION, str(record.partition).encode()),
                (SOURCE_OFFSET, str(record.offset).encode()),
            )
            self.producer.produce(Outbound("out", record.value, record.key, headers), delivered)

        return run

    def _store(self) -> None:
        positions: list[StoredPosition] = []
        assigned = self.consumer.assignment()
        for tp, offsets in self.done.items():
            finished = None
            for offset in sorted(offsets):
                if not offsets[offset]:
                    break
                finished = offset
            if finished is not None and tp in assigned:
                positions.append(StoredPosition(tp, finished + 1))
                for offset in [o for o in offsets if o <= finished]:
                    del offsets[offset]
        if positions:
            self.consumer.store(positions)


def run_workload(
    seed: int,
    *,
    inputs: int = 120,
    members: int = 2,
    steps: int = 100,
    configure: Callable[[World], None] | None = None,
    strategy: str = "range,roundrobin",
) -> World:
    """Run the workload; ``configure`` may set faults before it starts."""
    world = World(seed)
    world.create_topic("in", 4)
    world.create_topic("out", 4)
    for i in range(inputs):
        world.append("in", i % 4, key=b"k%d" % i, value=b"v%d" % i)
    if configure is not None:
        configure(world)
    config = {**CONSUMER_CONFIG, "partition.assignment.strategy": strategy}
    procs = [Member(world, f"m{i}", config) for i in range(members)]
    for _ in range(steps):
        for proc in procs:
            try:
                proc.step()
            except ProcessCrashed:
                proc.restart()
    return world

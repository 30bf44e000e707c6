"""What a simulated client may touch: the narrow context a :class:`World` hands
its consumers, producers and executors.

A client never sees the World. It gets a :class:`SimContext`: the clock, the
fault menu, the world's one seeded random stream, the recorder (the raw-tuple
history), the cluster's operations (logs, writes, retention, groups) and the
crash hook that kills every client of a process. The World is a facade over the
same objects (factories, ``history``, test-input helpers); nothing here imports
it, so there is no import cycle between the World and its clients.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from offsetledger.core import Header, TopicPartition
from offsetledger.history import Event, History
from offsetledger.simulator._clock import SimClock
from offsetledger.simulator._fast import APPEND, Pending, materialise
from offsetledger.simulator._faults import Faults
from offsetledger.simulator._group import Group
from offsetledger.simulator._log import PartitionLog
from offsetledger.simulator._transactions import TransactionCoordinator

__all__ = ["Cluster", "Recorder", "SimContext"]


class Recorder:
    """The history of a world: raw records appended by the clients' hot paths
    (:attr:`pending`, tuples built into events by ``_fast.materialise``) and rare
    events recorded as they are (:meth:`record`); :attr:`history` builds them."""

    __slots__ = ("_history", "pending")

    def __init__(self) -> None:
        self._history = History()
        #: events not yet built into the history; clients append to this very
        #: list, so it is only ever cleared in place
        self.pending: Pending = []

    def record(self, event: Event) -> None:
        """Record a (rare) event; its seq is stamped when the history is read."""
        self.pending.append(event)

    @property
    def history(self) -> History:
        if self.pending:
            materialise(self.pending, self._history.events)
        return self._history


class Cluster:
    """The broker side: topics and their partition logs, consumer groups."""

    def __init__(self, clock: SimClock, recorder: Recorder) -> None:
        self.clock = clock
        self.recorder = recorder
        #: topic -> its partition logs (read by the producer's hot path)
        self.topics: dict[str, list[PartitionLog]] = {}
        self.groups: dict[str, Group] = {}
        #: the broker's group.consumer.session.timeout.ms for new KIP-848 groups
        self.group_session_timeout_ms = 45_000
        #: producer epochs and open transactions per transactional.id
        self.transactions = TransactionCoordinator(self, clock, recorder)

    def topic_sizes(self) -> dict[str, int]:
        return {t: len(logs) for t, logs in self.topics.items()}

    def create_topic(self, name: str, partitions: int) -> None:
        self.topics[name] = [PartitionLog(name, p) for p in range(partitions)]
        for group in self.groups.values():
            if any(name in m.topics for m in group.members.values()):
                group.rebalance()

    def partition_count(self, topic: str) -> int | None:
        logs = self.topics.get(topic)
        return None if logs is None else len(logs)

    def log(self, tp: TopicPartition) -> PartitionLog:
        return self.partition_log(tp.topic, tp.partition)

    def partition_log(self, topic: str, partition: int) -> PartitionLog:
        logs = self.topics.get(topic)
        if logs is None:
            raise KeyError(f"UNKNOWN_TOPIC_OR_PART: no topic {topic!r}")
        if not 0 <= partition < len(logs):
            raise KeyError(f"UNKNOWN_TOPIC_OR_PART: topic {topic!r} has no partition {partition}")
        return logs[partition]

    def write(  # noqa: PLR0917 - internal hot path, positional on purpose
        self,
        by: str,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[Header, ...],
    ) -> int:
        """Append a record to a log and to the history; returns its offset."""
        log = self.partition_log(topic, partition)
        clock = self.clock
        offset = log.append(key, value, headers, clock.now_us // 1000)
        self.recorder.pending.append(
            (APPEND, clock.now(), by, topic, partition, offset, key, value, headers)
        )
        return offset

    def group(self, group_id: str) -> Group:
        """The group ``group_id`` (created empty on first use, as Kafka does)."""
        group = self.groups.get(group_id)
        if group is None:
            group = Group(
                group_id,
                self.topic_sizes,
                self.recorder.record,
                self.clock.now,
                self.clock.call_later,
                self.group_session_timeout_ms,
            )
            self.groups[group_id] = group
        return group


class SimContext:
    """Everything a simulated client may use, and nothing else."""

    __slots__ = ("clock", "cluster", "crash", "faults", "recorder", "rng", "truncate_somewhere")

    def __init__(  # noqa: PLR0917 - one bundle, built once by the World
        self,
        clock: SimClock,
        faults: Faults,
        rng: random.Random,
        recorder: Recorder,
        cluster: Cluster,
        crash: Callable[[str], None],
        truncate_somewhere: Callable[[Sequence[TopicPartition]], None],
    ) -> None:
        self.clock = clock
        self.faults = faults
        #: the world's one seeded random stream
        self.rng = rng
        self.recorder = recorder
        self.cluster = cluster
        #: kill -9 of every client of a process (the ``crash`` fault calls it)
        self.crash = crash
        #: the ``truncate`` fault: retention moves one of these partitions' log start
        self.truncate_somewhere = truncate_somewhere

"""World: the simulated cluster, its clients, the virtual clock, the fault menu and the history."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from offsetledger.core import CommittedPosition, Header, TopicPartition
from offsetledger.history import Append, Crash, Event, History, Truncate
from offsetledger.simulator._clock import SimClock
from offsetledger.simulator._consumer import SimConsumer
from offsetledger.simulator._context import Cluster, Recorder, SimContext
from offsetledger.simulator._executor import SimExecutor
from offsetledger.simulator._fast import Pending
from offsetledger.simulator._faults import Faults
from offsetledger.simulator._group import Group
from offsetledger.simulator._log import LogEntry, PartitionLog
from offsetledger.simulator._producer import SimProducer
from offsetledger.simulator._txnproducer import SimTransactionalProducer

__all__ = ["World"]


class World:
    """A deterministic in-process Kafka cluster with its clients.

    Everything random comes from one ``random.Random(seed)`` (:attr:`rng`); time
    is the virtual :attr:`clock`; nothing runs in the background: only client
    calls and :meth:`advance` move the world. The same seed and the same sequence
    of calls give the same :attr:`history`, byte for byte (:meth:`trace`).

    Processes: a consumer, producer or executor belongs to the process named by
    its ``member`` (a consumer's member name; ``World.producer(..., member=...)``,
    defaulting to the producer's ``name``; ``World.executor(..., member=...)``).
    :meth:`crash` kills every client of that process at once.

    Inside, the World is a facade: the cluster (logs, groups), the recorder (the
    history) and the clients. Clients get a narrow :class:`SimContext` (clock,
    faults, random, recorder, cluster operations, the crash hook), never the World.
    """

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.faults = Faults(self.rng, self.clock.now)
        #: the history's recorder (raw records from the clients' hot paths)
        self.recorder = Recorder()
        self._cluster = Cluster(self.clock, self.recorder)
        #: what clients may touch (see :class:`SimContext`)
        self.context = SimContext(
            self.clock,
            self.faults,
            self.rng,
            self.recorder,
            self._cluster,
            self.crash,
            self._truncate_somewhere,
        )
        self._consumers: list[SimConsumer] = []
        self._producers: list[SimProducer] = []
        self._executors: list[SimExecutor] = []

    def __repr__(self) -> str:
        return f"World(seed={self.seed}, time={self.clock.now()}, events={len(self.history)})"

    # -- history -------------------------------------------------------------------------

    @property
    def history(self) -> History:
        """Every append, delivery, poll, store, commit, assign, revoke, lost, join,
        leave, crash, close and truncate, in the order they happened.

        Always the same History object. Events are built from the simulator's raw
        records when this property is read (each once; the same Event objects
        afterwards): a History obtained earlier gets the events that happened since
        at the next read of ``world.history``."""
        return self.recorder.history

    def trace(self) -> str:
        """The history as JSON lines: the same seed gives identical bytes."""
        return self.history.dumps()

    def _record(self, event: Event) -> None:
        """Record a (rare) event; its seq is stamped when the history is read."""
        self.recorder.pending.append(event)

    @property
    def _pending(self) -> Pending:
        return self.recorder.pending

    @property
    def _topics(self) -> dict[str, list[PartitionLog]]:
        return self._cluster.topics

    @property
    def _groups(self) -> dict[str, Group]:
        return self._cluster.groups

    # -- topics and logs -------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> None:
        """Create ``name`` with ``partitions`` empty partitions; subscribed groups rebalance."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"topic name must be a non-empty string, got {name!r}")
        if name in self._topics:
            raise ValueError(f"TOPIC_ALREADY_EXISTS: topic {name!r} already exists")
        if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be an int >= 1, got {partitions!r}")
        self._cluster.create_topic(name, partitions)

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count."""
        return {t: len(logs) for t, logs in self._topics.items()}

    def _partition_count(self, topic: str) -> int | None:
        return self._cluster.partition_count(topic)

    def _log(self, tp: TopicPartition) -> PartitionLog:
        return self._cluster.partition_log(tp.topic, tp.partition)

    def _partition_log(self, topic: str, partition: int) -> PartitionLog:
        return self._cluster.partition_log(topic, partition)

    def append(
        self,
        topic: str,
        partition: int,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Sequence[Header] = (),
    ) -> int:
        """Write a record directly to a log (test input), recorded as ``Append(by="seed")``;
        returns its offset."""
        for name, data in (("key", key), ("value", value)):
            if data is not None and not isinstance(data, bytes):
                raise TypeError(f"{name} must be bytes or None, got {type(data).__name__}")
        checked = tuple(headers)
        for header in checked:
            if (
                not isinstance(header, tuple)
                or len(header) != 2
                or not isinstance(header[0], str)
                or not (header[1] is None or isinstance(header[1], bytes))
            ):
                raise TypeError(f"headers must be (str, bytes | None) pairs, got {header!r}")
        return self._write("seed", topic, partition, key, value, checked)

    def append_gap(self, topic: str, partition: int) -> int:
        """Write a control offset (a transaction marker): it exists, consumers never
        see it. Recorded as ``Append(by="seed", control=True)``; returns its offset."""
        log = self._partition_log(topic, partition)
        offset = log.append_control()
        self._record(
            Append(
                time=self.clock.now(),
                by="seed",
                topic=topic,
                partition=partition,
                offset=offset,
                control=True,
            )
        )
        return offset

    def _write(  # noqa: PLR0917 - internal hot path, positional on purpose
        self,
        by: str,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: tuple[Header, ...],
    ) -> int:
        return self._cluster.write(by, topic, partition, key, value, headers)

    def truncate(self, topic: str, partition: int, log_start: int) -> None:
        """Retention: move the partition's log start forward to ``log_start``."""
        self._partition_log(topic, partition).truncate(log_start)
        self._record(
            Truncate(time=self.clock.now(), topic=topic, partition=partition, log_start=log_start)
        )

    def _truncate_somewhere(self, candidates: Sequence[TopicPartition]) -> None:
        tp = self.rng.choice(list(candidates))
        log = self._log(tp)
        if log.end > log.log_start:
            self.truncate(tp.topic, tp.partition, self.rng.randint(log.log_start + 1, log.end))

    def log(self, topic: str, partition: int) -> list[LogEntry]:
        """The partition's retained log, control offsets included."""
        return self._partition_log(topic, partition).entries()

    def log_start(self, topic: str, partition: int) -> int:
        return self._partition_log(topic, partition).log_start

    def end_offset(self, topic: str, partition: int) -> int:
        """The next offset to be written (high watermark)."""
        return self._partition_log(topic, partition).end

    # -- groups ----------------------------------------------------------------------------

    def _group(self, group_id: str) -> Group:
        return self._cluster.group(group_id)

    def configure_group(self, group: str, *, session_timeout_ms: int) -> None:
        """The broker-side settings of a KIP-848 group (Kafka's group configuration
        ``consumer.session.timeout.ms``; the broker default
        ``group.consumer.session.timeout.ms`` is 45 s). Classic members bring their
        own ``session.timeout.ms``."""
        if (
            not isinstance(session_timeout_ms, int)
            or isinstance(session_timeout_ms, bool)
            or session_timeout_ms < 1
        ):
            raise ValueError(f"session_timeout_ms must be an int >= 1, got {session_timeout_ms!r}")
        self._group(group).session_timeout_ms = session_timeout_ms

    def committed(self, group: str, topic: str, partition: int) -> CommittedPosition:
        """The group's committed position for a partition (position None if none)."""
        tp = TopicPartition(topic, partition)
        g = self._groups.get(group)
        return CommittedPosition(tp) if g is None else g.committed_position(tp)

    def committed_offset(self, group: str, tp: TopicPartition) -> int | None:
        """The group's committed position of ``tp`` (None if none): :meth:`committed`
        without building a CommittedPosition (a runner's per-round check)."""
        g = self._cluster.groups.get(group)
        if g is None:
            return None
        found = g.committed.get(tp)
        return None if found is None else found.position

    def generation(self, group: str) -> int:
        g = self._groups.get(group)
        return 0 if g is None else g.generation

    def members(self, group: str) -> dict[str, frozenset[TopicPartition]]:
        """Current members of ``group`` (member name -> partitions they hold)."""
        g = self._groups.get(group)
        if g is None:
            return {}
        return {m.client.name: m.client.owned for m in g.members.values()}

    # -- clients ---------------------------------------------------------------------------

    def consumer(self, config: Mapping[str, object], member: str) -> SimConsumer:
        """A new group consumer for process ``member`` (a crashed or closed one of the
        same name may be replaced: that is a restart)."""
        for c in self._consumers:
            if c.name == member and c.alive:
                raise ValueError(
                    f"member {member!r} already has a live consumer; close or crash it first"
                )
        consumer = SimConsumer(self.context, config, member)
        self._consumers = [c for c in self._consumers if c.alive]
        self._consumers.append(consumer)
        return consumer

    def producer(
        self,
        config: Mapping[str, object] | None = None,
        name: str = "producer",
        member: str | None = None,
    ) -> SimProducer:
        """A new producer named ``name`` (its Append and Delivery events say
        ``by=name``), belonging to process ``member`` (default: ``name``)."""
        producer = SimProducer(self.context, config, name, member if member is not None else name)
        self._producers = [p for p in self._producers if not p.crashed]
        self._producers.append(producer)
        return producer

    def transactional_producer(
        self,
        config: Mapping[str, object],
        name: str = "producer",
        member: str | None = None,
    ) -> SimTransactionalProducer:
        """A new transactional producer (``config`` needs ``transactional.id``), named
        ``name``, of process ``member`` (default: ``name``). Call
        ``init_transactions`` first; see :class:`SimTransactionalProducer`."""
        producer = SimTransactionalProducer(
            self.context, config, name, member if member is not None else name
        )
        self._producers = [p for p in self._producers if not p.crashed]
        self._producers.append(producer)
        return producer

    def last_stable_offset(self, topic: str, partition: int) -> int:
        """The partition's last stable offset (the end when no transaction is open)."""
        return self._partition_log(topic, partition).lso

    def executor(
        self,
        name: str = "executor",
        member: str | None = None,
        task_cost: float | Callable[[Callable[[], Any]], float] = 0.0,
    ) -> SimExecutor:
        """A deterministic executor belonging to process ``member`` (default: ``name``)."""
        executor = SimExecutor(
            self.context, name, member if member is not None else name, task_cost
        )
        self._executors.append(executor)
        return executor

    # -- time and faults ---------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Advance virtual time, running timers (session timeouts, auto-commit, deliveries)."""
        self.clock.advance(seconds)

    def crash(self, member: str) -> None:
        """``kill -9`` of process ``member``: its consumer's memory (stored positions,
        assignment) and its producers' buffered messages are gone (each may or may
        not have been written: seeded); its executors' pending tasks are cancelled.
        Committed positions survive; the member stays in its group until
        ``session.timeout.ms`` expires."""
        hit = False
        for c in self._consumers:
            if c.name == member and c.alive:
                c._crash()
                hit = True
        for p in self._producers:
            if p.member == member and not p.crashed:
                p._crash()
                hit = True
        for e in self._executors:
            if e.member == member:
                e._crash()
                hit = True
        if not hit:
            raise ValueError(f"no live client belongs to member {member!r}")
        self._record(Crash(time=self.clock.now(), member=member))

"""The group coordinator: membership, generations, assignment, committed positions."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Protocol

from offsetledger.core import (
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    StoredPosition,
    TopicPartition,
)
from offsetledger.history import Commit, Event, Leave

__all__ = [
    "Group",
    "GroupClient",
    "GroupState",
    "Member",
    "assign_range",
    "assign_roundrobin",
    "assign_sticky",
]


class GroupClient(Protocol):
    """What the coordinator needs from a consumer (the simulated background thread)."""

    @property
    def name(self) -> str: ...
    @property
    def owned(self) -> frozenset[TopicPartition]: ...
    @property
    def alive(self) -> bool: ...

    def on_synced(self, generation: int, assignment: frozenset[TopicPartition]) -> None: ...
    def on_evicted(self, reason: str) -> None: ...


class GroupState(enum.Enum):
    EMPTY = "empty"
    PREPARING_REBALANCE = "preparing_rebalance"  #: waiting for every member to rejoin
    STABLE = "stable"


class Member:
    __slots__ = ("client", "cooperative", "member_id", "rejoined", "strategies", "topics")

    def __init__(
        self,
        member_id: str,
        client: GroupClient,
        topics: tuple[str, ...],
        strategies: tuple[str, ...],
    ) -> None:
        self.member_id = member_id
        self.client = client
        self.topics = topics
        self.strategies = strategies
        self.cooperative = strategies == ("cooperative-sticky",)
        self.rejoined = False


Assignor = Callable[[list[Member], dict[str, int]], dict[str, frozenset[TopicPartition]]]


def assign_range(
    members: list[Member], topics: dict[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """Kafka's RangeAssignor: per topic, members sorted by id take contiguous ranges;
    the first ``partitions % members`` take one extra."""
    out: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
    for topic in sorted(topics):
        subs = sorted((m for m in members if topic in m.topics), key=lambda m: m.member_id)
        if not subs:
            continue
        count = topics[topic]
        base, extra = divmod(count, len(subs))
        start = 0
        for i, m in enumerate(subs):
            n = base + (1 if i < extra else 0)
            out[m.member_id].update(TopicPartition(topic, p) for p in range(start, start + n))
            start += n
    return {k: frozenset(v) for k, v in out.items()}


def assign_roundrobin(
    members: list[Member], topics: dict[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """Kafka's RoundRobinAssignor: all partitions in (topic, partition) order dealt
    to members in id order, skipping members not subscribed to the topic."""
    ordered = sorted(members, key=lambda m: m.member_id)
    out: dict[str, set[TopicPartition]] = {m.member_id: set() for m in members}
    i = 0
    for topic in sorted(topics):
        for p in range(topics[topic]):
            for _ in range(len(ordered)):
                m = ordered[i % len(ordered)]
                i += 1
                if topic in m.topics:
                    out[m.member_id].add(TopicPartition(topic, p))
                    break
    return {k: frozenset(v) for k, v in out.items()}


def assign_sticky(
    members: list[Member], topics: dict[str, int]
) -> dict[str, frozenset[TopicPartition]]:
    """A sticky, balanced assignment (the target of cooperative-sticky): each member
    keeps the partitions it owns up to its fair share; the rest go to the least
    loaded eligible members. Deterministic: ties break by member id."""
    everything = sorted(TopicPartition(t, p) for t in topics for p in range(topics[t]))
    if not members:
        return {}
    base, extra = divmod(len(everything), len(members))
    by_owned = sorted(members, key=lambda m: (-len(m.client.owned), m.member_id))
    quota = {m.member_id: base + (1 if i < extra else 0) for i, m in enumerate(by_owned)}
    out: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
    taken: set[TopicPartition] = set()
    valid = set(everything)
    for m in sorted(members, key=lambda m: m.member_id):
        for tp in sorted(m.client.owned):
            if (
                tp in valid
                and tp not in taken
                and tp.topic in m.topics
                and len(out[m.member_id]) < quota[m.member_id]
            ):
                out[m.member_id].append(tp)
                taken.add(tp)
    for tp in everything:
        if tp in taken:
            continue
        eligible = [m for m in members if tp.topic in m.topics]
        if not eligible:
            continue
        under = [m for m in eligible if len(out[m.member_id]) < quota[m.member_id]] or eligible
        chosen = min(under, key=lambda m: (len(out[m.member_id]), m.member_id))
        out[chosen.member_id].append(tp)
        taken.add(tp)
    return {k: frozenset(v) for k, v in out.items()}


_ASSIGNORS: dict[str, Assignor] = {
    "range": assign_range,
    "roundrobin": assign_roundrobin,
    "cooperative-sticky": assign_sticky,
}


class Group:
    """One consumer group on the coordinator (classic protocol).

    * A join, a leave, an eviction or :meth:`rebalance` moves the group to
      PREPARING_REBALANCE: every member must rejoin. Cooperative members rejoin at
      once (their background thread does it, keeping their partitions); eager
      members rejoin from their next poll, after revoking everything. A crashed
      member never rejoins: the rebalance waits until its session times out.
    * When every member has rejoined the generation increases, the assignor of
      the first strategy all members support computes the assignment and each
      member is told (``on_synced``); the app sees it at its next poll.
    * Commits are accepted from a current member with the current generation
      (also while a rebalance is being prepared, so revoke handlers can commit);
      otherwise they fail with UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION.
    """

    def __init__(
        self,
        group_id: str,
        topic_sizes: Callable[[], dict[str, int]],
        record: Callable[[Event], None],
        now: Callable[[], float],
    ) -> None:
        self.group_id = group_id
        self.generation = 0
        self.state = GroupState.EMPTY
        self.members: dict[str, Member] = {}
        self.committed: dict[TopicPartition, CommittedPosition] = {}
        self._topic_sizes = topic_sizes
        self._record = record
        self._now = now
        self._next_id = 0

    # -- membership -----------------------------------------------------------------

    def join(
        self, client: GroupClient, topics: tuple[str, ...], strategies: tuple[str, ...]
    ) -> Member:
        """Add a member; it gets a fresh member id and the group rebalances."""
        for other in self.members.values():
            if not set(other.strategies) & set(strategies):
                raise ValueError(
                    f"INCONSISTENT_GROUP_PROTOCOL: group {self.group_id!r}: member {client.name!r} "
                    f"uses {','.join(strategies)} but {other.client.name!r} "
                    f"uses {','.join(other.strategies)}"
                )
        self._next_id += 1
        member = Member(f"{client.name}-{self._next_id}", client, topics, strategies)
        self.members[member.member_id] = member
        self.rebalance()
        return member

    def leave(self, member_id: str, reason: str) -> None:
        """Remove a member (orderly leave or eviction) and rebalance the rest."""
        member = self.members.pop(member_id, None)
        if member is None:
            return
        self._record(Leave(time=self._now(), member=member.client.name, reason=reason))
        if reason != "close":
            member.client.on_evicted(reason)
        if self.members:
            self.rebalance()
        else:
            self.state = GroupState.EMPTY

    def rebalance(self) -> None:
        """Start a rebalance: every member must rejoin."""
        if not self.members:
            self.state = GroupState.EMPTY
            return
        self.state = GroupState.PREPARING_REBALANCE
        for m in self.members.values():
            m.rejoined = m.cooperative and m.client.alive
        self._maybe_complete()

    def rejoined(self, member_id: str) -> None:
        """An (eager) member has revoked its partitions and rejoined."""
        member = self.members.get(member_id)
        if member is not None and self.state is GroupState.PREPARING_REBALANCE:
            member.rejoined = True
            self._maybe_complete()

    def needs_rejoin(self, member_id: str) -> bool:
        member = self.members.get(member_id)
        return (
            member is not None
            and self.state is GroupState.PREPARING_REBALANCE
            and not member.rejoined
        )

    def _maybe_complete(self) -> None:
        if self.state is not GroupState.PREPARING_REBALANCE:
            return
        if not all(m.rejoined for m in self.members.values()):
            return
        self.generation += 1
        self.state = GroupState.STABLE
        members = list(self.members.values())
        common = [s for s in members[0].strategies if all(s in m.strategies for m in members)]
        wanted = {t for m in members for t in m.topics}
        sizes = {t: n for t, n in self._topic_sizes().items() if t in wanted}
        target = _ASSIGNORS[common[0]](members, sizes)
        if members[0].cooperative:
            owner = {tp: m.member_id for m in members for tp in m.client.owned}
            target = {
                mid: frozenset(tp for tp in tps if owner.get(tp, mid) == mid)
                for mid, tps in target.items()
            }
        for m in members:
            m.client.on_synced(self.generation, target.get(m.member_id, frozenset()))

    # -- offsets --------------------------------------------------------------------

    def commit(
        self,
        member_name: str,
        member_id: str | None,
        generation: int,
        positions: Iterable[StoredPosition],
        forced_error: BrokerErrorInfo | None = None,
    ) -> list[CommitResult]:
        """Commit positions for a member; one result (and one history event) per partition."""
        if forced_error is not None:
            error: BrokerErrorInfo | None = forced_error
        elif member_id is None or member_id not in self.members:
            error = BrokerErrorInfo(
                "UNKNOWN_MEMBER_ID", f"{member_name!r} is not a member of group {self.group_id!r}"
            )
        elif generation != self.generation:
            error = BrokerErrorInfo(
                "ILLEGAL_GENERATION",
                f"{member_name!r} commits with generation {generation}; "
                f"group {self.group_id!r} is at generation {self.generation}",
            )
        else:
            error = None
        results: list[CommitResult] = []
        now = self._now()
        for sp in positions:
            tp = sp.tp
            if error is None:
                self.committed[tp] = CommittedPosition(
                    tp, sp.position, sp.metadata, sp.leader_epoch
                )
            self._record(
                Commit(
                    time=now,
                    member=member_name,
                    generation=generation,
                    topic=tp.topic,
                    partition=tp.partition,
                    position=sp.position,
                    metadata=sp.metadata,
                    ok=error is None,
                    error=None if error is None else error.name,
                )
            )
            results.append(CommitResult(tp, sp.position, error))
        return results

    def committed_position(self, tp: TopicPartition) -> CommittedPosition:
        return self.committed.get(tp) or CommittedPosition(tp)

"""The group coordinator: membership, generations (classic) or group and member
epochs (KIP-848), static members, assignment, committed positions."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Protocol

from offsetledger.core import (
    BrokerError,
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    StoredPosition,
    TopicPartition,
)
from offsetledger.history import Commit, Event, Leave
from offsetledger.simulator._clock import Timer

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
    def on_fenced(self, error: BrokerErrorInfo) -> None: ...


class GroupState(enum.Enum):
    EMPTY = "empty"
    PREPARING_REBALANCE = "preparing_rebalance"  #: waiting for every member to rejoin
    STABLE = "stable"


class Member:
    __slots__ = (
        "assignment",
        "client",
        "cooperative",
        "epoch",
        "expiry",
        "instance_id",
        "left_static",
        "member_id",
        "rejoined",
        "strategies",
        "target",
        "topics",
    )

    def __init__(
        self,
        member_id: str,
        client: GroupClient,
        topics: tuple[str, ...],
        strategies: tuple[str, ...],
        instance_id: str | None = None,
        *,
        kip848: bool = False,
    ) -> None:
        self.member_id = member_id
        self.client = client
        self.topics = topics
        self.strategies = strategies
        self.cooperative = kip848 or strategies == ("cooperative-sticky",)
        self.rejoined = False
        self.instance_id = instance_id
        #: what the coordinator believes the member holds (classic: its last synced
        #: assignment; KIP-848: what it has been given and not yet released)
        self.assignment: frozenset[TopicPartition] = frozenset()
        #: KIP-848: the target assignment of the current group epoch
        self.target: frozenset[TopicPartition] = frozenset()
        #: KIP-848: the member epoch (the group epoch it last reconciled to)
        self.epoch = 0
        #: the session-timeout timer of a member whose process is gone
        self.expiry: Timer | None = None
        #: a static member that closed (left "temporarily", KIP-848 epoch -2)
        self.left_static = False


def _client_owned(member: Member) -> frozenset[TopicPartition]:
    return member.client.owned


def _broker_owned(member: Member) -> frozenset[TopicPartition]:
    return member.assignment


Assignor = Callable[..., dict[str, frozenset[TopicPartition]]]


def assign_range(
    members: list[Member],
    topics: dict[str, int],
    owned: Callable[[Member], frozenset[TopicPartition]] = _client_owned,
) -> dict[str, frozenset[TopicPartition]]:
    """Kafka's RangeAssignor: per topic, members sorted by id take contiguous ranges;
    the first ``partitions % members`` take one extra. Not sticky: ``owned`` (what
    each member holds) is taken for a common assignor signature and not used."""
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
    members: list[Member],
    topics: dict[str, int],
    owned: Callable[[Member], frozenset[TopicPartition]] = _client_owned,
) -> dict[str, frozenset[TopicPartition]]:
    """Kafka's RoundRobinAssignor: all partitions in (topic, partition) order dealt
    to members in id order, skipping members not subscribed to the topic (``owned``
    is not used: not sticky)."""
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
    members: list[Member],
    topics: dict[str, int],
    owned: Callable[[Member], frozenset[TopicPartition]] = _client_owned,
) -> dict[str, frozenset[TopicPartition]]:
    """A sticky, balanced assignment (the target of cooperative-sticky, and of the
    KIP-848 ``uniform`` assignor): each member keeps the partitions it owns
    (``owned``: by default what its client holds) up to its fair share; the rest go
    to the least loaded eligible members. Deterministic: ties break by member id."""
    everything = sorted(TopicPartition(t, p) for t in topics for p in range(topics[t]))
    if not members:
        return {}
    base, extra = divmod(len(everything), len(members))
    by_owned = sorted(members, key=lambda m: (-len(owned(m)), m.member_id))
    quota = {m.member_id: base + (1 if i < extra else 0) for i, m in enumerate(by_owned)}
    out: dict[str, list[TopicPartition]] = {m.member_id: [] for m in members}
    taken: set[TopicPartition] = set()
    valid = set(everything)
    for m in sorted(members, key=lambda m: m.member_id):
        for tp in sorted(owned(m)):
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
    """One consumer group on the coordinator, with either protocol.

    **Classic** (``group.protocol=classic``):

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

    **KIP-848** (``group.protocol=consumer``; the group's protocol is the one of
    the member that joins it while it is empty):

    * The broker assigns. A join, a leave, an eviction, a new topic or
      :meth:`rebalance` bumps the *group epoch* and computes a new target
      assignment for every member (``uniform``: sticky and balanced, the default;
      or ``range``); nobody revokes everything.
    * Each member reconciles at its heartbeat (:meth:`reconcile`, from its poll):
      first it revokes the partitions it holds outside its target and releases them
      (:meth:`released`), then it gets the partitions of its target that nobody
      else holds any more; its *member epoch* becomes the group epoch once nothing
      is left to revoke. A partition is therefore never held by two members.
    * Commits from a member must carry its current member epoch
      (``STALE_MEMBER_EPOCH`` otherwise; ``UNKNOWN_MEMBER_ID`` from a member the
      group does not know). A client that is not a member (it left after
      ``max.poll.interval.ms``, or was fenced, and has not rejoined yet) commits
      with epoch -1: the broker **accepts** that while the group has no members at
      all, as Kafka 4.x does (observed on the real broker by this project,
      tests/integration/test_confluent_adapter.py), and rejects it with
      UNKNOWN_MEMBER_ID otherwise.
    * The session timeout is the broker's (:attr:`session_timeout_ms`, Kafka's
      ``group.consumer.session.timeout.ms``); the client's is not used.

    **Static members** (``group.instance.id``, both protocols): a static member
    that closes does not leave; it stays in the group with its assignment until
    the session times out. A new client with the same instance id that joins
    before then takes its place, with its assignment and without a rebalance (a
    new member id; same generation). Classic: this also holds for a member whose
    process crashed, and a previous client still alive is fenced
    (``FENCED_INSTANCE_ID``, fatal). KIP-848: only a member that closed (left
    with epoch -2) can be replaced; while one that crashed (or is alive) holds
    the instance id, the new client's join fails with ``UNRELEASED_INSTANCE_ID``
    (fatal for that client), as Kafka 4.x does (found by this project's chaos run
    on the real broker).

    Departures from Kafka: a classic member cannot join a KIP-848 group that has
    members (and the other way round) — Kafka 4.x can migrate a group online; the
    rebalance timeout is not modelled (a rebalance waits for a member that is gone
    until its session times out).
    """

    def __init__(  # noqa: PLR0917 - the coordinator's narrow view of the world
        self,
        group_id: str,
        topic_sizes: Callable[[], dict[str, int]],
        record: Callable[[Event], None],
        now: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], Timer] | None = None,
        session_timeout_ms: int = 45_000,
    ) -> None:
        self.group_id = group_id
        #: classic: the generation; KIP-848: the group epoch
        self.generation = 0
        self.state = GroupState.EMPTY
        self.members: dict[str, Member] = {}
        self.committed: dict[TopicPartition, CommittedPosition] = {}
        #: "classic" or "consumer"
        self.protocol = "classic"
        #: KIP-848: the broker-side session timeout (group.consumer.session.timeout.ms)
        self.session_timeout_ms = session_timeout_ms
        #: KIP-848: the broker-side assignor ("uniform" or "range")
        self.remote_assignor = "uniform"
        self._static: dict[str, str] = {}  # instance id -> member id
        self._topic_sizes = topic_sizes
        self._record = record
        self._now = now
        self._call_later = call_later
        self._next_id = 0

    @property
    def kip848(self) -> bool:
        return self.protocol == "consumer"

    # -- membership -----------------------------------------------------------------

    def join(
        self,
        client: GroupClient,
        topics: tuple[str, ...],
        strategies: tuple[str, ...],
        *,
        protocol: str = "classic",
        instance_id: str | None = None,
        remote_assignor: str | None = None,
    ) -> Member:
        """Add a member; it gets a fresh member id and the group rebalances (a
        static member taking over its instance's place does not rebalance)."""
        if self.members and protocol != self.protocol:
            raise ValueError(
                f"INCONSISTENT_GROUP_PROTOCOL: group {self.group_id!r} runs the "
                f"{self.protocol!r} protocol; member {client.name!r} asks for {protocol!r}"
            )
        if not self.members:
            self.protocol = protocol
        if protocol == "consumer" and remote_assignor is not None:
            self.remote_assignor = remote_assignor
        if protocol == "classic":
            for other in self.members.values():
                if not set(other.strategies) & set(strategies):
                    raise ValueError(
                        f"INCONSISTENT_GROUP_PROTOCOL: group {self.group_id!r}: member "
                        f"{client.name!r} uses {','.join(strategies)} but "
                        f"{other.client.name!r} uses {','.join(other.strategies)}"
                    )
        self._next_id += 1
        member_id = f"{client.name}-{self._next_id}"
        if instance_id is not None:
            previous = self.members.get(self._static.get(instance_id, ""))
            if previous is not None and self.kip848 and not previous.left_static:
                # KIP-848: only a static member that left (closed) can be replaced;
                # one that crashed holds its instance id until its session times out
                raise BrokerError(
                    "UNRELEASED_INSTANCE_ID",
                    f"the instance id {instance_id!r} is still used by another member "
                    f"of group {self.group_id!r} (until its session times out)",
                )
            if previous is not None and previous.topics == topics:
                return self._take_over(previous, client, member_id)
            if previous is not None:  # a changed subscription: a fresh member
                self.leave(previous.member_id, "replaced")
        member = Member(
            member_id, client, topics, strategies, instance_id, kip848=protocol == "consumer"
        )
        self.members[member_id] = member
        if instance_id is not None:
            self._static[instance_id] = member_id
        if self.kip848:
            self._new_epoch()
        else:
            self.rebalance()
        return member

    def _take_over(self, previous: Member, client: GroupClient, member_id: str) -> Member:
        """A static member's new client takes its place: same assignment, no rebalance."""
        old_client = previous.client
        if old_client is not client and old_client.alive:
            old_client.on_fenced(
                BrokerErrorInfo(
                    "FENCED_INSTANCE_ID",
                    f"another client joined group {self.group_id!r} with group.instance.id "
                    f"{previous.instance_id!r}",
                )
            )
        if previous.expiry is not None:
            previous.expiry.cancel()
            previous.expiry = None
        previous.left_static = False
        del self.members[previous.member_id]
        previous.member_id = member_id
        previous.client = client
        self.members[member_id] = previous
        assert previous.instance_id is not None
        self._static[previous.instance_id] = member_id
        if self.kip848:
            # the new client holds nothing yet: it is given its target again (what
            # the old one was still to revoke is released with it)
            previous.assignment = frozenset()
            previous.epoch = self.generation
            client.on_synced(self.generation, previous.target)
        elif self.state is GroupState.STABLE:
            client.on_synced(self.generation, previous.assignment)
            if self._unowned():
                # a cooperative rebalance whose second round never came: the member
                # that was to rejoin after revoking crashed inside its revoke
                # callback, so the partitions it gave up are nobody's. The
                # successor joins owning nothing (changed metadata), which restarts
                # the rebalance, as Kafka does for a static member whose metadata
                # changed; without this they stay unowned for good.
                self.rebalance()
        else:  # a rebalance is under way: the new client has nothing to revoke
            previous.rejoined = True
            self._maybe_complete()
        return previous

    def _unowned(self) -> frozenset[TopicPartition]:
        """Classic: the subscribed partitions no member's synced assignment holds."""
        wanted = {t for m in self.members.values() for t in m.topics}
        everything = {
            TopicPartition(t, p)
            for t, n in self._topic_sizes().items()
            if t in wanted
            for p in range(n)
        }
        held = {tp for m in self.members.values() for tp in m.assignment}
        return frozenset(everything - held)

    def gone(self, member_id: str, session_timeout_ms: int, *, closed: bool = False) -> None:
        """The member's process died (or, ``closed``, a static member closed): it
        stays in the group until its session times out (KIP-848: the broker's
        timeout)."""
        member = self.members.get(member_id)
        if member is None or self._call_later is None:
            return
        member.left_static = closed
        timeout = self.session_timeout_ms if self.kip848 else session_timeout_ms
        if member.expiry is not None:
            member.expiry.cancel()

        def expire() -> None:
            member.expiry = None
            if self.members.get(member.member_id) is member:
                self.leave(member.member_id, "session_timeout")

        member.expiry = self._call_later(timeout / 1000, expire)

    def leave(self, member_id: str, reason: str) -> None:
        """Remove a member (orderly leave or eviction) and rebalance the rest."""
        member = self.members.pop(member_id, None)
        if member is None:
            return
        if member.expiry is not None:
            member.expiry.cancel()
            member.expiry = None
        if member.instance_id is not None and self._static.get(member.instance_id) == member_id:
            del self._static[member.instance_id]
        self._record(Leave(time=self._now(), member=member.client.name, reason=reason))
        if reason != "close":
            member.client.on_evicted(reason)
        if not self.members:
            self.state = GroupState.EMPTY
        elif self.kip848:
            self._new_epoch()
        else:
            self.rebalance()

    def rebalance(self) -> None:
        """Start a rebalance: every member must rejoin (KIP-848: a new group epoch)."""
        if not self.members:
            self.state = GroupState.EMPTY
            return
        if self.kip848:
            self._new_epoch()
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
            m.assignment = target.get(m.member_id, frozenset())
            m.client.on_synced(self.generation, m.assignment)

    # -- KIP-848 --------------------------------------------------------------------

    def _new_epoch(self) -> None:
        """Bump the group epoch and compute every member's target assignment."""
        self.generation += 1
        self.state = GroupState.STABLE
        members = list(self.members.values())
        wanted = {t for m in members for t in m.topics}
        sizes = {t: n for t, n in self._topic_sizes().items() if t in wanted}
        assignor = assign_range if self.remote_assignor == "range" else assign_sticky
        target = assignor(members, sizes, _broker_owned)
        for m in members:
            m.target = target.get(m.member_id, frozenset())
        for m in members:
            if m.client.alive:
                m.client.on_synced(self.generation, m.target)

    def reconcile(
        self, member_id: str
    ) -> tuple[frozenset[TopicPartition], frozenset[TopicPartition], int] | None:
        """A KIP-848 heartbeat: (to revoke, newly assigned, member epoch), or None
        when the group does not know the member (it was fenced or timed out).

        While something is to be revoked nothing is assigned and the member epoch
        stays; the member calls :meth:`released` after its revoke callback."""
        member = self.members.get(member_id)
        if member is None:
            return None
        revoke = member.assignment - member.target
        if revoke:
            return revoke, frozenset(), member.epoch
        taken: set[TopicPartition] = set()
        for other in self.members.values():
            if other is not member:
                taken.update(other.assignment)
        add = frozenset(tp for tp in member.target - member.assignment if tp not in taken)
        member.assignment = member.assignment | add
        member.epoch = self.generation
        return frozenset(), add, member.epoch

    def released(self, member_id: str, partitions: frozenset[TopicPartition]) -> None:
        """A KIP-848 member revoked ``partitions``: they are free for their new owners."""
        member = self.members.get(member_id)
        if member is None:
            return
        member.assignment = member.assignment - partitions
        for other in self.members.values():
            if other is not member and other.client.alive and other.target & partitions:
                other.client.on_synced(self.generation, other.target)

    # -- offsets --------------------------------------------------------------------

    def _commit_error(
        self, member_name: str, member_id: str | None, generation: int
    ) -> BrokerErrorInfo | None:
        member = None if member_id is None else self.members.get(member_id)
        if self.kip848:
            if member_id is None and not self.members:
                return None  # a non-member commit (epoch -1) to an empty group: accepted
            if member is None:
                return BrokerErrorInfo(
                    "UNKNOWN_MEMBER_ID",
                    f"{member_name!r} is not a member of group {self.group_id!r}",
                )
            if generation != member.epoch:
                return BrokerErrorInfo(
                    "STALE_MEMBER_EPOCH",
                    f"{member_name!r} commits with member epoch {generation}; its epoch "
                    f"in group {self.group_id!r} is {member.epoch}",
                )
            return None
        if member is None:
            return BrokerErrorInfo(
                "UNKNOWN_MEMBER_ID", f"{member_name!r} is not a member of group {self.group_id!r}"
            )
        if generation != self.generation:
            return BrokerErrorInfo(
                "ILLEGAL_GENERATION",
                f"{member_name!r} commits with generation {generation}; "
                f"group {self.group_id!r} is at generation {self.generation}",
            )
        return None

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
        else:
            error = self._commit_error(member_name, member_id, generation)
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

"""SimConsumer: a group consumer with librdkafka's observable behaviour."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from types import MappingProxyType

from offsetledger.core import AssignmentCallback as _Callback
from offsetledger.core import (
    BrokerError,
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    PartitionNotAssignedError,
    Record,
    StoredPosition,
    TopicPartition,
)
from offsetledger.history import Assign, Close, Join, Lost, Revoke, Seek
from offsetledger.simulator._clock import Timer
from offsetledger.simulator._config import ConsumerConfig, parse_consumer_config
from offsetledger.simulator._context import SimContext
from offsetledger.simulator._errors import ProcessCrashed
from offsetledger.simulator._fast import POLLS, STORE
from offsetledger.simulator._group import Group
from offsetledger.simulator._transactions import GroupMetadata

__all__ = ["SimConsumer"]


def _noop(_partitions: Sequence[TopicPartition]) -> None:
    return None


def _pairs(partitions: Iterable[TopicPartition]) -> tuple[tuple[str, int], ...]:
    return tuple((tp.topic, tp.partition) for tp in sorted(partitions))


class SimConsumer:
    """A consumer-group member in a :class:`World`; implements
    :class:`offsetledger.core.ConsumerPort` with librdkafka's observable behaviour:

    * Configuration uses librdkafka keys and defaults (``enable.auto.commit`` and
      ``enable.auto.offset.store`` default to true: an at-least-once runtime must
      set ``enable.auto.offset.store=false``). With auto-store on, every record
      returned by :meth:`poll` is stored at once (offset + 1) and :meth:`store`
      fails with ``_INVALID_ARG``, as librdkafka's ``offsets_store`` does.
    * Group work happens inside :meth:`poll`: joining, and the callbacks in
      librdkafka's order. Eager (range, roundrobin): ``on_revoke`` with everything,
      then (once the whole group rejoined) ``on_assign`` with the new assignment.
      Cooperative-sticky: ``on_revoke`` with only the partitions that move, then
      ``on_assign`` with only the added ones (possibly empty); after revoking, the
      member rejoins so the moved partitions reach their new owner in a follow-up
      rebalance. ``on_lost`` when the member was evicted (session timeout after a
      crash, ``max.poll.interval.ms`` exceeded, or the ``assignment_lost`` fault);
      the member then rejoins with a new member id.
    * ``group.protocol=consumer`` (KIP-848): the broker assigns (see
      :class:`~offsetledger.simulator._group.Group`); at each poll (its heartbeat)
      the member first revokes what its target moved away (``on_revoke`` with only
      those partitions; commits inside it carry the old member epoch, which is
      still current), releases them, then gets what is free of its target
      (``on_assign`` with only the added ones, not called when nothing is added).
      After an eviction it commits as a non-member (epoch -1), which the broker
      accepts while the group is empty. ``session.timeout.ms``,
      ``heartbeat.interval.ms`` and ``partition.assignment.strategy`` are refused.
    * ``group.instance.id`` (static membership): :meth:`close` runs the callbacks
      but does not leave; the group keeps the assignment until the session times
      out, for a restart with the same id to take back without a rebalance. A
      client whose instance was taken over by another live one raises
      ``FENCED_INSTANCE_ID`` from then on.
    * With ``enable.auto.commit`` the stored positions are committed every
      ``auto.commit.interval.ms`` of virtual time (0 disables the timer), after
      ``on_revoke`` returns for the revoked partitions, and on :meth:`close`;
      a partition is skipped when its stored position equals the position this
      client last committed or fetched ("only changed offsets are committed").
      :meth:`commit` without positions follows the same rule. Auto-commit results
      are kept in :attr:`auto_commit_results` (librdkafka's ``offset_commit_cb``).
    * Stored positions are forgotten on assign, revoke and lost; storing for a
      partition not assigned raises PartitionNotAssignedError (librdkafka's
      ``_STATE``), and nothing of that call is stored.
    * The fetch position of a newly assigned partition is the committed position,
      else ``auto.offset.reset``; a position outside [log start, log end] (e.g.
      after retention truncation) is reset the same way. With
      ``auto.offset.reset=error`` poll raises BrokerError ``_AUTO_OFFSET_RESET``
      (its message names the broker's OFFSET_OUT_OF_RANGE) once, and the partition
      stays stopped until it is assigned again.
    * :meth:`poll` returns at once when records are available; otherwise it waits
      up to ``timeout`` seconds of virtual time (never real time), returning early
      when records arrive. Partitions are served in rotating order.

    * Transactions (:class:`offsetledger.core.TransactionalConsumerPort`):
      ``isolation.level`` ``read_committed`` (librdkafka's default) never returns
      records at or above a partition's last stable offset, records of aborted
      transactions, or markers (the position moves past skipped offsets below the
      LSO); ``read_uncommitted`` returns every record (markers excepted).
      :meth:`group_metadata` is what ``send_offsets_to_transaction`` takes;
      :meth:`seek` moves a fetch position. A read_committed consumer fetches
      committed positions with ``require_stable`` (KIP-447, as librdkafka does for
      read_committed): a partition whose offsets a still open transaction holds is
      not fetched after assign until that transaction ends (then from the new
      committed position), and :meth:`committed` waits up to its timeout (virtual
      time) for it, then raises a retriable ``_TIMED_OUT`` (Kafka's broker answers
      ``UNSTABLE_OFFSET_COMMIT`` and librdkafka retries until the timeout).

    Departures from Kafka: heartbeats are implicit (a live member never times out
    unless a fault or its own crash says so), the JoinGroup/SyncGroup round trips
    take no virtual time, commits never check partition ownership (as in Kafka),
    and ``committed`` takes no time. :meth:`store` behaves as the confluent adapter
    does: the assigned partitions of a call are stored and any unassigned one raises
    (librdkafka itself raises ``_STATE`` only when none of the call was stored).
    """

    def __init__(self, world: SimContext, config: Mapping[str, object], member: str) -> None:
        if not isinstance(member, str) or not member:
            raise ValueError(f"member must be a non-empty string, got {member!r}")
        #: the validated configuration
        self.settings: ConsumerConfig = parse_consumer_config(config)
        self._effective = MappingProxyType(self.settings.librdkafka())
        self._world = world
        self._name = member
        self._group: Group = world.cluster.group(self.settings.group_id)
        self._topics: tuple[str, ...] = ()
        self._on_assign: _Callback = _noop
        self._on_revoke: _Callback = _noop
        self._on_lost: _Callback = _noop
        self._member_id: str | None = None
        self._generation = -1
        self._pending: frozenset[TopicPartition] | None = None
        self._pending_generation = -1
        self._evicted: str | None = None
        self._owned: frozenset[TopicPartition] = frozenset()
        self._order: list[TopicPartition] = []
        self._positions: dict[TopicPartition, int] = {}
        self._stored: dict[TopicPartition, StoredPosition] = {}
        self._known_committed: dict[TopicPartition, int | None] = {}
        self._paused: set[TopicPartition] = set()
        self._stopped: set[TopicPartition] = set()
        #: assigned partitions waiting for a pending transactional offset commit
        self._unstable: set[TopicPartition] = set()
        self._read_committed = self.settings.isolation_level == "read_committed"
        self._rr = 0
        self._crashed = False
        self._closed = False
        self._in_poll = False
        self._last_poll_us = world.clock.now_us
        self._poll_timer: Timer | None = None
        self._commit_timer: Timer | None = None
        #: set when a newer client of the same group.instance.id fenced this one
        self._fenced: BrokerErrorInfo | None = None
        #: results of every auto-commit (timer, revoke, close), in order
        self.auto_commit_results: list[CommitResult] = []

    @property
    def config(self) -> Mapping[str, object]:
        """The effective configuration: librdkafka keys, defaults filled in."""
        return self._effective

    # -- identity (GroupClient) --------------------------------------------------------

    @property
    def name(self) -> str:
        """The member (process) name given to :meth:`World.consumer`."""
        return self._name

    @property
    def member_id(self) -> str | None:
        """The coordinator's member id (changes at every join), None when not a member."""
        return self._member_id

    @property
    def generation(self) -> int:
        """The group generation this member last synced with (-1 before the first)."""
        return self._generation

    @property
    def owned(self) -> frozenset[TopicPartition]:
        return self._owned

    @property
    def alive(self) -> bool:
        return not self._crashed and not self._closed

    @property
    def crashed(self) -> bool:
        return self._crashed

    @property
    def closed(self) -> bool:
        return self._closed

    def on_synced(self, generation: int, assignment: frozenset[TopicPartition]) -> None:
        self._generation = generation
        self._pending = assignment
        self._pending_generation = generation

    def on_evicted(self, reason: str) -> None:
        self._evicted = reason
        self._member_id = None
        self._pending = None
        if self.settings.kip848:
            self._generation = -1  # librdkafka forgets its member epoch: it commits as -1

    def on_fenced(self, error: BrokerErrorInfo) -> None:
        """A newer client with this client's ``group.instance.id`` joined: every
        later call raises ``FENCED_INSTANCE_ID`` (fatal), as librdkafka does."""
        self._fenced = error
        self._member_id = None
        self._pending = None

    # -- port ----------------------------------------------------------------------

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: _Callback,
        on_revoke: _Callback,
        on_lost: _Callback,
    ) -> None:
        """Subscribe to ``topics``; the member joins its group at the next poll."""
        self._check_usable()
        if isinstance(topics, str) or not topics:
            raise ValueError(f"topics must be a non-empty sequence of topic names, got {topics!r}")
        if self._topics:
            raise RuntimeError(
                f"consumer {self._name!r} is already subscribed to {list(self._topics)}"
            )
        self._topics = tuple(dict.fromkeys(topics))
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Serve group events and callbacks, then return up to ``max_records`` records."""
        self._check_usable()
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        world = self._world
        faults = world.faults
        clock = world.clock
        self._crash_fault()
        self._last_poll_us = clock.now_us
        self._in_poll = True
        try:
            if faults.armed("clock_jump") and faults.fires("clock_jump", self._name):
                clock.jump(faults.clock_jump_seconds)
            if self._member_id is not None:
                if faults.armed("assignment_lost") and faults.fires("assignment_lost", self._name):
                    self._group.leave(self._member_id, "forced")
                elif faults.armed("rebalance") and faults.fires("rebalance", self._name):
                    self._group.rebalance()
            if faults.armed("truncate") and self._owned and faults.fires("truncate", self._name):
                world.truncate_somewhere(sorted(self._owned))
            try:
                self._serve_group()
            except BrokerError:
                if self._fenced is not None:  # the join was refused: its answer took the wait
                    clock.advance_to_us(clock.now_us + round(timeout * 1_000_000))
                raise
            if faults.armed("empty_poll") and faults.fires("empty_poll", self._name):
                clock.advance(timeout)
                return []
            records = self._fetch(max_records)
            if records:
                return records
            deadline = clock.now_us + round(timeout * 1_000_000)
            while True:
                due = clock.next_due_us()
                if due is None or due > deadline:
                    clock.advance_to_us(deadline)
                    break
                clock.advance_to_us(due)
                if self._crashed:
                    raise ProcessCrashed(self._name)
                if self._evicted is not None or self._pending is not None:
                    self._serve_group()
                if self._has_data():
                    records = self._fetch(max_records)
                    if records:
                        return records
            self._serve_group()
            return self._fetch(max_records)
        finally:
            self._in_poll = False
            self._last_poll_us = clock.now_us

    def store(self, positions: Iterable[StoredPosition]) -> None:
        """Store positions for the next commit. As librdkafka, the assigned partitions of
        the call are stored; any unassigned one then raises PartitionNotAssignedError."""
        self._check_usable()
        self._crash_fault()
        if self.settings.enable_auto_offset_store:
            raise BrokerError(
                "_INVALID_ARG",
                "store() requires enable.auto.offset.store=false (librdkafka refuses explicit "
                "stores while automatic offset storing is on)",
            )
        batch = list(positions)
        owned = self._owned
        pending = self._world.recorder.pending
        now = self._world.clock.now()
        name = self._name
        stored = self._stored
        refused: list[StoredPosition] = []
        for sp in batch:
            tp = sp.tp
            if tp not in owned:
                refused.append(sp)
                continue
            stored[tp] = sp
            pending.append((STORE, now, name, tp.topic, tp.partition, sp.position))
        if refused:
            raise PartitionNotAssignedError(
                "_STATE: cannot store "
                + ", ".join(f"position {sp.position} for {sp.tp}" for sp in refused)
                + f": not assigned to {self._name!r} "
                f"(assigned: {', '.join(map(str, sorted(owned))) or 'none'}); the assigned "
                "partitions of the call were stored"
            )

    def commit(self, positions: Sequence[StoredPosition] | None = None) -> list[CommitResult]:
        """Commit synchronously; with ``positions`` None, the stored positions that
        changed since this client's last known commit (an empty list when none)."""
        self._check_usable()
        self._crash_fault()
        batch = self._changed_stored(self._owned) if positions is None else list(positions)
        return self._commit(batch)

    def committed(
        self, partitions: Collection[TopicPartition], timeout: float
    ) -> dict[TopicPartition, CommittedPosition]:
        """The group's committed positions (position None where nothing is committed).
        read_committed: waits (virtual time, up to ``timeout``) while an open
        transaction holds a pending offset commit of one of them (require_stable)."""
        self._check_usable()
        if self._read_committed:
            clock = self._world.clock
            deadline = clock.now_us + round(timeout * 1_000_000)
            while any(self._pending_commit(tp) for tp in partitions):
                due = clock.next_due_us()
                if due is None or due > deadline:
                    clock.advance_to_us(deadline)
                    raise BrokerError(
                        "_TIMED_OUT",
                        "committed: an open transaction holds a pending offset commit "
                        "(broker: UNSTABLE_OFFSET_COMMIT)",
                        retriable=True,
                    )
                clock.advance_to_us(due)
                if self._crashed:
                    raise ProcessCrashed(self._name)
        return {tp: self._group.committed_position(tp) for tp in partitions}

    def group_metadata(self) -> GroupMetadata:
        """This member's group metadata now (``consumer_group_metadata()``)."""
        self._check_usable()
        return GroupMetadata(self.settings.group_id, self._name, self._member_id, self._generation)

    def seek(self, position: StoredPosition) -> None:
        """Fetch ``position.tp`` from ``position.position`` at the next poll (an
        assigned partition; a position outside the log is reset at the fetch)."""
        self._check_usable()
        tp = position.tp
        self._check_assigned((tp,), "seek")
        self._positions[tp] = position.position
        self._stopped.discard(tp)
        self._unstable.discard(tp)
        world = self._world
        world.recorder.record(
            Seek(
                time=world.clock.now(),
                member=self._name,
                topic=tp.topic,
                partition=tp.partition,
                position=position.position,
            )
        )

    def _pending_commit(self, tp: TopicPartition) -> bool:
        return self._world.cluster.transactions.unstable(self.settings.group_id, tp)

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        """Stop fetching ``partitions`` (assigned ones) until :meth:`resume`."""
        self._check_usable()
        self._check_assigned(partitions, "pause")
        self._paused.update(partitions)

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        """Fetch ``partitions`` again."""
        self._check_usable()
        self._check_assigned(partitions, "resume")
        self._paused.difference_update(partitions)

    def paused(self) -> frozenset[TopicPartition]:
        return frozenset(self._paused)

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions the application holds (as told by its callbacks)."""
        return self._owned

    def position(self, tp: TopicPartition) -> int | None:
        """The fetch position (next offset :meth:`poll` returns from ``tp``)."""
        return self._positions.get(tp)

    def close(self) -> None:
        """Leave in an orderly way: ``on_revoke`` (or ``on_lost`` when already
        evicted or fenced), auto-commit of stored positions, leave the group. A
        static member (``group.instance.id``) does not leave: the group keeps its
        assignment until the session times out, for a restart to take back."""
        if self._crashed:
            raise ProcessCrashed(self._name)
        if self._closed:
            return
        world = self._world
        if self._evicted is not None or self._fenced is not None:
            self._lose()
        elif self._owned:
            self._revoke(self._owned)
        if self._member_id is not None:
            if self.settings.group_instance_id is not None:
                self._group.gone(self._member_id, self.settings.session_timeout_ms, closed=True)
            else:
                self._group.leave(self._member_id, "close")
            self._member_id = None
        self._closed = True
        self._cancel_timers()
        world.recorder.record(Close(time=world.clock.now(), member=self._name))

    # -- crash (called by World) -------------------------------------------------------

    def _crash(self) -> None:
        if self._crashed or self._closed:
            return
        self._crashed = True
        self._cancel_timers()
        self._stored.clear()
        self._positions.clear()
        if self._member_id is not None:
            self._group.gone(self._member_id, self.settings.session_timeout_ms)

    def _crash_fault(self) -> None:
        faults = self._world.faults
        if faults.armed("crash") and faults.fires("crash", self._name):
            self._world.crash(self._name)
        if self._crashed:
            raise ProcessCrashed(self._name)

    # -- internals -----------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._crashed:
            raise ProcessCrashed(self._name)
        if self._closed:
            raise RuntimeError(f"consumer {self._name!r} is closed")
        if self._fenced is not None:
            raise BrokerError(self._fenced.name, self._fenced.message)

    def _check_assigned(self, partitions: Collection[TopicPartition], what: str) -> None:
        missing = [tp for tp in partitions if tp not in self._owned]
        if missing:
            raise PartitionNotAssignedError(
                f"_STATE: cannot {what} {', '.join(map(str, sorted(missing)))}: "
                f"not assigned to {self._name!r}"
            )

    def _cancel_timers(self) -> None:
        for timer in (self._poll_timer, self._commit_timer):
            if timer is not None:
                timer.cancel()
        self._poll_timer = self._commit_timer = None

    def _serve_group(self) -> None:
        if not self._topics:
            return
        group = self._group
        if self._evicted is not None:
            self._lose()
        if self._member_id is None:
            self._join()
        member_id = self._member_id
        assert member_id is not None
        if self.settings.kip848:
            # the coordinator says when there is something to reconcile (a new
            # group epoch, a partition released to this member, a take-over)
            if self._pending is not None:
                self._pending = None
                self._reconcile(member_id)
            return
        # An assignment synced before a new rebalance started is delivered first, so
        # that rejoining revokes it: a member never rejoins while the app still has
        # (or is about to get) partitions of the previous generation, and so no
        # partition is ever held by two members (as librdkafka, which serves the
        # SyncGroup result before it can rejoin).
        if self._pending is not None:
            self._apply(self._pending)
        if group.needs_rejoin(member_id):
            if self._owned:
                self._revoke(self._owned)
            group.rejoined(member_id)
            if self._pending is not None:  # the rebalance completed with this rejoin
                self._apply(self._pending)

    def _reconcile(self, member_id: str) -> None:
        """KIP-848: heartbeat; revoke what the target moved away (the member epoch
        stays while revoking), release it, then take what is free of the target."""
        group = self._group
        while self._member_id == member_id:
            got = group.reconcile(member_id)
            if got is None:
                return
            revoke, add, epoch = got
            if revoke:
                self._revoke(revoke)
                if self._member_id == member_id:
                    group.released(member_id, revoke)
                continue
            self._generation = epoch
            if add:
                self._assign(add, epoch)
            return

    def _join(self) -> None:
        world = self._world
        world.recorder.record(Join(time=world.clock.now(), member=self._name))
        settings = self.settings
        try:
            member = self._group.join(
                self,
                self._topics,
                settings.assignment_strategies,
                protocol=settings.group_protocol,
                instance_id=settings.group_instance_id,
                remote_assignor=settings.remote_assignor,
            )
        except BrokerError as exc:  # fatal for this client (UNRELEASED_INSTANCE_ID)
            self._fenced = BrokerErrorInfo(exc.name, exc.message)
            raise
        self._member_id = member.member_id
        if self._poll_timer is None:
            self._schedule_poll_check()
        if (
            self._commit_timer is None
            and self.settings.enable_auto_commit
            and self.settings.auto_commit_interval_ms > 0
        ):
            self._schedule_auto_commit()

    def _apply(self, assignment: frozenset[TopicPartition]) -> None:
        self._pending = None
        world = self._world
        gen = self._pending_generation
        if self.settings.cooperative:
            revoked = self._owned - assignment
            if revoked:
                self._revoke(revoked)
            added = assignment - self._owned
            self._assign(added, gen)
            if revoked and self._member_id is not None:
                self._group.rebalance()
        else:
            if self._owned:  # defensive: eager members revoke before rejoining
                self._revoke(self._owned)
            self._assign(assignment, gen)
        del world

    def _assign(self, added: frozenset[TopicPartition], generation: int) -> None:
        world = self._world
        ordered = sorted(added)
        world.recorder.record(
            Assign(
                time=world.clock.now(),
                member=self._name,
                generation=generation,
                partitions=_pairs(ordered),
            )
        )
        self._owned = self._owned | added
        for tp in ordered:
            self._stored.pop(tp, None)
            self._paused.discard(tp)
            self._stopped.discard(tp)
        self._order = sorted(self._owned)
        self._on_assign(ordered)
        if self._crashed:
            raise ProcessCrashed(self._name)
        for tp in ordered:
            if tp not in self._owned:
                continue
            self._positions.pop(tp, None)
            if self._read_committed and self._pending_commit(tp):
                self._unstable.add(tp)  # fetched when the transaction ends
                continue
            committed = self._group.committed_position(tp).position
            self._known_committed[tp] = committed
            if committed is not None:
                self._positions[tp] = committed
            elif self.settings.auto_offset_reset != "error":
                self._resolve(tp)

    def _revoke(self, revoked: frozenset[TopicPartition]) -> None:
        world = self._world
        ordered = sorted(revoked)
        world.recorder.record(
            Revoke(
                time=world.clock.now(),
                member=self._name,
                generation=self._generation,
                partitions=_pairs(ordered),
            )
        )
        self._on_revoke(ordered)
        if self._crashed:
            raise ProcessCrashed(self._name)
        if self.settings.enable_auto_commit:
            batch = self._changed_stored(revoked)
            if batch:
                self.auto_commit_results.extend(self._commit(batch))
        self._forget(revoked)

    def _lose(self) -> None:
        world = self._world
        lost = self._owned
        self._evicted = None
        if lost:
            ordered = sorted(lost)
            world.recorder.record(
                Lost(
                    time=world.clock.now(),
                    member=self._name,
                    generation=self._generation,
                    partitions=_pairs(ordered),
                )
            )
            self._on_lost(ordered)
            if self._crashed:
                raise ProcessCrashed(self._name)
        self._forget(lost)

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self._stored.pop(tp, None)
            self._positions.pop(tp, None)
            self._paused.discard(tp)
            self._stopped.discard(tp)
            self._unstable.discard(tp)
            self._known_committed.pop(tp, None)
        self._owned = self._owned - frozenset(partitions)
        self._order = sorted(self._owned)

    def _changed_stored(self, partitions: Collection[TopicPartition]) -> list[StoredPosition]:
        known = self._known_committed
        return [
            sp
            for tp, sp in sorted(self._stored.items(), key=lambda kv: kv[0])
            if tp in partitions and known.get(tp, -1) != sp.position
        ]

    def _commit(self, batch: list[StoredPosition]) -> list[CommitResult]:
        if not batch:
            return []
        faults = self._world.faults
        forced: BrokerErrorInfo | None = None
        if faults.armed("commit_unavailable") and faults.fires("commit_unavailable", self._name):
            forced = BrokerErrorInfo(
                "COORDINATOR_NOT_AVAILABLE",
                "the group coordinator is not available",
                retriable=True,
            )
        elif faults.armed("commit_fenced") and faults.fires("commit_fenced", self._name):
            forced = (
                BrokerErrorInfo(
                    "STALE_MEMBER_EPOCH", "fenced: the member epoch is not current (fault)"
                )
                if self.settings.kip848
                else BrokerErrorInfo(
                    "ILLEGAL_GENERATION",
                    "fenced: the group has moved to a newer generation (fault)",
                )
            )
        results = self._group.commit(self._name, self._member_id, self._generation, batch, forced)
        for r in results:
            if r.ok and r.tp in self._owned:
                self._known_committed[r.tp] = r.position
        return results

    # -- timers ------------------------------------------------------------------------

    def _schedule_poll_check(self) -> None:
        interval_us = self.settings.max_poll_interval_ms * 1000

        def check() -> None:
            self._poll_timer = None
            if not self.alive or self._member_id is None:
                return
            now = self._world.clock.now_us
            if not self._in_poll and now - self._last_poll_us >= interval_us:
                self._group.leave(self._member_id, "max_poll_interval")
                return
            # Inside poll (a rebalance callback that takes long) the interval does not
            # run, as in librdkafka; look again one interval later, never in the past
            # (a due time <= now would fire again at once, for ever).
            due = self._last_poll_us + interval_us
            self._poll_timer = self._world.clock.call_at(
                due if due > now else now + interval_us, check
            )

        self._poll_timer = self._world.clock.call_at(self._last_poll_us + interval_us, check)

    def _schedule_auto_commit(self) -> None:
        interval = self.settings.auto_commit_interval_ms / 1000

        def tick() -> None:
            self._commit_timer = None
            if not self.alive:
                return
            if self._member_id is not None and self._evicted is None:
                batch = self._changed_stored(self._owned)
                if batch:
                    self.auto_commit_results.extend(self._commit(batch))
            self._commit_timer = self._world.clock.call_later(interval, tick)

        self._commit_timer = self._world.clock.call_later(interval, tick)

    # -- fetching ------------------------------------------------------------------------

    def _resolve(self, tp: TopicPartition) -> int | None:
        """The valid fetch position of ``tp`` (applying auto.offset.reset), or None if stopped."""
        log = self._world.cluster.log(tp)
        pos = self._positions.get(tp)
        if pos is not None and log.log_start <= pos <= log.end:
            return pos
        reset = self.settings.auto_offset_reset
        if reset == "earliest":
            new = log.log_start
        elif reset == "latest":
            new = log.end
        else:
            self._stopped.add(tp)
            where = "no committed position" if pos is None else f"fetch position {pos}"
            raise BrokerError(
                "_AUTO_OFFSET_RESET",
                f"{tp}: {where} outside the log [{log.log_start}, {log.end}] "
                f"(broker: OFFSET_OUT_OF_RANGE) and auto.offset.reset=error; the partition stays "
                "stopped until it is assigned again",
            )
        self._positions[tp] = new
        return new

    def _has_data(self) -> bool:
        for tp in self._order:
            if tp in self._paused or tp in self._stopped:
                continue
            pos = self._positions.get(tp)
            log = self._world.cluster.log(tp)
            if pos is None or pos != log.end:  # data, or a reset (or its error) to serve
                return True
        return False

    def _fetch(self, max_records: int) -> list[Record]:
        order = self._order
        if not order:
            return []
        n = len(order)
        start = self._rr % n
        self._rr += 1
        if self._unstable:
            self._settle_unstable()
        fetchable: list[TopicPartition] = []
        for i in range(n):
            tp = order[(start + i) % n]
            if tp not in self._paused and tp not in self._stopped and tp not in self._unstable:
                fetchable.append(tp)
        positions = {tp: self._resolve(tp) for tp in fetchable}
        world = self._world
        out: list[Record] = []
        pending = world.recorder.pending
        now = world.clock.now()
        name = self._name
        gen = self._generation
        auto_store = self.settings.enable_auto_offset_store
        for tp in fetchable:
            room = max_records - len(out)
            if room <= 0:
                break
            pos = positions[tp]
            assert pos is not None
            log = world.cluster.log(tp)
            if self._read_committed:
                records, new_pos = log.fetch_committed(pos, room)
            else:
                records, new_pos = log.fetch(pos, room)
            self._positions[tp] = new_pos
            if not records:
                continue
            topic, partition = tp.topic, tp.partition
            first = records[0].offset
            end = records[-1].offset + 1
            offsets = (
                range(first, end)
                if end - first == len(records)
                else tuple([r.offset for r in records])
            )
            pending.append((POLLS, now, name, gen, topic, partition, offsets))
            out.extend(records)
            if auto_store:
                last = records[-1].offset + 1
                self._stored[tp] = StoredPosition(tp, last, None, 0)
                pending.append((STORE, now, name, topic, partition, last))
        return out

    def _settle_unstable(self) -> None:
        """Fetch positions of partitions whose pending transactional commit ended."""
        for tp in sorted(self._unstable):
            if self._pending_commit(tp):
                continue
            self._unstable.discard(tp)
            committed = self._group.committed_position(tp).position
            self._known_committed[tp] = committed
            if committed is not None:
                self._positions[tp] = committed

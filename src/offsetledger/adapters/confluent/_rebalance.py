"""Rebalance handling of :class:`~offsetledger.adapters.confluent.ConfluentConsumer`:
librdkafka's assign/revoke/lost events answered with the adapter's own assign
calls, the application's callbacks run at the right moment, and the assignment
kept as a set the consumer checks before storing or pausing.

The adapter makes every assign/unassign call itself (confluent-kafka would
otherwise assign after the callback), so it knows the assignment without asking
librdkafka: :attr:`Rebalance.assigned` is updated after each successful assign
and *before* each unassign, so it never names a partition that librdkafka does
not hold (a partition about to be taken counts as gone already)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from offsetledger.adapters.confluent._convert import _core_tp
from offsetledger.adapters.confluent._errors import _LOG, import_confluent_kafka
from offsetledger.core import AssignmentCallback, TopicPartition

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["Rebalance"]


class Rebalance:
    """Answers librdkafka's rebalance events for one consumer.

    ``forget`` drops what the consumer keeps for partitions that leave (stored
    positions, buffered messages); it is called on every assign, revoke and lost,
    since a new assignment epoch starts with nothing stored or buffered."""

    def __init__(
        self, cooperative: bool, forget: Callable[[Iterable[TopicPartition]], None]
    ) -> None:
        self.cooperative = cooperative
        self._forget = forget
        self.on_assign: AssignmentCallback | None = None
        self.on_revoke: AssignmentCallback | None = None
        self.on_lost: AssignmentCallback | None = None
        #: Set once close() ran on_revoke for what the consumer held (see
        #: :meth:`revoke_before_close`).
        self.revoked_on_close = False
        #: The partitions assigned through this object's assign calls.
        self.assigned: set[TopicPartition] = set()

    # -- librdkafka's callbacks (served inside poll and close) --------------------

    def assigned_cb(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        if self.revoked_on_close:
            self._answer_while_closing(consumer, parts, assign=True)
            return
        tps = [_core_tp(p) for p in parts]
        self._forget(tps)  # a new assignment epoch: nothing stored or buffered survives
        if self.cooperative:
            consumer.incremental_assign(parts)
            self.assigned.update(tps)
        else:
            consumer.assign(parts)
            self.assigned = set(tps)
        if self.on_assign is not None:
            self.on_assign(tps)

    def revoked_cb(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        # orderly: the callback runs while the partitions are still assigned, so it
        # can commit them; then they are unassigned (even if the callback raised)
        if self.revoked_on_close:
            # close() already revoked what the application held (see close())
            self._forget(_core_tp(p) for p in parts)
            self._answer_while_closing(consumer, parts, assign=False)
            return
        try:
            if self.on_revoke is not None:
                self.on_revoke([_core_tp(p) for p in parts])
        finally:
            self._unassign(consumer, parts)

    def lost_cb(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        if self.revoked_on_close:
            self._forget(_core_tp(p) for p in parts)
            self._answer_while_closing(consumer, parts, assign=False)
            return
        # already taken: unassign first, so nothing can be stored or committed for
        # them from inside the callback
        self._unassign(consumer, parts)
        if self.on_lost is not None:
            self.on_lost([_core_tp(p) for p in parts])

    # -- helpers ------------------------------------------------------------------

    def _answer_while_closing(
        self,
        consumer: confluent_kafka.Consumer,
        parts: list[confluent_kafka.TopicPartition],
        *,
        assign: bool,
    ) -> None:
        """Answer a rebalance event served while closing, after the orderly revoke.

        librdkafka waits for an assign call after each event it delegates. close()
        unsubscribes and polls before librdkafka's own close (see
        ``ConfluentConsumer.close``), so these events arrive while the group handler
        still runs, and each gets the call that matches it: an assign event its
        partitions (the group's next revoke takes them back; the application never
        sees them), a revoke or lost event ``incremental_unassign`` of its
        partitions (cooperative) or ``unassign`` (eager). Answering every event with
        an empty assign, as before, left librdkafka's assignment and the group's out
        of step, and an assign call made after the group handler terminated is never
        answered at all (confluentinc/librdkafka#4884, #4527): close() hung. The
        application is not called: it already got on_revoke for everything it held
        (see :meth:`revoke_before_close`)."""
        ck = import_confluent_kafka()
        self.assigned.clear()
        try:
            if assign:
                if self.cooperative:
                    consumer.incremental_assign(parts)
                else:
                    consumer.assign(parts)
            elif self.cooperative:
                consumer.incremental_unassign(parts)
            else:
                consumer.unassign()
        except ck.KafkaException as exc:
            _LOG.debug("assign call while closing failed: %s", exc)

    def _unassign(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        tps = [_core_tp(p) for p in parts]
        # gone before librdkafka is told: never store for a partition being taken
        if self.cooperative:
            self.assigned.difference_update(tps)
        else:
            self.assigned.clear()
        self._forget(tps)
        # librdkafka keeps a partition's pause flag across unassign/assign: a partition
        # paused (backpressure) when it was revoked would stay paused forever if it were
        # assigned to this consumer again. A new assignment must start unpaused (as in
        # the Java client and the simulator), so resume before unassigning.
        try:
            consumer.resume(parts)
        except import_confluent_kafka().KafkaException as exc:
            _LOG.debug("resume before unassign failed: %s", exc)
        if self.cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()

    def revoke_before_close(self, consumer: confluent_kafka.Consumer) -> None:
        """Run on_revoke for what the consumer holds, before librdkafka's close.

        A rebalance event that was queued but not yet served (another member
        joined or left since the last poll) is served inside librdkafka's close,
        which then treats the assign call answering it as "unassign everything and
        leave the group", so a revoke callback run after it could no longer commit
        (``_DESTROY`` or ``UNKNOWN_MEMBER_ID``). Events served inside librdkafka's
        close are only answered; the application is not called again."""
        if self.on_revoke is None:  # never subscribed
            return
        ck = import_confluent_kafka()
        try:
            held = sorted(_core_tp(tp) for tp in consumer.assignment())
            member = bool(consumer.memberid())
        except (ck.KafkaException, RuntimeError) as exc:
            _LOG.debug("assignment() before close failed: %s", exc)
            return
        if not member:
            # evicted (or never joined): librdkafka reports the assignment as lost
            # when close() unsubscribes (lost_cb then runs on_lost as usual), and a
            # lost partition must not be committed
            return
        self.revoked_on_close = True
        try:
            if held:
                self.on_revoke(held)
        finally:
            self.assigned.clear()
            self._forget(held)

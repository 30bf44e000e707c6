"""The fault menu: every fault can be scheduled explicitly or fired with a seeded probability."""

from __future__ import annotations

import random

import attrs

__all__ = ["FAULT_KINDS", "FaultRecord", "Faults"]

FAULT_KINDS: dict[str, str] = {
    "crash": "kill -9 of the member's process at a client call (poll, store, commit, "
    "produce, producer poll/flush); the call raises ProcessCrashed",
    "delivery_retriable": "a produced message is not written; its report fails with "
    "NOT_ENOUGH_REPLICAS (retriable)",
    "delivery_fatal": "a produced message is not written; its report fails with "
    "MSG_SIZE_TOO_LARGE (not retriable)",
    "delivery_timeout": "a produced message is not written; after message.timeout.ms "
    "its report fails with _MSG_TIMED_OUT",
    "ack_lost": "a produced message IS written, but the ack is lost: after "
    "message.timeout.ms its report fails with _MSG_TIMED_OUT",
    "commit_unavailable": "a commit fails for every partition with "
    "COORDINATOR_NOT_AVAILABLE (retriable)",
    "commit_fenced": "a commit is rejected for every partition with ILLEGAL_GENERATION",
    "assignment_lost": "at the start of a poll the member is evicted from its group: "
    "that poll serves on_lost and the member rejoins",
    "rebalance": "at the start of a poll the member's group rebalances (as when a member "
    "joins and leaves at once)",
    "slow_task": "an executor task takes Faults.slow_task_seconds of virtual time",
    "empty_poll": "a poll returns no records (after waiting its timeout)",
    "clock_jump": "at the start of a poll the clock jumps by Faults.clock_jump_seconds; "
    "timers due in between fire late",
    "txn_coordinator_unavailable": "a transactional producer's coordinator call "
    "(init_transactions, send_offsets_to_transaction, commit_transaction, "
    "abort_transaction) waits its timeout, then raises a retriable "
    "COORDINATOR_NOT_AVAILABLE; nothing changed",
    "txn_abortable": "commit_transaction raises an abortable TransactionError; the "
    "transaction stays open and must be aborted",
    "txn_fenced": "at a coordinator call the transactional producer finds a newer "
    "instance of its transactional.id (a zombie): its open transaction is aborted and "
    "the call raises a fatal PRODUCER_FENCED",
    "truncate": "at the start of a poll retention truncates one of the member's assigned "
    "partitions to a seeded point",
}


@attrs.frozen
class FaultRecord:
    """A fault that fired: when, which kind, against whom."""

    time: float
    kind: str
    target: str | None


@attrs.define
class _Scheduled:
    target: str | None
    remaining: int


class Faults:
    """The fault menu of a :class:`~offsetledger.simulator.World`.

    Each kind in :data:`FAULT_KINDS` is checked at its own *opportunity* (e.g. every
    produced message for ``delivery_timeout``, every poll for ``empty_poll``), with
    the name of the member or producer involved as the *target*. It fires when

    * an explicit schedule for it is pending: :meth:`schedule` arms the next
      ``times`` opportunities (for one target, or for any); or else
    * a probability is set (:meth:`set_probability`) and the world's seeded
      random draw falls below it.

    With no schedule and no probability the check draws nothing from the random
    stream, so turning faults off does not change other choices. Every fault that
    fired is listed in :attr:`fired`.
    """

    def __init__(self, rng: random.Random, now: object) -> None:
        self._rng = rng
        self._now = now
        self._probability: dict[str, dict[str | None, float]] = {}
        self._scheduled: dict[str, list[_Scheduled]] = {}
        self.fired: list[FaultRecord] = []
        #: virtual seconds a ``slow_task`` takes (default: past the default max.poll.interval.ms)
        self.slow_task_seconds: float = 301.0
        #: virtual seconds a ``clock_jump`` moves the clock
        self.clock_jump_seconds: float = 60.0

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; known: {', '.join(sorted(FAULT_KINDS))}"
            )

    def set_probability(self, kind: str, probability: float, *, target: str | None = None) -> None:
        """Fire ``kind`` at each opportunity with ``probability`` (for ``target`` only,
        or for any target when None; a target-specific value wins)."""
        self._check_kind(kind)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability of {kind!r} must be within [0, 1], got {probability}")
        table = self._probability.setdefault(kind, {})
        if probability == 0.0:
            table.pop(target, None)
            if not table:
                del self._probability[kind]
        else:
            table[target] = probability

    def schedule(self, kind: str, *, target: str | None = None, times: int = 1) -> None:
        """Fire ``kind`` at the next ``times`` opportunities (of ``target``, or of anyone)."""
        self._check_kind(kind)
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times}")
        self._scheduled.setdefault(kind, []).append(_Scheduled(target, times))

    def clear(self) -> None:
        """Remove every schedule and probability."""
        self._probability.clear()
        self._scheduled.clear()

    def armed(self, kind: str) -> bool:
        """Whether ``kind`` may fire at all (cheap check for hot paths)."""
        return kind in self._scheduled or kind in self._probability

    def fires(self, kind: str, target: str | None) -> bool:
        """Decide one opportunity of ``kind`` for ``target``; records it when it fires."""
        pending = self._scheduled.get(kind)
        if pending:
            for item in pending:
                if item.target is None or item.target == target:
                    item.remaining -= 1
                    if item.remaining == 0:
                        pending.remove(item)
                        if not pending:
                            del self._scheduled[kind]
                    return self._fired(kind, target)
        table = self._probability.get(kind)
        if table:
            p = table.get(target, table.get(None)) if target is not None else table.get(None)
            if p is not None and self._rng.random() < p:
                return self._fired(kind, target)
        return False

    def _fired(self, kind: str, target: str | None) -> bool:
        now = self._now
        self.fired.append(FaultRecord(now() if callable(now) else 0.0, kind, target))
        return True

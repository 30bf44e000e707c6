"""AttemptOverlap: the async handler path's own verdict, over ``Attempt`` events.

* two attempts of one input running at once (its retry, or its next owner's
  attempt, started before the previous attempt's coroutine really ended);
* an input counted done (a ``Done`` event, not dead-lettered) by a member whose
  last attempt at it had ended timed out or cancelled.

A member's crash ends its running attempts (the process is gone); a lost
partition ends its old owner's attempts of it (not waited for: the partition may
already be another member's before the loss is found; see docs/async.md); so does a
member's ``Seek`` of a partition (the rewind after an aborted transaction abandons
the epoch's work: its coroutines are cancelled, not waited for, and the records are
read again; swarm seed 253); and so does its removal from the group (a ``Leave``
whose reason is not ``close``: session or poll-interval timeout): every partition it
held may be another member's from then on, before its own ``Lost`` is recorded at its
next poll (async model, simulator seed 732863227). Histories
without ``Attempt`` events (sync handlers) have nothing to check here."""

from __future__ import annotations

from collections.abc import Iterable

from offsetledger.checker._report import Anomaly, AnomalyKind
from offsetledger.core import TopicPartition
from offsetledger.history import Attempt, Crash, Done, Event, Leave, Lost, Seek

__all__ = ["attempt_anomalies"]

_Input = tuple[str, int, int]


def attempt_anomalies(events: Iterable[Event]) -> list[Anomaly]:
    """The ATTEMPT_OVERLAP anomalies of ``events`` (in seq order)."""
    running: dict[_Input, dict[tuple[str, int], Attempt]] = {}
    last_end: dict[tuple[str, _Input], Attempt] = {}
    #: attempts ended by a loss, a seek or a removal, no longer checked for overlap;
    #: True once the same member has started another attempt at the record: the
    #: late end then says nothing about that newer attempt (which may end first).
    #: Until then the late end is the member's last word on the record (swarm seed
    #: 88: a retry running when the member is removed from the group ends ok, and
    #: the record is done after it, not after the timed-out attempt before it).
    abandoned: dict[tuple[str, _Input], dict[int, bool]] = {}
    out: list[Anomaly] = []

    def abandon(member: str, tp: tuple[str, int]) -> None:
        for rec, live in running.items():
            if (rec[0], rec[1]) == tp:
                for who in [w for w in live if w[0] == member]:
                    del live[who]
                    abandoned.setdefault((member, rec), {})[who[1]] = False

    for e in events:
        if isinstance(e, Attempt):
            rec = (e.topic, e.partition, e.offset)
            live = running.setdefault(rec, {})
            if e.phase == "start":
                out.extend(_anomaly(e, other, rec) for other in live.values())
                live[(e.member, e.attempt)] = e
                gone = abandoned.get((e.member, rec), {})
                for attempt in gone:
                    gone[attempt] = True
            elif abandoned.get((e.member, rec), {}).pop(e.attempt, False):
                pass  # superseded: a newer attempt of this member judges the record
            else:
                live.pop((e.member, e.attempt), None)
                last_end[(e.member, rec)] = e
        elif isinstance(e, Crash):
            for live in running.values():
                for who in [w for w in live if w[0] == e.member]:
                    del live[who]
        elif isinstance(e, Leave) and e.reason not in {None, "close"}:
            # removed from the group: its partitions may be reassigned before it
            # finds out (its Lost comes later), its coroutines are zombies by then
            for tp in {(rec[0], rec[1]) for rec in running}:
                abandon(e.member, tp)
        elif isinstance(e, Lost):
            # a lost partition may already be someone else's: its old owner's
            # attempts may run on (the loss is found late), they are not waited for
            for tp in {(t, p) for t, p in e.partitions}:
                abandon(e.member, tp)
        elif isinstance(e, Seek):
            abandon(e.member, (e.topic, e.partition))
        elif isinstance(e, Done) and not e.dead_lettered:
            rec = (e.topic, e.partition, e.offset)
            end = last_end.get((e.member, rec))
            if end is not None and end.outcome in {"timeout", "cancelled"}:
                out.append(
                    Anomaly(
                        kind=AnomalyKind.ATTEMPT_OVERLAP,
                        tp=TopicPartition(e.topic, e.partition),
                        offset=e.offset,
                        seq=e.seq,
                        member=e.member,
                        message=f"{e.topic}[{e.partition}]@{e.offset} counted done by "
                        f"{e.member} after its attempt {end.attempt} ended {end.outcome}",
                        records=(e, end),
                    )
                )
    return out


def _anomaly(start: Attempt, other: Attempt, rec: _Input) -> Anomaly:
    topic, partition, offset = rec
    return Anomaly(
        kind=AnomalyKind.ATTEMPT_OVERLAP,
        tp=TopicPartition(topic, partition),
        offset=offset,
        seq=start.seq,
        member=start.member,
        message=f"{topic}[{partition}]@{offset}: attempt {start.attempt} of {start.member} "
        f"started while attempt {other.attempt} of {other.member} (started at seq "
        f"{other.seq}) was still running",
        records=(start, other),
    )

"""Client-side membership rules, registered in every
:func:`~offsetledger.checker.check`: NoDoubleOwnership (an Assign of a partition
another member still holds) and NoCommitAfterLost (a commit *attempt*, accepted or
not, by a member for a partition it was told is lost, before it is assigned it
again). The second does not depend on a coordinator fencing the commit: under
KIP-848 a broker accepts an evicted member's commit while the group is empty."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from offsetledger.checker._report import Anomaly, AnomalyKind
from offsetledger.core import TopicPartition
from offsetledger.history import Assign, Close, Commit, Crash, Event, Leave, Lost, Revoke

__all__ = ["membership_anomalies", "stale_leaves"]

_TP = tuple[str, int]


def _tpv(tp: _TP) -> TopicPartition:
    return TopicPartition(tp[0], tp[1])


def _fmt(tp: _TP) -> str:
    return f"{tp[0]}[{tp[1]}]"


def stale_leaves(events: Iterable[Event]) -> frozenset[int]:
    """The seqs of Leave events that concern an earlier, crashed process of a member
    name that has joined again since: the coordinator expires the dead process's
    session after its restart joined (``session_timeout``). Such a Leave says
    nothing about what the member's current process holds (under KIP-848 the
    restart keeps its partitions through the new group epoch)."""
    crashed: dict[str, int] = {}
    joined: dict[str, int] = {}
    stale: set[int] = set()
    for e in events:
        kind = e.kind
        if kind == "crash":
            crashed[e.member] = e.seq  # type: ignore[attr-defined]
        elif kind == "join":
            joined[e.member] = e.seq  # type: ignore[attr-defined]
        elif kind == "leave":
            assert isinstance(e, Leave)
            if (
                e.reason == "session_timeout"
                and e.member in crashed
                and joined.get(e.member, -1) > crashed[e.member]
            ):
                stale.add(e.seq)
    return frozenset(stale)


def membership_anomalies(events: Iterable[Event], input_topics: Collection[str]) -> list[Anomaly]:
    """DOUBLE_OWNERSHIP and COMMIT_AFTER_LOST over ``events`` (in seq order)."""
    owner: dict[_TP, str] = {}
    held: dict[str, set[_TP]] = {}
    lost: dict[tuple[str, _TP], Lost] = {}
    out: list[Anomaly] = []
    events = list(events)
    stale = stale_leaves(events)

    def drop(member: str, tps: Iterable[_TP]) -> None:
        mine = held.get(member)
        for tp in tps:
            if owner.get(tp) == member:
                del owner[tp]
            if mine is not None:
                mine.discard(tp)

    for e in events:
        if isinstance(e, Assign):
            for tp in e.partitions:
                if tp[0] not in input_topics:
                    continue
                lost.pop((e.member, tp), None)
                other = owner.get(tp)
                if other is not None and other != e.member:
                    out.append(
                        Anomaly(
                            kind=AnomalyKind.DOUBLE_OWNERSHIP,
                            tp=_tpv(tp),
                            offset=None,
                            seq=e.seq,
                            member=e.member,
                            message=f"{_fmt(tp)} assigned to {e.member} (generation "
                            f"{e.generation}) while {other} still holds it",
                            records=(e,),
                        )
                    )
                owner[tp] = e.member
                held.setdefault(e.member, set()).add(tp)
        elif isinstance(e, Revoke):
            drop(e.member, e.partitions)
        elif isinstance(e, Lost):
            drop(e.member, e.partitions)
            for tp in e.partitions:
                lost[(e.member, tp)] = e
        elif isinstance(e, Crash | Leave | Close):
            if e.seq in stale:
                continue
            drop(e.member, list(held.get(e.member, ())))
            if isinstance(e, Crash):  # a new process remembers nothing it was told
                for key in [k for k in lost if k[0] == e.member]:
                    del lost[key]
        elif isinstance(e, Commit):
            tp = (e.topic, e.partition)
            told = lost.get((e.member, tp))
            if told is not None:
                verdict = "accepted" if e.ok else f"rejected ({e.error})"
                out.append(
                    Anomaly(
                        kind=AnomalyKind.COMMIT_AFTER_LOST,
                        tp=_tpv(tp),
                        offset=None,
                        seq=e.seq,
                        member=e.member,
                        message=f"{e.member} tried to commit {_fmt(tp)} at {e.position} after "
                        f"it was told the partition is lost (seq {told.seq}); the coordinator "
                        f"{verdict} it",
                        records=(e, told),
                    )
                )
    return out

"""ExactlyOnce: the verdict over what a read_committed reader of the outputs sees.

A history of a transactional run (``TxnBegin``/``TxnEnd`` events, see
:mod:`offsetledger.history`) is read as a read_committed consumer would read the
output and dead-letter topics: a record written by a committed transaction, or
outside any transaction, is visible; one of an aborted transaction, or of one
still open at the end of the history, is not. Verdicts:

* ``EO_DUPLICATE``: an input has outputs in more than one committed transaction
  (or non-transactional write): a read_committed reader sees them twice.
* ``EO_LOST``: after a final drain, a readable input has no visible output or
  dead-letter record and was not filtered (a ``Done`` with no outputs).
* ``READ_UNCOMMITTED``: a read_committed member polled a record of an aborted
  transaction, or of one still open when it polled.
* ``COMMIT_PAST_UNCOMMITTED``: a successful commit (a transaction's or a plain one)
  of position ``c`` while an input below ``c`` had no visible output, dead letter
  or filter completion yet.
* ``OUTSIDE_TRANSACTION``: an output or dead-letter record written outside a
  transaction.

:func:`read_committed_view` drops the invisible writes (their ``Append`` and
``Delivery`` events), so that the at-least-once invariants judge the same view.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

from offsetledger.checker._report import Anomaly, AnomalyKind
from offsetledger.core import TopicPartition
from offsetledger.history import (
    Append,
    Commit,
    Delivery,
    Done,
    Event,
    Poll,
    Truncate,
    TxnBegin,
    TxnEnd,
)

__all__ = ["check_exactly_once", "read_committed_view"]

_Off = tuple[str, int, int]


class _Txns:
    """Which write belongs to which transaction, and when each one ended."""

    def __init__(self, events: Sequence[Event]) -> None:
        #: (topic, partition, offset) -> (committed, seq of its TxnEnd)
        self.ended: dict[_Off, tuple[bool, int]] = {}
        #: producers that ever began a transaction -> seqs where one was open
        self.open_since: dict[str, int | None] = {}
        self.transactional: set[str] = set()
        #: writes of transactions still open at the end (by producer, from seq)
        self.open_at_end: set[_Off] = set()
        for e in events:
            if isinstance(e, TxnBegin):
                self.transactional.add(e.by)
                self.open_since[e.by] = e.seq
            elif isinstance(e, TxnEnd):
                for w in e.writes:
                    self.ended[w] = (e.committed, e.seq)
                self.open_since[e.by] = None
        # an append by a producer inside an open transaction that never ended
        in_txn: dict[str, bool] = {}
        for e in events:
            if isinstance(e, TxnBegin):
                in_txn[e.by] = True
            elif isinstance(e, TxnEnd):
                in_txn[e.by] = False
            elif isinstance(e, Append) and not e.control and in_txn.get(e.by):
                key = (e.topic, e.partition, e.offset)
                if key not in self.ended:
                    self.open_at_end.add(key)

    def visible(self, key: _Off) -> bool:
        found = self.ended.get(key)
        if found is not None:
            return found[0]
        return key not in self.open_at_end

    def visible_at(self, key: _Off, append_seq: int) -> int | None:
        """The seq from which a read_committed reader sees ``key`` (None: never)."""
        found = self.ended.get(key)
        if found is not None:
            return found[1] if found[0] else None
        return None if key in self.open_at_end else append_seq


def _anomaly(  # noqa: PLR0917 - positional like the fields, kept short at the call sites
    kind: AnomalyKind,
    tp: TopicPartition,
    offset: int,
    seq: int | None,
    message: str,
    member: str | None = None,
) -> Anomaly:
    return Anomaly(kind=kind, tp=tp, offset=offset, seq=seq, message=message, member=member)


def read_committed_view(events: Sequence[Event]) -> list[Event]:
    """``events`` without the writes a read_committed reader never sees."""
    txns = _Txns(events)
    if not txns.transactional:
        return list(events)
    out: list[Event] = []
    for e in events:
        key: _Off | None = None
        if isinstance(e, Append) and not e.control:  # noqa: SIM114 - mypy narrows each branch
            key = (e.topic, e.partition, e.offset)
        elif isinstance(e, Delivery) and e.offset is not None and e.partition is not None:
            key = (e.topic, e.partition, e.offset)
        if key is None or txns.visible(key):
            out.append(e)
    return out


def check_exactly_once(
    events: Sequence[Event],
    in_topics: Collection[str],
    out_topics: Collection[str | None],
    dead_letter: str | None,
    *,
    final_drain: bool = True,
    read_committed_members: Collection[str] | None = None,
) -> list[Anomaly]:
    """The exactly-once anomalies of ``events`` (sorted by seq); see the module."""
    txns = _Txns(events)
    anomalies: list[Anomaly] = []
    targets = {t for t in out_topics if t is not None}
    if dead_letter is not None:
        targets.add(dead_letter)
    inputs: dict[_Off, int] = {}
    log_start: dict[tuple[str, int], int] = {}
    filtered: dict[_Off, int] = {}
    #: input -> seqs from which each of its visible writers' outputs are visible
    visible_from: dict[_Off, dict[object, int]] = defaultdict(dict)
    for e in events:
        if isinstance(e, Append) and not e.control:
            key = (e.topic, e.partition, e.offset)
            if e.topic in in_topics:
                inputs.setdefault(key, e.seq)
            if e.topic in targets:
                if key not in txns.ended and key not in txns.open_at_end:
                    anomalies.append(
                        _anomaly(
                            AnomalyKind.OUTSIDE_TRANSACTION,
                            TopicPartition(e.topic, e.partition),
                            e.offset,
                            e.seq,
                            f"{e.topic}[{e.partition}]@{e.offset} written by {e.by!r} "
                            "outside a transaction",
                            member=e.by,
                        )
                    )
                src = e.source()
                seen = txns.visible_at(key, e.seq)
                if src is not None and seen is not None:
                    writer: object = txns.ended[key][1] if key in txns.ended else "plain"
                    visible_from[src].setdefault(writer, seen)
        elif isinstance(e, Done) and e.outputs == 0 and not e.dead_lettered:
            filtered.setdefault((e.topic, e.partition, e.offset), e.seq)
        elif isinstance(e, Truncate):
            log_start[(e.topic, e.partition)] = e.log_start
        elif isinstance(e, Poll) and (
            read_committed_members is None or e.member in read_committed_members
        ):
            key = (e.topic, e.partition, e.offset)
            found = txns.ended.get(key)
            if key in txns.open_at_end or (
                found is not None and (not found[0] or found[1] > e.seq)
            ):
                anomalies.append(
                    _anomaly(
                        AnomalyKind.READ_UNCOMMITTED,
                        TopicPartition(e.topic, e.partition),
                        e.offset,
                        e.seq,
                        f"read_committed member {e.member!r} polled {e.topic}[{e.partition}]"
                        f"@{e.offset} of an aborted or open transaction",
                        member=e.member,
                    )
                )
    for src, writers in sorted(visible_from.items()):
        if len(writers) > 1:
            anomalies.append(
                _anomaly(
                    AnomalyKind.EO_DUPLICATE,
                    TopicPartition(src[0], src[1]),
                    src[2],
                    max(writers.values()),
                    f"input {src[0]}[{src[1]}]@{src[2]} has outputs visible from "
                    f"{len(writers)} committed transactions or writes",
                )
            )

    def finished_by(key: _Off, seq: int) -> bool:
        if key in filtered and filtered[key] < seq:
            return True
        return any(s < seq for s in visible_from.get(key, {}).values())

    # COMMIT_PAST_UNCOMMITTED: each successful commit's new range, at its seq
    by_tp: dict[tuple[str, int], list[int]] = defaultdict(list)
    for key in inputs:
        by_tp[(key[0], key[1])].append(key[2])
    for offsets in by_tp.values():
        offsets.sort()
    done_up_to: dict[tuple[str, int], int] = {}
    for e in events:
        if not (isinstance(e, Commit) and e.ok and e.topic in in_topics):
            continue
        tp = (e.topic, e.partition)
        low = done_up_to.get(tp, 0)
        for o in by_tp.get(tp, ()):
            if o < low or o >= e.position:
                continue
            key = (e.topic, e.partition, o)
            if inputs[key] < e.seq and o >= log_start.get(tp, 0) and not finished_by(key, e.seq):
                anomalies.append(
                    _anomaly(
                        AnomalyKind.COMMIT_PAST_UNCOMMITTED,
                        TopicPartition(*tp),
                        o,
                        e.seq,
                        f"{e.member!r} committed {e.topic}[{e.partition}] at {e.position} "
                        f"while input @{o} had no committed output",
                        member=e.member,
                    )
                )
                break
        done_up_to[tp] = max(low, e.position)
    if final_drain:
        for key in sorted(inputs):
            if key[2] < log_start.get((key[0], key[1]), 0):
                continue
            if key not in filtered and not visible_from.get(key):
                anomalies.append(
                    _anomaly(
                        AnomalyKind.EO_LOST,
                        TopicPartition(key[0], key[1]),
                        key[2],
                        None,
                        f"input {key[0]}[{key[1]}]@{key[2]} has no committed output, dead "
                        "letter or filter completion",
                    )
                )
    return anomalies

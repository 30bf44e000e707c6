"""Invariants beyond the core replay of :mod:`offsetledger.checker._check`.

The client-side membership rules (NoDoubleOwnership, NoCommitAfterLost) are in
:mod:`offsetledger.checker._membership` and run in every
:func:`~offsetledger.checker.check`; this module holds the

* **Workload rules** (:func:`check_workload`), for runs whose handler is known:
  the caller says how many distinct outputs each input must have
  (``expected_outputs``), the ordering mode and the buffer limits, and gets

  - CommitSafety and NoLoss judged on *every* expected output (an input is
    finished when all its distinct outputs, by (topic, key, value), are
    acknowledged, or its dead-letter record is): a commit after the first of
    several outputs was acknowledged is a ``COMMIT_PAST_UNFINISHED``;
  - ORDERING: within one assignment epoch of a member, an output (or
    dead-letter record) of input ``b`` written before the previous input ``a``
    of the same key (``key`` mode) or of the same partition (``partition``
    mode), polled in the same epoch, was finished;
  - BOUNDS: at every poll, a member's polled-and-unfinished inputs of one
    partition / in total stay within the configured buffer limits plus one
    poll batch (a poll is issued below the limit and may return a full batch).

  Inputs with zero expected outputs (filters) cannot be judged finished from a
  history without a "done" event: they count as finished once polled (a weaker
  rule, said here so nobody relies on it). Unfinished is counted from
  acknowledgements ever made, so a redelivered input that was finished before
  counts as finished: the bounds check can only under-count, never cry wolf.
  The workload rules assume ``auto.offset.reset=earliest`` (no reset skips).
"""

from __future__ import annotations

import bisect
import heapq
import sys
from collections.abc import Callable, Collection, Iterable
from typing import Literal

import attrs

from offsetledger.checker._check import check
from offsetledger.checker._exactly_once import read_committed_view
from offsetledger.checker._membership import stale_leaves
from offsetledger.checker._report import Anomaly, AnomalyKind, Report
from offsetledger.core import TopicPartition
from offsetledger.history import (
    Append,
    Assign,
    Close,
    Commit,
    Crash,
    Delivery,
    Event,
    History,
    Leave,
    Lost,
    Poll,
    Revoke,
    Seek,
    Truncate,
)

__all__ = ["BufferLimits", "check_pipeline", "check_workload"]

_TP = tuple[str, int]
_Key = tuple[str, int, int]
_NEVER = sys.maxsize
_MAX_LISTED = 8

Ordering = Literal["partition", "key"]


def _tpv(tp: _TP) -> TopicPartition:
    return TopicPartition(tp[0], tp[1])


def _fmt(tp: _TP) -> str:
    return f"{tp[0]}[{tp[1]}]"


# -- workload rules -----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BufferLimits:
    """The Processor's buffer limits in a run, and its poll batch size."""

    per_partition: int
    total: int
    batch_size: int


class _RangeMax:
    """Static range-maximum over a list (sparse table)."""

    def __init__(self, values: list[int]) -> None:
        self.table = [values]
        k = 1
        while 2 * k <= len(values):
            prev = self.table[-1]
            self.table.append([max(prev[i], prev[i + k]) for i in range(len(prev) - k)])
            k *= 2

    def query(self, lo: int, hi: int) -> int:
        """max(values[lo:hi]), -1 when empty."""
        if hi <= lo:
            return -1
        level = (hi - lo).bit_length() - 1
        row = self.table[level]
        return max(row[lo], row[hi - (1 << level)])


class _Workload:
    def __init__(
        self,
        events: list[Event],
        inputs: frozenset[str],
        outputs: frozenset[str],
        dead_letter: str | None,
        expected: Callable[[Append], int | None],
    ) -> None:
        self.inputs: dict[_Key, Append] = {}
        self.expected: dict[_Key, int | None] = {}
        copies: dict[_Key, Append] = {}
        acked: dict[_Key, dict[tuple[str, bytes | None, bytes | None], int]] = {}
        dlq_ack: dict[_Key, int] = {}
        self.first_poll: dict[_Key, int] = {}
        self.truncates: dict[_TP, list[tuple[int, int]]] = {}
        for e in events:
            if isinstance(e, Append):
                if e.control:
                    continue
                if e.topic in inputs:
                    k = (e.topic, e.partition, e.offset)
                    self.inputs[k] = e
                    self.expected[k] = expected(e)
                elif e.topic in outputs or e.topic == dead_letter:
                    copies[(e.topic, e.partition, e.offset)] = e
            elif isinstance(e, Delivery):
                if not e.ok or e.partition is None or e.offset is None:
                    continue
                c = copies.get((e.topic, e.partition, e.offset))
                src = c.source() if c is not None else None
                if c is None or src is None:
                    continue
                if c.topic == dead_letter:
                    dlq_ack.setdefault(src, e.seq)
                else:
                    acked.setdefault(src, {}).setdefault((c.topic, c.key, c.value), e.seq)
            elif isinstance(e, Poll):
                self.first_poll.setdefault((e.topic, e.partition, e.offset), e.seq)
            elif isinstance(e, Truncate):
                self.truncates.setdefault((e.topic, e.partition), []).append((e.seq, e.log_start))
        self.copies = copies
        #: seq at which each input became finished (_NEVER: not yet)
        self.done_at: dict[_Key, int] = {}
        for k in self.inputs:
            n = self.expected[k]
            got = sorted(acked.get(k, {}).values())
            if n == 0:
                done = self.first_poll.get(k, _NEVER)
            elif n is None:
                done = got[0] if got else _NEVER
            else:
                done = got[n - 1] if len(got) >= n else _NEVER
            self.done_at[k] = min(done, dlq_ack.get(k, _NEVER))
        per_tp: dict[_TP, list[int]] = {}
        for k in sorted(self.inputs):
            per_tp.setdefault(k[:2], []).append(k[2])
        self.offsets = per_tp
        self.ranges = {
            tp: _RangeMax([self.done_at[(tp[0], tp[1], o)] for o in offs])
            for tp, offs in per_tp.items()
        }

    def log_start_at(self, tp: _TP, seq: int) -> int:
        start = 0
        for s, ls in self.truncates.get(tp, ()):
            if s >= seq:
                break
            start = max(start, ls)
        return start

    def not_done(self, tp: _TP, lo: int, hi: int, seq: int) -> list[Append]:
        offs = self.offsets.get(tp, [])
        i, j = bisect.bisect_left(offs, lo), bisect.bisect_left(offs, hi)
        table = self.ranges.get(tp)
        if table is None or table.query(i, j) < seq:
            return []
        found = []
        for o in offs[i:j]:
            if self.done_at[(tp[0], tp[1], o)] > seq:
                found.append(self.inputs[(tp[0], tp[1], o)])
                if len(found) == _MAX_LISTED:
                    break
        return found


def _commit_safety(w: _Workload, events: list[Event], inputs: frozenset[str]) -> list[Anomaly]:
    out = []
    for e in events:
        if not isinstance(e, Commit) or not e.ok or e.topic not in inputs:
            continue
        tp = (e.topic, e.partition)
        pending = w.not_done(tp, w.log_start_at(tp, e.seq), e.position, e.seq)
        if pending:
            listed = ", ".join(str(a.offset) for a in pending)
            out.append(
                Anomaly(
                    kind=AnomalyKind.COMMIT_PAST_UNFINISHED,
                    tp=_tpv(tp),
                    offset=pending[0].offset,
                    seq=e.seq,
                    member=e.member,
                    message=f"commit of {_fmt(tp)} at {e.position} by {e.member} (seq {e.seq}): "
                    f"input offsets {listed} below it did not have every expected output "
                    "acknowledged yet",
                    records=(e, *pending),
                )
            )
    return out


def _lost(w: _Workload, final_start: Callable[[_TP], int]) -> list[Anomaly]:
    out = []
    for k, a in w.inputs.items():
        if w.done_at[k] != _NEVER or k[2] < final_start(k[:2]):
            continue
        out.append(
            Anomaly(
                kind=AnomalyKind.LOST,
                tp=_tpv(k[:2]),
                offset=k[2],
                seq=a.seq,
                message=f"input {_fmt(k[:2])}@{k[2]} (seq {a.seq}) does not have all its "
                f"{w.expected[k]} expected outputs (or a dead-letter record) acknowledged "
                "after the final drain",
                records=(a,),
            )
        )
    return out


def _epochs(
    events: list[Event], inputs: frozenset[str]
) -> list[tuple[str, _TP, int, int, list[Poll]]]:
    """Assignment epochs: (member, tp, start seq, end seq, its polls in order)."""
    open_: dict[tuple[str, _TP], tuple[int, list[Poll]]] = {}
    done: list[tuple[str, _TP, int, int, list[Poll]]] = []
    stale = stale_leaves(events)

    def close(member: str, tps: Iterable[_TP], seq: int) -> None:
        for tp in tps:
            got = open_.pop((member, tp), None)
            if got is not None:
                done.append((member, tp, got[0], seq, got[1]))

    for e in events:
        if isinstance(e, Assign):
            for tp in e.partitions:
                if tp[0] in inputs:
                    open_.setdefault((e.member, tp), (e.seq, []))
        elif isinstance(e, Revoke | Lost):
            close(e.member, e.partitions, e.seq)
        elif isinstance(e, Crash | Leave | Close):
            if e.seq not in stale:
                close(e.member, [tp for m, tp in open_ if m == e.member], e.seq)
        elif isinstance(e, Seek):
            # a rewind (after an aborted transaction): what follows is read anew
            tp = (e.topic, e.partition)
            if (e.member, tp) in open_:
                close(e.member, [tp], e.seq)
                open_[(e.member, tp)] = (e.seq, [])
        elif isinstance(e, Poll):
            got = open_.get((e.member, (e.topic, e.partition)))
            if got is not None:
                got[1].append(e)
    close_all = list(open_)
    for member, tp in close_all:
        close(member, [tp], _NEVER)
    return done


def _ordering(
    w: _Workload, events: list[Event], inputs: frozenset[str], mode: Ordering
) -> list[Anomaly]:
    # output and dead-letter copies per (writer, source input), in seq order
    written: dict[tuple[str, _Key], list[int]] = {}
    for c in w.copies.values():
        src = c.source()
        if src is not None:
            written.setdefault((c.by, src), []).append(c.seq)
    for seqs in written.values():
        seqs.sort()
    out = []
    for member, tp, start, end, polls in _epochs(events, inputs):
        previous: dict[object, Poll] = {}
        for p in polls:
            k = (p.topic, p.partition, p.offset)
            a = w.inputs.get(k)
            if a is None:
                continue
            group: object = a.key if mode == "key" else None
            prev = previous.get(group)
            previous[group] = p
            if prev is None:
                continue
            pk = (prev.topic, prev.partition, prev.offset)
            if w.expected.get(pk) == 0:
                continue  # a filter's finishing is not visible in the history
            seqs = written.get((member, k), [])
            i = bisect.bisect_right(seqs, p.seq)
            if i == len(seqs) or seqs[i] >= end:
                continue
            first = seqs[i]
            if w.done_at[pk] > first:
                out.append(
                    Anomaly(
                        kind=AnomalyKind.ORDERING,
                        tp=_tpv(tp),
                        offset=p.offset,
                        seq=first,
                        member=member,
                        message=f"{member} wrote an output of {_fmt(tp)}@{p.offset} (seq {first}) "
                        f"before the previous input of its {mode}, @{prev.offset}, was finished "
                        f"(epoch from seq {start}, {mode} ordering)",
                        records=(w.inputs[k], w.inputs[pk]),
                    )
                )
    return out


def _bounds(
    w: _Workload, events: list[Event], inputs: frozenset[str], limits: BufferLimits
) -> list[Anomaly]:
    slack = limits.batch_size - 1
    # per member: tp -> heap of done_at of polled inputs of the current epoch
    buffers: dict[str, dict[_TP, list[int]]] = {}
    out = []
    flagged: set[tuple[str, str]] = set()
    stale = stale_leaves(events)

    def drop(member: str, tps: Iterable[_TP]) -> None:
        mine = buffers.get(member, {})
        for tp in tps:
            mine.pop(tp, None)

    for e in events:
        if isinstance(e, Revoke | Lost):
            drop(e.member, e.partitions)
        elif isinstance(e, Seek):  # a rewind: the member dropped what it held of it
            drop(e.member, [(e.topic, e.partition)])
        elif isinstance(e, Crash | Leave | Close):
            if e.seq not in stale:
                buffers.pop(e.member, None)
        elif isinstance(e, Poll) and e.topic in inputs:
            k = (e.topic, e.partition, e.offset)
            if k not in w.inputs:
                continue
            mine = buffers.setdefault(e.member, {})
            tp = (e.topic, e.partition)
            heapq.heappush(mine.setdefault(tp, []), w.done_at[k])
            total = 0
            for heap in mine.values():
                while heap and heap[0] < e.seq:
                    heapq.heappop(heap)
                total += len(heap)
            here = len(mine[tp])
            for what, n, limit in (
                ("partition", here, limits.per_partition),
                ("total", total, limits.total),
            ):
                if n > limit + slack and (e.member, what) not in flagged:
                    flagged.add((e.member, what))
                    out.append(
                        Anomaly(
                            kind=AnomalyKind.BOUNDS_EXCEEDED,
                            tp=_tpv(tp),
                            offset=e.offset,
                            seq=e.seq,
                            member=e.member,
                            message=f"{e.member} held {n} polled, unfinished inputs ({what}) "
                            f"at seq {e.seq}: over the limit {limit} plus one poll batch "
                            f"({limits.batch_size})",
                            records=(e,),
                        )
                    )
    return out


def check_workload(
    history: History | Iterable[Event],
    base: Report,
    *,
    inputs: Collection[str],
    outputs: Collection[str],
    dead_letter: str | None,
    expected_outputs: Callable[[Append], int | None],
    final_drain: bool,
    ordering: Ordering | None = None,
    limits: BufferLimits | None = None,
    bounds_history: History | Iterable[Event] | None = None,
) -> Report:
    """``base`` (the report of :func:`~offsetledger.checker.check` over the same
    history) with CommitSafety and NoLoss re-judged on every expected output, plus
    the membership, ORDERING and BOUNDS verdicts (see the module docstring).

    ``expected_outputs(input_append)`` is the number of distinct outputs the
    handler writes for that input (0: a filter; None: unknown, one suffices).
    ``bounds_history`` (default: ``history``) is what BOUNDS judges: a
    transactional run's whole history when ``history`` is its read_committed view
    (a member holds an input until its outputs are acknowledged, committed or not;
    :func:`check_pipeline`)."""
    events = sorted(history, key=lambda e: e.seq)
    in_topics, out_topics = frozenset(inputs), frozenset(outputs)
    w = _Workload(events, in_topics, out_topics, dead_letter, expected_outputs)
    kept = [
        a
        for a in base.anomalies
        if a.kind not in (AnomalyKind.COMMIT_PAST_UNFINISHED, AnomalyKind.LOST)
    ]
    extra = _commit_safety(w, events, in_topics)
    if final_drain:
        extra += _lost(w, lambda tp: w.log_start_at(tp, _NEVER))
    if ordering is not None:
        extra += _ordering(w, events, in_topics, ordering)
    if limits is not None:
        if bounds_history is None:
            extra += _bounds(w, events, in_topics, limits)
        else:
            whole = sorted(bounds_history, key=lambda e: e.seq)
            ww = _Workload(whole, in_topics, out_topics, dead_letter, expected_outputs)
            extra += _bounds(ww, whole, in_topics, limits)
    anomalies = sorted([*kept, *extra], key=lambda a: _NEVER if a.seq is None else a.seq)
    stats = attrs.evolve(base.stats, lost=sum(1 for a in anomalies if a.kind is AnomalyKind.LOST))
    return attrs.evolve(base, anomalies=tuple(anomalies), stats=stats)


def check_pipeline(
    history: History | Iterable[Event],
    *,
    inputs: Collection[str],
    outputs: Collection[str],
    dead_letter: str | None,
    group: str | None,
    expected_outputs: Callable[[Append], int | None],
    final_drain: bool,
    ordering: Ordering | None = None,
    limits: BufferLimits | None = None,
    exactly_once: bool = False,
) -> Report:
    """The whole verdict on a run whose handler is known, in one call:
    :func:`~offsetledger.checker.check` (with the ExactlyOnce verdicts when
    ``exactly_once``), then :func:`check_workload` over the same view of the
    history (a transactional run: what a read_committed reader sees, BOUNDS on the
    whole history). The scenario runner, the swarm and the model tests use it."""
    events = sorted(history, key=lambda e: e.seq)
    base = check(
        events,
        inputs=inputs,
        outputs=outputs,
        dead_letter=dead_letter,
        group=group,
        final_drain=final_drain,
        exactly_once=exactly_once,
    )
    view = read_committed_view(events) if exactly_once else events
    return check_workload(
        view,
        base,
        inputs=inputs,
        outputs=outputs,
        dead_letter=dead_letter,
        expected_outputs=expected_outputs,
        final_drain=final_drain,
        ordering=ordering,
        limits=limits,
        bounds_history=events if exactly_once else None,
    )

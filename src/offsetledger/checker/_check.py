"""The history checker: one indexing pass, one replay in seq order, then the
end-of-run checks. Every step is a dict or bisect look-up, so the cost is
O(n log n) in the number of events.

Terms used throughout (see also :mod:`offsetledger.history`):

* An *input* is a non-control Append to an input topic. Control appends (offsets
  that exist but are never delivered) and offsets never appended (gaps) are not
  inputs: nothing has to be done for them.
* An *output copy* is a non-control Append to an output or the dead-letter topic.
  Its input is what its lineage headers name (:meth:`Append.source`).
* A copy is *acknowledged* at the seq of the first ok Delivery matching its
  (topic, partition, offset). An input is *finished* at the earliest seq at which
  any of its copies was acknowledged. The checker cannot know how many outputs a
  handler meant to write, so for fan-out it checks that at least one was
  acknowledged; a handler that writes nothing for some input makes that input
  look unfinished.
* The *log start* of a partition at seq ``s`` is the highest Truncate
  ``log_start`` recorded before ``s`` (0 before any). An input below it is
  *truncated*: no consumer can read it any more.
* A member's *assignment* grows with Assign (the partitions listed are added; one
  already held keeps its epoch) and shrinks with Revoke and Lost (the partitions
  listed) and with Crash, Leave and Close (everything). The member's
  *generation* is the one of its latest Assign (recorded every generation,
  possibly empty).
* Revoke is recorded when the on-revoke callback starts, so the commits the
  callback (or auto-commit on revoke) makes come after it: a successful commit
  of a just-revoked partition with the Revoke's generation (or a newer one the
  client synced during a long callback, provided no other member holds the
  partition) is allowed until the
  member's next Poll, Assign, Join, Lost, Crash, Leave or Close (the callback has
  returned by then; an empty poll records nothing, so the window may close
  late). A lost partition is never committable. A commit of a held partition
  is fenced-stale only with a generation *lower* than the member's: a higher one
  means the member synced a new generation whose Assign is not applied yet.
* An *assignment epoch* of (member, partition) runs from the Assign that added
  the partition to the event that removed it. Its first poll must be at the
  first readable record at or after the committed position (as of the Assign);
  without one, or with one below the log start, ``auto_offset_reset`` decides
  (``earliest``/``error``: the first readable record at or after the log start;
  ``latest``: anywhere, and the records passed over count as *skipped by
  reset*). Later polls must be above the previous one with only control
  offsets, gaps, truncated records (or, under ``latest``, an out-of-range reset)
  in between.
* CommitSafety exempts inputs already truncated, or skipped by reset, when the
  commit happened: nobody could read them any more, so committing past them
  loses nothing that was still readable.
* Duplicates: the copies of one input's output are grouped by (topic, key,
  value), so fan-out outputs are not duplicates of each other. Each input's
  extra copies are explained by (a) its redeliveries: polls of it with a
  boundary (an Assign, Revoke or Lost of its partition, or a Crash, Leave or
  Close of a member holding it) since its previous poll, and (b) its
  unacknowledged copies (ack-lost or unreported writes, which a retry repeats).
* A *filtered* input: a Done event says a member finished it with no outputs
  (and not dead-lettered). It is finished at the Done's seq, like an
  acknowledged output: a filter is legitimate, not a loss.
* Topics not named are inferred: inputs are the topics polled or committed and
  the topics lineage headers name; the dead-letter topic is the one whose
  records carry the ``offsetledger.error`` header; outputs are the other topics
  written with lineage headers. A named input or output topic that does not
  occur in the history, or a history with no input records, makes the report a
  failure (:attr:`Report.problems`), never OK.
"""

from __future__ import annotations

import bisect
import os
import sys
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Literal

import attrs

from offsetledger.checker._attempts import attempt_anomalies
from offsetledger.checker._exactly_once import check_exactly_once, read_committed_view
from offsetledger.checker._membership import membership_anomalies, stale_leaves
from offsetledger.checker._report import Anomaly, AnomalyKind, Report, Stats
from offsetledger.core import Record, TopicPartition
from offsetledger.history import ERROR_HEADER as _ERROR_HEADER
from offsetledger.history import (
    Append,
    Assign,
    Close,
    Commit,
    Crash,
    Delivery,
    Done,
    Event,
    History,
    Join,
    Leave,
    Lost,
    Poll,
    Revoke,
    Seek,
    Truncate,
)

__all__ = [
    "AutoOffsetReset",
    "check",
    "check_file",
    "check_topics",
    "infer_topics",
    "load_history",
]

AutoOffsetReset = Literal["earliest", "latest", "error"]

_TP = tuple[str, int]
_Key = tuple[str, int, int]
_Identity = tuple[str, bytes | None, bytes | None]

_NEVER = sys.maxsize
_MAX_LISTED = 8  # unfinished records named per COMMIT_PAST_UNFINISHED anomaly
_MAX_SCAN = 256  # records looked at to find them (keeps a commit check bounded)


def _tpv(tp: _TP) -> TopicPartition:
    return TopicPartition(tp[0], tp[1])


def _fmt(tp: _TP) -> str:
    return f"{tp[0]}[{tp[1]}]"


class _Index:
    """What a history appended, acknowledged and truncated (the first pass)."""

    def __init__(
        self,
        events: list[Event],
        inputs: frozenset[str],
        outputs: frozenset[str],
        dead_letter: str | None,
    ) -> None:
        out_topics = outputs | ({dead_letter} if dead_letter is not None else set())
        self.inputs: dict[_Key, Append] = {}
        self.deliverable: dict[_TP, list[int]] = {}
        self.trunc_seqs: dict[_TP, list[int]] = {}
        self.trunc_starts: dict[_TP, list[int]] = {}
        self.phantoms: list[Anomaly] = []
        self.first_ack: dict[_Key, int] = {}
        self.dlq_acked: set[_Key] = set()
        self.copies: dict[_Key, dict[_Identity, list[Append]]] = {}
        self.unacked: Counter[_Key] = Counter()
        self.outputs = 0
        self.dead_letter_records = 0
        self.unmatched_deliveries = 0
        self.filtered = 0

        out_appends: list[Append] = []
        done_empty: dict[_Key, int] = {}
        acks: dict[_Key, int] = {}
        for e in events:
            if isinstance(e, Append):
                if e.control:
                    continue
                if e.topic in inputs:
                    self.inputs[(e.topic, e.partition, e.offset)] = e
                    self.deliverable.setdefault((e.topic, e.partition), []).append(e.offset)
                elif e.topic in out_topics:
                    out_appends.append(e)
            elif isinstance(e, Delivery):
                p, o = e.partition, e.offset
                if e.ok and p is not None and o is not None and e.topic in out_topics:
                    acks.setdefault((e.topic, p, o), e.seq)
            elif isinstance(e, Done):
                if e.outputs == 0 and not e.dead_lettered and e.topic in inputs:
                    done_empty.setdefault((e.topic, e.partition, e.offset), e.seq)
            elif isinstance(e, Truncate):
                tp = (e.topic, e.partition)
                starts = self.trunc_starts.setdefault(tp, [])
                if not starts or e.log_start > starts[-1]:
                    starts.append(e.log_start)
                    self.trunc_seqs.setdefault(tp, []).append(e.seq)
        for offsets in self.deliverable.values():
            offsets.sort()

        matched: set[_Key] = set()
        for a in out_appends:
            if a.topic == dead_letter:
                self.dead_letter_records += 1
            else:
                self.outputs += 1
            own = (a.topic, a.partition, a.offset)
            ack = acks.get(own)
            if ack is not None:
                matched.add(own)
            src = a.source()
            source = self.inputs.get(src) if src is not None else None
            if src is None or source is None or source.seq > a.seq:
                why = (
                    "has no lineage headers"
                    if src is None
                    else f"names input {_fmt(src[:2])}@{src[2]}, which "
                    + ("was never appended" if source is None else "was appended after it")
                )
                self.phantoms.append(
                    Anomaly(
                        kind=AnomalyKind.PHANTOM_OUTPUT,
                        tp=TopicPartition(a.topic, a.partition),
                        offset=a.offset,
                        seq=a.seq,
                        member=a.by,
                        message=f"output {a.topic}[{a.partition}]@{a.offset} (seq {a.seq}) {why}",
                        records=(a,) if source is None else (a, source),
                    )
                )
                continue
            per_input = self.copies.setdefault(src, {})
            per_input.setdefault((a.topic, a.key, a.value), []).append(a)
            if ack is None:
                self.unacked[src] += 1
            else:
                if ack < self.first_ack.get(src, _NEVER):
                    self.first_ack[src] = ack
                if a.topic == dead_letter:
                    self.dlq_acked.add(src)
        self.unmatched_deliveries = len(acks) - len(matched)
        for key, seq in done_empty.items():
            if key not in self.inputs:
                continue
            if key not in self.first_ack:
                self.filtered += 1
                self.first_ack[key] = seq
            elif seq < self.first_ack[key]:
                self.first_ack[key] = seq

    def log_start_at(self, tp: _TP, seq: int) -> int:
        """The log start of ``tp`` just before event ``seq``."""
        seqs = self.trunc_seqs.get(tp)
        if not seqs:
            return 0
        i = bisect.bisect_left(seqs, seq)
        return self.trunc_starts[tp][i - 1] if i else 0

    def final_log_start(self, tp: _TP) -> int:
        starts = self.trunc_starts.get(tp)
        return starts[-1] if starts else 0

    def truncated_at(self, tp: _TP, offset: int) -> int:
        """The seq of the Truncate that removed ``offset`` (``_NEVER`` if none)."""
        starts = self.trunc_starts.get(tp)
        if not starts:
            return _NEVER
        i = bisect.bisect_right(starts, offset)
        return self.trunc_seqs[tp][i] if i < len(starts) else _NEVER

    def next_deliverable(self, tp: _TP, offset: int) -> int:
        """The lowest input offset >= ``offset`` in ``tp`` (``_NEVER`` if none)."""
        offsets = self.deliverable.get(tp, [])
        i = bisect.bisect_left(offsets, offset)
        return offsets[i] if i < len(offsets) else _NEVER


def _in_skips(skips: list[tuple[int, int, int]], offset: int, seq: int) -> bool:
    return any(at < seq and lo <= offset < hi for at, lo, hi in skips)


def _unfinished_below(
    ix: _Index,
    pointers: dict[_TP, int],
    reset_skips: Mapping[_TP, list[tuple[int, int, int]]],
    tp: _TP,
    *,
    position: int,
    seq: int,
) -> list[Append]:
    """Inputs of ``tp`` below ``position``, not truncated before ``seq``, not
    skipped by an ``auto.offset.reset=latest`` before ``seq``, with no
    acknowledged output before ``seq``: the lowest few of them.

    Being finished-or-truncated only ever becomes true as seq grows, so
    ``pointers`` keeps, per partition, the end of the done prefix of the sorted
    inputs: calls with non-decreasing ``seq`` walk each input once."""
    offsets = ix.deliverable.get(tp, [])
    log_start = ix.log_start_at(tp, seq)
    skips = reset_skips.get(tp, [])

    def done(offset: int) -> bool:
        return (
            offset < log_start
            or ix.first_ack.get((tp[0], tp[1], offset), _NEVER) < seq
            or (bool(skips) and _in_skips(skips, offset, seq))
        )

    i = pointers.get(tp, 0)
    while i < len(offsets) and done(offsets[i]):
        i += 1
    pointers[tp] = i
    found: list[Append] = []
    scanned = 0
    while i < len(offsets) and offsets[i] < position and scanned < _MAX_SCAN:
        if not done(offsets[i]):
            found.append(ix.inputs[(tp[0], tp[1], offsets[i])])
            if len(found) == _MAX_LISTED:
                break
        i += 1
        scanned += 1
    return found


@attrs.define
class _Epoch:
    """One assignment epoch of (member, partition) during the replay."""

    committed: int | None  # committed position when the epoch began
    last: int | None = None  # last polled offset
    known_start: bool = True  # False for polls outside any assignment


#: Leave reasons that are the coordinator's doing (the client learns at its next poll)
_EVICTIONS = frozenset({"session_timeout", "max_poll_interval", "forced"})


class _Replay:
    """The second pass: replays the history in seq order, tracking assignments,
    committed positions and epochs, and checks commits and polls as they come."""

    def __init__(self, index: _Index, auto_offset_reset: AutoOffsetReset) -> None:
        self.ix = index
        self.reset = auto_offset_reset
        self.anomalies: list[Anomaly] = []
        self.held: dict[str, dict[_TP, None]] = {}
        self.generation: dict[str, int] = {}
        self.revoking: dict[str, tuple[int, frozenset[_TP]]] = {}
        #: a member evicted by the coordinator that has not been told yet (its next
        #: poll serves on_lost): the partitions it held
        self.evicted: dict[str, frozenset[_TP]] = {}
        self.epochs: dict[tuple[str, _TP], _Epoch] = {}
        self.committed: dict[_TP, int] = {}
        self.last_commit: dict[_TP, Commit] = {}
        self.boundary: Counter[_TP] = Counter()
        self.poll_boundary: dict[_Key, int] = {}
        self.first_poll: dict[_Key, int] = {}
        self.explained_repolls: Counter[_Key] = Counter()
        self.finished_ptr: dict[_TP, int] = {}
        self.reset_skips: dict[_TP, list[tuple[int, int, int]]] = {}
        self.generations: set[int] = set()
        self.commits = 0
        self.rejected_commits = 0
        self.crashes = 0

    def run(self, events: list[Event], input_topics: frozenset[str]) -> None:
        stale = stale_leaves(events)
        for e in events:
            if isinstance(e, Poll):
                self.revoking.pop(e.member, None)
                self.evicted.pop(e.member, None)
                if e.topic in input_topics:
                    self._poll(e)
            elif isinstance(e, Commit):
                if e.topic in input_topics:
                    self._commit(e)
            elif isinstance(e, Assign):
                self.revoking.pop(e.member, None)
                self.evicted.pop(e.member, None)
                self._assign(e)
            elif isinstance(e, Revoke | Lost):
                tps = [(t, p) for t, p in e.partitions]
                if isinstance(e, Revoke):
                    self.revoking[e.member] = (e.generation, frozenset(tps))
                else:
                    self.revoking.pop(e.member, None)
                    self.evicted.pop(e.member, None)
                self._remove(e.member, tps)
            elif isinstance(e, Seek):
                if e.topic in input_topics:
                    self._seek(e)
            elif isinstance(e, Join):
                self.revoking.pop(e.member, None)
                self.evicted.pop(e.member, None)
            elif isinstance(e, Crash | Leave | Close):
                if e.seq in stale:
                    continue
                self.revoking.pop(e.member, None)
                self.evicted.pop(e.member, None)
                if isinstance(e, Leave) and e.reason in _EVICTIONS:
                    self.evicted[e.member] = frozenset(self.held.get(e.member, {}))
                if isinstance(e, Crash):
                    self.crashes += 1
                self._remove(e.member, list(self.held.pop(e.member, {})))
                self.generation.pop(e.member, None)

    # -- membership ---------------------------------------------------------

    def _assign(self, e: Assign) -> None:
        self.generations.add(e.generation)
        self.generation[e.member] = e.generation
        held = self.held.setdefault(e.member, {})
        for t, p in e.partitions:
            tp = (t, p)
            if tp in held:
                continue
            held[tp] = None
            self.boundary[tp] += 1
            self.epochs[(e.member, tp)] = _Epoch(committed=self.committed.get(tp))

    def _remove(self, member: str, partitions: list[_TP]) -> None:
        held = self.held.get(member, {})
        for tp in partitions:
            held.pop(tp, None)
            self.boundary[tp] += 1
            self.epochs.pop((member, tp), None)

    # -- commits ------------------------------------------------------------

    def _commit(self, e: Commit) -> None:
        if not e.ok:
            self.rejected_commits += 1
            return
        self.commits += 1
        tp = (e.topic, e.partition)
        where = f"commit {_fmt(tp)} position {e.position} by {e.member} (seq {e.seq})"
        revoking = self.revoking.get(e.member)
        # inside the on-revoke callback: the Revoke's generation, or a newer one the
        # client synced while the callback ran (a long drain), as long as nobody
        # else has been given the partition meanwhile
        in_callback = (
            revoking is not None
            and tp in revoking[1]
            and e.generation >= revoking[0]
            and not any(tp in held for m, held in self.held.items() if m != e.member)
        )
        # evicted by the coordinator, not told yet: a commit it could not know to
        # avoid; a KIP-848 broker accepts it while the group is empty (nobody holds
        # the partition, so it cannot overwrite anyone's progress)
        unaware = tp in self.evicted.get(e.member, ()) and not any(
            tp in held for m, held in self.held.items() if m != e.member
        )
        if tp not in self.held.get(e.member, {}):
            if not in_callback and not unaware:
                self._add(
                    AnomalyKind.COMMIT_AFTER_REVOKE,
                    e,
                    None,
                    f"{where}: the member did not hold the partition",
                )
        elif e.generation < self.generation.get(e.member, e.generation):
            self._add(
                AnomalyKind.COMMIT_AFTER_REVOKE,
                e,
                None,
                f"{where}: generation {e.generation}, the member's assignment is of "
                f"generation {self.generation.get(e.member)}",
            )
        prev = self.last_commit.get(tp)
        if prev is not None and e.position < prev.position:
            self._add(
                AnomalyKind.COMMIT_BACKWARDS,
                e,
                None,
                f"{where}: below the previous commit {prev.position} (seq {prev.seq})",
                (prev,),
            )
        self.last_commit[tp] = e
        self.committed[tp] = e.position
        unfinished = _unfinished_below(
            self.ix, self.finished_ptr, self.reset_skips, tp, position=e.position, seq=e.seq
        )
        if unfinished:
            listed = ", ".join(str(a.offset) for a in unfinished)
            self.anomalies.append(
                Anomaly(
                    kind=AnomalyKind.COMMIT_PAST_UNFINISHED,
                    tp=_tpv(tp),
                    offset=unfinished[0].offset,
                    seq=e.seq,
                    member=e.member,
                    message=f"{where}: input offsets {listed} below it were readable "
                    "and had no acknowledged output yet",
                    records=(e, *unfinished),
                )
            )

    # -- polls --------------------------------------------------------------

    def _poll(self, e: Poll) -> None:
        tp = (e.topic, e.partition)
        key = (e.topic, e.partition, e.offset)
        self.first_poll.setdefault(key, e.seq)
        mark = self.boundary[tp]
        before = self.poll_boundary.get(key)
        if before is not None and before != mark:
            self.explained_repolls[key] += 1
        self.poll_boundary[key] = mark

        epoch = self.epochs.get((e.member, tp))
        if epoch is None:
            epoch = self.epochs[(e.member, tp)] = _Epoch(committed=None, known_start=False)
        log_start = self.ix.log_start_at(tp, e.seq)
        if epoch.last is None:
            if epoch.known_start:
                self._first_poll(e, tp, epoch.committed, log_start)
        elif e.offset <= epoch.last:
            self._add(
                AnomalyKind.POLL_NON_MONOTONIC,
                e,
                e.offset,
                f"poll {_fmt(tp)}@{e.offset} by {e.member} (seq {e.seq}) after "
                f"{epoch.last} in the same assignment epoch",
            )
        else:
            position = epoch.last + 1
            expected = self.ix.next_deliverable(tp, max(position, log_start))
            reset_latest = self.reset == "latest" and position < log_start
            if expected < e.offset:
                if reset_latest:
                    self._reset_skip(e, tp, log_start)
                else:
                    self._skip(e, tp, expected, f"after {epoch.last}")
        epoch.last = e.offset

    def _seek(self, e: Seek) -> None:
        """A seek (the rewind after an aborted transaction): the epoch goes on from
        ``position``, and polls from there again are explained redeliveries."""
        tp = (e.topic, e.partition)
        self.boundary[tp] += 1
        epoch = self.epochs.get((e.member, tp))
        if epoch is not None:
            epoch.last = e.position - 1

    def _first_poll(self, e: Poll, tp: _TP, committed: int | None, log_start: int) -> None:
        """The first poll of an epoch starts at the committed position (the first
        readable record at or after it). Without a committed position, or with one
        below the log start, auto.offset.reset decides: ``earliest`` (and, for the
        checker, ``error``) means the first readable record at or after the log
        start; ``latest`` allows any offset at or after the log start."""
        where = f"first poll {_fmt(tp)}@{e.offset} by {e.member} (seq {e.seq})"
        if committed is not None and committed >= log_start:
            if e.offset < committed:
                self._add(
                    AnomalyKind.POLL_NON_MONOTONIC,
                    e,
                    e.offset,
                    f"{where}: below the committed position {committed}",
                )
                return
            expected = self.ix.next_deliverable(tp, committed)
            if expected < e.offset:
                self._skip(e, tp, expected, f"of the epoch, committed position {committed}")
            return
        if self.reset == "latest":
            self._reset_skip(e, tp, log_start)
            return
        expected = self.ix.next_deliverable(tp, log_start)
        if expected < e.offset:
            why = "no committed position" if committed is None else f"committed {committed}"
            self._skip(
                e,
                tp,
                expected,
                f"of the epoch, {why}, log start {log_start}, auto.offset.reset={self.reset}",
            )

    def _reset_skip(self, e: Poll, tp: _TP, log_start: int) -> None:
        """Remember that auto.offset.reset=latest legitimately passed over the
        readable records from ``log_start`` up to the polled offset."""
        if self.ix.next_deliverable(tp, log_start) < e.offset:
            self.reset_skips.setdefault(tp, []).append((e.seq, log_start, e.offset))

    def _skip(self, e: Poll, tp: _TP, skipped: int, why: str) -> None:
        record = self.ix.inputs[(tp[0], tp[1], skipped)]
        self.anomalies.append(
            Anomaly(
                kind=AnomalyKind.POLL_SKIP,
                tp=_tpv(tp),
                offset=skipped,
                seq=e.seq,
                member=e.member,
                message=f"poll {_fmt(tp)}@{e.offset} by {e.member} (seq {e.seq}) {why}: "
                f"skipped readable record {skipped}",
                records=(e, record),
            )
        )

    def _add(
        self,
        kind: AnomalyKind,
        e: Poll | Commit,
        offset: int | None,
        message: str,
        more: tuple[Event, ...] = (),
    ) -> None:
        self.anomalies.append(
            Anomaly(
                kind=kind,
                tp=TopicPartition(e.topic, e.partition),
                offset=offset,
                seq=e.seq,
                member=e.member,
                message=message,
                records=(e, *more),
            )
        )


def _duplicates(
    ix: _Index, explained: Mapping[_Key, int] | None
) -> tuple[dict[_Key, int], list[Anomaly]]:
    """Extra copies per input, and (when ``explained`` is given) the copies that
    neither redeliveries nor unacknowledged writes account for."""
    per_input: dict[_Key, int] = {}
    anomalies: list[Anomaly] = []
    for key, identities in ix.copies.items():
        allowance = ix.unacked[key] + (explained.get(key, 0) if explained is not None else 0)
        for copies in identities.values():
            extra = len(copies) - 1
            if extra <= 0:
                continue
            per_input[key] = per_input.get(key, 0) + extra
            if explained is None or extra <= allowance:
                continue
            bad = copies[allowance + 1]
            anomalies.append(
                Anomaly(
                    kind=AnomalyKind.UNEXPLAINED_DUPLICATE,
                    tp=TopicPartition(key[0], key[1]),
                    offset=key[2],
                    seq=bad.seq,
                    member=bad.by,
                    message=f"input {_fmt(key[:2])}@{key[2]} has {len(copies)} copies of "
                    f"an output to {bad.topic}; redeliveries after a boundary "
                    f"({explained.get(key, 0)}) and unacknowledged writes "
                    f"({ix.unacked[key]}) explain {allowance} extra",
                    records=tuple(copies),
                )
            )
    return per_input, anomalies


def _end_of_run(
    ix: _Index,
    first_poll: Mapping[_Key, int] | None,
    reset_skips: Mapping[_TP, list[tuple[int, int, int]]],
    final_drain: bool,
) -> tuple[list[Anomaly], int, int, int, int]:
    """LOST anomalies and the unfinished / expired / truncated-unfinished /
    reset-skipped counts.

    ``first_poll`` None means polls are unknown (a broker read-back): nothing
    below the log start is then in the input records at all."""
    lost: list[Anomaly] = []
    unfinished = expired = truncated_unfinished = reset_skipped = 0
    for key, a in ix.inputs.items():
        if key in ix.first_ack:
            continue
        tp = key[:2]
        if key[2] < ix.final_log_start(tp):
            polled = first_poll.get(key, _NEVER) if first_poll is not None else _NEVER
            if polled < ix.truncated_at(tp, key[2]):
                truncated_unfinished += 1
            else:
                expired += 1
            continue
        skips = reset_skips.get(tp)
        if skips and _in_skips(skips, key[2], _NEVER):
            reset_skipped += 1
            continue
        unfinished += 1
        if final_drain:
            lost.append(
                Anomaly(
                    kind=AnomalyKind.LOST,
                    tp=TopicPartition(key[0], key[1]),
                    offset=key[2],
                    seq=a.seq,
                    message=f"input {_fmt(tp)}@{key[2]} (seq {a.seq}) has no acknowledged "
                    "output or dead-letter record after the final drain",
                    records=(a,),
                )
            )
    return lost, unfinished, expired, truncated_unfinished, reset_skipped


def _topics(name: str, topics: Collection[str]) -> frozenset[str]:
    if isinstance(topics, str):
        raise TypeError(f"{name} must be a collection of topic names, not a string")
    return frozenset(topics)


def _sorted(events: Iterable[Event]) -> list[Event]:
    out = list(events)
    if any(out[i].seq > out[i + 1].seq for i in range(len(out) - 1)):
        out.sort(key=lambda e: e.seq)
    return out


def _topics_of(events: list[Event]) -> set[str]:
    found: set[str] = set()
    for e in events:
        topic = getattr(e, "topic", None)
        if isinstance(topic, str):
            found.add(topic)
        elif isinstance(e, Assign | Revoke | Lost):
            found.update(t for t, _ in e.partitions)
    return found


def infer_topics(
    history: History | Iterable[Event],
) -> tuple[frozenset[str], frozenset[str], str | None]:
    """(inputs, outputs, dead-letter topic) of a history: inputs are the topics
    polled or committed and those lineage headers name; the dead-letter topic is
    the one whose records carry the ``offsetledger.error`` header (None if none);
    outputs are the other topics written with lineage headers.

    Raises :class:`ValueError` when records with the error header were written to
    more than one topic (name the dead-letter topic then)."""
    inputs: set[str] = set()
    written: set[str] = set()
    dead: set[str] = set()
    for e in history:
        if isinstance(e, Poll | Commit):
            inputs.add(e.topic)
        elif isinstance(e, Append) and not e.control and e.headers:
            src = e.source()
            if src is None:
                continue
            inputs.add(src[0])
            if e.header(_ERROR_HEADER) is not None:
                dead.add(e.topic)
            else:
                written.add(e.topic)
    if len(dead) > 1:
        raise ValueError(
            f"records with the {_ERROR_HEADER} header went to several topics "
            f"({', '.join(sorted(dead))}): name the dead-letter topic"
        )
    dead_letter = next(iter(dead)) if dead else None
    outputs = written - inputs - dead
    return frozenset(inputs - dead), frozenset(outputs), dead_letter


def check(
    history: History | Iterable[Event],
    *,
    inputs: Collection[str] | None = None,
    outputs: Collection[str] | None = None,
    dead_letter: str | None = None,
    group: str | None = None,
    final_drain: bool = True,
    auto_offset_reset: AutoOffsetReset = "earliest",
    strict: bool | None = None,
    exactly_once: bool = False,
) -> Report:
    """Check a recorded history against the invariants of at-least-once
    processing and report every violation (see :class:`AnomalyKind`).

    ``inputs`` are the topics the group consumes; ``outputs`` the topics the
    processing writes to; ``dead_letter`` the dead-letter topic, whose records
    finish their input like an output does. Each one not given (None) is
    inferred from the history (:func:`infer_topics`).

    ``strict`` (default: True when a topic is inferred, else False; the CLI and
    :mod:`offsetledger.testing` always pass True) makes a check that cannot vouch
    for the run a failure, listed in :attr:`Report.problems`: a history without
    input records, or, after a final drain, a named input topic absent from the
    history or a named output topic absent while some input was neither
    dead-lettered nor filtered. (Without a final drain a run may still be going:
    topics need not occur yet. Not strict, a harness may check a degenerate run
    with nothing in it.)
    ``group`` only labels the report (events do not carry a group: pass the
    history of one group).
    ``final_drain`` says the run ended with every member draining its work; only
    then is an unfinished input LOST. ``auto_offset_reset`` is the consumers'
    policy, used to judge where an epoch's first poll may start.

    ``exactly_once`` (a transactional run): the at-least-once invariants judge
    what a read_committed reader sees (writes of aborted or unfinished transactions
    dropped) and the ExactlyOnce verdicts are added (EO_DUPLICATE, EO_LOST,
    READ_UNCOMMITTED, COMMIT_PAST_UNCOMMITTED, OUTSIDE_TRANSACTION; see
    :mod:`offsetledger.checker._exactly_once`).

    Events are replayed in ``seq`` order (sorted first if they are not).
    """
    all_events = events = _sorted(history)
    if exactly_once:
        events = read_committed_view(all_events)
    problems: list[str] = []
    if strict is None:
        strict = inputs is None or outputs is None
    if inputs is None or outputs is None or dead_letter is None:
        seen_in, seen_out, seen_dlq = infer_topics(events)
        if dead_letter is None:
            dead_letter = seen_dlq
        if inputs is None:
            inputs = seen_in
            if not inputs:
                problems.append(
                    "no input topic could be inferred (nothing polled, committed or "
                    "named by lineage headers): name the input topics"
                )
        if outputs is None:
            outputs = seen_out - frozenset(inputs) - {dead_letter}
    in_topics = _topics("inputs", inputs)
    out_topics = _topics("outputs", outputs)
    if not in_topics and not problems:
        raise ValueError("inputs must name at least one topic")
    shared = in_topics & (out_topics | {dead_letter})
    if shared:
        raise ValueError(f"topics both input and output: {sorted(t or '' for t in shared)}")
    ix = _Index(events, in_topics, out_topics, dead_letter)
    if strict and final_drain:
        # a check of a run still going may not have seen every topic yet
        present = _topics_of(events)
        missing_in = sorted(in_topics - present)
        # an output topic may stay empty when every input was dead-lettered or filtered
        produced_nothing = len(ix.inputs) > len(ix.dlq_acked) + ix.filtered
        missing_out = sorted(out_topics - present) if produced_nothing else []
        known = ", ".join(sorted(present)) or "none"
        for role, missing in (("input", missing_in), ("output", missing_out)):
            if missing:
                problems.append(
                    f"{role} topic {', '.join(map(repr, missing))} does not occur in the "
                    f"history (topics in it: {known})"
                )
    if strict and not ix.inputs and in_topics and not problems:
        problems.append(
            f"the history has no input records in {', '.join(sorted(in_topics))}: "
            "nothing was checked"
        )
    replay = _Replay(ix, auto_offset_reset)
    replay.run(events, in_topics)
    per_input, dups = _duplicates(ix, replay.explained_repolls)
    lost, unfinished, expired, truncated_unfinished, reset_skipped = _end_of_run(
        ix, replay.first_poll, replay.reset_skips, final_drain
    )
    anomalies = [*ix.phantoms, *replay.anomalies, *dups, *lost]
    anomalies += membership_anomalies(events, in_topics)
    if exactly_once:
        anomalies += check_exactly_once(
            all_events, in_topics, out_topics, dead_letter, final_drain=final_drain
        )
    anomalies += attempt_anomalies(events)
    anomalies.sort(key=lambda a: _NEVER if a.seq is None else a.seq)
    stats = Stats(
        inputs=len(ix.inputs),
        outputs=ix.outputs,
        dead_letter_records=ix.dead_letter_records,
        acknowledged=len(ix.first_ack) - ix.filtered,
        dead_lettered=len(ix.dlq_acked),
        filtered=ix.filtered,
        unfinished=unfinished,
        lost=len(lost),
        expired=expired,
        truncated_unfinished=truncated_unfinished,
        reset_skipped=reset_skipped,
        duplicates=sum(per_input.values()),
        duplicates_per_input=per_input,
        commits=replay.commits,
        rejected_commits=replay.rejected_commits,
        rebalances=len(replay.generations),
        crashes=replay.crashes,
        unmatched_deliveries=ix.unmatched_deliveries,
    )
    return Report(
        anomalies=tuple(anomalies),
        stats=stats,
        group=group,
        final_drain=final_drain,
        problems=tuple(problems),
        inputs=tuple(sorted(in_topics)),
        outputs=tuple(sorted(out_topics)),
        dead_letter=dead_letter,
    )


def check_topics(
    input_records: Iterable[Record],
    output_records: Iterable[Record],
    committed: Mapping[TopicPartition, int],
    *,
    dead_letter: str | None = None,
    group: str | None = None,
    final_drain: bool = True,
) -> Report:
    """Check what a real broker holds after a run: the records read back from the
    input topics, from the output topics (dead-letter records included, told
    apart by ``dead_letter``), and the group's committed positions.

    Without delivery reports every output record present in the log counts as
    acknowledged, and commits are judged at the end of the run. Reported:
    LOST (after a final drain, an input with no output or dead-letter record),
    PHANTOM_OUTPUT, COMMIT_PAST_UNFINISHED (a committed position above an input
    with no output) and the duplicate counts in the stats. Duplicates are not
    judged (there are no polls or rebalances to explain them). Read the input
    topics from their log start: records missing there were removed by retention
    and are not checked. In the anomalies' records, ``seq`` is the read-back
    order and ``by`` is ``"broker"``.
    """
    events: list[Event] = []
    in_topics: set[str] = set()
    out_topics: set[str] = set()
    for r in input_records:
        in_topics.add(r.topic)
        events.append(_as_append(r, len(events)))
    for r in output_records:
        if r.topic != dead_letter:
            out_topics.add(r.topic)
        a = _as_append(r, len(events))
        events.append(a)
        events.append(
            Delivery(
                seq=len(events),
                by="broker",
                topic=a.topic,
                partition=a.partition,
                offset=a.offset,
                ok=True,
            )
        )
    ix = _Index(events, frozenset(in_topics), frozenset(out_topics), dead_letter)
    at_end = len(events)
    anomalies = list(ix.phantoms)
    pointers: dict[_TP, int] = {}
    for tpv, position in sorted(committed.items()):
        tp = (tpv.topic, tpv.partition)
        if tpv.topic not in in_topics:
            continue
        unfinished = _unfinished_below(ix, pointers, {}, tp, position=position, seq=at_end)
        if unfinished:
            listed = ", ".join(str(a.offset) for a in unfinished)
            anomalies.append(
                Anomaly(
                    kind=AnomalyKind.COMMIT_PAST_UNFINISHED,
                    tp=tpv,
                    offset=unfinished[0].offset,
                    seq=None,
                    message=f"committed position {position} of {tpv}: input offsets "
                    f"{listed} below it have no output or dead-letter record",
                    records=tuple(unfinished),
                )
            )
    per_input, _ = _duplicates(ix, None)
    lost, unfinished_n, _, _, _ = _end_of_run(ix, None, {}, final_drain)
    anomalies.extend(lost)
    stats = Stats(
        inputs=len(ix.inputs),
        outputs=ix.outputs,
        dead_letter_records=ix.dead_letter_records,
        acknowledged=len(ix.first_ack),
        dead_lettered=len(ix.dlq_acked),
        unfinished=unfinished_n,
        lost=len(lost),
        duplicates=sum(per_input.values()),
        duplicates_per_input=per_input,
    )
    return Report(
        anomalies=tuple(anomalies),
        stats=stats,
        group=group,
        final_drain=final_drain,
        source="topics",
    )


def _as_append(r: Record, seq: int) -> Append:
    return Append(
        seq=seq,
        by="broker",
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=r.headers,
    )


def load_history(path: str | os.PathLike[str]) -> History:
    """Read a JSON-lines history file (as written by :meth:`History.dump`)."""
    with open(path, encoding="utf-8") as fh:
        return History.load(fh)


def check_file(
    path: str | os.PathLike[str],
    *,
    inputs: Collection[str] | None = None,
    outputs: Collection[str] | None = None,
    dead_letter: str | None = None,
    group: str | None = None,
    final_drain: bool = True,
    auto_offset_reset: AutoOffsetReset = "earliest",
    strict: bool | None = None,
) -> Report:
    """:func:`check` a JSON-lines history file."""
    return check(
        load_history(path),
        inputs=inputs,
        outputs=outputs,
        dead_letter=dead_letter,
        group=group,
        final_drain=final_drain,
        auto_offset_reset=auto_offset_reset,
        strict=strict,
    )

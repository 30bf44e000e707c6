"""Value types of a checker report: anomaly kinds, anomalies, statistics."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from typing import Any

import attrs

from offsetledger.core import TopicPartition
from offsetledger.history import Event, dumps_event

__all__ = ["Anomaly", "AnomalyKind", "Report", "Stats"]


class AnomalyKind(enum.StrEnum):
    """The invariant an anomaly violates. The value is the stable name used in
    JSON output and summaries."""

    #: NoLoss. After a final drain, a readable input record (non-control, at or
    #: above the partition's final log start) has no acknowledged output or
    #: dead-letter record naming it.
    LOST = "lost"
    #: CommitSafety. A successful commit of position ``c`` at seq ``s`` while an
    #: input record below ``c``, still readable at ``s``, had no acknowledged
    #: output or dead-letter record before ``s``.
    COMMIT_PAST_UNFINISHED = "commit_past_unfinished"
    #: CommitMonotonic. A successful commit lower than the previous successful
    #: commit of the same partition.
    COMMIT_BACKWARDS = "commit_backwards"
    #: NoCommitAfterRevoke. A successful commit by a member that did not hold the
    #: partition at that moment (outside its on-revoke callback; a lost partition
    #: never), or with a generation below the one of its current assignment.
    COMMIT_AFTER_REVOKE = "commit_after_revoke"
    #: PollContiguity. Within one assignment epoch, a poll left out a readable
    #: record (or the first poll started above where it had to start).
    POLL_SKIP = "poll_skip"
    #: PollContiguity. Within one assignment epoch, a poll at or below the
    #: previous poll (or the first poll below the committed position).
    POLL_NON_MONOTONIC = "poll_non_monotonic"
    #: NoPhantom. An output or dead-letter record without lineage headers, or
    #: naming an input that was never appended (or appended after the output).
    PHANTOM_OUTPUT = "phantom_output"
    #: DuplicatesExplained. More copies of one output of one input than the
    #: redeliveries after a crash/rebalance boundary and the unacknowledged
    #: (ack-lost, retried) writes of that input can explain.
    UNEXPLAINED_DUPLICATE = "unexplained_duplicate"
    #: NoDoubleOwnership. A partition assigned to a member while another still held it.
    DOUBLE_OWNERSHIP = "double_ownership"
    #: NoCommitAfterLost (client side). A commit attempt, accepted or not, for a
    #: partition the member was told is lost, before it was assigned it again.
    COMMIT_AFTER_LOST = "commit_after_lost"
    #: Ordering (workload check). An output of an input written before the previous
    #: input of its key (or partition) in the same assignment epoch was finished.
    ORDERING = "ordering"
    #: BoundsHeld (workload check). More polled, unfinished inputs than the buffer
    #: limits (plus one poll batch) allow.
    BOUNDS_EXCEEDED = "bounds_exceeded"
    #: ExactlyOnce (``check(..., exactly_once=True)``, see ``_exactly_once``). An
    #: input has outputs in more than one committed transaction (or plain write).
    EO_DUPLICATE = "eo_duplicate"
    #: ExactlyOnce. After a final drain, an input with no committed output, dead
    #: letter or filter completion.
    EO_LOST = "eo_lost"
    #: ExactlyOnce. A read_committed member polled a record of an aborted
    #: transaction or of one still open at that moment.
    READ_UNCOMMITTED = "read_uncommitted"
    #: ExactlyOnce. A successful commit past an input whose outputs were not
    #: committed (visible) yet.
    COMMIT_PAST_UNCOMMITTED = "commit_past_uncommitted"
    #: ExactlyOnce. An output or dead-letter record written outside a transaction.
    OUTSIDE_TRANSACTION = "outside_transaction"
    #: AttemptOverlap (async handlers, checker/_attempts.py). Two attempts of one
    #: input running at once, or an input counted done while its last attempt had
    #: ended timed out or cancelled.
    ATTEMPT_OVERLAP = "attempt_overlap"


def _tp_dict(tp: TopicPartition | None) -> dict[str, Any] | None:
    return None if tp is None else {"topic": tp.topic, "partition": tp.partition}


@attrs.frozen(kw_only=True)
class Anomaly:
    """One violation of an invariant.

    ``tp`` and ``offset`` name the record the anomaly is about (for commit
    anomalies: the lowest unfinished record, or None for ordering ones; for a
    phantom: the output record itself). ``seq`` is the seq of the offending
    event (the commit, the poll, the output append); ``member`` the member that
    did it when known. ``records`` are the events involved, offending one first.
    """

    kind: AnomalyKind
    tp: TopicPartition | None
    offset: int | None
    seq: int | None
    message: str
    member: str | None = None
    records: tuple[Event, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; events as the objects their JSON-lines form holds."""
        return {
            "kind": self.kind.value,
            "tp": _tp_dict(self.tp),
            "offset": self.offset,
            "seq": self.seq,
            "member": self.member,
            "message": self.message,
            "records": [json.loads(dumps_event(e)) for e in self.records],
        }


@attrs.frozen(kw_only=True)
class Stats:
    """Counts over a checked history.

    * ``inputs``: readable (non-control) input records appended.
    * ``outputs``: output records appended (dead-letter records not included).
    * ``dead_letter_records``: records appended to the dead-letter topic.
    * ``acknowledged``: inputs with at least one acknowledged output or
      dead-letter record (an append plus an ok delivery report).
    * ``dead_lettered``: inputs with an acknowledged dead-letter record.
    * ``filtered``: inputs finished with no outputs (a Done event with none and
      no acknowledged output or dead-letter record): done, nothing to produce.
    * ``unfinished``: inputs at/above the final log start without any
      acknowledged output (counted whether or not the run was drained).
    * ``lost``: LOST anomalies (only raised after a final drain).
    * ``expired``: inputs removed by retention before they were ever polled.
    * ``truncated_unfinished``: inputs polled at least once, then removed by
      retention before any output was acknowledged (not LOST: nobody can read
      them again; a commit past them while readable is COMMIT_PAST_UNFINISHED).
    * ``reset_skipped``: inputs never finished that a consumer passed over because
      ``auto.offset.reset=latest`` applied (no or out-of-range committed
      position): skipped by configuration, so neither LOST nor commit-unsafe.
    * ``duplicates``: output copies in the log beyond the first, per input and
      output identity (topic, key, value), summed.
    * ``duplicates_per_input``: the same, per input with at least one.
    * ``commits`` / ``rejected_commits``: commit attempts on input partitions
      that succeeded / were rejected.
    * ``rebalances``: distinct generations seen in Assign events.
    * ``crashes``: Crash events.
    * ``unmatched_deliveries``: ok delivery reports matching no appended record.
    """

    inputs: int = 0
    outputs: int = 0
    dead_letter_records: int = 0
    acknowledged: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    unfinished: int = 0
    lost: int = 0
    expired: int = 0
    truncated_unfinished: int = 0
    reset_skipped: int = 0
    duplicates: int = 0
    duplicates_per_input: Mapping[tuple[str, int, int], int] = attrs.field(factory=dict)
    commits: int = 0
    rejected_commits: int = 0
    rebalances: int = 0
    crashes: int = 0
    unmatched_deliveries: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; per-input duplicates as a list of objects."""
        data = attrs.asdict(self, recurse=False)
        data["duplicates_per_input"] = [
            {"topic": t, "partition": p, "offset": o, "extra": n}
            for (t, p, o), n in sorted(self.duplicates_per_input.items())
        ]
        return data


@attrs.frozen(kw_only=True)
class Report:
    """The result of a check: every anomaly found, in seq order, and stats."""

    anomalies: tuple[Anomaly, ...]
    stats: Stats
    group: str | None = None
    final_drain: bool = True
    #: ``"history"`` (a recorded run, :func:`check`) or ``"topics"`` (records read
    #: back from a broker, :func:`check_topics`: no polls, commits or crashes to see)
    source: str = "history"
    #: Why the check itself cannot vouch for the run (no inputs; a named topic
    #: absent from the history): the report is then not OK.
    problems: tuple[str, ...] = ()
    #: The topics checked (named or inferred) and the dead-letter topic.
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    dead_letter: str | None = None

    @property
    def ok(self) -> bool:
        """True when no anomaly was found and the check had something to check."""
        return not self.anomalies and not self.problems

    def of(self, kind: AnomalyKind) -> list[Anomaly]:
        """The anomalies of one kind."""
        return [a for a in self.anomalies if a.kind is kind]

    def counts(self) -> dict[AnomalyKind, int]:
        """Number of anomalies per kind (kinds with none left out)."""
        out: dict[AnomalyKind, int] = {}
        for a in self.anomalies:
            out[a.kind] = out.get(a.kind, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the whole report."""
        return {
            "ok": self.ok,
            "group": self.group,
            "final_drain": self.final_drain,
            "source": self.source,
            "problems": list(self.problems),
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "dead_letter": self.dead_letter,
            "counts": {k.value: n for k, n in self.counts().items()},
            "stats": self.stats.to_dict(),
            "anomalies": [a.to_dict() for a in self.anomalies],
        }

    def summary(self, limit: int = 20) -> str:
        """Human-readable multi-line text: verdict, stats, counts per kind and
        the first ``limit`` anomalies."""
        s = self.stats
        head = (
            "OK"
            if self.ok
            else f"{len(self.anomalies)} anomalies"
            + (f", {len(self.problems)} problems" if self.problems else "")
        )
        verdict = f"offsetledger check{f' (group {self.group})' if self.group else ''}: {head}"
        inputs = (
            f"  inputs {s.inputs}, acknowledged {s.acknowledged}, dead-lettered "
            f"{s.dead_lettered}, filtered {s.filtered}, unfinished {s.unfinished}, "
            f"lost {s.lost}, expired {s.expired}, truncated unfinished "
            f"{s.truncated_unfinished}, skipped by reset {s.reset_skipped}"
        )
        outputs = (
            f"  outputs {s.outputs}, dead-letter records {s.dead_letter_records}, "
            f"duplicates {s.duplicates} (over {len(s.duplicates_per_input)} inputs)"
        )
        group = (
            f"  commits {s.commits} (rejected {s.rejected_commits}), rebalances "
            f"{s.rebalances}, crashes {s.crashes}"
        )
        if self.source == "topics":
            group = "  (read back from the topics: polls, commits and crashes are not seen)"
        lines = [verdict]
        if self.inputs:
            lines.append(
                f"  topics: inputs {', '.join(self.inputs)}; outputs "
                f"{', '.join(self.outputs) or 'none'}; dead-letter {self.dead_letter or 'none'}"
            )
        lines.extend(f"  problem: {p}" for p in self.problems)
        lines.extend([inputs, outputs, group])
        if not self.final_drain:
            lines.append("  (no final drain: LOST not checked)")
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  {kind.value}: {n}")
        lines.extend(f"  - [{a.kind.value}] {a.message}" for a in self.anomalies[:limit])
        if len(self.anomalies) > limit:
            lines.append(f"  ... {len(self.anomalies) - limit} more")
        return "\n".join(lines)

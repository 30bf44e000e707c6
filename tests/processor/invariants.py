"""Invariant checks over a simulated run, for the Processor's scenario tests.

The heavy lifting is :func:`offsetledger.checker.check` (NoLoss, CommitSafety,
CommitMonotonic, NoCommitAfterRevoke, PollContiguity, NoPhantom,
DuplicatesExplained). A few small checks of our own over ``world.history`` back it
up with independent, simpler code. Every failure message names the seed.
"""

from __future__ import annotations

from collections import defaultdict

from offsetledger.checker import check
from offsetledger.history import Append, Commit, Delivery, Done, Lost, Revoke
from offsetledger.simulator import World


def committed_never_decrease(world: World) -> list[str]:
    """Successful commits of a partition never go down."""
    last: dict[tuple[str, int], int] = {}
    problems = []
    for e in world.history.of(Commit):
        assert isinstance(e, Commit)
        if not e.ok:
            continue
        key = (e.topic, e.partition)
        if key in last and e.position < last[key]:
            problems.append(
                f"commit of {key} went back from {last[key]} to {e.position} (seq {e.seq})"
            )
        last[key] = e.position
    return problems


def nothing_committed_past_unfinished(world: World, inputs: set[str]) -> list[str]:
    """Every successful commit at position c comes after an acknowledged output or
    dead letter, or a recorded "done with no outputs" (a filter, when the Processor
    has an observer), for every input offset below c (control offsets excluded).
    (Ignores retention truncation: use only in scenarios without it.)"""
    acked: dict[tuple[str, int, int], int] = {}
    written: dict[tuple[str, int, int], tuple[str, int, int] | None] = {}
    problems = []
    for e in world.history:
        if isinstance(e, Done) and e.outputs == 0 and not e.dead_lettered:
            acked.setdefault((e.topic, e.partition, e.offset), e.seq)
        elif isinstance(e, Append) and e.topic not in inputs and not e.control:
            written[(e.topic, e.partition, e.offset)] = e.source()
        elif isinstance(e, Delivery) and e.ok and e.partition is not None and e.offset is not None:
            src = written.get((e.topic, e.partition, e.offset))
            if src is not None:
                acked.setdefault(src, e.seq)
    appended: dict[tuple[str, int], list[int]] = defaultdict(list)
    for e in world.history.of(Append):
        assert isinstance(e, Append)
        if e.topic in inputs and not e.control:
            appended[(e.topic, e.partition)].append(e.offset)
    for e in world.history.of(Commit):
        assert isinstance(e, Commit)
        if not e.ok:
            continue
        for off in appended[(e.topic, e.partition)]:
            if off >= e.position:
                break
            seq = acked.get((e.topic, e.partition, off))
            if seq is None or seq > e.seq:
                problems.append(
                    f"commit {e.topic}[{e.partition}]@{e.position} (seq {e.seq}) "
                    f"covers unfinished offset {off}"
                )
                break
    return problems


def no_commit_after_revoke_or_lost(world: World) -> list[str]:
    """No successful commit by a member for a partition it lost, nor for one it
    revoked once the revoke callback is over. The simulator records Revoke when the
    callback starts, so the callback's own commits (same generation) come after it
    and are allowed until the member's next Poll, Assign, Join, Lost, Crash, Leave
    or Close."""
    from offsetledger.history import Assign, Close, Crash, Join, Leave, Poll

    # (member, topic, partition) -> "held" | "lost" | ("revoking", generation) | "gone"
    status: dict[tuple[str, str, int], object] = {}
    problems = []
    for e in world.history:
        if isinstance(e, Assign):
            for t, p in e.partitions:
                status[(e.member, t, p)] = "held"
        if isinstance(e, Assign | Poll | Join | Lost | Crash | Leave | Close):
            member = e.member
            for key, value in list(status.items()):
                if key[0] == member and isinstance(value, tuple):
                    status[key] = "gone"
        if isinstance(e, Revoke):
            for t, p in e.partitions:
                status[(e.member, t, p)] = ("revoking", e.generation)
        elif isinstance(e, Lost):
            for t, p in e.partitions:
                status[(e.member, t, p)] = "lost"
        elif isinstance(e, Commit) and e.ok:
            s = status.get((e.member, e.topic, e.partition))
            allowed = s == "held" or (isinstance(s, tuple) and s[1] == e.generation)
            if s is not None and not allowed:
                problems.append(
                    f"{e.member} committed {e.topic}[{e.partition}] after giving it up "
                    f"({s}) (seq {e.seq})"
                )
    return problems


def assert_invariants(
    world: World,
    *,
    inputs: tuple[str, ...] = ("in",),
    outputs: tuple[str, ...] = ("out",),
    dead_letter: str | None = None,
    final_drain: bool = True,
    own_checks: bool = True,
) -> None:
    """Run the checker and our own checks; fail with the seed and every anomaly."""
    report = check(
        world.history,
        inputs=inputs,
        outputs=outputs,
        dead_letter=dead_letter,
        final_drain=final_drain,
    )
    problems = [] if report.ok else [report.summary()]
    if own_checks:
        problems += committed_never_decrease(world)
        problems += nothing_committed_past_unfinished(world, set(inputs))
        problems += no_commit_after_revoke_or_lost(world)
    assert not problems, f"seed={world.seed}: invariants violated:\n" + "\n".join(problems)

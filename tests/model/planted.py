"""A catalogue of planted bugs: evidence that the model test and the swarm bite.

Each :class:`PlantedBug` is a context manager factory that monkeypatches the real
code (the Processor or the OffsetLedger) for the duration of a ``with`` block; no
flag exists in ``src/``. ``benchmarks/planted_bugs.py`` runs the whole-system model
test and the swarm under each one and reports which caught it;
``tests/model/test_planted_bugs.py`` runs that in CI.

The first seven are the ones DESIGN.md names; the rest are further mistakes an
implementation of the pattern plausibly makes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from offsetledger.core import Completion, OffsetLedger, RangeTicket, Ticket
from offsetledger.core import _ledger as ledger_module
from offsetledger.core import decode_finished as decode_finished_real
from offsetledger.runtime._flow import RecordFlow
from offsetledger.runtime._loop import Loop
from offsetledger.runtime._offsets import OffsetKeeper
from offsetledger.runtime._rebalance import Rebalancer
from offsetledger.runtime._slowpath import SlowPath
from offsetledger.runtime._txn import TransactionalKeeper, TransactionalProducer
from offsetledger.simulator import SimProducer, SimTransactionalProducer

__all__ = [
    "CATALOGUE",
    "CONTROLS",
    "RANGE_BUGS",
    "TXN_BUGS",
    "TXN_CATALOGUE",
    "PlantedBug",
    "by_name",
]


@attrs.frozen
class PlantedBug:
    """One planted bug.

    * ``name``: short identifier (used as the pytest parameter id).
    * ``summary``: what the wrong code does.
    * ``source``: ``"DESIGN.md"`` for the bugs DESIGN.md names, else ``"extra"``.
    * ``plant``: returns a context manager that patches the code while open.
    * ``swarm_seeds``: the swarm's seed budget for this bug in CI (the script's
      default budget is larger); the swarm stops at the first failing seed.
    * ``first_seed``: the first swarm seed that catches it, when recorded (a test
      says it still is: a change of the swarm's draws shows up as a moved seed).
    * ``model``: which whole-system model test runs against it: ``"system"``
      (tests/model/test_system_model.py) or ``"txn"`` (the exactly-once one,
      tests/model/test_txn_system_model.py).
    """

    name: str
    summary: str
    source: str
    plant: Callable[[], contextlib.AbstractContextManager[None]]
    swarm_seeds: int = 40
    first_seed: int | None = None
    model: str = "system"


@contextlib.contextmanager
def _patched(owner: object, attribute: str, replacement: object) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def _complete_chunk_now(keeper: Any, chunk: Any) -> None:
    """Tell the ledger that ``chunk``'s records are finished (whatever their state),
    the way the offset keeper does, so its watermark gets stored."""
    if not chunk.split:
        keeper.complete(chunk)
    else:
        for ticket in list(chunk.tickets.values()):
            keeper.complete_one(chunk.part, ticket)
    # nothing of it is left for the ledger: as if split with every ticket spent
    chunk.split = True
    chunk.tickets = {}


def _run_chunks(run: Any) -> list[Any]:
    chunks = [run.slow.chunk] if run.slow is not None else run.chunks or [run.chunk]
    return list({id(c): c for c in chunks}.values())


# -- the bugs DESIGN.md names -------------------------------------------------------------


@contextlib.contextmanager
def store_before_processing() -> Iterator[None]:
    """The ticket is completed when the records are handed to the handler."""
    original = Loop.dispatch

    def dispatch(self: Any) -> None:
        handed = {id(c): c.handed for p in self._parts.values() for c in p.chunks}
        original(self)
        for part in list(self._parts.values()):
            for chunk in list(part.chunks):
                if chunk.handed > handed.get(id(chunk), 0):
                    _complete_chunk_now(self._keeper, chunk)

    with _patched(Loop, "dispatch", dispatch):
        yield


def _ticket_top(ticket: Any) -> int:
    return ticket.last if isinstance(ticket, RangeTicket) else ticket.offset


@contextlib.contextmanager
def watermark_highest_finished() -> Iterator[None]:
    """The ledger's watermark is the highest finished offset + 1, not the lowest
    unfinished one."""
    original = OffsetLedger.complete
    # id(partition state) -> (that state, kept alive so the id stays unique; highest
    # finished offset)
    highest: dict[int, tuple[object, int]] = {}

    def complete(self: OffsetLedger, ticket: Any) -> Completion:
        result = original(self, ticket)
        if result is Completion.COMPLETED:
            part = self._by_epoch[ticket.epoch]
            top = max(highest.get(id(part), (part, -1))[1], _ticket_top(ticket))
            highest[id(part)] = (part, top)
            if part.watermark is None or part.watermark < top + 1:
                part.watermark = top + 1
        return result

    with _patched(OffsetLedger, "complete", complete):
        yield


def _retarget(ledger: OffsetLedger, ticket: Any) -> Any:
    """``ticket`` of an older epoch re-bound to ``tp``'s current epoch (a chunk: to
    the current epoch's unfinished entry covering its head), or None."""
    current = ledger._parts.get(ticket.tp)
    if current is None or ticket.epoch == current.epoch:
        return None
    if isinstance(ticket, RangeTicket):
        for key, (end, _) in current.ranges.items():
            if key <= ticket.head < end and current.done.get(key) is False:
                return RangeTicket(ticket.tp, key, end - 1, 1, current.epoch, frozenset(), key)
        return None
    if current.done.get(ticket.offset) is False and ticket.offset not in current.ranges:
        return ticket._replace(epoch=current.epoch)
    return None


@contextlib.contextmanager
def ignoring_epochs() -> Iterator[None]:
    """``complete()`` applies a stale ticket (an older epoch of a partition assigned
    again) to the current epoch. It bites because the Processor hands the ledger the
    late results of chunks it abandoned on revoke/lost and relies on the ledger to
    treat them as stale (with the real ledger that is harmless: see
    ``late_results_to_the_ledger``)."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Any) -> Completion:
        if ticket.epoch not in self._by_epoch:
            again = _retarget(self, ticket)
            if again is None:
                return Completion.STALE
            ticket = again
        return original(self, ticket)

    with _patched(OffsetLedger, "complete", complete), late_results_to_the_ledger():
        yield


@contextlib.contextmanager
def late_results_to_the_ledger() -> Iterator[None]:
    """Not a bug on its own (the control of ``ignoring_epochs``): the tickets of
    chunks abandoned on revoke or lost are handed to the ledger at the start of the
    next step (as a late "cancelled" result would be), trusting it to find them
    stale. With the real ledger nothing changes."""
    original_abandon = RecordFlow.abandon
    original_step = Loop.step
    late: dict[int, tuple[object, list[Any]]] = {}  # id(keeper) -> tickets

    def abandon(self: Any, part: Any, chunks: Any, why: str) -> int:
        if why in {"revoked", "lost", "not started"}:
            for chunk in chunks:
                if not chunk.dead:
                    tickets = list(chunk.tickets.values()) if chunk.split else [chunk.ticket]
                    late.setdefault(id(self._keeper), (self._keeper, []))[1].extend(tickets)
        return original_abandon(self, part, chunks, why)

    def step(self: Any) -> None:
        _, tickets = late.pop(id(self._keeper), (self, []))
        for ticket in tickets:
            if self._ledger.complete(ticket) is Completion.COMPLETED:
                part = self._parts.get((ticket.tp.topic, ticket.tp.partition))
                if part is not None:
                    self._keeper.mark(part)
        original_step(self)

    with _patched(RecordFlow, "abandon", abandon), _patched(Loop, "step", step):
        yield


@contextlib.contextmanager
def commit_lost_partition() -> Iterator[None]:
    """``on_lost`` behaves like ``on_revoke``: drain, then commit the final watermark;
    and a commit that failed is sent again with the next policy commit.

    On its own the commit inside ``on_lost`` is harmless in the simulator (and in
    Kafka): the member was evicted, so the coordinator rejects it with
    UNKNOWN_MEMBER_ID. The retry after the member rejoined (a new member id and
    generation) is accepted although another member may own the partition now.
    """
    original_commit = OffsetKeeper.commit_sync
    original_maybe = OffsetKeeper.maybe_commit
    failed: dict[int, tuple[object, list[Any]]] = {}  # id(keeper) -> positions

    def commit_sync(self: Any, positions: Any, attempts: Any = None) -> Any:
        results = original_commit(self, positions, attempts)
        by_tp = {sp.tp: sp for sp in positions}
        again = [by_tp[r.tp] for r in results if r.error is not None and r.tp in by_tp]
        if again:
            failed.setdefault(id(self), (self, []))[1].extend(again)
        return results

    def maybe_commit(self: Any, parts: Any) -> None:
        _, retry = failed.pop(id(self), (self, []))
        if retry:
            original_commit(self, retry, 1)
        original_maybe(self, parts)

    with (
        _patched(Rebalancer, "on_lost", Rebalancer.on_revoke),
        _patched(OffsetKeeper, "commit_sync", commit_sync),
        _patched(OffsetKeeper, "maybe_commit", maybe_commit),
    ):
        yield


@contextlib.contextmanager
def store_before_delivery_report() -> Iterator[None]:
    """The ticket is completed when the handler returns, before its outputs'
    delivery reports arrived."""
    original = RecordFlow.ran

    def ran(self: Any, run: Any) -> None:
        original(self, run)
        for chunk in _run_chunks(run):
            if not chunk.dead:
                _complete_chunk_now(self._keeper, chunk)

    with _patched(RecordFlow, "ran", ran):
        yield


@contextlib.contextmanager
def drop_on_dead_letter_failure() -> Iterator[None]:
    """A failed dead-letter write completes the record instead of stalling."""
    original = SlowPath._dead_letter_settled

    def settled(self: Any, slow: Any, failed: Any) -> None:
        original(self, slow, [])

    with _patched(SlowPath, "_dead_letter_settled", settled):
        yield


@contextlib.contextmanager
def offset_without_plus_one() -> Iterator[None]:
    """When nothing is unfinished, the watermark is the last finished record's
    offset, not offset + 1: that record is redelivered forever."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Any) -> Completion:
        result = original(self, ticket)
        part = self._by_epoch.get(ticket.epoch)
        if (
            result is Completion.COMPLETED
            and part is not None
            and not part.pending
            and part.last_tracked is not None
            and part.watermark == part.last_tracked + 1
        ):
            part.watermark = part.last_tracked
        return result

    with _patched(OffsetLedger, "complete", complete):
        yield


# -- further plausible bugs ---------------------------------------------------------------


@contextlib.contextmanager
def revoke_commits_abandoned() -> Iterator[None]:
    """On revoke, the partitions' unfinished chunks are abandoned at once (no drain)
    but counted as finished, so the final commit covers them."""
    original = Rebalancer.on_revoke

    def on_revoke(self: Any, partitions: Any) -> None:
        for tp in partitions:
            part = self.parts.get((tp.topic, tp.partition))
            if part is not None:
                chunks = list(part.chunks)
                for chunk in chunks:
                    _complete_chunk_now(self._keeper, chunk)
                self._flow.abandon(part, chunks, "revoked")
        original(self, partitions)

    with _patched(Rebalancer, "on_revoke", on_revoke):
        yield


@contextlib.contextmanager
def dead_letter_without_ack() -> Iterator[None]:
    """The record is done as soon as its dead-letter record is produced, without
    waiting for the write to be acknowledged."""
    original = SlowPath._send_dead_letter

    def send_dead_letter(self: Any, slow: Any) -> None:
        original(self, slow)
        if not slow.tracker.state.terminal:
            self._to_done(slow)

    with _patched(SlowPath, "_send_dead_letter", send_dead_letter):
        yield


@contextlib.contextmanager
def restored_wrong_position() -> Iterator[None]:
    """Commit metadata (finished offsets above the committed position) is decoded
    one offset too low on assign, so a record that was not finished is skipped as
    already done after a restart."""
    original = decode_finished_real

    def decode_finished(
        metadata: str | None, position: int | None, *, budget: int, binding: str | None = None
    ) -> list[tuple[int, int]]:
        runs = original(metadata, position, budget=budget, binding=binding)
        return [(start - 1, end - 1) for start, end in runs]

    with _patched(ledger_module, "decode_finished", decode_finished):
        yield


@contextlib.contextmanager
def auto_commit_ahead_of_stored() -> Iterator[None]:
    """AUTO mode's own commit every ``auto_commit_interval`` commits each
    partition's highest polled offset + 1 instead of the position it stored."""
    from offsetledger.core import StoredPosition
    from offsetledger.runtime import CommitMode

    original = OffsetKeeper.maybe_commit

    def maybe_commit(self: Any, parts: Any) -> None:
        policy = self.policy
        if policy.mode is not CommitMode.AUTO:
            original(self, parts)
            return
        now = self._clock.now()
        if policy._interval is None or now - policy._last < policy._interval:
            return
        policy.did_commit(now)
        positions = [
            StoredPosition(part.tp, part.highest_polled + 1)
            for part in parts
            if not part.revoking and part.highest_polled is not None
        ]
        if positions:
            self.commit_sync(positions, attempts=1)

    with _patched(OffsetKeeper, "maybe_commit", maybe_commit):
        yield


@contextlib.contextmanager
def handler_slot_leaks_on_failure() -> Iterator[None]:
    """A failed handler attempt keeps its handler slot (``max_in_flight_*``): after
    as many failures as slots, nothing is handed out any more."""
    original = SlowPath._attempt_failed

    def attempt_failed(self: Any, slow: Any, exc: BaseException) -> None:
        self._intake.started(slow.chunk.part, 1)
        original(self, slow, exc)

    with _patched(SlowPath, "_attempt_failed", attempt_failed):
        yield


CATALOGUE: tuple[PlantedBug, ...] = (
    PlantedBug(
        "store_before_processing",
        "ticket completed when the record is dispatched",
        "DESIGN.md",
        store_before_processing,
    ),
    PlantedBug(
        "watermark_highest_finished",
        "watermark = highest finished offset + 1 (OffsetLedger)",
        "DESIGN.md",
        watermark_highest_finished,
    ),
    PlantedBug(
        "ignoring_epochs",
        "complete() applies stale tickets to a partition assigned again",
        "DESIGN.md",
        ignoring_epochs,
    ),
    PlantedBug(
        "commit_lost_partition",
        "on_lost behaves like on_revoke (drains and commits)",
        "DESIGN.md",
        commit_lost_partition,
    ),
    PlantedBug(
        "store_before_delivery_report",
        "ticket completed when the handler returns, before the delivery reports",
        "DESIGN.md",
        store_before_delivery_report,
    ),
    PlantedBug(
        "drop_on_dead_letter_failure",
        "a failed dead-letter write completes the record",
        "DESIGN.md",
        drop_on_dead_letter_failure,
    ),
    PlantedBug(
        "offset_without_plus_one",
        "watermark after the last finished record is its offset, not offset + 1",
        "DESIGN.md",
        offset_without_plus_one,
    ),
    PlantedBug(
        "revoke_commits_abandoned",
        "on revoke, unfinished records are abandoned but committed as finished",
        "extra",
        revoke_commits_abandoned,
    ),
    PlantedBug(
        "dead_letter_without_ack",
        "record completed when its dead-letter record is produced, before the ack",
        "extra",
        dead_letter_without_ack,
    ),
    PlantedBug(
        "restored_wrong_position",
        "commit metadata decoded one offset low: an unfinished record is skipped",
        "extra",
        restored_wrong_position,
    ),
    PlantedBug(
        "auto_commit_ahead_of_stored",
        "AUTO mode's periodic commit sends the highest polled offset + 1, not the stored one",
        "extra",
        auto_commit_ahead_of_stored,
    ),
    PlantedBug(
        "handler_slot_leaks_on_failure",
        "a failed handler attempt keeps its max_in_flight slot",
        "extra",
        handler_slot_leaks_on_failure,
    ),
)


#: Patches that are not bugs: the tests must pass under them.
CONTROLS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "late_results_to_the_ledger",
        "(control) abandoned records' tickets handed to the real ledger later",
        "control",
        late_results_to_the_ledger,
    ),
)


def by_name(name: str) -> PlantedBug:
    """The catalogue entry called ``name``."""
    for bug in CATALOGUE + CONTROLS:
        if bug.name == name:
            return bug
    raise KeyError(f"no planted bug {name!r}; known: {', '.join(b.name for b in CATALOGUE)}")


# -- the ledger's range path (chunks) ------------------------------------------------------
#
# Planted in OffsetLedger's range path; tests/model/test_ledger_model.py catches each
# (its own copies as subclasses), and since the Processor tracks chunks with
# ``track_range`` they are in CATALOGUE too (below).


@contextlib.contextmanager
def range_stale_epoch_accepted() -> Iterator[None]:
    """Completing a chunk looks the partition up by topic and partition instead of
    by the ticket's epoch: a chunk of an older epoch completes the current epoch's
    chunk that starts at the same offset."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Any) -> Completion:
        if isinstance(ticket, RangeTicket):
            part = self._parts.get(ticket.tp)
            if part is not None and ticket.head in part.ranges:
                end, _ = part.ranges[ticket.head]
                ticket = ticket._replace(epoch=part.epoch, last=end - 1)
        return original(self, ticket)

    with _patched(OffsetLedger, "complete", complete):
        yield


@contextlib.contextmanager
def range_watermark_past_earlier_chunk() -> Iterator[None]:
    """A finished chunk moves the watermark to its last offset + 1 even while an
    earlier chunk of the partition is unfinished."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Any) -> Completion:
        result = original(self, ticket)
        if result is Completion.COMPLETED and isinstance(ticket, RangeTicket):
            part = self._by_epoch[ticket.epoch]
            part.watermark = max(part.watermark or 0, ticket.last + 1)
        return result

    with _patched(OffsetLedger, "complete", complete):
        yield


@contextlib.contextmanager
def range_unfinished_encoded() -> Iterator[None]:
    """The commit metadata lists every chunk above the watermark, finished or not:
    after a restart an unfinished record is skipped as already done."""
    original = OffsetLedger.finished_above_watermark

    def finished_above_watermark(self: OffsetLedger, tp: Any) -> list[tuple[int, int]]:
        part = self._parts[tp]
        wm = part.watermark
        extra = [(k, end) for k, (end, _) in part.ranges.items() if wm is not None and k > wm]
        merged: list[tuple[int, int]] = []
        for start, end in sorted(original(self, tp) + extra):
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
            else:
                merged.append((start, end))
        return merged

    with (
        _patched(OffsetLedger, "finished_above_watermark", finished_above_watermark),
        _patched(OffsetLedger, "has_finished_above_watermark", lambda self, tp: True),
    ):
        yield


#: Planted in the ledger's range path (also in CATALOGUE).
RANGE_BUGS: tuple[PlantedBug, ...] = (
    PlantedBug(
        "range_stale_epoch_accepted",
        "a chunk of an older epoch completes the current epoch's chunk (OffsetLedger)",
        "extra",
        range_stale_epoch_accepted,
    ),
    PlantedBug(
        "range_watermark_past_earlier_chunk",
        "a finished chunk moves the watermark past an unfinished earlier one (OffsetLedger)",
        "extra",
        range_watermark_past_earlier_chunk,
    ),
    PlantedBug(
        "range_unfinished_encoded",
        "commit metadata lists unfinished chunks as finished (OffsetLedger)",
        "extra",
        range_unfinished_encoded,
    ),
)


# -- one per class of hole the generated workloads and the workload checks close ----------
# (helper prfb; each patch is small and targets the runtime's units)

from offsetledger.runtime import OrderingMode as _OrderingMode  # noqa: E402
from offsetledger.runtime import _intake as _intake_module  # noqa: E402
from offsetledger.runtime._backpressure import Backpressure  # noqa: E402
from offsetledger.runtime._runners import _base as _runners_base  # noqa: E402
from offsetledger.runtime._work import Send  # noqa: E402


@contextlib.contextmanager
def settle_on_first_report() -> Iterator[None]:
    """Fan-out: the first ok delivery report of a record's outputs settles the
    record, as if it had one output; its later reports are not waited for."""
    original = Send.report
    seen: dict[int, tuple[object, set[int]]] = {}  # id(send) -> (send, records seen)

    def report(self: Any, index: int, error: Any) -> None:
        if error is None and self.left > 0:
            owner = self.owner(index)
            _, records = seen.setdefault(id(self), (self, set()))
            if owner not in records:
                records.add(owner)
                # the record's other outputs count as reported now
                self.left -= self.counts[owner] - 1
                if self.left <= 0:
                    self.left = 1
        original(self, index, error)

    with _patched(Send, "report", report):
        yield


@contextlib.contextmanager
def commit_attempt_after_lost() -> Iterator[None]:
    """on_lost first tries (once) to commit the lost partitions' watermarks. The
    classic coordinator rejects the commit, so only a client-side rule sees it; under
    KIP-848 an empty group would accept it."""
    original = Rebalancer.on_lost

    def on_lost(self: Any, partitions: Any) -> None:
        parts = [p for tp in partitions if (p := self.parts.get((tp.topic, tp.partition)))]
        positions = self._keeper.final_positions(parts)
        if positions:
            with contextlib.suppress(Exception):
                self._keeper.commit_sync(positions, attempts=1)
        original(self, partitions)

    with _patched(Rebalancer, "on_lost", on_lost):
        yield


@contextlib.contextmanager
def no_backpressure() -> Iterator[None]:
    """Backpressure never pauses a partition: buffers grow past their limits."""
    with _patched(Backpressure, "apply", lambda self, parts, buffered_bytes: None):
        yield


@contextlib.contextmanager
def drop_on_non_retriable_dead_letter_failure() -> Iterator[None]:
    """A dead-letter write that fails with a non-retriable error completes the record
    (the retriable ones are still retried)."""
    original = SlowPath._dead_letter_settled

    def settled(self: Any, slow: Any, failed: Any) -> None:
        if failed and not any(e.retriable for _, e in failed):
            failed = []
        original(self, slow, failed)

    with _patched(SlowPath, "_dead_letter_settled", settled):
        yield


@contextlib.contextmanager
def finish_exhausted_without_dead_letter_topic() -> Iterator[None]:
    """Without a dead-letter topic, a record whose attempts are used up is finished
    (dropped) instead of stalling its partition."""
    original = SlowPath._exhausted

    def exhausted(self: Any, slow: Any, what: Any) -> None:
        if self._config.dead_letter_topic is None:
            self._to_done(slow)
            return
        original(self, slow, what)

    with _patched(SlowPath, "_exhausted", exhausted):
        yield


class _KeyAsUnordered:
    """OrderingMode as the intake module sees it under ``key_ordering_ignored``."""

    PARTITION = _OrderingMode.PARTITION
    UNORDERED = _OrderingMode.KEY  # KEY configurations take the UNORDERED branch
    KEY = object()  # never matches: UNORDERED configurations serialise per partition


@contextlib.contextmanager
def key_ordering_ignored() -> Iterator[None]:
    """KEY ordering does not hold back the next record of a key: records of one key
    run (and write their outputs) concurrently."""
    with _patched(_intake_module, "OrderingMode", _KeyAsUnordered):
        yield


# -- the chunk and batch paths (rt, issue 10) ----------------------------------------------


@contextlib.contextmanager
def chunk_done_while_producing() -> Iterator[None]:
    """A chunk counts as done as soon as every record was handed out and one of its
    produce rounds settled, while the outputs of its other runs (the other slices
    of the chunk) are still being produced."""
    original = RecordFlow._records_done

    def records_done(self: Any, chunk: Any, records: Any, counts: Any) -> None:
        original(self, chunk, records, counts)
        if (
            chunk.left
            and not chunk.dead
            and not chunk.split
            and not chunk.slow
            and chunk.handed == len(chunk.records)
        ):
            _complete_chunk_now(self._keeper, chunk)

    with _patched(RecordFlow, "_records_done", records_done):
        yield


@contextlib.contextmanager
def batch_failure_as_success() -> Iterator[None]:
    """A batch handler's per-record failure (an Exception entry in its result) is
    taken as success with no outputs: the record is finished, never retried nor
    dead-lettered."""
    original = _runners_base.coerce_batch  # type: ignore[attr-defined]

    def coerce_batch(result: Any, records: Any) -> list[Any]:
        return [[] if isinstance(e, Exception) else e for e in original(result, records)]

    with _patched(_runners_base, "coerce_batch", coerce_batch):
        yield


def _oldest_range(ledger: OffsetLedger, tp: Any) -> Any:
    """A ticket for the oldest unfinished entry (a chunk, or a record of a split
    chunk) of ``tp``'s current epoch, or None."""
    current = ledger._parts.get(tp)
    if current is None:
        return None
    for key in current.pending:
        if current.done.get(key) is False:
            if key in current.ranges:
                end = current.ranges[key][0]
                return RangeTicket(tp, key, end - 1, 1, current.epoch, frozenset(), key)
            return Ticket(tp, key, current.epoch)
    return None


@contextlib.contextmanager
def chunk_outlives_revoke() -> Iterator[None]:
    """On revoke the partition's in-flight chunks are not abandoned: they keep
    running, and when one finishes after the partition was assigned again the keeper
    completes it by partition, in the new epoch: the oldest unfinished chunk there
    (records that may still be producing) counts as done."""
    original_abandon = RecordFlow.abandon
    original_complete = OffsetKeeper.complete

    def abandon(self: Any, part: Any, chunks: Any, why: str) -> int:
        if why in {"revoked", "re-assigned"}:
            return 0  # they finish later
        return original_abandon(self, part, chunks, why)

    original_one = OffsetKeeper.complete_one

    def in_new_epoch(keeper: Any, tp: Any) -> None:
        again = _oldest_range(keeper._ledger, tp)
        if again is not None and keeper._ledger.complete(again) is Completion.COMPLETED:
            current = keeper._parts.get((tp.topic, tp.partition))
            if current is not None:
                keeper.mark(current)

    def complete(self: Any, chunk: Any) -> Completion:
        result = original_complete(self, chunk)
        if result is Completion.STALE:
            in_new_epoch(self, chunk.ticket.tp)
        return result

    def complete_one(self: Any, part: Any, ticket: Any) -> Completion:
        result = original_one(self, part, ticket)
        if result is Completion.STALE:
            in_new_epoch(self, ticket.tp)
        return result

    with (
        _patched(RecordFlow, "abandon", abandon),
        _patched(OffsetKeeper, "complete", complete),
        _patched(OffsetKeeper, "complete_one", complete_one),
    ):
        yield


@contextlib.contextmanager
def range_stale_epoch_with_late_results() -> Iterator[None]:
    """:func:`range_stale_epoch_accepted` with :func:`late_results_to_the_ledger`."""
    with range_stale_epoch_accepted(), late_results_to_the_ledger():
        yield


CATALOGUE = (
    *CATALOGUE,
    PlantedBug(
        "settle_on_first_report",
        "a record with several outputs is finished at its first ok delivery report",
        "extra",
        settle_on_first_report,
    ),
    PlantedBug(
        "commit_attempt_after_lost",
        "on_lost tries once to commit the lost partitions (fenced by the classic coordinator)",
        "extra",
        commit_attempt_after_lost,
    ),
    PlantedBug(
        "no_backpressure",
        "backpressure never pauses: buffered records exceed the configured limits",
        "extra",
        no_backpressure,
    ),
    PlantedBug(
        "drop_on_non_retriable_dead_letter_failure",
        "a non-retriable dead-letter write failure completes the record",
        "extra",
        drop_on_non_retriable_dead_letter_failure,
    ),
    PlantedBug(
        "finish_exhausted_without_dead_letter_topic",
        "without a dead-letter topic an exhausted record is finished (dropped)",
        "extra",
        finish_exhausted_without_dead_letter_topic,
    ),
    PlantedBug(
        "key_ordering_ignored",
        "KEY ordering runs the records of one key concurrently",
        "extra",
        key_ordering_ignored,
    ),
    # the Processor tracks chunks with track_range now: the ledger's range bugs bite
    # (the stale-epoch one through the late results the Processor hands the ledger,
    # as ignoring_epochs does: the Processor itself never completes a dead chunk)
    PlantedBug(
        "range_stale_epoch_accepted",
        RANGE_BUGS[0].summary + ", with late results handed to it",
        "extra",
        range_stale_epoch_with_late_results,
    ),
    *RANGE_BUGS[1:],
    PlantedBug(
        "chunk_done_while_producing",
        "a chunk is completed while outputs of its other slices are still producing",
        "extra",
        chunk_done_while_producing,
    ),
    PlantedBug(
        "batch_failure_as_success",
        "a batch handler's per-record failure is taken as success with no outputs",
        "extra",
        batch_failure_as_success,
    ),
    PlantedBug(
        "chunk_outlives_revoke",
        "a chunk's range outlives a revoke and completes in the next epoch",
        "extra",
        chunk_outlives_revoke,
        # with a quarter of the swarm's seeds async (ASYNC_FRACTION 0.25) the first
        # seed that catches it is 84, past the default budget; a seed takes ~0.15 s
        swarm_seeds=120,
    ),
)


# -- exactly-once (CommitMode.TRANSACTIONAL) -----------------------------------------------
#
# In CATALOGUE (model "txn": benchmarks/planted_bugs.py runs the transactional model test
# for them); the swarm draws the transactional mode for a fifth of its seeds. Most are
# also caught by the named tests of tests/processor/test_transactional.py (TXN_BUGS).


@contextlib.contextmanager
def txn_positions_outside_transaction() -> Iterator[None]:
    """The positions are committed through the consumer (a plain commit), not sent
    with ``send_offsets_to_transaction``: outputs and positions no longer atomic."""
    real = TransactionalKeeper.positions

    def positions(self: Any) -> list[Any]:
        ps = real(self)
        if ps:
            self.commit_sync(ps)
        return []

    with _patched(TransactionalKeeper, "positions", positions):
        yield


@contextlib.contextmanager
def txn_no_rewind_after_abort() -> Iterator[None]:
    """After an abort the partitions are not rewound: the records of the aborted
    transaction are never processed again (lost)."""
    with _patched(Rebalancer, "rewind", lambda self, **_kw: None):
        yield


@contextlib.contextmanager
def txn_commit_on_lost() -> Iterator[None]:
    """On lost the open transaction is committed instead of aborted."""
    with _patched(TransactionalKeeper, "lost", lambda self: self.commit_transaction()):
        yield


@contextlib.contextmanager
def txn_dead_letter_outside_transaction() -> Iterator[None]:
    """Dead letters are produced outside the transaction: through a separate plain
    producer of the same process (on the simulator; flushed at once), or through
    the raw producer with no transaction begun (the recording fakes)."""
    real = SlowPath._send_dead_letter
    plain: dict[int, tuple[object, SimProducer]] = {}

    def send(self: Any, slow: Any) -> None:
        sender = self._sender
        txn = sender._producer
        if not isinstance(txn, TransactionalProducer):
            real(self, slow)
            return
        inner: Any = txn.inner
        side: Any = inner
        if isinstance(inner, SimTransactionalProducer):
            # kept with its owner, so the id stays unique while cached
            side = plain.setdefault(
                id(inner),
                (
                    inner,
                    SimProducer(
                        inner._world,
                        {"message.timeout.ms": 2000},
                        f"{inner.name}-dlq",
                        inner.member,
                    ),
                ),
            )[1]
        sender._producer = side
        try:
            real(self, slow)
        finally:
            sender._producer = txn
        if side is not inner:
            side.flush(2.0)

    with _patched(SlowPath, "_send_dead_letter", send):
        yield


@contextlib.contextmanager
def txn_positions_without_plus_one() -> Iterator[None]:
    """The positions sent into the transaction are the last finished offset, not +1:
    the last record of each partition is processed again after a restart."""
    real = TransactionalKeeper.positions

    def positions(self: Any) -> list[Any]:
        return [attrs.evolve(sp, position=sp.position - 1) for sp in real(self)]

    with _patched(TransactionalKeeper, "positions", positions):
        yield


@contextlib.contextmanager
def txn_no_split_partial() -> Iterator[None]:
    """(own) A commit does not split partly finished chunks first: the done records
    of a chunk still running have their outputs in the transaction but their
    positions (commit metadata) not, so they are processed again after a restart."""
    real = TransactionalKeeper.positions

    def positions(self: Any) -> list[Any]:
        split, self.split_partial = self.split_partial, lambda _part: None
        try:
            return real(self)
        finally:
            self.split_partial = split

    with _patched(TransactionalKeeper, "positions", positions):
        yield


@contextlib.contextmanager
def txn_no_begin_after_abort() -> Iterator[None]:
    """(own) After an abort the producer wrapper still thinks a transaction is open:
    the next outputs are produced outside any transaction."""

    def abort(self: Any, why: str) -> None:
        self.producer.inner.abort_transaction(self._config.transaction_call_timeout)
        self.rewind()

    with _patched(TransactionalKeeper, "abort", abort):
        yield


def _txn_bug(
    name: str, summary: str, source: str, plant: Callable[[], Any], first_seed: int
) -> PlantedBug:
    return PlantedBug(
        name, summary, source, plant, swarm_seeds=first_seed + 1, first_seed=first_seed, model="txn"
    )


#: The exactly-once planted bugs, each caught by the swarm (at ``first_seed``, the
#: first transactional seed that catches it with TRANSACTIONAL_FRACTION 0.2) and by
#: the transactional model test (tests/model/test_txn_system_model.py); in CATALOGUE.
TXN_CATALOGUE: tuple[PlantedBug, ...] = (
    _txn_bug(
        "txn_positions_outside_transaction",
        "positions committed through the consumer, outside the transaction",
        "issue 13",
        txn_positions_outside_transaction,
        first_seed=1,
    ),
    _txn_bug(
        "txn_no_rewind_after_abort",
        "no rewind to the committed position after an abort",
        "issue 13",
        txn_no_rewind_after_abort,
        first_seed=1,
    ),
    _txn_bug(
        "txn_commit_on_lost",
        "the open transaction is committed on lost",
        "issue 13",
        txn_commit_on_lost,
        first_seed=3,
    ),
    _txn_bug(
        "txn_dead_letter_outside_transaction",
        "a dead letter produced outside the transaction",
        "issue 13",
        txn_dead_letter_outside_transaction,
        first_seed=4,
    ),
    _txn_bug(
        "txn_positions_without_plus_one",
        "positions sent into the transaction without +1",
        "issue 13",
        txn_positions_without_plus_one,
        first_seed=1,
    ),
    _txn_bug(
        "txn_no_begin_after_abort",
        "after an abort, outputs are produced with no transaction open",
        "extra",
        txn_no_begin_after_abort,
        first_seed=1,
    ),
    _txn_bug(
        "txn_no_split_partial",
        "a commit does not split partly finished chunks: done records' positions left out",
        "extra",
        txn_no_split_partial,
        first_seed=1,
    ),
)
_TXN = {bug.name: bug for bug in TXN_CATALOGUE}

#: (bug, the tests of tests/processor/test_transactional.py that catch it, too)
TXN_BUGS: tuple[tuple[PlantedBug, tuple[str, ...]], ...] = (
    (
        _TXN["txn_positions_outside_transaction"],
        ("test_positions_go_into_the_transaction_plus_one_with_group_metadata",),
    ),
    (
        _TXN["txn_no_rewind_after_abort"],
        ("test_an_abortable_commit_error_aborts_and_rewinds_to_the_committed_position",),
    ),
    (_TXN["txn_commit_on_lost"], ("test_lost_mid_transaction_aborts_and_never_commits",)),
    (_TXN["txn_dead_letter_outside_transaction"], ("test_dead_letters_go_into_the_transaction",)),
    (
        _TXN["txn_positions_without_plus_one"],
        ("test_positions_go_into_the_transaction_plus_one_with_group_metadata",),
    ),
    (
        _TXN["txn_no_begin_after_abort"],
        ("test_an_abortable_commit_error_aborts_and_rewinds_to_the_committed_position",),
    ),
)

CATALOGUE = (*CATALOGUE, *TXN_CATALOGUE)

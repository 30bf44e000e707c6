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
from offsetledger.runtime import Processor

__all__ = ["CATALOGUE", "CONTROLS", "RANGE_BUGS", "PlantedBug", "by_name"]


@attrs.frozen
class PlantedBug:
    """One planted bug.

    * ``name``: short identifier (used as the pytest parameter id).
    * ``summary``: what the wrong code does.
    * ``source``: ``"DESIGN.md"`` for the bugs DESIGN.md names, else ``"extra"``.
    * ``plant``: returns a context manager that patches the code while open.
    * ``swarm_seeds``: the swarm's seed budget for this bug in CI (the script's
      default budget is larger); the swarm stops at the first failing seed.
    """

    name: str
    summary: str
    source: str
    plant: Callable[[], contextlib.AbstractContextManager[None]]
    swarm_seeds: int = 40


@contextlib.contextmanager
def _patched(owner: object, attribute: str, replacement: object) -> Iterator[None]:
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        setattr(owner, attribute, original)


def _complete_now(processor: Any, work: Any) -> None:
    """Tell the ledger that ``work``'s record is finished (whatever its state), the
    way the Processor's ``_finish`` does, so its watermark gets stored."""
    result = processor._ledger.complete(work.tracker.ticket)
    if result is Completion.COMPLETED:
        processor._dirty[work.part] = None


# -- the bugs DESIGN.md names -------------------------------------------------------------


@contextlib.contextmanager
def store_before_processing() -> Iterator[None]:
    """The ticket is completed when the record is dispatched to the handler."""
    original = Processor._submit

    def submit(self: Any, work: Any) -> None:
        _complete_now(self, work)
        original(self, work)

    with _patched(Processor, "_submit", submit):
        yield


@contextlib.contextmanager
def watermark_highest_finished() -> Iterator[None]:
    """The ledger's watermark is the highest finished offset + 1, not the lowest
    unfinished one."""
    original = OffsetLedger.complete
    # id(partition state) -> (that state, kept alive so the id stays unique; highest
    # finished offset)
    highest: dict[int, tuple[object, int]] = {}

    def complete(self: OffsetLedger, ticket: Ticket) -> Completion:
        result = original(self, ticket)
        if result is Completion.COMPLETED:
            part = self._by_epoch[ticket.epoch]
            top = max(highest.get(id(part), (part, -1))[1], ticket.offset)
            highest[id(part)] = (part, top)
            if part.watermark is None or part.watermark < top + 1:
                part.watermark = top + 1
        return result

    with _patched(OffsetLedger, "complete", complete):
        yield


@contextlib.contextmanager
def ignoring_epochs() -> Iterator[None]:
    """``complete()`` applies a stale ticket (an older epoch of a partition assigned
    again) to the current epoch. It bites because the Processor hands the ledger the
    late results of records it abandoned on revoke/lost and relies on the ledger to
    treat them as stale (with the real ledger that is harmless: see
    ``late_results_to_the_ledger``)."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Ticket) -> Completion:
        current = self._parts.get(ticket.tp)
        if current is not None and ticket.epoch not in self._by_epoch:
            if ticket.offset not in current.done:
                return Completion.STALE
            ticket = ticket._replace(epoch=current.epoch)
        return original(self, ticket)

    with _patched(OffsetLedger, "complete", complete), late_results_to_the_ledger():
        yield


@contextlib.contextmanager
def late_results_to_the_ledger() -> Iterator[None]:
    """Not a bug on its own (the control of ``ignoring_epochs``): the tickets of
    records abandoned on revoke or lost are handed to the ledger at the start of the
    next step (as a late "cancelled" result would be), trusting it to find them
    stale. With the real ledger nothing changes."""
    original_abandon = Processor._abandon
    original_step = Processor._step
    late: dict[int, tuple[object, list[Ticket]]] = {}  # id(processor) -> tickets

    def abandon(self: Any, work: Any, why: str) -> None:
        if not work.tracker.state.terminal and why in {"revoked", "lost", "not started"}:
            late.setdefault(id(self), (self, []))[1].append(work.tracker.ticket)
        original_abandon(self, work, why)

    def step(self: Any) -> None:
        _, tickets = late.pop(id(self), (self, []))
        for ticket in tickets:
            if self._ledger.complete(ticket) is Completion.COMPLETED:
                part = self._parts.get((ticket.tp.topic, ticket.tp.partition))
                if part is not None:
                    self._dirty[part] = None
        original_step(self)

    with _patched(Processor, "_abandon", abandon), _patched(Processor, "_step", step):
        yield


@contextlib.contextmanager
def commit_lost_partition() -> Iterator[None]:
    """``on_lost`` behaves like ``on_revoke``: drain, then commit the final watermark;
    and a commit that failed is sent again with the next periodic commit.

    On its own the commit inside ``on_lost`` is harmless in the simulator (and in
    Kafka): the member was evicted, so the coordinator rejects it with
    UNKNOWN_MEMBER_ID. The retry after the member rejoined (a new member id and
    generation) is accepted although another member may own the partition now.
    """
    original_commit = Processor._commit_sync
    original_maybe = Processor._maybe_commit
    failed: dict[int, tuple[object, list[Any]]] = {}  # id(processor) -> positions

    def commit_sync(self: Any, positions: Any, attempts: Any = None) -> Any:
        results = original_commit(self, positions, attempts)
        by_tp = {sp.tp: sp for sp in positions}
        again = [by_tp[r.tp] for r in results if r.error is not None and r.tp in by_tp]
        if again:
            failed.setdefault(id(self), (self, []))[1].extend(again)
        return results

    def maybe_commit(self: Any) -> None:
        _, retry = failed.pop(id(self), (self, []))
        if retry:
            original_commit(self, retry, 1)
        original_maybe(self)

    with (
        _patched(Processor, "_on_lost", Processor._on_revoke),
        _patched(Processor, "_commit_sync", commit_sync),
        _patched(Processor, "_maybe_commit", maybe_commit),
    ):
        yield


@contextlib.contextmanager
def store_before_delivery_report() -> Iterator[None]:
    """The ticket is completed when the handler returns, before its outputs'
    delivery reports arrived."""
    original = Processor._produce_outputs

    def produce_outputs(self: Any, work: Any, outputs: Any) -> None:
        _complete_now(self, work)
        original(self, work, outputs)

    with _patched(Processor, "_produce_outputs", produce_outputs):
        yield


@contextlib.contextmanager
def drop_on_dead_letter_failure() -> Iterator[None]:
    """A failed dead-letter write completes the record instead of stalling."""
    original = Processor._settle_dead_letter

    def settle_dead_letter(self: Any, work: Any) -> None:
        work.failed = []
        original(self, work)

    with _patched(Processor, "_settle_dead_letter", settle_dead_letter):
        yield


@contextlib.contextmanager
def offset_without_plus_one() -> Iterator[None]:
    """When nothing is unfinished, the watermark is the last finished record's
    offset, not offset + 1: that record is redelivered forever."""
    original = OffsetLedger.complete

    def complete(self: OffsetLedger, ticket: Ticket) -> Completion:
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
    """On revoke, records not finished are abandoned but counted as finished, so the
    final commit covers them."""
    original = Processor._on_revoke

    def on_revoke(self: Any, partitions: Any) -> None:
        for tp in partitions:
            part = self._parts.get((tp.topic, tp.partition))
            if part is not None:
                for work in list(part.live.values()):
                    _complete_now(self, work)
        original(self, partitions)

    with _patched(Processor, "_on_revoke", on_revoke):
        yield


@contextlib.contextmanager
def dead_letter_without_ack() -> Iterator[None]:
    """The record is completed as soon as its dead-letter record is produced,
    without waiting for the write to be acknowledged."""
    original = Processor._send_dead_letter

    def send_dead_letter(self: Any, work: Any) -> None:
        original(self, work)
        _complete_now(self, work)

    with _patched(Processor, "_send_dead_letter", send_dead_letter):
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

    def maybe_commit_stored(self: Any) -> None:
        now = self._clock.now()
        if now - self._last_commit_at < self._auto_commit_interval:
            return
        self._last_commit_at = now
        positions = [
            StoredPosition(part.tp, part.highest_polled + 1)
            for part in self._parts.values()
            if not part.revoking and part.highest_polled is not None
        ]
        if positions:
            self._commit_sync(positions, attempts=1)

    with _patched(Processor, "_maybe_commit_stored", maybe_commit_stored):
        yield


@contextlib.contextmanager
def handler_slot_leaks_on_failure() -> Iterator[None]:
    """A failed handler attempt keeps its handler slot (``max_in_flight_*``): after
    as many failures as slots, nothing is dispatched any more."""
    original = Processor._attempt_failed

    def attempt_failed(self: Any, work: Any, exc: BaseException) -> None:
        self._handlers_running += 1
        work.part.running += 1
        original(self, work, exc)

    with _patched(Processor, "_attempt_failed", attempt_failed):
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
# (its own copies as subclasses). They bite the whole system only once the Processor
# tracks chunks with ``track_range``: until then they are kept out of CATALOGUE (the
# whole-system model test would pass them for want of a caller). Move them into
# CATALOGUE, unchanged, when it does.


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


#: Planted in the ledger's range path; not in CATALOGUE until the Processor tracks
#: chunks (see above).
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
# (helper prfb; each patch is small and targets the current Processor)

from offsetledger.runtime import OrderingMode as _OrderingMode  # noqa: E402
from offsetledger.runtime import _processor as _processor_module  # noqa: E402


@contextlib.contextmanager
def settle_on_first_report() -> Iterator[None]:
    """Fan-out: the first ok delivery report of a record's outputs settles the
    record, as if it had one output; the later reports are ignored as stale."""
    original = Processor._on_delivery

    def on_delivery(self: Any, work: Any, token: int, report: Any) -> None:
        if report.error is None and token == work.token and work.outputs_pending > 1:
            work.outputs_pending = 1
        original(self, work, token, report)

    with _patched(Processor, "_on_delivery", on_delivery):
        yield


@contextlib.contextmanager
def commit_attempt_after_lost() -> Iterator[None]:
    """on_lost first tries (once) to commit the lost partitions' watermarks. The
    classic coordinator rejects the commit, so only a client-side rule sees it; under
    KIP-848 an empty group would accept it."""
    original = Processor._on_lost

    def on_lost(self: Any, partitions: Any) -> None:
        parts = [p for tp in partitions if (p := self._parts.get((tp.topic, tp.partition)))]
        positions = self._final_positions(parts)
        if positions:
            with contextlib.suppress(Exception):
                self._commit_sync(positions, attempts=1)
        original(self, partitions)

    with _patched(Processor, "_on_lost", on_lost):
        yield


@contextlib.contextmanager
def no_backpressure() -> Iterator[None]:
    """Backpressure never pauses a partition: buffers grow past their limits."""
    with _patched(Processor, "_backpressure", lambda self: None):
        yield


@contextlib.contextmanager
def drop_on_non_retriable_dead_letter_failure() -> Iterator[None]:
    """A dead-letter write that fails with a non-retriable error completes the record
    (the retriable ones are still retried)."""
    original = Processor._settle_dead_letter

    def settle(self: Any, work: Any) -> None:
        if work.failed and not any(r.error.retriable for r in work.failed):
            work.failed = []
        original(self, work)

    with _patched(Processor, "_settle_dead_letter", settle):
        yield


@contextlib.contextmanager
def finish_exhausted_without_dead_letter_topic() -> Iterator[None]:
    """Without a dead-letter topic, a record whose attempts are used up is finished
    (dropped) instead of stalling its partition."""
    original = Processor._exhausted

    def exhausted(self: Any, work: Any, what: Any) -> None:
        if self._config.dead_letter_topic is None:
            self._finish(work)
            return
        original(self, work, what)

    with _patched(Processor, "_exhausted", exhausted):
        yield


class _KeyAsUnordered:
    """OrderingMode as the Processor module sees it under ``key_ordering_ignored``."""

    PARTITION = _OrderingMode.PARTITION
    UNORDERED = _OrderingMode.KEY  # KEY configurations take the UNORDERED branch
    KEY = object()  # never matches: UNORDERED configurations serialise per partition


@contextlib.contextmanager
def key_ordering_ignored() -> Iterator[None]:
    """KEY ordering does not hold back the next record of a key: records of one key
    run (and write their outputs) concurrently."""
    with _patched(_processor_module, "OrderingMode", _KeyAsUnordered):
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
)

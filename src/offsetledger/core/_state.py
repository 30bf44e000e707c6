"""The record state machine: where one polled record is in its processing.

::

    POLLED ──► PROCESSING ──► PRODUCING ──► DONE
                 │  ▲  │          │  ▲
                 │  │  └─► DONE   ▼  │
                 │  └── RETRY_WAIT ◄─┘ (handler failed, or an output's delivery failed)
                 ▼          │
           DEAD_LETTERING ◄─┘ (attempts exhausted or a fatal error)
                 │
                 ▼
                DONE

    any unfinished state ──► ABANDONED (revoke, lost, shutdown)

Only DONE completes the record's ledger ticket. ABANDONED leaves the offset
unfinished, so the record is delivered again: a duplicate, never a loss.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from types import MappingProxyType

import attrs

from offsetledger.core._errors import IllegalTransitionError
from offsetledger.core._ledger import Ticket

__all__ = ["TRANSITIONS", "RecordState", "RecordTracker"]


class RecordState(enum.Enum):
    POLLED = "polled"  #: taken from the consumer, not yet handed to a handler
    PROCESSING = "processing"  #: the handler is running
    RETRY_WAIT = "retry_wait"  #: failed; waiting for its backoff before the next attempt
    PRODUCING = "producing"  #: handler returned; waiting for every output's delivery report
    DEAD_LETTERING = "dead_lettering"  #: waiting for the dead-letter write's delivery report
    DONE = "done"  #: finished: the ledger ticket is completed
    ABANDONED = "abandoned"  #: given up without finishing (revoke, lost, shutdown)

    @property
    def terminal(self) -> bool:
        return self in (RecordState.DONE, RecordState.ABANDONED)


_S = RecordState
TRANSITIONS: MappingProxyType[RecordState, frozenset[RecordState]] = MappingProxyType(
    {
        _S.POLLED: frozenset({_S.PROCESSING, _S.ABANDONED}),
        _S.PROCESSING: frozenset(
            {_S.PRODUCING, _S.DONE, _S.RETRY_WAIT, _S.DEAD_LETTERING, _S.ABANDONED}
        ),
        _S.RETRY_WAIT: frozenset({_S.PROCESSING, _S.PRODUCING, _S.DEAD_LETTERING, _S.ABANDONED}),
        _S.PRODUCING: frozenset({_S.DONE, _S.RETRY_WAIT, _S.DEAD_LETTERING, _S.ABANDONED}),
        _S.DEAD_LETTERING: frozenset({_S.DONE, _S.ABANDONED}),
        _S.DONE: frozenset(),
        _S.ABANDONED: frozenset(),
    }
)
"""Legal transitions: state -> the states it may move to."""

# TRANSITIONS keyed by the state's name: ``to`` runs several times per record, and
# an enum member hashes through the Python-level ``Enum.__hash__`` while its name (a
# str) has a cached hash; a tuple ``in`` test finds the member by identity.
_ALLOWED: dict[str, tuple[RecordState, ...]] = {
    state.name: tuple(allowed) for state, allowed in TRANSITIONS.items()
}
_PROCESSING = RecordState.PROCESSING


@attrs.define(slots=True)
class RecordTracker:
    """One record's state, ticket and attempt count. ``attempts`` counts handler
    invocations; ``history`` keeps the states it went through (for diagnostics)."""

    ticket: Ticket
    state: RecordState = RecordState.POLLED
    attempts: int = 0
    # list((POLLED,)) through a partial: a C call, no Python frame per tracker
    history: list[RecordState] = attrs.field(factory=functools.partial(list, (RecordState.POLLED,)))

    def to(self, new: RecordState) -> None:
        """Move to ``new`` or raise :class:`IllegalTransitionError`."""
        if new not in _ALLOWED[self.state._name_]:
            raise IllegalTransitionError(
                f"{self.ticket.tp} offset {self.ticket.offset}: illegal transition "
                f"{self.state.name} -> {new.name} (allowed: "
                f"{', '.join(sorted(s.name for s in TRANSITIONS[self.state])) or 'none, terminal'})"
            )
        if new is _PROCESSING:
            self.attempts += 1
        self.state = new
        self.history.append(new)

    @classmethod
    def resumed(cls, ticket: Ticket, path: Sequence[RecordState]) -> RecordTracker:
        """A tracker for a record that already took ``path`` (the states after POLLED,
        each a legal transition from the one before) without a tracker: the runtime's
        fast path keeps none per record and creates one when a record first needs
        its own state (a failed attempt or delivery). Raises
        :class:`IllegalTransitionError` for an impossible path."""
        tracker = cls(ticket)
        for state in path:
            tracker.to(state)
        return tracker

    @property
    def finished(self) -> bool:
        return self.state is RecordState.DONE

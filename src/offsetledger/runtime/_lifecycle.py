"""The Processor's lifecycle: its states and the legal moves between them."""

from __future__ import annotations

import enum

from offsetledger.core import OffsetLedgerError

__all__ = ["LIFECYCLE", "ProcessorState", "ProcessorStateError"]


class ProcessorState(enum.Enum):
    """The Processor's lifecycle."""

    CREATED = "created"  #: constructed; not subscribed yet
    RUNNING = "running"  #: subscribed and processing
    REBALANCING = "rebalancing"  #: inside an assign/revoke/lost callback
    DRAINING = "draining"  #: stop() is finishing in-flight work
    CLOSED = "closed"  #: the consumer is closed; nothing more happens


_P = ProcessorState
LIFECYCLE: dict[ProcessorState, frozenset[ProcessorState]] = {
    _P.CREATED: frozenset({_P.RUNNING, _P.CLOSED}),
    _P.RUNNING: frozenset({_P.REBALANCING, _P.DRAINING, _P.CLOSED}),
    _P.REBALANCING: frozenset({_P.RUNNING, _P.DRAINING, _P.CLOSED}),
    _P.DRAINING: frozenset({_P.CLOSED}),
    _P.CLOSED: frozenset(),
}


class ProcessorStateError(OffsetLedgerError, RuntimeError):
    """The Processor was asked to do something its lifecycle state does not allow."""

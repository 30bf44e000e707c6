"""The simulator side of :class:`~offsetledger.core.ProcessingObserver`: records a
:class:`~offsetledger.history.Done` event in a World's history for every record a
Processor finishes."""

from __future__ import annotations

from offsetledger.core import Record
from offsetledger.history import Done
from offsetledger.simulator import World

__all__ = ["HistoryObserver", "observer"]


class HistoryObserver:
    """Records ``Done(member, topic, partition, offset, outputs, dead_lettered)``
    in ``world``'s history, at the world's virtual time."""

    __slots__ = ("_member", "_world")

    def __init__(self, world: World, member: str) -> None:
        self._world = world
        self._member = member

    def record_done(self, record: Record, outputs: int, dead_lettered: bool) -> None:
        # the world's recorder takes rare events (stamped when the
        # history is read); the observer is part of the simulation, not a client.
        self._world.recorder.record(
            Done(
                time=self._world.clock.now(),
                member=self._member,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                outputs=outputs,
                dead_lettered=dead_lettered,
            )
        )


def observer(world: World, member: str) -> HistoryObserver:
    """A :class:`~offsetledger.core.ProcessingObserver` for the Processor of
    process ``member`` in ``world``: pass it as ``Processor(..., observer=...)`` so
    the history says which records finished with no outputs (filters)."""
    return HistoryObserver(world, member)

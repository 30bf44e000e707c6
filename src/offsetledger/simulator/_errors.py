"""Errors specific to the simulator."""

from __future__ import annotations

__all__ = ["ProcessCrashed"]


class ProcessCrashed(BaseException):
    """The simulated process of ``member`` was killed (``kill -9``).

    Raised by every call on a client (consumer, producer, executor) of a crashed
    member, including the call during which a seeded ``crash`` fault fired. It
    derives from BaseException, like SystemExit, so application code that catches
    ``Exception`` does not swallow its own death: the driver of the simulation
    catches it and may start a new process (new clients with the same member name).
    """

    def __init__(self, member: str) -> None:
        super().__init__(f"process {member!r} was killed (simulated kill -9); its clients are gone")
        self.member = member

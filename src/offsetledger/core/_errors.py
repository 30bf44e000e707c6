"""Error types of offsetledger. Every error names the problem and, where it can, what to do."""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CommitFailedError",
    "ConfigError",
    "IllegalTransitionError",
    "InvalidOffsetError",
    "OffsetLedgerError",
    "OffsetOrderError",
    "PartitionNotAssignedError",
    "TransactionError",
    "UnknownOffsetError",
]


class OffsetLedgerError(Exception):
    """Base class of every error offsetledger raises on purpose."""


class ConfigError(OffsetLedgerError, ValueError):
    """A configuration value is missing, unknown or unsafe.

    The message names the key and says why it is rejected.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"configuration {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InvalidOffsetError(OffsetLedgerError, ValueError):
    """An offset or position is negative or otherwise impossible."""


class PartitionNotAssignedError(OffsetLedgerError, KeyError):
    """An operation named a partition that is not currently assigned."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "partition not assigned"


class OffsetOrderError(OffsetLedgerError, ValueError):
    """An offset went backwards (or repeated) within one assignment epoch."""


class UnknownOffsetError(OffsetLedgerError, KeyError):
    """A ticket was completed for an offset that was never tracked in its epoch."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "offset never tracked"


class IllegalTransitionError(OffsetLedgerError, RuntimeError):
    """A record was moved between two states that the state machine does not connect."""


class BrokerError(OffsetLedgerError):
    """An error reported by Kafka (or the simulator) for an operation.

    ``name`` is Kafka's error name (e.g. ``UNKNOWN_TOPIC_OR_PART``), ``retriable``
    says whether repeating the same operation may succeed.
    """

    def __init__(self, name: str, message: str = "", *, retriable: bool = False) -> None:
        text = f"{name}: {message}" if message else name
        super().__init__(text)
        self.name = name
        self.message = message
        self.retriable = retriable


class CommitFailedError(BrokerError):
    """A synchronous commit failed for at least one partition."""


class TransactionError(BrokerError):
    """A transactional producer's operation failed.

    Exactly one of three kinds, in the order a caller must test them:

    * ``fatal``: the producer can do nothing more (fenced by a newer instance with
      the same ``transactional.id``, or an unrecoverable client state). The process
      must close it and restart; work in the open transaction is never committed.
    * ``abortable``: the open transaction must be aborted; the producer can then
      begin a new one.
    * ``retriable``: the same call may be repeated (e.g. a commit that timed out).
    """

    def __init__(
        self,
        name: str,
        message: str = "",
        *,
        retriable: bool = False,
        abortable: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(name, message, retriable=retriable)
        if sum((retriable, abortable, fatal)) > 1:
            raise ValueError("a TransactionError is at most one of retriable, abortable, fatal")
        self.abortable = abortable
        self.fatal = fatal

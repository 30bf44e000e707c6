"""offsetledger: at-least-once Kafka processing for Python.

Store an offset only after its record's work, and its outputs' delivery reports,
succeeded; commit only finished work; prove that no record is ever lost.
"""

from offsetledger.core import (
    BrokerError,
    CommitResult,
    CommittedPosition,
    Completion,
    ConfigError,
    DeliveryReport,
    OffsetLedger,
    OffsetLedgerError,
    Outbound,
    Record,
    RecordState,
    StoredPosition,
    TopicPartition,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CommitResult",
    "CommittedPosition",
    "Completion",
    "ConfigError",
    "DeliveryReport",
    "OffsetLedger",
    "OffsetLedgerError",
    "Outbound",
    "Record",
    "RecordState",
    "StoredPosition",
    "TopicPartition",
    "__version__",
]

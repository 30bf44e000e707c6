"""The pure domain of offsetledger: value types, ports, the OffsetLedger, the record
state machine and the commit-metadata codec. Imports only the stdlib and attrs."""

from offsetledger.core._errors import (
    BrokerError,
    CommitFailedError,
    ConfigError,
    IllegalTransitionError,
    InvalidOffsetError,
    OffsetLedgerError,
    OffsetOrderError,
    PartitionNotAssignedError,
    UnknownOffsetError,
)
from offsetledger.core._ledger import Completion, OffsetLedger, Ticket
from offsetledger.core._metadata import (
    DEFAULT_METADATA_BUDGET,
    decode_finished,
    encode_finished,
)
from offsetledger.core._ports import (
    AssignmentCallback,
    Clock,
    ConsumerPort,
    DeliveryCallback,
    Executor,
    ProcessingObserver,
    ProducerPort,
)
from offsetledger.core._state import TRANSITIONS, RecordState, RecordTracker
from offsetledger.core._types import (
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    DeliveryReport,
    Header,
    Outbound,
    Record,
    StoredPosition,
    TopicPartition,
)

__all__ = [
    "DEFAULT_METADATA_BUDGET",
    "TRANSITIONS",
    "AssignmentCallback",
    "BrokerError",
    "BrokerErrorInfo",
    "Clock",
    "CommitFailedError",
    "CommitResult",
    "CommittedPosition",
    "Completion",
    "ConfigError",
    "ConsumerPort",
    "DeliveryCallback",
    "DeliveryReport",
    "Executor",
    "Header",
    "IllegalTransitionError",
    "InvalidOffsetError",
    "OffsetLedger",
    "OffsetLedgerError",
    "OffsetOrderError",
    "Outbound",
    "PartitionNotAssignedError",
    "ProcessingObserver",
    "ProducerPort",
    "Record",
    "RecordState",
    "RecordTracker",
    "StoredPosition",
    "Ticket",
    "TopicPartition",
    "UnknownOffsetError",
    "decode_finished",
    "encode_finished",
]

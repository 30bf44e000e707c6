"""A deterministic in-process Kafka: logs, a group coordinator and clients on a virtual clock.

Start with :class:`World`; see its docstring and the clients' for where the
simulator departs from Kafka.
"""

from offsetledger.simulator._clock import SimClock
from offsetledger.simulator._config import ConsumerConfig, ProducerConfig
from offsetledger.simulator._consumer import SimConsumer
from offsetledger.simulator._context import SimContext
from offsetledger.simulator._errors import ProcessCrashed
from offsetledger.simulator._executor import SimExecutor
from offsetledger.simulator._faults import FAULT_KINDS, FaultRecord, Faults
from offsetledger.simulator._log import LogEntry
from offsetledger.simulator._producer import SimProducer, partition_for_key
from offsetledger.simulator._transactions import GroupMetadata
from offsetledger.simulator._txnproducer import SimTransactionalProducer
from offsetledger.simulator._world import World

__all__ = [
    "FAULT_KINDS",
    "ConsumerConfig",
    "FaultRecord",
    "Faults",
    "GroupMetadata",
    "LogEntry",
    "ProcessCrashed",
    "ProducerConfig",
    "SimClock",
    "SimConsumer",
    "SimContext",
    "SimExecutor",
    "SimProducer",
    "SimTransactionalProducer",
    "World",
    "partition_for_key",
]

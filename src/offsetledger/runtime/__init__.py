"""The runtime: the :class:`Processor` that drives the ports, the ledger and the
record state machine, plus real-world Clock and Executor implementations."""

from offsetledger.runtime._aio import run_async
from offsetledger.runtime._clock import InlineExecutor, SystemClock, ThreadPoolExecutorAdapter
from offsetledger.runtime._config import (
    CommitMode,
    OrderingMode,
    ProcessorConfig,
    RetryPolicy,
    check_consumer_config,
)
from offsetledger.runtime._contract import BatchResult, batch_handler
from offsetledger.runtime._metrics import (
    COUNTERS,
    GAUGES,
    InMemoryMetrics,
    MetricsHook,
    NullMetrics,
)
from offsetledger.runtime._processor import (
    ATTEMPTS_HEADER,
    DELIVERY_ATTEMPTS_HEADER,
    Handler,
    ProcessingTimeoutError,
    Processor,
    ProcessorMustRestartError,
    ProcessorState,
    ProcessorStateError,
)
from offsetledger.runtime._runners.aio import AsyncLoop

__all__ = [
    "ATTEMPTS_HEADER",
    "COUNTERS",
    "DELIVERY_ATTEMPTS_HEADER",
    "GAUGES",
    "AsyncLoop",
    "BatchResult",
    "CommitMode",
    "Handler",
    "InMemoryMetrics",
    "InlineExecutor",
    "MetricsHook",
    "NullMetrics",
    "OrderingMode",
    "ProcessingTimeoutError",
    "Processor",
    "ProcessorConfig",
    "ProcessorMustRestartError",
    "ProcessorState",
    "ProcessorStateError",
    "RetryPolicy",
    "SystemClock",
    "ThreadPoolExecutorAdapter",
    "batch_handler",
    "check_consumer_config",
    "run_async",
]

"""Metrics hooks of the Processor: a small protocol, a no-op and an in-memory
implementation (for tests and for polling from an exporter)."""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol, runtime_checkable

from offsetledger.core import TopicPartition

__all__ = ["COUNTERS", "GAUGES", "InMemoryMetrics", "MetricsHook", "NullMetrics"]

#: Counter names the Processor increments.
COUNTERS = (
    "records_in",  # records polled
    "records_out",  # outputs whose delivery succeeded
    "records_done",  # records finished (outputs acknowledged, or dead-lettered, or none)
    "commits",  # partitions committed successfully
    "commit_failures",  # partition commits that failed (after retries)
    "retries",  # handler re-tries and output re-produces
    "dead_letters",  # records written to the dead-letter topic (acknowledged)
    "skipped_duplicates",  # records skipped because commit metadata said they were finished
    "stalls",  # a record could not finish nor be dead-lettered: its partition stalls
    "timeouts",  # handler attempts that exceeded processing_timeout
    "abandoned",  # records given up on revoke/lost/shutdown (they will be redelivered)
    "rebalances",  # assign, revoke and lost callbacks
    "pauses",  # partitions paused by backpressure
    "stale_completions",  # completions or reports that arrived after their partition went away
    "chunks",  # per partition: chunks taken from polls (one poll's records of one partition)
    "runs",  # handler runs collected (one task: a slice of a chunk, or the heads of slots)
    "metadata_dropped",  # per partition: finished offsets left out of the commit metadata
)
#: Gauge names the Processor sets.
GAUGES = (
    "in_flight",  # records in handler runs (total; what max_in_flight_total bounds)
    "awaiting_delivery",  # records whose outputs wait for delivery reports (total)
    "buffered",  # polled and not finished (total)
    "watermark_lag",  # per partition: highest polled offset + 1 - watermark
    "buffered_bytes",  # key + value bytes of polled, unfinished records (total)
    "oldest_in_flight_age",  # seconds since the oldest unfinished chunk was polled
    "chunk_size",  # per partition: records in the last chunk polled
    "batch_size",  # records in the last batch-handler call
    "commit_seconds",  # duration of the last synchronous commit (retries included)
    "metadata_bytes",  # per partition: bytes of the commit metadata last encoded
)


@runtime_checkable
class MetricsHook(Protocol):
    """Receives the Processor's counters and gauges, on the Processor's thread.

    ``tp`` names the partition when the value is about one. Implementations must be
    cheap: they are called on the hot path."""

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None: ...

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None: ...


class NullMetrics:
    """Discards everything."""

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        pass

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        pass


class InMemoryMetrics:
    """Keeps counters (totals and per partition) and the last value of each gauge."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = defaultdict(int)
        self.partition_counters: dict[tuple[str, TopicPartition], int] = defaultdict(int)
        self.gauges: dict[tuple[str, TopicPartition | None], float] = {}

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        self.counters[name] += value
        if tp is not None:
            self.partition_counters[(name, tp)] += value

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        self.gauges[(name, tp)] = value

    def count(self, name: str, tp: TopicPartition | None = None) -> int:
        """The counter's total, or its part for ``tp``."""
        if tp is None:
            return self.counters.get(name, 0)
        return self.partition_counters.get((name, tp), 0)

    def value(self, name: str, tp: TopicPartition | None = None) -> float | None:
        """The gauge's last value (None if never set)."""
        return self.gauges.get((name, tp))

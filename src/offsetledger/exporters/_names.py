"""What the exporters share: a description per metric and the labels of a partition."""

from __future__ import annotations

import logging
import re

from offsetledger.core import TopicPartition

__all__ = ["DESCRIPTIONS", "KindConflicts", "describe", "labels_of", "metric_name"]

log = logging.getLogger("offsetledger.exporters")

#: One line per metric (the docs' Metrics page says more).
DESCRIPTIONS: dict[str, str] = {
    "records_in": "Records polled.",
    "records_out": "Outputs whose delivery report succeeded.",
    "records_done": "Records finished (handled and delivered, or dead-lettered).",
    "commits": "Partitions committed successfully.",
    "commit_failures": "Partition commits that failed after their retries.",
    "retries": "Handler attempts retried and outputs produced again.",
    "dead_letters": "Records written to the dead-letter topic (acknowledged).",
    "skipped_duplicates": "Records skipped: commit metadata said they were finished.",
    "stalls": "Records that could neither finish nor be dead-lettered (partition stalls).",
    "timeouts": "Handler attempts longer than processing_timeout.",
    "abandoned": "Records given up on revoke, lost or shutdown (redelivered).",
    "rebalances": "Assign, revoke and lost callbacks.",
    "pauses": "Partitions paused by backpressure.",
    "stale_completions": "Completions or reports after their partition went away.",
    "in_flight": "Handler attempts running now.",
    "awaiting_delivery": "Records whose outputs wait for delivery reports.",
    "buffered": "Records polled and not finished.",
    "watermark_lag": "Highest polled offset + 1 - stored position, per partition.",
    # names the rebuilt runtime adds (kept here so they get a real HELP line)
    "chunks": "Chunks taken from polls (one poll's records of one partition).",
    "runs": "Handler runs collected.",
    "metadata_dropped": "Finished offsets left out of the commit metadata.",
    "buffered_bytes": "Key and value bytes of polled, unfinished records.",
    "oldest_in_flight_age": "Seconds since the oldest unfinished record was polled.",
    "chunk_size": "Records in the last chunk polled.",
    "batch_size": "Records in the last batch-handler call.",
    "commit_seconds": "Duration of the last synchronous commit (retries included).",
    "metadata_bytes": "Bytes of the commit metadata last encoded.",
    "health_ok": "1 when the health monitor finds nothing wrong, else 0.",
    "health_stuck_partitions": "Partitions the health monitor finds stuck.",
}

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def describe(name: str) -> str:
    """The metric's description (a generic one for a name this version does not know)."""
    return DESCRIPTIONS.get(name, f"offsetledger metric {name!r}.")


def metric_name(name: str) -> str:
    """``name`` as a Prometheus/OpenTelemetry-safe identifier (``[a-zA-Z0-9_]``)."""
    cleaned = _INVALID.sub("_", name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"_{cleaned}"


def labels_of(tp: TopicPartition | None) -> dict[str, str]:
    """The ``topic`` and ``partition`` labels of ``tp`` (empty strings for a total)."""
    if tp is None:
        return {"topic": "", "partition": ""}
    return {"topic": tp.topic, "partition": str(tp.partition)}


class KindConflicts:
    """Counts (and logs once per name) calls dropped because the name is already
    a metric of the other kind."""

    def __init__(self, exporter: str) -> None:
        self._exporter = exporter
        self.dropped: dict[str, int] = {}

    def drop(self, name: str, kind: str) -> None:
        if name not in self.dropped:
            log.warning(
                "%s: %r is already a metric of another kind; %s calls for it are dropped",
                self._exporter,
                name,
                kind,
            )
        self.dropped[name] = self.dropped.get(name, 0) + 1

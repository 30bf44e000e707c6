"""Backpressure: pause partitions whose buffer is full, resume them once below."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from offsetledger.core import ConsumerPort, OffsetLedger, TopicPartition
from offsetledger.runtime._config import ProcessorConfig
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._work import Part

__all__ = ["Backpressure"]

log = logging.getLogger("offsetledger.processor")


#: A paused partition resumes once its buffer (and the total) drained to this
#: fraction of the limit: pausing drops what the client fetched ahead for it, so
#: pausing and resuming at one threshold would refetch over and over.
RESUME_AT = 0.5


class Backpressure:
    """Owns which partitions it paused (``paused``). Limits: polled, unfinished
    records per partition and in total (the ledger counts them) and their bytes
    (``max_buffered_bytes``, counted by the intake). Pauses at a limit, resumes at
    :data:`RESUME_AT` of it."""

    def __init__(
        self,
        consumer: ConsumerPort,
        ledger: OffsetLedger,
        config: ProcessorConfig,
        metrics: MetricsHook,
    ) -> None:
        self._consumer = consumer
        self._ledger = ledger
        self._metrics = metrics
        self._per_partition = config.max_buffered_per_partition
        self._resume_partition = int(config.max_buffered_per_partition * RESUME_AT)
        self._resume_total = int(config.max_buffered_total * RESUME_AT)
        self._max_bytes = config.max_buffered_bytes
        self.paused = 0  #: partitions paused by backpressure

    def apply(self, parts: Iterable[Part], buffered_bytes: int) -> None:
        """Pause full partitions (all of them when a total limit is reached); resume
        paused ones below the limits."""
        ledger = self._ledger
        full_total = ledger.is_full_total or (
            self._max_bytes is not None and buffered_bytes >= self._max_bytes
        )
        if not full_total and not self.paused and ledger.unfinished() < self._per_partition:
            return  # fast path: no partition can be full, none is paused
        to_pause: list[TopicPartition] = []
        to_resume: list[TopicPartition] = []
        low_total = ledger.unfinished() <= self._resume_total and (
            self._max_bytes is None or buffered_bytes <= self._max_bytes * RESUME_AT
        )
        for part in parts:
            if part.revoking:
                continue
            full = full_total or ledger.is_full(part.tp)
            if full and not part.paused:
                part.paused = True
                self.paused += 1
                to_pause.append(part.tp)
            elif (
                part.paused
                and not full
                and low_total
                and ledger.unfinished(part.tp) <= self._resume_partition
            ):
                part.paused = False
                self.paused -= 1
                to_resume.append(part.tp)
        if to_pause:
            self._consumer.pause(to_pause)
            self._metrics.increment("pauses", len(to_pause))
            log.debug("paused %s (buffer full)", ", ".join(map(str, to_pause)))
        if to_resume:
            self._consumer.resume(to_resume)
            log.debug("resumed %s", ", ".join(map(str, to_resume)))

    def forget(self, part: Part) -> None:
        """``part`` is no longer assigned: it is not paused any more."""
        if part.paused:
            part.paused = False
            self.paused -= 1

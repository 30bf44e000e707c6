"""Intake: polled records into chunks (one per poll and partition, one ledger
range each) and ordering slots; hand-out of runs within the in-flight limits;
release of a slot's next record; the cut of unstarted chunks on revoke/shutdown.

Which records may run together is the ordering mode's rule:

* ``UNORDERED``: any; a chunk is handed out in up to ``runner.slices`` runs.
* ``KEY``: one record per key of a partition at a time (the next one waits until
  the previous is done, its delivery included); a run holds the ready head of
  every key (of every partition) at once, so many keys still make big runs.
* ``PARTITION``: as KEY with one key per partition.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable

from offsetledger.core import Clock, OffsetLedger, OffsetOrderError, Record
from offsetledger.runtime._config import OrderingMode, ProcessorConfig
from offsetledger.runtime._metrics import MetricsHook
from offsetledger.runtime._runners import Run
from offsetledger.runtime._work import Chunk, Part

__all__ = ["Intake"]

log = logging.getLogger("offsetledger.processor")

_Key = tuple[str, int]


class Intake:
    """Owns the chunks waiting to run and the in-flight counters (records in
    handler runs, per partition and in total; buffered bytes)."""

    def __init__(
        self,
        ledger: OffsetLedger,
        config: ProcessorConfig,
        clock: Clock,
        metrics: MetricsHook,
        parts: dict[_Key, Part],
        *,
        batch: bool,
    ) -> None:
        self._ledger = ledger
        self._config = config
        self._clock = clock
        self._metrics = metrics
        self._parts = parts
        self._batch = batch
        self._ordered = config.ordering is not OrderingMode.UNORDERED
        #: KEY / PARTITION: a record done releases the next of its slot
        self.ordered = self._ordered
        self._by_key = config.ordering is OrderingMode.KEY
        self._keep_epoch = config.keep_leader_epoch
        self._count_bytes = config.max_buffered_bytes is not None
        self._limit_total = config.max_in_flight_total
        self._limit_part = (
            1 if config.ordering is OrderingMode.PARTITION else config.max_in_flight_per_partition
        )
        self.ready = 0  #: records that could be handed out now (limits permitting)
        self.running = 0  #: records in handler runs (what max_in_flight_total bounds)
        self.buffered_bytes = 0  #: key + value bytes of unfinished chunks

    # -- polled records -> chunks -----------------------------------------------------

    def take(self, records: list[Record]) -> list[Part]:
        """Group one poll's records into a chunk per partition, track each as one
        ledger range and queue it. Returns the partitions whose watermark may have
        moved already (chunks restored from commit metadata entirely)."""
        self._metrics.increment("records_in", len(records))
        groups: dict[_Key, list[Record]] = {}
        last_topic: str | None = None
        last_partition = -1
        current: list[Record] = []
        for rec in records:
            partition, topic = rec.partition, rec.topic
            if partition != last_partition or topic != last_topic:
                key = (topic, partition)
                found = groups.get(key)
                if found is None:
                    found = groups[key] = []
                current = found
                last_topic, last_partition = topic, partition
            current.append(rec)
        moved: list[Part] = []
        now = self._clock.now()
        for key, recs in groups.items():
            part = self._parts.get(key)
            if part is None or part.revoking:
                log.warning(
                    "ignoring %d records of %s[%d] from %d: partition not assigned to this "
                    "processor",
                    len(recs),
                    key[0],
                    key[1],
                    recs[0].offset,
                )
                continue
            chunk = self._chunk(part, recs, now)
            if chunk is None:
                moved.append(part)
            else:
                self._queue(chunk)
        return moved

    def _chunk(self, part: Part, recs: list[Record], now: float) -> Chunk | None:
        offsets = [r.offset for r in recs]
        epoch = recs[-1].leader_epoch if self._keep_epoch else None
        ledger = self._ledger
        try:
            ticket = ledger.track_range(part.tp, offsets, epoch)
        except OffsetOrderError:
            if part.highest_polled is not None:
                raise  # the consumer went backwards within an assignment: a client bug
            # first records of the assignment below the committed position (the client
            # reset its position, e.g. the committed one was out of range): start the
            # ledger from what the client actually delivers
            log.warning(
                "%s: first record at offset %d is below the committed position %s; "
                "tracking from the delivered offset",
                part.tp,
                offsets[0],
                ledger.watermark(part.tp),
            )
            ledger.assign(part.tp, None)
            ticket = ledger.track_range(part.tp, offsets, epoch)
        if part.highest_polled is None:
            part.first_polled = offsets[0]
        part.highest_polled = offsets[-1]
        self._metrics.increment("chunks", tp=part.tp)
        self._metrics.gauge("chunk_size", len(recs), tp=part.tp)
        if ticket.restored:
            restored = ticket.restored
            self._metrics.increment("skipped_duplicates", len(restored))
            log.info("%s: skipped %d records already finished before", part.tp, len(restored))
            recs = [r for r in recs if r.offset not in restored]
            if not recs:
                return None  # the ledger counts the chunk finished already
        nbytes = 0
        if self._count_bytes:
            nbytes = sum(len(r.value or b"") + len(r.key or b"") for r in recs)
            self.buffered_bytes += nbytes
        chunk = Chunk(part, ticket, recs, nbytes, now)
        part.chunks.append(chunk)
        return chunk

    def _queue(self, chunk: Chunk) -> None:
        part = chunk.part
        if not self._ordered:
            part.ready.append(chunk)
            self.ready += len(chunk.records)
            return
        slots, heads = part.slots, part.heads
        by_key = self._by_key
        for rec in chunk.records:
            slot: Hashable = rec.key if by_key else 0
            queue = slots.get(slot)
            if queue is None:
                item = (chunk, rec)
                slots[slot] = deque((item,))
                heads.append(item)
                self.ready += 1
            else:
                queue.append((chunk, rec))

    # -- hand-out ---------------------------------------------------------------------

    def hand_out(self, slices: int) -> list[Run]:
        """Runs of ready records within the in-flight limits, round-robin over the
        partitions; each chunk (UNORDERED) or the set of ready heads (KEY,
        PARTITION) split into up to ``slices`` runs."""
        if not self.ready or self.running >= self._limit_total:
            return []
        if self._ordered:
            return self._hand_out_heads(slices)
        runs: list[Run] = []
        limit_part = self._limit_part
        batch = self._batch
        candidates = [p for p in self._parts.values() if p.ready]
        while candidates and self.running < self._limit_total:
            still = []
            for part in candidates:
                room = min(limit_part - part.running, self._limit_total - self.running)
                if room <= 0:
                    continue
                chunk = part.ready[0]
                start = chunk.handed
                n = min(len(chunk.records) - start, room)
                recs = (
                    chunk.records
                    if start == 0 and n == len(chunk.records)
                    else chunk.records[start : start + n]
                )
                chunk.handed += n
                if chunk.handed == len(chunk.records):
                    part.ready.popleft()
                part.running += n
                self.running += n
                self.ready -= n
                k = min(slices, n)
                if k == 1:
                    runs.append(Run(recs, batch=batch, chunk=chunk))
                else:
                    size, extra = divmod(n, k)
                    at = 0
                    for i in range(k):
                        end = at + size + (1 if i < extra else 0)
                        runs.append(Run(recs[at:end], batch=batch, chunk=chunk))
                        at = end
                if part.ready:
                    still.append(part)
            candidates = still
        return runs

    def _hand_out_heads(self, slices: int) -> list[Run]:
        records: list[Record] = []
        chunks: list[Chunk] = []
        limit_part = self._limit_part
        for part in self._parts.values():
            heads = part.heads
            while heads and part.running < limit_part and self.running < self._limit_total:
                chunk, rec = heads.popleft()
                chunk.handed += 1
                part.running += 1
                self.running += 1
                self.ready -= 1
                records.append(rec)
                chunks.append(chunk)
        n = len(records)
        if not n:
            return []
        k = min(slices, n)
        if k == 1:
            return [Run(records, batch=self._batch, chunks=chunks)]
        size, extra = divmod(n, k)
        runs, at = [], 0
        for i in range(k):
            end = at + size + (1 if i < extra else 0)
            runs.append(Run(records[at:end], batch=self._batch, chunks=chunks[at:end]))
            at = end
        return runs

    def returned(self, part: Part, n: int) -> None:
        """``n`` records of ``part`` left their handler run (results in, or given up)."""
        part.running -= n
        self.running -= n

    def started(self, part: Part, n: int) -> None:
        """``n`` records of ``part`` entered a handler run outside :meth:`hand_out`
        (a slow-path retry)."""
        part.running += n
        self.running += n

    def release(self, chunk: Chunk, record: Record) -> None:
        """KEY / PARTITION: ``record`` is done (or dead-lettered); the next record of
        its slot becomes ready."""
        if not self._ordered:
            return
        part = chunk.part
        slot: Hashable = record.key if self._by_key else 0
        queue = part.slots.get(slot)
        if not queue or queue[0][1] is not record:
            return
        queue.popleft()
        if queue:
            part.heads.append(queue[0])
            self.ready += 1
        else:
            del part.slots[slot]

    def finished(self, chunk: Chunk) -> None:
        """``chunk`` completed or was abandoned: its bytes are no longer buffered."""
        self.buffered_bytes -= chunk.nbytes
        chunk.nbytes = 0

    # -- revoke / shutdown ------------------------------------------------------------

    def cut(self, part: Part) -> list[Chunk]:
        """Take the chunks of ``part`` that have not started (nothing handed to a
        handler), and every chunk after the first of them, out of the queues: they
        are to be abandoned. The chunks left have started and may finish (a drain
        waits for them; their remaining records are still handed out). Under KEY
        ordering a cut chunk may have started too: ``Rebalancer.cut`` reports its
        records in flight."""
        chunks = part.chunks
        cut_at = next((i for i, c in enumerate(chunks) if c.handed == 0), len(chunks))
        cut = [chunks[i] for i in range(cut_at, len(chunks))]
        if not cut:
            return []
        dead = set(map(id, cut))
        for _ in cut:
            chunks.pop()
        if not self._ordered:
            kept = deque(c for c in part.ready if id(c) not in dead)
            self.ready -= sum(len(c.records) - c.handed for c in part.ready if id(c) in dead)
            part.ready = kept
        else:
            before = len(part.heads)
            part.heads = deque(item for item in part.heads if id(item[0]) not in dead)
            self.ready -= before - len(part.heads)
            # dead chunks are a suffix in offset order, so in every slot's queue too
            for slot in list(part.slots):
                queue = deque(item for item in part.slots[slot] if id(item[0]) not in dead)
                if queue:
                    part.slots[slot] = queue
                else:
                    del part.slots[slot]
        return cut

    def drop(self, part: Part) -> None:
        """``part`` is forgotten (revoked, lost, re-assigned, shut down): its ready
        records are no longer counted."""
        if self._ordered:
            self.ready -= len(part.heads)
            part.heads.clear()
            part.slots.clear()
        else:
            self.ready -= sum(len(c.records) - c.handed for c in part.ready)
            part.ready.clear()
        for chunk in part.chunks:
            self.finished(chunk)

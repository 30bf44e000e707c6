"""The runtime's bookkeeping records: a partition's view (:class:`Part`), a chunk
(:class:`Chunk`: the records of one poll from one partition, one ledger range), a
record on the slow path (:class:`Slow`) and a produce round (:class:`Send`).

Plain mutable classes with ``__slots__``: they are created per poll (chunks, sends)
on the hot path, so no attrs machinery and no validation here."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from offsetledger.core import (
    BrokerErrorInfo,
    Header,
    Outbound,
    RangeTicket,
    Record,
    RecordTracker,
    StoredPosition,
    Ticket,
    TopicPartition,
)
from offsetledger.history import SOURCE_PARTITION, SOURCE_TOPIC

if TYPE_CHECKING:
    from offsetledger.runtime._runners import Run

__all__ = ["Chunk", "Next", "Part", "Send", "Slow"]

#: what a slow-path record does when its retry timer fires
Next = str  # "handler" | "produce"


class Part:
    """The Processor's view of one assigned partition (the ledger keeps the offsets)."""

    __slots__ = (
        "chunks",
        "first_polled",
        "heads",
        "highest_polled",
        "last_committed",
        "last_stored",
        "lineage",
        "paused",
        "ready",
        "revoking",
        "running",
        "slots",
        "slow",
        "stored",
        "tp",
    )

    def __init__(
        self, tp: TopicPartition, last_committed: tuple[int, str | None] | None = None
    ) -> None:
        self.tp = tp
        #: unfinished, not abandoned chunks, oldest first
        self.chunks: deque[Chunk] = deque()
        #: UNORDERED: chunks with records not handed out yet, oldest first;
        #: KEY / PARTITION: unused (see ``slots``)
        self.ready: deque[Chunk] = deque()
        #: KEY / PARTITION: the slot heads ready to hand out (not yet handed)
        self.heads: deque[tuple[Chunk, Record]] = deque()
        #: KEY / PARTITION: per ordering slot, its records waiting (head: in flight
        #: or next to hand out)
        self.slots: dict[Hashable, deque[tuple[Chunk, Record]]] = {}
        #: slow-path records of this partition, by offset
        self.slow: dict[int, Slow] = {}
        self.running = 0  # records in handler runs (bounded by max_in_flight_per_partition)
        self.revoking = False
        self.paused = False
        self.highest_polled: int | None = None
        #: the first offset polled in this assignment epoch (where a rewind seeks when
        #: nothing was committed)
        self.first_polled: int | None = None
        # (position, metadata) last stored / committed: only changes are sent again
        self.last_stored: tuple[int, str | None] | None = None
        self.last_committed = last_committed
        self.stored: StoredPosition | None = None
        #: the lineage headers naming this partition (the offset's is added per record)
        self.lineage: tuple[Header, ...] = (
            (SOURCE_TOPIC, tp.topic.encode()),
            (SOURCE_PARTITION, str(tp.partition).encode()),
        )

    def __repr__(self) -> str:
        return f"<Part {self.tp} chunks={len(self.chunks)} slow={len(self.slow)}>"


class Chunk:
    """The records of one poll from one partition, tracked by the ledger as one
    range. It completes (its ticket is completed, the watermark may move) when
    ``left`` reaches 0: every record done (outputs acknowledged, or dead-lettered)."""

    __slots__ = (
        "dead",
        "done",
        "finished",
        "handed",
        "left",
        "nbytes",
        "part",
        "polled_at",
        "records",
        "slow",
        "split",
        "ticket",
        "tickets",
    )

    def __init__(
        self, part: Part, ticket: RangeTicket, records: list[Record], nbytes: int, polled_at: float
    ) -> None:
        self.part = part
        self.ticket = ticket
        self.records = records  # those to process (restored ones left out)
        self.left = len(records)  # records not done yet
        self.handed = 0  # records handed to a handler run (UNORDERED: the cursor)
        self.done = 0  # records done
        #: the records done, as the lists they were done in (O(1) per produce round)
        self.finished: list[list[Record]] = []
        self.nbytes = nbytes
        self.polled_at = polled_at
        #: abandoned (revoke, lost, shutdown): late results and reports are ignored
        self.dead = False
        self.slow = 0  # records on the slow path, not done
        #: the range was split (see RecordFlow._maybe_split): each record not done
        #: then completes its own ledger ticket, from ``tickets`` (offset -> ticket)
        self.split = False
        self.tickets: dict[int, Ticket] = {}

    @property
    def in_flight(self) -> int:
        """Records handed to a handler and not done."""
        return self.handed - self.done

    def __repr__(self) -> str:
        t = self.ticket
        return f"<Chunk {t.tp} {t.first}..{t.last} left={self.left}{' dead' if self.dead else ''}>"


class Slow:
    """A record that failed (handler raised or timed out, or a delivery failed) and
    now goes through the state machine on its own: retries, dead letter, stall."""

    __slots__ = (
        "chunk",
        "delivery_attempts",
        "dlq_attempts",
        "dlq_message",
        "error",
        "isolate",
        "next",
        "outputs",
        "record",
        "retry_messages",
        "run",
        "stalled",
        "token",
        "tracker",
    )

    def __init__(self, chunk: Chunk, record: Record, tracker: RecordTracker) -> None:
        self.chunk = chunk
        self.record = record
        self.tracker = tracker
        self.token = 0  # bumped for every new async step; older callbacks are ignored
        self.next: Next = "handler"
        self.error = ""
        self.retry_messages: list[Outbound] = []
        self.delivery_attempts = 0
        self.dlq_attempts = 0
        self.dlq_message: Outbound | None = None
        self.stalled = False
        self.isolate = False  # a non-retriable delivery error: re-produce alone
        self.outputs = 0  # how many the handler returned (reported at DONE)
        self.run: Run | None = None  # its handler run, while one is in flight

    def __repr__(self) -> str:
        return f"<Slow {self.chunk.part.tp}@{self.record.offset} {self.tracker.state.name}>"


class Send:
    """One produce round: the outputs of a handler run's records (fast path), or of
    one slow-path record (a retry, or its dead-letter write). Settles when every
    message has its delivery report."""

    __slots__ = (
        "chunk",
        "chunks",
        "counts",
        "failed",
        "left",
        "messages",
        "records",
        "sink",
        "slow",
        "token",
    )

    def __init__(
        self,
        messages: list[Outbound],
        records: list[Record],
        counts: list[int],
        sink: Callable[[Send], None],
        *,
        chunk: Chunk | None = None,
        chunks: list[Chunk] | None = None,
        slow: Slow | None = None,
        token: int = 0,
    ) -> None:
        self.messages = messages
        self.records = records  # the records whose outputs these are
        self.counts = counts  # outputs per record, in message order
        self.chunk = chunk
        self.chunks = chunks
        self.slow = slow
        self.token = token
        self.left = len(messages)
        self.failed: list[tuple[int, BrokerErrorInfo]] = []
        self.sink = sink

    def report(self, index: int, error: BrokerErrorInfo | None) -> None:
        """``on_report`` of :func:`~offsetledger.core.produce_many`."""
        if error is not None:
            self.failed.append((index, error))
        self.left -= 1
        if self.left == 0:
            self.sink(self)

    def owner(self, index: int) -> int:
        """The record (index into ``records``) message ``index`` belongs to."""
        total = 0
        for i, count in enumerate(self.counts):
            total += count
            if index < total:
                return i
        raise IndexError(index)

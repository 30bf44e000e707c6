"""SimProducer: a buffered producer whose delivery reports arrive after a seeded virtual delay."""

from __future__ import annotations

import heapq
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from types import MappingProxyType

from offsetledger.core import BrokerErrorInfo, DeliveryCallback, DeliveryReport, Outbound
from offsetledger.simulator._config import ProducerConfig, parse_producer_config
from offsetledger.simulator._context import SimContext
from offsetledger.simulator._errors import ProcessCrashed
from offsetledger.simulator._fast import APPEND, DELIVERY, make_report

__all__ = ["SimProducer", "partition_for_key"]

_MIN_LATENCY_US = 200
_MAX_LATENCY_US = 3000

_UNKNOWN_TOPIC = "UNKNOWN_TOPIC_OR_PART"
_UNKNOWN_PARTITION = "_UNKNOWN_PARTITION"


def partition_for_key(key: bytes, partitions: int) -> int:
    """The partition of a keyed message: CRC32 of the key modulo the partition
    count (librdkafka's ``consistent_random`` partitioner for keyed messages)."""
    return zlib.crc32(key) % partitions


class _InFlight:
    __slots__ = (
        "attempts",
        "callback",
        "message",
        "partition",
        "produced_us",
        "ready_us",
        "written",
    )

    def __init__(
        self,
        message: Outbound,
        callback: DeliveryCallback,
        partition: int | None,
        produced_us: int,
        ready_us: int,
    ) -> None:
        self.message = message
        self.callback = callback
        self.partition = partition
        self.produced_us = produced_us
        self.ready_us = ready_us
        self.attempts = 0
        #: the offset of an earlier attempt the broker wrote (its ack was lost)
        self.written: int | None = None


def _ready_us(item: _InFlight) -> int:
    return item.ready_us


class SimProducer:
    """A producer in a :class:`World`; implements :class:`offsetledger.core.ProducerPort`.

    * :meth:`produce` only buffers. Messages produced before the current batch is
      sent (``linger.ms`` after its first message) share the batch; a batch reaches
      the broker after a seeded latency of 0.2-3 ms, when its messages are written
      to the log (recorded as ``Append(by=name)``) in produce order, and their
      reports become ready. Reports are served (callbacks run, ``Delivery`` is
      recorded) only from :meth:`poll` and :meth:`flush`, on the caller's thread.
    * Partitioner: an explicit ``Outbound.partition`` is used as is; a keyed message
      goes to ``crc32(key) % partitions`` (same key, same partition); a keyless one
      to a seeded random partition.
    * Errors: an unknown topic fails with ``UNKNOWN_TOPIC_OR_PART``, a partition
      out of range with ``_UNKNOWN_PARTITION``; the ``delivery_*`` and ``ack_lost``
      faults fail messages as described in :data:`FAULT_KINDS`.
    * Internal retries (librdkafka's ``message.send.max.retries``): with
      ``enable.idempotence=true`` (or ``retries`` given) a retriable failure
      (``delivery_retriable``, ``ack_lost``) is resent by the client itself after
      ``retry.backoff.ms``, until ``message.timeout.ms`` runs out; the application
      only sees the final report. With idempotence the partition's later messages
      wait for the resent one (order kept), and a resend after a lost ack is *not*
      a duplicate: the broker recognises it and acknowledges the first write. Without
      idempotence a resend after a lost ack writes the record again (a duplicate)
      and later messages may overtake it.
      Departures: librdkafka's default is 2147483647 retries; here the default
      (neither key given) is none, so the fault menu's retriable failures reach the
      application. A lost ack is noticed after ``retry.backoff.ms`` (the real client
      waits for ``request.timeout.ms``). ``delivery_timeout`` and
      ``delivery_fatal`` stay final.
    * ``acks=0``: every report is ok with offset None, even when a fault dropped
      the message (that is what acks=0 means).
    * A crash of the producer's member loses what is buffered: each message not yet
      written may or may not reach the log (seeded); no report is served.
    """

    #: a transactional subclass takes the general transmit path (every write goes
    #: through :meth:`_write`, every message past :meth:`_refusal`)
    _transactional = False

    def __init__(
        self, world: SimContext, config: Mapping[str, object] | None, name: str, member: str
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"producer name must be a non-empty string, got {name!r}")
        #: the validated configuration
        self.settings: ProducerConfig = parse_producer_config(config)
        self._effective = MappingProxyType(self.settings.librdkafka())
        self._world = world
        self.name = name
        self.member = member
        self._queue: deque[_InFlight] = deque()  # not yet written, ready_us nondecreasing
        self._batch_send_us = -1
        self._batch_ready_us = -1
        self._ready: deque[tuple[DeliveryReport, DeliveryCallback]] = deque()
        self._late = 0  # reports waiting for message.timeout.ms (timeouts, lost acks)
        self._crashed = False
        self._timer_armed = False
        #: idempotent retries: (topic, partition) -> the message being resent, and
        #: the partition's later messages waiting behind it, in order
        self._held: dict[tuple[str, int], _InFlight] = {}
        self._blocked: dict[tuple[str, int], list[_InFlight]] = {}
        self._deferred: list[_InFlight] = []

    @property
    def config(self) -> Mapping[str, object]:
        """The effective configuration: librdkafka keys, defaults filled in."""
        return self._effective

    @property
    def crashed(self) -> bool:
        return self._crashed

    def __len__(self) -> int:
        """Messages whose report has not been served yet (as ``len(Producer)``)."""
        blocked = sum(len(items) for items in self._blocked.values()) if self._blocked else 0
        return len(self._queue) + len(self._ready) + self._late + blocked

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        """Buffer ``message``; ``on_delivery`` runs once, from poll or flush."""
        world = self._world
        if self._crashed or world.faults.armed("crash"):
            self._check()
        now = world.clock.now_us
        logs = world.cluster.topics.get(message.topic)
        partition = message.partition
        if partition is None and logs:
            partitions = len(logs)
            key = message.key
            partition = (
                zlib.crc32(key) % partitions if key is not None else world.rng.randrange(partitions)
            )
        if now >= self._batch_send_us:
            self._batch_send_us = now + round(self.settings.linger_ms * 1000)
            latency = world.rng.randint(_MIN_LATENCY_US, _MAX_LATENCY_US)
            self._batch_ready_us = max(self._batch_send_us + latency, self._batch_ready_us)
        self._queue.append(_InFlight(message, on_delivery, partition, now, self._batch_ready_us))
        if not self._timer_armed:
            self._timer_armed = True
            world.clock.call_at(self._batch_ready_us, self._transmit)

    def poll(self, timeout: float) -> int:
        """Serve ready delivery reports; when none are ready, wait up to ``timeout``
        virtual seconds for the first. Returns how many callbacks ran."""
        self._check()
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        served = self._serve()
        if served or timeout == 0 or not len(self):
            return served
        clock = self._world.clock
        deadline = clock.now_us + round(timeout * 1_000_000)
        while not self._ready:
            due = clock.next_due_us()
            if due is None or due > deadline:
                clock.advance_to_us(deadline)
                break
            clock.advance_to_us(due)
            if self._crashed:
                raise ProcessCrashed(self.member)
        return self._serve()

    def flush(self, timeout: float) -> int:
        """Serve reports until none is outstanding or ``timeout`` virtual seconds
        passed; returns how many are still outstanding."""
        self._check()
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout}")
        clock = self._world.clock
        deadline = clock.now_us + round(timeout * 1_000_000)
        self._serve()
        while len(self):
            due = clock.next_due_us()
            if due is None or due > deadline:
                clock.advance_to_us(deadline)
                self._serve()
                break
            clock.advance_to_us(due)
            if self._crashed:
                raise ProcessCrashed(self.member)
            self._serve()
        return len(self)

    # -- internals -------------------------------------------------------------------

    def _check(self) -> None:
        if self._crashed:
            raise ProcessCrashed(self.member)
        faults = self._world.faults
        if faults.armed("crash") and faults.fires("crash", self.member):
            self._world.crash(self.member)
            raise ProcessCrashed(self.member)

    def _serve(self) -> int:
        ready = self._ready
        if not ready:
            return 0
        world = self._world
        pending = world.recorder.pending
        now = world.clock.now()
        name = self.name
        served = 0
        while ready:
            report, callback = ready.popleft()
            msg = report.message
            err = report.error
            pending.append(
                (
                    DELIVERY,
                    now,
                    name,
                    msg.topic,
                    report.partition,
                    report.offset,
                    None if err is None else err.name,
                    msg.headers,
                )
            )
            served += 1
            callback(report)
            if self._crashed:
                raise ProcessCrashed(self.member)
        return served

    def _transmit(self) -> None:
        """Timer: write every due message to its log and make its report ready."""
        self._timer_armed = False
        if self._crashed:
            return
        world = self._world
        clock = world.clock
        now = clock.now_us
        queue = self._queue
        faults = world.faults
        faulty = any(
            faults.armed(k)
            for k in ("delivery_retriable", "delivery_fatal", "delivery_timeout", "ack_lost")
        )
        timeout_us = self.settings.message_timeout_ms * 1000
        acks0 = self.settings.acks == 0
        slow = faulty or acks0 or bool(self._held) or self._transactional
        topics = world.cluster.topics
        pending = world.recorder.pending
        now_s = clock.now()
        ts_ms = now // 1000
        name = self.name
        ready = self._ready
        while queue and queue[0].ready_us <= now:
            item = queue.popleft()
            msg = item.message
            logs = topics.get(msg.topic)
            p = item.partition
            if (
                not slow
                and logs is not None
                and p is not None
                and p < len(logs)
                and not (timeout_us and now - item.produced_us > timeout_us)
            ):  # the common case, inlined
                key, value, headers, topic = msg.key, msg.value, msg.headers, msg.topic
                offset = logs[p].append(key, value, headers, ts_ms)
                pending.append((APPEND, now_s, name, topic, p, offset, key, value, headers))
                ready.append((make_report(msg, p, offset), item.callback))
                continue
            self._transmit_one(item, now, faulty, acks0, timeout_us)
        if self._deferred:
            deferred = sorted(self._deferred, key=_ready_us)
            self._deferred = []
            self._queue = queue = deque(heapq.merge(deferred, queue, key=_ready_us))
        if queue:
            self._timer_armed = True
            clock.call_at(queue[0].ready_us, self._transmit)

    def _transmit_one(
        self, item: _InFlight, now: int, faulty: bool, acks0: bool, timeout_us: int
    ) -> None:
        """Transmit one message on the general path: errors, faults, acks=0."""
        world = self._world
        clock = world.clock
        msg = item.message
        if self._held and item.partition is not None:
            key = (msg.topic, item.partition)
            holder = self._held.get(key)
            if holder is not None and holder is not item:
                # an earlier message of the partition is being resent: wait behind it
                self._blocked.setdefault(key, []).append(item)
                return
        error: BrokerErrorInfo | None = None
        written = True
        late = False
        count = world.cluster.partition_count(msg.topic)
        if count is None:
            error = BrokerErrorInfo(_UNKNOWN_TOPIC, f"topic {msg.topic!r} does not exist")
            written = False
        elif item.partition is None or item.partition >= count:
            error = BrokerErrorInfo(
                _UNKNOWN_PARTITION,
                f"{msg.topic} has {count} partitions; no partition {item.partition}",
            )
            written = False
        elif timeout_us and now - item.produced_us > timeout_us:
            error = BrokerErrorInfo(
                "_MSG_TIMED_OUT", "message.timeout.ms expired in the queue", retriable=True
            )
            written = False
        elif faulty:
            error, written, late = self._fault(item)
        if self._transactional and written:
            refused = self._refusal()
            if refused is not None:
                error, written, late = refused, False, False
        idempotent = self.settings.enable_idempotence
        offset: int | None = None
        if written and not (idempotent and item.written is not None):
            assert item.partition is not None
            offset = self._write(msg, item.partition)
        elif written:
            offset = item.written  # the broker recognises the resend: no second copy
        if (
            (error is not None and error.retriable and error.name != "_MSG_TIMED_OUT")
            or (late and written)
        ) and item.attempts < self.settings.internal_retries:
            # the client resends it itself (librdkafka's internal retry)
            item.attempts += 1
            if written and item.written is None:
                item.written = offset
            assert item.partition is not None
            item.ready_us = now + self.settings.retry_backoff_ms * 1000
            if idempotent:
                self._held[(msg.topic, item.partition)] = item
            self._deferred.append(item)
            return
        if self._held and item.partition is not None:
            key = (msg.topic, item.partition)
            if self._held.get(key) is item:  # resolved: the partition's queue moves on
                del self._held[key]
                for waiting in self._blocked.pop(key, []):
                    waiting.ready_us = now
                    self._deferred.append(waiting)
        if acks0:
            report = DeliveryReport(msg, None, item.partition, None)
        elif error is None:
            report = DeliveryReport(msg, None, item.partition, offset)
        else:
            report = DeliveryReport(msg, error, item.partition, None)
        if late and not acks0:
            self._late += 1
            clock.call_at(item.produced_us + timeout_us, self._late_callback(report, item.callback))
        else:
            self._ready.append((report, item.callback))

    def _late_callback(
        self, report: DeliveryReport, callback: DeliveryCallback
    ) -> Callable[[], None]:
        def ready() -> None:
            if self._crashed:
                return
            self._late -= 1
            self._ready.append((report, callback))

        return ready

    def _write(self, msg: Outbound, partition: int) -> int:
        """Write ``msg`` to its log (recorded as ``Append(by=name)``); its offset."""
        return self._world.cluster.write(
            self.name, msg.topic, partition, msg.key, msg.value, msg.headers
        )

    def _refusal(self) -> BrokerErrorInfo | None:
        """Why the broker refuses a write of this producer now (None: it does not)."""
        return None

    def _fault(self, item: _InFlight) -> tuple[BrokerErrorInfo | None, bool, bool]:
        """(error, written, reported late) for one message under the fault menu."""
        faults = self._world.faults
        name = self.name
        if faults.armed("delivery_retriable") and faults.fires("delivery_retriable", name):
            return (
                BrokerErrorInfo(
                    "NOT_ENOUGH_REPLICAS", "fault: too few in-sync replicas", retriable=True
                ),
                False,
                False,
            )
        if faults.armed("delivery_fatal") and faults.fires("delivery_fatal", name):
            return (
                BrokerErrorInfo("MSG_SIZE_TOO_LARGE", "fault: rejected by the broker"),
                False,
                False,
            )
        if faults.armed("delivery_timeout") and faults.fires("delivery_timeout", name):
            return (
                BrokerErrorInfo(
                    "_MSG_TIMED_OUT", "fault: no response before message.timeout.ms", retriable=True
                ),
                False,
                True,
            )
        if faults.armed("ack_lost") and faults.fires("ack_lost", name):
            return (
                BrokerErrorInfo(
                    "_MSG_TIMED_OUT",
                    "fault: written, but the acknowledgement was lost",
                    retriable=True,
                ),
                True,
                True,
            )
        return None, True, False

    def _crash(self) -> None:
        """The process died: buffered messages may or may not be written; no reports."""
        if self._crashed:
            return
        world = self._world
        waiting = [item for items in self._blocked.values() for item in items]
        for item in [*self._queue, *self._deferred, *waiting]:
            msg = item.message
            count = world.cluster.partition_count(msg.topic)
            if count is None or item.partition is None or item.partition >= count:
                continue
            if world.rng.random() < 0.5 and self._refusal() is None:
                self._write(msg, item.partition)
        self._queue.clear()
        self._deferred.clear()
        self._blocked.clear()
        self._held.clear()
        self._ready.clear()
        self._late = 0
        self._crashed = True

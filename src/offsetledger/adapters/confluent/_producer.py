"""The producer port over ``confluent_kafka.Producer``: :meth:`~ConfluentProducer.produce`
(one :class:`~offsetledger.core.DeliveryReport` per message) and the fast path
:meth:`~ConfluentProducer.produce_many` (one callback per call, reports as
``(index, error)``)."""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from offsetledger.adapters.confluent._config import (
    _await_broker,
    _create_client,
    _producer_config,
)
from offsetledger.adapters.confluent._convert import delivered_report
from offsetledger.adapters.confluent._errors import (
    _LIBRDKAFKA_LOG,
    _LOG,
    DEFAULT_CONNECT_TIMEOUT,
    _kafka_error,
    _with_hint,
    broker_error,
    error_info,
    import_confluent_kafka,
)
from offsetledger.core import (
    BrokerError,
    BrokerErrorInfo,
    DeliveryCallback,
    DeliveryReport,
    Header,
    Outbound,
)
from offsetledger.core._names import validate_topic_name

if TYPE_CHECKING:
    import confluent_kafka

__all__ = ["ConfluentProducer", "ReportCallback"]

#: ``on_report(i, error)`` of :meth:`ConfluentProducer.produce_many`.
ReportCallback = Callable[[int, BrokerErrorInfo | None], None]

_partial = functools.partial


class ConfluentProducer:
    """:class:`~offsetledger.core.ProducerPort` over ``confluent_kafka.Producer``.

    ``config`` is a librdkafka configuration dict. ``enable.idempotence`` defaults
    to true (no duplicates or reordering from the client's own retries) and
    ``acks`` must be all/-1 (see the package docstring). An explicit
    ``enable.idempotence=false`` is accepted, e.g. for clusters without the
    idempotent-write permission.
    A ``transactional.id`` is refused with a
    :class:`~offsetledger.core.ConfigError` pointing at
    :class:`ConfluentTransactionalProducer` (this class never begins a
    transaction, and librdkafka fails every produce outside one).

    Errors raised by librdkafka while enqueueing (message too large, unknown
    partition) are not raised from :meth:`produce`: they become a failed
    :class:`~offsetledger.core.DeliveryReport` served by the next :meth:`poll` or
    :meth:`flush`, so every message gets exactly one report. A full local queue is
    waited out (serving reports) for up to ``queue_full_timeout`` seconds, then
    :class:`~offsetledger.core.BrokerError` ``_QUEUE_FULL`` is raised
    (:meth:`produce_many` reports the message failed instead).
    """

    #: Whether ``transactional.id`` is accepted (only by the transactional subclass).
    _TRANSACTIONAL: ClassVar[bool] = False

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        queue_full_timeout: float = 30.0,
    ) -> None:
        ck = import_confluent_kafka()
        conf, effective = _producer_config(config, transactional=self._TRANSACTIONAL)
        self._user_error_cb: Callable[[Any], None] | None = conf.pop("error_cb", None)
        conf["error_cb"] = self._on_error
        conf.setdefault("logger", _LIBRDKAFKA_LOG)
        self._config: Mapping[str, object] = MappingProxyType(effective)
        self._queue_full_timeout = queue_full_timeout
        self._fatal: BrokerError | None = None
        self._local: deque[tuple[DeliveryCallback, DeliveryReport]] = deque()
        #: Topic names produce() has checked (validate_topic_name) already.
        self._valid_topics: set[str] = set()
        self._producer: confluent_kafka.Producer = _create_client(ck.Producer, conf, "producer")
        # bound once: produce() runs per message
        self._produce = self._producer.produce
        self._kafka_exception: type[Exception] = ck.KafkaException
        if connect_timeout is not None:
            try:
                _await_broker(
                    self._producer,
                    str(effective.get("bootstrap.servers", "")),
                    connect_timeout,
                    "producer",
                )
            except BrokerError:
                self._producer.flush(0)
                raise

    @property
    def config(self) -> Mapping[str, object]:
        """The effective configuration (librdkafka key names, defaults filled in)."""
        return self._config

    @property
    def client(self) -> confluent_kafka.Producer:
        """The underlying confluent_kafka.Producer (for diagnostics)."""
        return self._producer

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._fatal = broker_error(error, "fatal producer error; recreate the producer")
        else:
            _LOG.warning("producer error %s", error_info(error))
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def _topic_error(self, topic: str) -> BrokerErrorInfo | None:
        """None when ``topic`` is a name Kafka accepts (remembered), else the error."""
        try:
            validate_topic_name(topic)
        except ValueError as exc:
            return BrokerErrorInfo(
                name="INVALID_TOPIC_EXCEPTION", message=str(exc), retriable=False
            )
        self._valid_topics.add(topic)
        return None

    # -- one message, one report ---------------------------------------------------

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        """Enqueue ``message``; ``on_delivery`` gets its report from poll/flush."""
        if self._fatal is not None:
            raise self._fatal

        # one closure per message (librdkafka calls it with (err, msg)); the
        # success report is built by the fast constructor (see _convert)
        def delivered(err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
            if err is None:
                on_delivery(delivered_report(message, msg.partition(), msg.offset()))
            else:
                on_delivery(DeliveryReport(message, error_info(err)))

        topic = message.topic
        if topic not in self._valid_topics:
            invalid = self._topic_error(topic)
            if invalid is not None:
                self._local.append((on_delivery, DeliveryReport(message, invalid)))
                return
        headers = message.headers
        partition = message.partition
        try:
            if headers:
                self._produce(
                    topic,
                    message.value,
                    message.key,
                    -1 if partition is None else partition,
                    delivered,
                    headers=list(headers),
                )
            else:  # no headers keyword: passing headers=None costs ~1 µs per message
                self._produce(
                    topic,
                    message.value,
                    message.key,
                    -1 if partition is None else partition,
                    delivered,
                )
        except BufferError as exc:
            # the local queue is full: wait it out, serving reports; the deadline is
            # only computed here, off the per-message path
            try:
                self._produce_when_queue_frees(
                    message, delivered, list(headers) if headers else None, exc
                )
            except self._kafka_exception as again:
                self._refused(message, on_delivery, again)
        except self._kafka_exception as exc:
            self._refused(message, on_delivery, exc)

    def _refused(self, message: Outbound, on_delivery: DeliveryCallback, exc: Exception) -> None:
        """librdkafka refused ``message`` at once: a failed report, served by the
        next poll/flush (so every message gets exactly one report, never a raise)."""
        err = _kafka_error(exc)
        if err is None:
            raise exc
        self._local.append((on_delivery, DeliveryReport(message, error_info(err))))

    def _produce_when_queue_frees(
        self,
        message: Outbound,
        callback: Callable[[Any, Any], None],
        headers: list[Header] | None,
        full: BufferError,
    ) -> None:
        """Retry a produce the client refused with BufferError, serving delivery
        reports, until it is accepted; BrokerError ``_QUEUE_FULL`` after
        ``queue_full_timeout`` seconds. librdkafka's own errors propagate."""
        deadline = time.monotonic() + self._queue_full_timeout
        partition = -1 if message.partition is None else message.partition
        while True:
            if time.monotonic() >= deadline:
                raise BrokerError(
                    "_QUEUE_FULL",
                    _with_hint(
                        "_QUEUE_FULL",
                        f"producer queue still full after {self._queue_full_timeout:g} s",
                    ),
                    retriable=True,
                ) from full
            self._producer.poll(0.05)
            try:
                if headers is None:
                    self._produce(message.topic, message.value, message.key, partition, callback)
                else:
                    self._produce(
                        message.topic,
                        message.value,
                        message.key,
                        partition,
                        callback,
                        headers=headers,
                    )
                return
            except BufferError as exc:
                full = exc

    # -- many messages, one callback -------------------------------------------------

    def produce_many(
        self,
        messages: Sequence[Outbound],
        on_report: ReportCallback,
        extra_headers: Sequence[tuple[Header, ...]] | None = None,
    ) -> None:
        """Enqueue ``messages`` in order; ``on_report(i, error)`` is called once per
        message ``i``: ``error`` None when it was acknowledged, a
        :class:`~offsetledger.core.BrokerErrorInfo` when it failed.

        Reports come from :meth:`poll`/:meth:`flush`, except for a message the
        client refuses at once (an invalid topic name, a message over
        ``message.max.bytes``, an unknown partition, a local queue still full after
        ``queue_full_timeout`` seconds): it is reported failed during this call and
        the following messages are still produced. ``extra_headers`` is None or one
        tuple of (already valid) headers per message, sent after the message's own.

        The cost per message is one librdkafka ``produce`` (without the
        ``headers`` keyword when the message has none: confluent-kafka's parsing of
        ``headers=None`` alone cost about 1 µs) and a ``functools.partial`` as its
        delivery callback; no report object is built.
        """
        if self._fatal is not None:
            raise self._fatal

        def settle(i: int, err: confluent_kafka.KafkaError | None, _msg: object) -> None:
            on_report(i, None if err is None else error_info(err))

        produce = self._produce
        valid = self._valid_topics
        kafka_exception = self._kafka_exception
        queue_stuck = False  # the queue stayed full for queue_full_timeout: do not wait again
        for i, message in enumerate(messages):
            topic = message.topic
            if topic not in valid:
                invalid = self._topic_error(topic)
                if invalid is not None:
                    on_report(i, invalid)
                    continue
            headers = message.headers
            extra = extra_headers[i] if extra_headers is not None else None
            if extra:
                header_list: list[Header] | None = [*headers, *extra]
            else:
                header_list = list(headers) if headers else None
            partition = message.partition
            key, value = message.key, message.value
            callback = _partial(settle, i)
            try:
                try:
                    if header_list is None:
                        # no headers keyword: confluent-kafka's keyword parsing of
                        # headers=None alone costs ~1 µs per message
                        produce(topic, value, key, -1 if partition is None else partition, callback)
                    else:
                        produce(
                            topic,
                            value,
                            key,
                            -1 if partition is None else partition,
                            callback,
                            headers=header_list,
                        )
                except BufferError as exc:
                    if queue_stuck:
                        raise
                    self._produce_when_queue_frees(message, callback, header_list, exc)
            except BufferError as exc:
                on_report(i, BrokerErrorInfo("_QUEUE_FULL", str(exc), retriable=True))
            except BrokerError as exc:  # _QUEUE_FULL after the bounded wait
                queue_stuck = True
                on_report(i, BrokerErrorInfo(exc.name, str(exc), retriable=True))
            except kafka_exception as exc:
                err = _kafka_error(exc)
                on_report(
                    i,
                    error_info(err)
                    if err is not None
                    else BrokerErrorInfo(type(exc).__name__, str(exc), retriable=True),
                )

    # -- serving reports -----------------------------------------------------------

    def _serve_local(self) -> int:
        served = 0
        while self._local:
            callback, report = self._local.popleft()
            callback(report)
            served += 1
        return served

    def poll(self, timeout: float) -> int:
        """Serve delivery reports, waiting up to ``timeout`` seconds; returns how
        many callbacks ran."""
        served = self._serve_local()
        return served + int(self._producer.poll(0 if served else timeout))

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every report; returns how many are
        still outstanding."""
        self._serve_local()
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> int:
        """Flush (see :meth:`flush`); returns how many reports are still outstanding."""
        return self.flush(timeout)

    def __enter__(self) -> ConfluentProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

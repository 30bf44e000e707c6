"""Configuration of the :class:`~offsetledger.runtime.Processor`: frozen, validated
values. Invalid values raise :class:`~offsetledger.core.ConfigError` naming the key."""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from offsetledger.core import DEFAULT_METADATA_BUDGET, ConfigError
from offsetledger.core._names import reject_raw_client, validate_topic_name

__all__ = [
    "KAFKA_METADATA_LIMIT",
    "PROGRAMMING_ERRORS",
    "CommitMode",
    "OrderingMode",
    "ProcessorConfig",
    "RetryPolicy",
    "check_consumer_config",
    "check_processor_args",
]


class OrderingMode(enum.Enum):
    """Which records may be processed concurrently.

    * ``PARTITION``: in offset order within a partition; at most one record of a
      partition is in flight (handler running, outputs being delivered, retrying).
    * ``KEY``: in offset order within a key of a partition, in parallel across keys.
      Records without a key (``key is None``) form one key of their own per partition.
    * ``UNORDERED``: any record may run at any time, within the in-flight limits.
    """

    PARTITION = "partition"
    KEY = "key"
    UNORDERED = "unordered"


class CommitMode(enum.Enum):
    """How stored positions reach the group coordinator.

    * ``AUTO``: the consumer's auto-commit (``enable.auto.commit=true``) commits the
      positions the Processor stores.
    * ``PERIODIC``: the Processor commits synchronously (``enable.auto.commit=false``)
      every ``commit_every_records`` finished records or ``commit_interval`` seconds,
      checking each partition's result.
    * ``TRANSACTIONAL``: exactly-once Kafka to Kafka (``enable.auto.commit=false``, a
      producer with a ``transactional.id``): outputs, dead letters and the input
      positions go into one Kafka transaction, committed every
      ``transaction_interval`` seconds or ``transaction_records`` finished records
      (see ``docs/exactly-once.md``).
    """

    AUTO = "auto"
    PERIODIC = "periodic"
    TRANSACTIONAL = "transactional"


def _err(key: str, reason: str) -> ConfigError:
    return ConfigError(key, reason)


def _positive_int(key: str) -> Any:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _err(key, f"must be an int >= 1, got {value!r}")

    return check


def _non_negative_float(key: str, *, optional: bool = False, positive: bool = False) -> Any:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _err(key, f"must be a finite number of seconds, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise _err(key, f"must be {'> 0' if positive else '>= 0'} seconds, got {value!r}")

    return check


def _exception_types(key: str) -> Any:
    def check(_inst: object, _attr: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in value
        ):
            raise _err(key, f"must be a tuple of exception types, got {value!r}")

    return check


#: The exception types :class:`RetryPolicy` treats as fatal by default: errors in
#: the handler's code, not in the world it talks to.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    LookupError,
    NameError,
)

#: Kafka's limit on a committed offset's metadata (``offset.metadata.max.bytes``,
#: broker default 4096): a commit carrying more fails with OFFSET_METADATA_TOO_LARGE.
KAFKA_METADATA_LIMIT = 4096


@attrs.frozen
class RetryPolicy:
    """How often and when a failed record is tried again.

    ``max_attempts`` counts tries in total (1 = no retry); it applies separately to
    handler attempts and to re-producing outputs whose delivery failed. The delay
    before try ``n + 1`` is ``backoff_base * backoff_multiplier ** (n - 1)``, capped at
    ``backoff_max``. Delays are deterministic unless ``rng`` is given, then a
    jitter of up to ``jitter`` (a fraction) of the delay is subtracted using it.

    An exception is *fatal* (no retry: straight to the dead-letter topic, or a stall
    without one) when it is an instance of a type in ``fatal``, or not an instance of
    any type in ``retriable``; ``fatal`` wins when both match.

    By default ``fatal`` holds the programming errors, :data:`PROGRAMMING_ERRORS`:
    ``TypeError`` (which includes a handler returning the wrong type, see
    ``HandlerContractError``), ``AttributeError``, ``LookupError`` (``KeyError``,
    ``IndexError``) and ``NameError``. Trying the same code on the same record again
    raises them again, so retrying only delays the dead letter; pass ``fatal=()`` to
    retry them like any other error.
    """

    max_attempts: int = attrs.field(default=3, validator=_positive_int("retry.max_attempts"))
    backoff_base: float = attrs.field(
        default=0.1, validator=_non_negative_float("retry.backoff_base")
    )
    backoff_max: float = attrs.field(
        default=10.0, validator=_non_negative_float("retry.backoff_max")
    )
    backoff_multiplier: float = attrs.field(
        default=2.0, validator=_non_negative_float("retry.backoff_multiplier")
    )
    retriable: tuple[type[BaseException], ...] = attrs.field(
        default=(Exception,), validator=_exception_types("retry.retriable")
    )
    fatal: tuple[type[BaseException], ...] = attrs.field(
        factory=lambda: PROGRAMMING_ERRORS, validator=_exception_types("retry.fatal")
    )
    jitter: float = attrs.field(default=0.0, validator=_non_negative_float("retry.jitter"))
    rng: random.Random | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.backoff_multiplier < 1:
            raise _err("retry.backoff_multiplier", f"must be >= 1, got {self.backoff_multiplier!r}")
        if self.backoff_max < self.backoff_base:
            raise _err(
                "retry.backoff_max",
                f"must be >= backoff_base ({self.backoff_base!r}), got {self.backoff_max!r}",
            )
        if self.jitter > 1:
            raise _err(
                "retry.jitter", f"is a fraction of the delay, must be <= 1, got {self.jitter!r}"
            )

    def delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed tries (``attempts >= 1``)."""
        exponent = max(attempts - 1, 0)
        try:
            raw = self.backoff_base * self.backoff_multiplier**exponent
        except OverflowError:
            raw = self.backoff_max
        base = min(raw, self.backoff_max)
        if self.rng is not None and self.jitter > 0:
            base -= base * self.jitter * self.rng.random()
        return base

    def is_fatal(self, exc: BaseException) -> bool:
        """True when ``exc`` must not be retried."""
        if self.fatal and isinstance(exc, self.fatal):
            return True
        return not isinstance(exc, self.retriable)


@attrs.frozen
class ProcessorConfig:
    """Everything the Processor can be told. Times are seconds of the injected Clock.

    * ``batch_size``: most records taken per poll.
    * ``poll_timeout``: how long one :meth:`~Processor.step` may wait for records or
      completions when it has nothing else to do.
    * ``ordering``: see :class:`OrderingMode`.
    * ``max_in_flight_per_partition`` / ``max_in_flight_total``: most handler
      attempts *running* at once (submitted to the executor and not returned). They
      protect the executor's queue and bound the parallelism; set the total to the
      executor's workers or a small multiple. Records waiting for delivery reports or
      in a retry backoff do not count (they hold no worker): they are bounded by the
      buffer limits below, so the delivery round trip never throttles throughput.
      With ``PARTITION`` ordering one record of a partition is handled at a time
      anyway (the next waits until the previous one is done, delivery included).
    * ``max_buffered_per_partition`` / ``max_buffered_total``: most polled and not
      yet finished records (waiting their turn, running, retrying or waiting for
      delivery reports). They protect memory (about this many records and their
      outputs are held) and bound how much a revoke must drain; reaching one pauses
      the partition (or every partition) until it drains: backpressure. They must
      cover throughput x delivery latency (e.g. 100k records/s x 10 ms = 1,000).
    * ``retry``: see :class:`RetryPolicy`.
    * ``dead_letter_topic``: where a record goes once its attempts are used up or it
      failed fatally, with lineage and ``offsetledger.error`` headers; its offset is
      stored only after that write is acknowledged, and a failing write stalls the
      partition (retried at ``retry.backoff_max``). ``None``: no dead-letter topic;
      the record is retried forever at ``retry.backoff_max`` and its partition's
      watermark stalls (metric ``stalls`` + error log). A record is never dropped.
    * ``processing_timeout``: one handler attempt running longer fails (its late
      result is ignored); ``None`` = no limit.
    * ``drain_timeout``: on revoke, how long in-flight records of the revoked
      partitions may take to finish before they are abandoned (redelivered to the
      next owner).
    * ``shutdown_timeout``: how long :meth:`~Processor.stop` drains and flushes.
    * ``commit_mode``, ``commit_every_records``, ``commit_interval``: see
      :class:`CommitMode`; ``PERIODIC`` commits when either threshold is reached (one
      may be None). ``commit_attempts``: tries of one sync commit for retriable errors.
    * ``auto_commit_interval``: in ``AUTO`` mode, the Processor also commits the
      positions it stored every this many seconds (when they moved), one sync commit
      that bounds redelivery after a crash (kill -9) to about this long of finished
      work; the client's own auto-commit (``auto.commit.interval.ms``, librdkafka's
      default 5 s) still runs. ``None``: leave committing to the client.
    * ``transaction_interval``, ``transaction_records``: in ``TRANSACTIONAL`` mode the
      open transaction commits after this many seconds or finished records (what a
      read_committed reader waits for; smaller costs throughput).
      ``transaction_call_timeout``: bound on each transactional producer call.
    * ``lineage_headers``: add ``offsetledger.source.topic/.partition/.offset``
      headers to outputs (dead-letter records always carry them).
    * ``keep_leader_epoch``: store the leader epoch of the last finished record with
      the position.
    * ``metadata_budget``: bytes of commit metadata (finished offsets above the
      watermark, used to skip them after a restart); 32 to 4096
      (:data:`KAFKA_METADATA_LIMIT`, the broker's default ``offset.metadata.max.bytes``).
    * ``committed_timeout``: timeout of the committed-position lookup on assign.
    """

    batch_size: int = attrs.field(default=500, validator=_positive_int("batch_size"))
    poll_timeout: float = attrs.field(default=0.1, validator=_non_negative_float("poll_timeout"))
    ordering: OrderingMode = attrs.field(default=OrderingMode.PARTITION)
    max_in_flight_per_partition: int = attrs.field(
        default=1000, validator=_positive_int("max_in_flight_per_partition")
    )
    max_in_flight_total: int = attrs.field(
        default=4000, validator=_positive_int("max_in_flight_total")
    )
    max_buffered_per_partition: int = attrs.field(
        default=10_000, validator=_positive_int("max_buffered_per_partition")
    )
    max_buffered_total: int = attrs.field(
        default=50_000, validator=_positive_int("max_buffered_total")
    )
    max_buffered_bytes: int | None = attrs.field(default=64 * 1024 * 1024)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    dead_letter_topic: str | None = attrs.field(default=None)
    processing_timeout: float | None = attrs.field(
        default=60.0,
        validator=_non_negative_float("processing_timeout", optional=True, positive=True),
    )
    drain_timeout: float = attrs.field(default=10.0, validator=_non_negative_float("drain_timeout"))
    shutdown_timeout: float = attrs.field(
        default=30.0, validator=_non_negative_float("shutdown_timeout")
    )
    commit_mode: CommitMode = attrs.field(default=CommitMode.AUTO)
    commit_every_records: int | None = attrs.field(default=1000)
    commit_interval: float | None = attrs.field(
        default=5.0, validator=_non_negative_float("commit_interval", optional=True, positive=True)
    )
    commit_attempts: int = attrs.field(default=3, validator=_positive_int("commit_attempts"))
    auto_commit_interval: float | None = attrs.field(
        default=0.2,
        validator=_non_negative_float("auto_commit_interval", optional=True, positive=True),
    )
    transaction_interval: float = attrs.field(
        default=0.1, validator=_non_negative_float("transaction_interval", positive=True)
    )
    transaction_records: int = attrs.field(
        default=10_000, validator=_positive_int("transaction_records")
    )
    transaction_call_timeout: float = attrs.field(
        default=10.0, validator=_non_negative_float("transaction_call_timeout", positive=True)
    )
    lineage_headers: bool = attrs.field(default=True)
    keep_leader_epoch: bool = attrs.field(default=True)
    metadata_budget: int = attrs.field(default=DEFAULT_METADATA_BUDGET)
    committed_timeout: float = attrs.field(
        default=10.0, validator=_non_negative_float("committed_timeout")
    )

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.ordering, OrderingMode):
            raise _err("ordering", f"must be an OrderingMode, got {self.ordering!r}")
        if not isinstance(self.commit_mode, CommitMode):
            raise _err("commit_mode", f"must be a CommitMode, got {self.commit_mode!r}")
        if not isinstance(self.retry, RetryPolicy):
            raise _err("retry", f"must be a RetryPolicy, got {self.retry!r}")
        if self.dead_letter_topic is not None and (
            not isinstance(self.dead_letter_topic, str) or not self.dead_letter_topic
        ):
            raise _err(
                "dead_letter_topic",
                f"must be a non-empty topic name or None, got {self.dead_letter_topic!r}",
            )
        cer = self.commit_every_records
        if cer is not None and (isinstance(cer, bool) or not isinstance(cer, int) or cer < 1):
            raise _err("commit_every_records", f"must be an int >= 1 or None, got {cer!r}")
        if self.commit_mode is CommitMode.PERIODIC and cer is None and self.commit_interval is None:
            raise _err(
                "commit_interval",
                "PERIODIC commit mode needs commit_every_records or commit_interval; both are None",
            )
        if self.max_in_flight_per_partition > self.max_buffered_per_partition:
            raise _err(
                "max_in_flight_per_partition",
                f"({self.max_in_flight_per_partition}) exceeds max_buffered_per_partition "
                f"({self.max_buffered_per_partition}): in-flight records are buffered records",
            )
        if self.max_in_flight_total > self.max_buffered_total:
            raise _err(
                "max_in_flight_total",
                f"({self.max_in_flight_total}) exceeds max_buffered_total "
                f"({self.max_buffered_total})",
            )
        mbb = self.max_buffered_bytes
        if mbb is not None and (isinstance(mbb, bool) or not isinstance(mbb, int) or mbb < 1):
            raise _err("max_buffered_bytes", f"must be an int >= 1 or None, got {mbb!r}")
        mb = self.metadata_budget
        if isinstance(mb, bool) or not isinstance(mb, int) or not 32 <= mb <= KAFKA_METADATA_LIMIT:
            raise _err(
                "metadata_budget",
                f"must be an int of 32 to {KAFKA_METADATA_LIMIT} bytes (Kafka refuses commits "
                f"with more metadata: OFFSET_METADATA_TOO_LARGE), got {mb!r}",
            )


def check_processor_args(
    consumer: Any, producer: Any, topics: Sequence[str], cfg: ProcessorConfig
) -> None:
    """Raise :class:`ConfigError` (or ``TypeError`` for a raw client) unless the
    Processor's arguments fit together: topics, dead-letter topic, the clients and
    the consumer's configuration for ``cfg.commit_mode``."""
    if isinstance(topics, str) or not topics or not all(isinstance(t, str) and t for t in topics):
        raise ConfigError("topics", f"must be a non-empty sequence of topic names, got {topics!r}")
    if cfg.dead_letter_topic is not None and cfg.dead_letter_topic in topics:
        raise ConfigError(
            "dead_letter_topic",
            f"{cfg.dead_letter_topic!r} is also an input topic: "
            "dead letters would be consumed again",
        )
    if cfg.dead_letter_topic is not None:
        try:
            validate_topic_name(cfg.dead_letter_topic, "dead-letter topic")
        except ValueError as exc:
            raise ConfigError("dead_letter_topic", str(exc)) from None
    reject_raw_client(consumer, "consumer")
    reject_raw_client(producer, "producer")
    check_consumer_config(consumer.config, cfg.commit_mode)


def _truthy(value: object) -> bool | None:
    """librdkafka booleans arrive as bool or as the strings 'true'/'false'."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def check_consumer_config(consumer_config: Mapping[str, object], mode: CommitMode) -> None:
    """Raise :class:`ConfigError` unless the consumer is set up for ``mode``.

    ``enable.auto.offset.store`` must be false (librdkafka's default is true: an
    absent key is wrong), or the client would store offsets of records handed out
    but not yet processed. ``AUTO`` needs ``enable.auto.commit`` true (its default),
    ``PERIODIC`` needs it false."""
    store = _truthy(consumer_config.get("enable.auto.offset.store", True))
    if store is None or store:
        raise ConfigError(
            "enable.auto.offset.store",
            f"is {consumer_config.get('enable.auto.offset.store', '<absent: default true>')!r}; "
            "it must be false, or the client stores offsets of records that are not processed "
            "yet and a crash loses them",
        )
    auto = _truthy(consumer_config.get("enable.auto.commit", True))
    if auto is None:
        raise ConfigError(
            "enable.auto.commit",
            f"is {consumer_config.get('enable.auto.commit')!r}; expected a boolean",
        )
    if mode is CommitMode.AUTO and not auto:
        raise ConfigError(
            "enable.auto.commit",
            "is false but commit_mode is AUTO: stored positions would never be committed; "
            "set it true or use CommitMode.PERIODIC",
        )
    if mode is CommitMode.TRANSACTIONAL and auto:
        raise ConfigError(
            "enable.auto.commit",
            "is true but commit_mode is TRANSACTIONAL: positions must be committed only "
            "inside the transaction (send_offsets_to_transaction); set it false",
        )
    if mode is CommitMode.PERIODIC and auto:
        raise ConfigError(
            "enable.auto.commit",
            "is true but commit_mode is PERIODIC: the Processor commits itself; set it false "
            "or use CommitMode.AUTO",
        )

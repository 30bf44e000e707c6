"""Errors and logging of the confluent adapter: Kafka error names with a hint of
what to do, librdkafka errors as :class:`~offsetledger.core.BrokerErrorInfo` /
:class:`~offsetledger.core.BrokerError`, the lazy import of confluent-kafka, and
the loggers (librdkafka's own log lines are routed to
``offsetledger.adapters.confluent.librdkafka``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING

from offsetledger.core import BrokerError, BrokerErrorInfo

if TYPE_CHECKING:
    import confluent_kafka

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "ERROR_HINTS",
    "broker_error",
    "error_info",
    "hint_for",
    "import_confluent_kafka",
]

_LOG = logging.getLogger("offsetledger.adapters.confluent")
#: librdkafka's own log lines are routed here (instead of stderr) unless the
#: configuration names a ``logger``.
_LIBRDKAFKA_LOG = logging.getLogger("offsetledger.adapters.confluent.librdkafka")


class _AlreadyReported(logging.Filter):
    """Demotes librdkafka's own ``FAIL`` log lines (a connection failed) to DEBUG:
    librdkafka hands the same failure to error_cb, which the clients log with a
    hint, so each connection failure is logged once, not twice."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and str(record.getMessage()).startswith("FAIL "):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return _LIBRDKAFKA_LOG.isEnabledFor(logging.DEBUG)
        return True


_LIBRDKAFKA_LOG.addFilter(_AlreadyReported())

#: Seconds a client waits, on construction, for a broker to answer a metadata
#: request before :class:`BrokerError` is raised. ``None`` skips the check.
DEFAULT_CONNECT_TIMEOUT = 10.0


#: What to do about common Kafka / librdkafka errors, by error name.
ERROR_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "UNKNOWN_TOPIC_OR_PART": (
            "the topic or partition does not exist: check the name, or create the topic first "
            "(offsetledger.adapters.confluent_admin.create_topics); clients here do not "
            "auto-create topics unless allow.auto.create.topics is true"
        ),
        "_UNKNOWN_TOPIC": "the topic is not known to the cluster: check the name or create it",
        "_UNKNOWN_PARTITION": (
            "the partition does not exist (or is not assigned): check the partition number "
            "against the topic's partition count"
        ),
        "MSG_SIZE_TOO_LARGE": (
            "the message is larger than allowed: shrink it, enable compression.type, or raise "
            "both the producer's message.max.bytes and the topic's max.message.bytes"
        ),
        "_MSG_SIZE_TOO_LARGE": (
            "the message is larger than the producer's message.max.bytes: shrink it or raise the "
            "limit (and the topic's max.message.bytes)"
        ),
        "TOPIC_AUTHORIZATION_FAILED": (
            "the client's principal lacks an ACL on the topic: grant READ (consumer) or WRITE "
            "(producer) and DESCRIBE on it"
        ),
        "GROUP_AUTHORIZATION_FAILED": (
            "the client's principal lacks READ on the consumer group named by group.id: grant it"
        ),
        "CLUSTER_AUTHORIZATION_FAILED": (
            "the principal lacks a cluster ACL (an idempotent producer needs IDEMPOTENT_WRITE "
            "on old brokers): grant it"
        ),
        "_TRANSPORT": (
            "no connection to the broker: check bootstrap.servers (host and port), that the "
            "broker is running, and its advertised.listeners"
        ),
        "_ALL_BROKERS_DOWN": (
            "no broker is reachable: check bootstrap.servers, the network, and that the "
            "brokers are running"
        ),
        "_RESOLVE": "a broker host name does not resolve: check bootstrap.servers",
        "_TIMED_OUT": (
            "the cluster did not answer in time: check the broker is reachable and not "
            "overloaded, then retry"
        ),
        "_MSG_TIMED_OUT": (
            "the message was not acknowledged within message.timeout.ms (broker unreachable or "
            "the topic has no leader): it was not written; produce it again"
        ),
        "_QUEUE_FULL": (
            "the producer's local queue is full (queue.buffering.max.messages/kbytes): poll or "
            "flush more often, or raise the limits"
        ),
        "_STATE": (
            "the partition is not assigned to this consumer (revoked or lost): do not store or "
            "commit it; its records will be redelivered to the new owner"
        ),
        "ILLEGAL_GENERATION": (
            "the group rebalanced since these positions were read: this member's generation is "
            "stale; drop the work of revoked partitions (it will be redelivered)"
        ),
        "UNKNOWN_MEMBER_ID": (
            "the member was removed from the group (session timeout or max.poll.interval.ms "
            "exceeded): it must rejoin; uncommitted work will be redelivered"
        ),
        "GROUP_ID_NOT_FOUND": (
            "the group no longer exists on the broker (Kafka 4.x deletes a classic group that "
            "became empty and holds no offsets): this member was removed; it must rejoin, and "
            "uncommitted work will be redelivered"
        ),
        "FENCED_MEMBER_EPOCH": (
            "the member was fenced by the group coordinator (KIP-848): it rejoins with a new "
            "epoch; uncommitted work will be redelivered"
        ),
        "STALE_MEMBER_EPOCH": (
            "the commit carried an old member epoch (KIP-848): retry after the next poll, once "
            "the new assignment is known"
        ),
        "REBALANCE_IN_PROGRESS": (
            "the group is rebalancing: poll to complete the rebalance, then commit again"
        ),
        "OFFSET_METADATA_TOO_LARGE": (
            "the commit metadata exceeds the broker's offset.metadata.max.bytes (4096 by "
            "default): use a smaller metadata budget"
        ),
        "COORDINATOR_NOT_AVAILABLE": "the group coordinator is loading or moving: retry shortly",
        "NOT_COORDINATOR": "the group coordinator moved: retry shortly",
        "COORDINATOR_LOAD_IN_PROGRESS": "the group coordinator is loading: retry shortly",
        "_AUTO_OFFSET_RESET": (
            "there is no valid committed position and auto.offset.reset is 'error': commit a "
            "position for the partition or set auto.offset.reset to earliest/latest"
        ),
        "OFFSET_OUT_OF_RANGE": (
            "the position is outside the log (retention removed the records?): "
            "auto.offset.reset decides where to restart"
        ),
        "_MAX_POLL_EXCEEDED": (
            "the application did not poll within max.poll.interval.ms: its partitions were "
            "taken away (on_lost); poll more often or raise max.poll.interval.ms"
        ),
        "_FATAL": "the client hit a fatal error and must be closed and recreated",
        "_INVALID_ARG": "a configuration key or value is not accepted by librdkafka",
    }
)


def hint_for(name: str) -> str | None:
    """What to do about the Kafka error called ``name``, or None if not known."""
    return ERROR_HINTS.get(name)


def import_confluent_kafka() -> ModuleType:
    """Import confluent_kafka, or raise ImportError saying how to install it."""
    try:
        import confluent_kafka  # noqa: PLC0415 - optional dependency, imported lazily
    except ImportError as exc:
        raise ImportError(
            "offsetledger.adapters.confluent needs the confluent-kafka package, which is not "
            "installed: pip install 'offsetledger[kafka]'"
        ) from exc
    return confluent_kafka


def _with_hint(name: str, message: str) -> str:
    hint = hint_for(name)
    return f"{message} (hint: {hint})" if hint else message


def error_info(error: confluent_kafka.KafkaError) -> BrokerErrorInfo:
    """A librdkafka error as :class:`BrokerErrorInfo`: Kafka's error name, its
    message with a hint for common errors, and whether a retry may help."""
    name = error.name()
    return BrokerErrorInfo(
        name=name, message=_with_hint(name, error.str()), retriable=bool(error.retriable())
    )


def broker_error(
    error: confluent_kafka.KafkaError, context: str, cls: type[BrokerError] = BrokerError
) -> BrokerError:
    """A librdkafka error as a raisable :class:`BrokerError`, prefixed with ``context``."""
    name = error.name()
    return cls(
        name, _with_hint(name, f"{context}: {error.str()}"), retriable=bool(error.retriable())
    )


def _kafka_error(exc: BaseException) -> confluent_kafka.KafkaError | None:
    """The KafkaError carried by a KafkaException (None for other exceptions)."""
    args = getattr(exc, "args", ())
    if args and hasattr(args[0], "name") and hasattr(args[0], "code"):
        return args[0]  # type: ignore[no-any-return]
    return None

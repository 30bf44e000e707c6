"""The ports over confluent-kafka (librdkafka): :class:`ConfluentConsumer` and
:class:`ConfluentProducer`.

This module is the only place in offsetledger that knows Kafka's offset
conventions: the ports speak *positions* (next offset to read), and so does
``store_offsets(offsets=[TopicPartition(t, p, position)])`` — it stores the
offset exactly as given, whereas ``store_offsets(message=m)`` would add 1. The
adapter therefore only ever uses the ``offsets=`` form, and passes each
position's leader epoch and commit metadata along with it.

confluent-kafka is imported lazily: importing this module works without it, and
constructing a client without it raises :class:`ImportError` naming the extra to
install (``pip install 'offsetledger[kafka]'``).

Decisions, observed on librdkafka 2.16 against Apache Kafka 4.x:

* ``enable.auto.offset.store`` defaults to false here (the port is a
  manual-store consumer); an explicit true is rejected.
* Rebalances: the adapter assigns/unassigns itself (``incremental_*`` for the
  cooperative protocols: ``cooperative-sticky`` and KIP-848
  ``group.protocol=consumer``; ``assign``/``unassign`` for eager ones), so that
  inside ``on_assign`` the partitions are already assigned and inside
  ``on_revoke`` they still are (a final commit works). confluent-kafka would
  otherwise assign after the callback; the Python client has no
  ``rebalance_protocol()``, so the protocol is derived from the configuration.
* ``store``: librdkafka's ``store_offsets`` stores each assigned partition of the
  call and fails (``_STATE`` or ``_UNKNOWN_PARTITION``) only when *every*
  partition is unassigned. The adapter keeps the per-partition storing but never
  stays silent: the assigned partitions are stored, then
  :class:`PartitionNotAssignedError` names the unassigned ones.
* ``commit``: a synchronous commit raises the *first* partition's error for the
  whole call although the other partitions were committed. The adapter then
  commits each partition on its own (same positions, so idempotent) to report
  the exact per-partition outcome.
* The producer defaults ``enable.idempotence`` to true and rejects
  ``acks``/``request.required.acks`` other than all/-1: with ``acks`` 0 or 1 a
  successful delivery report does not mean the write survives a leader change,
  and a stored position would then cover a lost output.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any

import attrs

from offsetledger._internal import AUTO_OFFSET_RESET_ALIASES, slot_setters
from offsetledger.core import (
    AssignmentCallback,
    BrokerError,
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    ConfigError,
    DeliveryCallback,
    DeliveryReport,
    Outbound,
    PartitionNotAssignedError,
    Record,
    StoredPosition,
    TopicPartition,
)
from offsetledger.core._names import (
    reject_raw_client,
    validate_topic_name,
)

if TYPE_CHECKING:
    import confluent_kafka

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "ERROR_HINTS",
    "ConfluentConsumer",
    "ConfluentProducer",
    "broker_error",
    "error_info",
    "hint_for",
    "import_confluent_kafka",
    "reject_raw_client",
    "validate_bootstrap_servers",
    "validate_topic_name",
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

_OFFSET_INVALID = -1001

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


# --------------------------------------------------------------------------- names


def validate_bootstrap_servers(servers: object, key: str = "bootstrap.servers") -> list[str]:
    """The ``host:port`` entries of a bootstrap list, or ConfigError naming the bad
    entry (an empty host, a port that is not a number in 1..65535). An entry may
    carry a ``PROTOCOL://`` prefix, an IPv6 host in brackets, or no port
    (librdkafka then uses 9092)."""
    if not isinstance(servers, str) or not servers.strip():
        raise ConfigError(key, "required: a comma-separated list of host:port")
    entries = [e.strip() for e in servers.split(",")]
    for entry in entries:
        if not entry:
            raise ConfigError(key, f"{servers!r} has an empty entry")
        hostport = entry.split("://", 1)[1] if "://" in entry else entry
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else None
            if rest and not rest.startswith(":"):
                raise ConfigError(key, f"{entry!r}: expected [ipv6-host]:port")
        elif hostport.count(":") > 1:  # a bare IPv6 address, no port
            host, port = hostport, None
        else:
            host, sep, port_text = hostport.partition(":")
            port = port_text if sep else None
        if not host:
            raise ConfigError(key, f"{entry!r} has no host (expected host:port)")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(
                key, f"{entry!r}: the port {port!r} is not a number between 1 and 65535"
            )
    return entries


# --------------------------------------------------------------------------- config

_CALLBACK_KEYS = frozenset(
    {"error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_commit", "on_delivery"}
)
_OBJECT_KEYS = frozenset({"logger"})
_BOOL_KEYS = frozenset(
    {
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "allow.auto.create.topics",
        "enable.idempotence",
        "check.crcs",
    }
)
_INT_KEYS = frozenset(
    {
        "auto.commit.interval.ms",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "message.max.bytes",
        "socket.timeout.ms",
        "topic.metadata.propagation.max.ms",
    }
)
_RESET_ALIASES = AUTO_OFFSET_RESET_ALIASES
#: Rejected by librdkafka with group.protocol=consumer (KIP-848): the broker owns them.
_CLASSIC_ONLY = {
    "session.timeout.ms": "it is set on the broker (group.consumer.session.timeout.ms)",
    "heartbeat.interval.ms": "it is set on the broker (group.consumer.heartbeat.interval.ms)",
    "partition.assignment.strategy": "the broker assigns; use group.remote.assignor instead",
    "group.protocol.type": "it only applies to the classic protocol",
}


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(key, f"expected a boolean (True/False or 'true'/'false'), got {value!r}")


def _as_int(key: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise ConfigError(key, f"expected an integer, got {value!r}")


def _check_values(config: object, what: str) -> dict[str, Any]:
    """Type-check a librdkafka configuration dict; return a shallow copy."""
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{what} configuration must be a dict of librdkafka keys "
            f"(e.g. {{'bootstrap.servers': 'host:9092'}}), got {type(config).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(
                str(key), "configuration keys must be non-empty strings (librdkafka names)"
            )
        if key in _CALLBACK_KEYS:
            if not callable(value):
                raise ConfigError(key, f"expected a callable, got {type(value).__name__}")
        elif key in _OBJECT_KEYS:
            pass
        elif isinstance(value, bool | int | float | str):
            if key in _BOOL_KEYS:
                _as_bool(key, value)
            elif key in _INT_KEYS:
                _as_int(key, value)
        else:
            raise ConfigError(
                key,
                f"expected a str, bool, int or float value, got {type(value).__name__} {value!r}",
            )
        out[key] = value
    key = "bootstrap.servers" if "bootstrap.servers" in out else "metadata.broker.list"
    validate_bootstrap_servers(out.get(key), "bootstrap.servers" if key not in out else key)
    return out


def _normalise(config: Mapping[str, Any]) -> dict[str, object]:
    """Plain values of a configuration with booleans and integers parsed."""
    eff: dict[str, object] = {}
    for key, value in config.items():
        if key in _CALLBACK_KEYS or key in _OBJECT_KEYS:
            continue
        if key in _BOOL_KEYS:
            eff[key] = _as_bool(key, value)
        elif key in _INT_KEYS:
            eff[key] = _as_int(key, value)
        else:
            eff[key] = value
    return eff


def _consumer_config(config: object) -> tuple[dict[str, Any], dict[str, object], bool]:
    """Validate a consumer configuration.

    Returns (what to hand to librdkafka, the effective configuration, whether the
    rebalance protocol is incremental/cooperative)."""
    conf = _check_values(config, "consumer")
    group = conf.get("group.id")
    if not isinstance(group, str) or not group.strip():
        raise ConfigError("group.id", "required: a non-empty consumer group name")
    if "enable.auto.offset.store" in conf:
        if _as_bool("enable.auto.offset.store", conf["enable.auto.offset.store"]):
            raise ConfigError(
                "enable.auto.offset.store",
                "must be false: with true the client stores the offset of every record it hands "
                "out, before it is processed, and a crash then loses it; offsetledger stores "
                "positions itself (leave the key out or set it to false)",
            )
    else:
        conf["enable.auto.offset.store"] = False
    protocol = str(conf.get("group.protocol", "classic")).strip().lower()
    if protocol not in ("classic", "consumer"):
        raise ConfigError(
            "group.protocol",
            f"expected 'classic' or 'consumer' (KIP-848), got {conf['group.protocol']!r}",
        )
    if protocol == "consumer":
        for key, why in _CLASSIC_ONLY.items():
            if key in conf:
                raise ConfigError(key, f"not supported with group.protocol=consumer: {why}")
        cooperative = True
    else:
        if "group.remote.assignor" in conf:
            raise ConfigError(
                "group.remote.assignor",
                "only used with group.protocol=consumer; for the classic protocol set "
                "partition.assignment.strategy",
            )
        strategies = [
            s.strip()
            for s in str(conf.get("partition.assignment.strategy", "range,roundrobin")).split(",")
            if s.strip()
        ]
        if not strategies:
            raise ConfigError("partition.assignment.strategy", "at least one assignor is required")
        coop = {s == "cooperative-sticky" for s in strategies}
        if len(coop) > 1:
            raise ConfigError(
                "partition.assignment.strategy",
                f"{','.join(strategies)!r} mixes cooperative-sticky with eager assignors; "
                "librdkafka needs all of one kind",
            )
        cooperative = coop == {True}
    if "auto.offset.reset" in conf and str(conf["auto.offset.reset"]) not in _RESET_ALIASES:
        raise ConfigError(
            "auto.offset.reset",
            f"expected one of {', '.join(sorted(_RESET_ALIASES))}, "
            f"got {conf['auto.offset.reset']!r}",
        )

    defaults: dict[str, object] = {
        "client.id": "rdkafka",
        "group.protocol": protocol,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 5000,
        "auto.offset.reset": "latest",
        "max.poll.interval.ms": 300000,
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        "allow.auto.create.topics": False,
    }
    if protocol == "classic":
        defaults.update(
            {
                "session.timeout.ms": 45000,
                "heartbeat.interval.ms": 3000,
                "partition.assignment.strategy": "range,roundrobin",
            }
        )
    effective = {**defaults, **_normalise(conf)}
    effective["group.protocol"] = protocol
    effective["auto.offset.reset"] = _RESET_ALIASES[str(effective["auto.offset.reset"])]
    return conf, effective, cooperative


def _producer_config(config: object) -> tuple[dict[str, Any], dict[str, object]]:
    """Validate a producer configuration; returns (librdkafka config, effective config)."""
    conf = _check_values(config, "producer")
    for key in ("acks", "request.required.acks"):
        if key in conf and str(conf[key]).strip().lower() not in ("all", "-1"):
            raise ConfigError(
                key,
                f"is {conf[key]!r}; it must be 'all' (-1): with 0 or 1 a successful delivery "
                "report does not mean the write survives a broker failure, and the input's "
                "position would be stored for an output that can be lost",
            )
    conf.setdefault("enable.idempotence", True)
    defaults: dict[str, object] = {
        "client.id": "rdkafka",
        "acks": "all",
        "enable.idempotence": True,
        "message.timeout.ms": 300000,
        "linger.ms": 5,
        "allow.auto.create.topics": True,
    }
    effective = {**defaults, **_normalise(conf)}
    if "request.required.acks" in effective:
        effective["acks"] = "all"
    return conf, effective


def _create_client(
    factory: Callable[[dict[str, Any]], Any], conf: dict[str, Any], what: str
) -> Any:
    ck = import_confluent_kafka()
    try:
        return factory(conf)
    except ck.KafkaException as exc:
        err = _kafka_error(exc)
        text = err.str() if err is not None else str(exc)
        quoted = re.search(r'[`"]([a-z0-9_.]+)[`"]', text)
        key = quoted.group(1) if quoted else "<configuration>"
        raise ConfigError(key, f"rejected by librdkafka when creating the {what}: {text}") from exc


def _await_broker(client: Any, servers: str, timeout: float, what: str) -> None:
    """Raise BrokerError unless a broker answers a metadata request within ``timeout``."""
    ck = import_confluent_kafka()
    started = time.monotonic()
    try:
        client.list_topics(timeout=timeout)
    except ck.KafkaException as exc:
        err = _kafka_error(exc)
        name = err.name() if err is not None else "_TRANSPORT"
        detail = err.str() if err is not None else str(exc)
        unresolved = _unresolvable_hosts(servers)
        if unresolved:
            name = "_RESOLVE"
            detail = f"host name(s) {', '.join(map(repr, unresolved))} do not resolve; {detail}"
        hint = hint_for(name) or hint_for("_TRANSPORT") or ""
        raise BrokerError(
            name,
            f"no Kafka broker answered at bootstrap.servers={servers!r} within {timeout:g} s "
            f"(waited {time.monotonic() - started:.1f} s) while creating the {what}: {detail} "
            f"(hint: {hint}; pass connect_timeout=None to skip this check)",
            retriable=True,
        ) from exc


def _unresolvable_hosts(servers: str) -> list[str]:
    """The hosts of a bootstrap list that do not resolve, when none of them does
    (else []: the problem is elsewhere)."""
    hosts = []
    for entry in servers.split(","):
        hostport = entry.strip().split("://", 1)[-1]
        if hostport.startswith("["):
            hosts.append(hostport[1:].partition("]")[0])
        elif hostport.count(":") > 1:
            hosts.append(hostport)
        else:
            hosts.append(hostport.partition(":")[0])
    bad = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, None)
        except (OSError, UnicodeError):
            bad.append(host)
    return bad if len(bad) == len(hosts) else []


def _client_tp(tp: TopicPartition) -> confluent_kafka.TopicPartition:
    ck = import_confluent_kafka()
    return ck.TopicPartition(tp.topic, tp.partition)  # type: ignore[no-any-return]


def _core_tp(tp: confluent_kafka.TopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _headers(raw: object) -> list[tuple[str, bytes | None]]:
    """Message headers (a list of pairs, or a dict) as (name, bytes-or-None) pairs."""
    if not raw:
        return []
    items = raw.items() if isinstance(raw, Mapping) else raw
    out: list[tuple[str, bytes | None]] = []
    for name, value in items:  # type: ignore[attr-defined]
        data = value.encode() if isinstance(value, str) else value
        out.append((str(name), data))
    return out


def _epoch(value: int | None) -> int | None:
    return value if value is not None and value >= 0 else None


# Fast constructors for the per-message hot path (as ``simulator/_fast.py``): attrs'
# generated ``__init__`` of a frozen class runs every validator and sets each field
# through ``object.__setattr__``; for a consumed message or a delivery report the
# values come from librdkafka, which already guarantees what the validators check
# (topic a non-empty str, partition and offset ints >= 0, key and value bytes or
# None; headers still go through Record's own converter). So the slots are set
# directly through their descriptors. User-constructed Records and DeliveryReports
# keep the validating constructors. Each fast path is used only when the class's
# fields are exactly the ones it sets (checked at import), else the attrs
# constructor is.
_new = object.__new__


_RECORD_SETTERS = slot_setters(
    Record,
    ("topic", "partition", "offset", "key", "value", "headers", "timestamp_ms", "leader_epoch"),
)
_REPORT_SETTERS = slot_setters(DeliveryReport, ("message", "error", "partition", "offset"))
_record_headers: Callable[[object], tuple[tuple[str, bytes | None], ...]] = attrs.fields(
    Record
).headers.converter  # type: ignore[assignment]


def _delivered_report(
    message: Outbound, partition: int | None, offset: int | None
) -> DeliveryReport:
    """A successful DeliveryReport of ``message`` written at ``partition``/``offset``
    (as librdkafka reports them), without the attrs ``__init__``."""
    if _REPORT_SETTERS is None:
        return DeliveryReport(message, None, partition, offset)
    s_message, s_error, s_partition, s_offset = _REPORT_SETTERS
    report: DeliveryReport = _new(DeliveryReport)
    s_message(report, message)
    s_error(report, None)
    s_partition(report, partition)
    s_offset(report, offset)
    return report


# --------------------------------------------------------------------------- consumer


#: Client-level errors librdkafka reports through error_cb (logged there); when one
#: also comes back from consume() it is not logged a second time.
_REPORTED_BY_ERROR_CB = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_TIMED_OUT"})


class ConfluentConsumer:
    """:class:`~offsetledger.core.ConsumerPort` over ``confluent_kafka.Consumer``.

    ``config`` is a librdkafka configuration dict (``bootstrap.servers`` and
    ``group.id`` required). ``enable.auto.offset.store`` must be false or absent
    (it then defaults to false). Both group protocols are supported:
    ``group.protocol`` ``classic`` (default; eager or ``cooperative-sticky``) and
    ``consumer`` (KIP-848; ``session.timeout.ms``, ``heartbeat.interval.ms`` and
    ``partition.assignment.strategy`` are broker-side there and rejected).

    With ``connect_timeout`` (seconds) the constructor waits that long for a broker
    to answer and raises :class:`~offsetledger.core.BrokerError` otherwise, so an
    unreachable cluster is reported at once instead of as silent empty polls.

    :meth:`poll` raises :class:`~offsetledger.core.BrokerError` for consumer errors
    the application must act on (unknown topic, authorisation, auto.offset.reset=error,
    fatal errors); records fetched before the error are returned first, never
    dropped. ``_PARTITION_EOF`` is skipped; transient transport errors and
    ``_MAX_POLL_EXCEEDED`` (followed by ``on_lost``) are logged.
    """

    #: Consumer errors that are logged and skipped, not raised from poll.
    INFORMATIONAL_ERRORS = frozenset(
        {
            "_PARTITION_EOF",
            "_MAX_POLL_EXCEEDED",
            "_TRANSPORT",
            "_ALL_BROKERS_DOWN",
            "_RESOLVE",
            "_TIMED_OUT",
        }
    )

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        ck = import_confluent_kafka()
        conf, effective, cooperative = _consumer_config(config)
        self._user_error_cb: Callable[[Any], None] | None = conf.pop("error_cb", None)
        conf["error_cb"] = self._on_error
        self._user_on_commit: Callable[[Any, Any], None] | None = conf.pop("on_commit", None)
        conf["on_commit"] = self._on_commit
        conf.setdefault("logger", _LIBRDKAFKA_LOG)
        self._config: Mapping[str, object] = MappingProxyType(effective)
        self._cooperative = cooperative
        self._commit_failures = 0
        self._last_commit_error: BrokerErrorInfo | None = None
        self._fatal: BrokerError | None = None
        self._pending: deque[confluent_kafka.Message] = deque()
        self._closed = False
        #: Set once close() ran on_revoke for what this consumer held (see close()).
        self._revoked_on_close = False
        self._on_assign: AssignmentCallback | None = None
        self._on_revoke: AssignmentCallback | None = None
        self._on_lost: AssignmentCallback | None = None
        #: Positions stored since each partition's assignment (what commit() with no
        #: arguments commits), kept to report per-partition commit results.
        self._stored: dict[TopicPartition, StoredPosition] = {}
        self._consumer: confluent_kafka.Consumer = _create_client(ck.Consumer, conf, "consumer")
        if connect_timeout is not None:
            try:
                _await_broker(
                    self._consumer,
                    str(effective.get("bootstrap.servers", "")),
                    connect_timeout,
                    "consumer",
                )
            except BrokerError:
                self._consumer.close()
                self._closed = True
                raise

    # -- properties ---------------------------------------------------------

    @property
    def config(self) -> Mapping[str, object]:
        """The effective configuration: the given keys (librdkafka names, booleans
        and integers parsed, callbacks left out) over librdkafka's defaults for
        the keys that matter to at-least-once processing."""
        return self._config

    @property
    def cooperative(self) -> bool:
        """Whether rebalances are incremental (cooperative-sticky or KIP-848)."""
        return self._cooperative

    @property
    def client(self) -> confluent_kafka.Consumer:
        """The underlying confluent_kafka.Consumer (for diagnostics; do not store
        offsets through it)."""
        return self._consumer

    # -- errors -------------------------------------------------------------

    def _on_error(self, error: confluent_kafka.KafkaError) -> None:
        if error.fatal():
            self._fatal = broker_error(
                error, "fatal consumer error; close and recreate the consumer"
            )
        else:
            _LOG.warning("consumer error %s", error_info(error))
        if self._user_error_cb is not None:
            self._user_error_cb(error)

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    @property
    def commit_failures(self) -> int:
        """How many commits librdkafka reported as failed through its commit
        callback: every auto-commit (``enable.auto.commit``), whose result is
        otherwise seen nowhere; one count per partition that failed (or one per
        commit when the whole request failed). Failures of :meth:`commit` itself
        are returned as its results (and may be counted here as well)."""
        return self._commit_failures

    @property
    def last_commit_error(self) -> BrokerErrorInfo | None:
        """The error of the most recent failed commit reported to the commit
        callback (None while none has failed)."""
        return self._last_commit_error

    def _on_commit(self, error: Any, partitions: Any) -> None:
        """librdkafka's commit callback (served inside poll): counts and logs
        failed commits, so an auto-commit that keeps failing (e.g. metadata above
        the broker's offset.metadata.max.bytes) is never silent."""
        try:
            failed: list[tuple[str, BrokerErrorInfo]] = []
            if error is not None and error.name() != "_NO_OFFSET":
                failed.append(("", error_info(error)))
            if error is None:
                failed.extend(
                    (f"{tp.topic}[{tp.partition}]", error_info(tp.error))
                    for tp in partitions or []
                    if tp.error is not None
                )
            if failed:
                self._commit_failures += len(failed)
                self._last_commit_error = failed[-1][1]
                where = ", ".join(w for w, _ in failed if w)
                _LOG.warning(
                    "commit failed%s: %s (%d commit failure(s) so far)",
                    f" for {where}" if where else "",
                    failed[-1][1],
                    self._commit_failures,
                )
        finally:
            if self._user_on_commit is not None:
                self._user_on_commit(error, partitions)

    # -- rebalance ----------------------------------------------------------

    def _forget(self, parts: Iterable[TopicPartition]) -> None:
        gone = set(parts)
        for tp in gone:
            self._stored.pop(tp, None)
        if self._pending:
            self._pending = deque(
                m
                for m in self._pending
                if m.error() is not None
                or TopicPartition(str(m.topic()), int(m.partition() or 0)) not in gone
            )

    def _assigned(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        if self._revoked_on_close:
            self._answer_while_closing(consumer)
            return
        tps = [_core_tp(p) for p in parts]
        self._forget(tps)  # a new assignment epoch: nothing stored or buffered survives
        if self._cooperative:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)
        if self._on_assign is not None:
            self._on_assign(tps)

    def _answer_while_closing(self, consumer: confluent_kafka.Consumer) -> None:
        """Answer a rebalance event served inside close() after the orderly revoke.

        librdkafka waits for an assign call after each event it delegates; once
        close() has started it treats any of them as "unassign everything"
        (``rd_kafka_cgrp_handle_assign_op``). The application is not called: it
        already got on_revoke for everything it held (see :meth:`close`), and
        partitions assigned meanwhile were never handed to it."""
        ck = import_confluent_kafka()
        try:
            if self._cooperative:
                consumer.incremental_assign([])
            else:
                consumer.assign([])
        except ck.KafkaException as exc:
            _LOG.debug("assign call while closing failed: %s", exc)

    def _unassign(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        self._forget(_core_tp(p) for p in parts)
        # librdkafka keeps a partition's pause flag across unassign/assign: a partition
        # paused (backpressure) when it was revoked would stay paused forever if it were
        # assigned to this consumer again. A new assignment must start unpaused (as in
        # the Java client and the simulator), so resume before unassigning.
        try:
            consumer.resume(parts)
        except import_confluent_kafka().KafkaException as exc:
            _LOG.debug("resume before unassign failed: %s", exc)
        if self._cooperative:
            consumer.incremental_unassign(parts)
        else:
            consumer.unassign()

    def _revoked(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        # orderly: the callback runs while the partitions are still assigned, so it
        # can commit them; then they are unassigned (even if the callback raised)
        if self._revoked_on_close:
            # close() already revoked what the application held (see close())
            self._forget(_core_tp(p) for p in parts)
            self._answer_while_closing(consumer)
            return
        try:
            if self._on_revoke is not None:
                self._on_revoke([_core_tp(p) for p in parts])
        finally:
            self._unassign(consumer, parts)

    def _lost(
        self, consumer: confluent_kafka.Consumer, parts: list[confluent_kafka.TopicPartition]
    ) -> None:
        if self._revoked_on_close:
            self._forget(_core_tp(p) for p in parts)
            self._answer_while_closing(consumer)
            return
        # already taken: unassign first, so nothing can be stored or committed for
        # them from inside the callback
        self._unassign(consumer, parts)
        if self._on_lost is not None:
            self._on_lost([_core_tp(p) for p in parts])

    def subscribe(
        self,
        topics: Sequence[str],
        *,
        on_assign: AssignmentCallback,
        on_revoke: AssignmentCallback,
        on_lost: AssignmentCallback,
    ) -> None:
        """Subscribe to ``topics``; the callbacks run inside :meth:`poll` (and
        :meth:`close`) with core TopicPartitions. ``on_lost`` is used when
        librdkafka reports the assignment as lost."""
        if (
            isinstance(topics, str)
            or not topics
            or not all(isinstance(t, str) and t for t in topics)
        ):
            raise ValueError(f"topics must be a non-empty sequence of topic names, got {topics!r}")
        for topic in topics:
            if not topic.startswith("^"):  # "^..." is a regex subscription
                validate_topic_name(topic)
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._consumer.subscribe(
            list(topics),
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    # -- consuming ----------------------------------------------------------

    def poll(self, max_records: int, timeout: float) -> list[Record]:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds."""
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout}")
        self._raise_fatal()
        if not self._pending:
            self._pending.extend(self._consumer.consume(num_messages=max_records, timeout=timeout))
            self._raise_fatal()
        out: list[Record] = []
        pending = self._pending
        record = self._record
        while pending and len(out) < max_records:
            msg = pending.popleft()
            error = msg.error()
            if error is not None:
                if error.name() in self.INFORMATIONAL_ERRORS:
                    if error.name() in _REPORTED_BY_ERROR_CB:
                        # librdkafka hands connection errors to error_cb as well,
                        # which logged this one already: once is enough
                        _LOG.debug("consumer error %s", error_info(error))
                    elif error.name() != "_PARTITION_EOF":
                        _LOG.warning("consumer error %s", error_info(error))
                    continue
                if out:
                    pending.appendleft(msg)
                    break  # hand out the records first; raise on the next poll
                where = f" for {msg.topic()}[{msg.partition()}]" if msg.topic() else ""
                raise broker_error(error, f"consumer error{where}")
            out.append(record(msg))
        return out

    @staticmethod
    def _record(msg: confluent_kafka.Message) -> Record:
        """The Record of a consumed (non-error) message. Built through the fast
        path (see ``_RECORD_SETTERS``): librdkafka guarantees the field types and
        ranges the validators would check."""
        ts_type, ts = msg.timestamp()
        raw_headers = msg.headers()
        headers = _record_headers(_headers(raw_headers)) if raw_headers else ()
        epoch = msg.leader_epoch()
        if _RECORD_SETTERS is None:
            return Record(
                topic=str(msg.topic()),
                partition=int(msg.partition() or 0),
                offset=int(msg.offset() or 0),
                key=msg.key(),
                value=msg.value(),
                headers=headers,
                timestamp_ms=ts if ts_type != 0 else None,
                leader_epoch=_epoch(epoch),
            )
        s_topic, s_partition, s_offset, s_key, s_value, s_headers, s_ts, s_epoch = _RECORD_SETTERS
        rec: Record = _new(Record)
        s_topic(rec, msg.topic())
        s_partition(rec, msg.partition())
        s_offset(rec, msg.offset())
        s_key(rec, msg.key())
        s_value(rec, msg.value())
        s_headers(rec, headers)
        s_ts(rec, ts if ts_type != 0 else None)
        s_epoch(rec, epoch if epoch is not None and epoch >= 0 else None)
        return rec

    # -- offsets ------------------------------------------------------------

    def _positions_tp(
        self, positions: Iterable[StoredPosition]
    ) -> list[confluent_kafka.TopicPartition]:
        ck = import_confluent_kafka()
        out: list[confluent_kafka.TopicPartition] = []
        for p in positions:
            # confluent-kafka rejects None for these two: leave them out instead
            extra: dict[str, Any] = {}
            if p.metadata is not None:
                extra["metadata"] = p.metadata
            if p.leader_epoch is not None:
                extra["leader_epoch"] = p.leader_epoch
            # p.position is a position already: no +1 (the offsets= form stores as given)
            out.append(ck.TopicPartition(p.tp.topic, p.tp.partition, p.position, **extra))
        return out

    def store(self, positions: Iterable[StoredPosition]) -> None:
        """Store positions for the next commit.

        As librdkafka does, the positions of assigned partitions are stored even
        when the call also names unassigned ones; those raise
        :class:`PartitionNotAssignedError` (after the others were stored)."""
        ck = import_confluent_kafka()
        items = list(positions)
        if not items:
            return
        assigned = self.assignment()
        valid = [p for p in items if p.tp in assigned]
        missing = sorted({p.tp for p in items if p.tp not in assigned})
        if valid:
            try:
                self._consumer.store_offsets(offsets=self._positions_tp(valid))
            except ck.KafkaException as exc:
                err = _kafka_error(exc)
                if err is not None and err.name() in ("_STATE", "_UNKNOWN_PARTITION"):
                    raise PartitionNotAssignedError(
                        f"cannot store positions for {', '.join(str(p.tp) for p in valid)}: "
                        f"{err.name()} ({err.str()}); the partitions are no longer assigned"
                    ) from exc
                if err is not None:
                    raise broker_error(err, "store_offsets failed") from exc
                raise
            for p in valid:
                self._stored[p.tp] = p
        if missing:
            raise PartitionNotAssignedError(
                f"cannot store positions for {', '.join(map(str, missing))}: not assigned to this "
                "consumer (revoked or lost; their records will be redelivered to the new owner)"
                + (
                    f"; the positions for {', '.join(str(p.tp) for p in valid)} were stored"
                    if valid
                    else ""
                )
            )

    def commit(self, positions: Sequence[StoredPosition] | None = None) -> list[CommitResult]:
        """Commit synchronously; one CommitResult per partition, errors included.

        With ``positions=None`` the stored positions are committed (an empty list
        when nothing is stored)."""
        ck = import_confluent_kafka()
        self._raise_fatal()
        explicit = positions is not None
        try:
            if positions is not None:
                if not positions:
                    return []
                parts = self._consumer.commit(
                    offsets=self._positions_tp(positions), asynchronous=False
                )
            else:
                parts = self._consumer.commit(asynchronous=False)
        except ck.KafkaException as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            if err.name() == "_NO_OFFSET":
                return []
            wanted = list(positions) if positions is not None else list(self._stored.values())
            if not wanted:
                raise broker_error(err, "commit failed") from exc
            # librdkafka reports only the first failing partition's error for the call;
            # commit each partition alone to learn every partition's own outcome.
            return [self._commit_one(p, err) for p in wanted]
        results = [
            CommitResult(
                _core_tp(tp),
                tp.offset if tp.offset >= 0 else None,
                error_info(tp.error) if tp.error is not None else None,
            )
            for tp in parts or []
            if tp.offset >= 0 or tp.error is not None
        ]
        for r in results:  # committed: forget stored positions it covers
            stored = self._stored.get(r.tp)
            if (
                r.ok
                and stored is not None
                and (not explicit or stored.position <= (r.position or 0))
            ):
                del self._stored[r.tp]
        return results

    def _commit_one(
        self, position: StoredPosition, first: confluent_kafka.KafkaError
    ) -> CommitResult:
        ck = import_confluent_kafka()
        try:
            parts = self._consumer.commit(
                offsets=self._positions_tp([position]), asynchronous=False
            )
        except ck.KafkaException as exc:
            err = _kafka_error(exc) or first
            return CommitResult(position.tp, position.position, error_info(err))
        error = next((tp.error for tp in parts or [] if tp.error is not None), None)
        return CommitResult(position.tp, position.position, error_info(error) if error else None)

    def committed(
        self, partitions: Collection[TopicPartition], timeout: float
    ) -> dict[TopicPartition, CommittedPosition]:
        """The group's committed positions (None where nothing is committed),
        with metadata and leader epoch."""
        ck = import_confluent_kafka()
        if not partitions:
            return {}
        try:
            parts = self._consumer.committed([_client_tp(tp) for tp in partitions], timeout=timeout)
        except ck.KafkaException as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            raise broker_error(
                err, f"committed() for {len(partitions)} partition(s) failed"
            ) from exc
        out: dict[TopicPartition, CommittedPosition] = {}
        for tp in parts:
            if tp.error is not None:
                raise broker_error(tp.error, f"committed() for {tp.topic}[{tp.partition}] failed")
            out[_core_tp(tp)] = CommittedPosition(
                _core_tp(tp),
                tp.offset if tp.offset >= 0 else None,
                metadata=tp.metadata or None,
                leader_epoch=_epoch(tp.leader_epoch),
            )
        return out

    # -- flow control and state ----------------------------------------------

    def _check_assigned(self, partitions: Collection[TopicPartition], what: str) -> None:
        missing = sorted(set(partitions) - self.assignment())
        if missing:
            raise PartitionNotAssignedError(
                f"cannot {what} {', '.join(map(str, missing))}: not assigned"
            )

    def pause(self, partitions: Collection[TopicPartition]) -> None:
        """Stop fetching from assigned ``partitions`` (their position is kept)."""
        if partitions:
            self._check_assigned(partitions, "pause")
            self._consumer.pause([_client_tp(tp) for tp in partitions])

    def resume(self, partitions: Collection[TopicPartition]) -> None:
        """Fetch again from paused ``partitions``."""
        if partitions:
            self._check_assigned(partitions, "resume")
            self._consumer.resume([_client_tp(tp) for tp in partitions])

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions currently assigned to this consumer."""
        return frozenset(_core_tp(tp) for tp in self._consumer.assignment())

    def close(self) -> None:
        """Leave the group: on_revoke runs for the partitions this consumer holds
        (still assigned, still a group member: a final commit inside it works), then
        librdkafka closes; stored positions are committed when auto-commit is on.
        Idempotent.

        on_revoke runs *before* librdkafka's close, not from it: a rebalance event
        that was queued but not yet served (another member joined or left since
        the last poll) is served inside librdkafka's close, which then treats the
        assign call answering it as "unassign everything and leave the group", so
        a revoke callback run after it could no longer commit (``_DESTROY`` or
        ``UNKNOWN_MEMBER_ID``). Events served inside librdkafka's close are only
        answered; the application is not called again."""
        if self._closed:
            return
        self._closed = True
        try:
            self._revoke_before_close()
        finally:
            self._consumer.close()

    def _revoke_before_close(self) -> None:
        if self._on_revoke is None:  # never subscribed
            return
        ck = import_confluent_kafka()
        try:
            held = sorted(self.assignment())
            member = bool(self._consumer.memberid())
        except (ck.KafkaException, RuntimeError) as exc:
            _LOG.debug("assignment() before close failed: %s", exc)
            return
        if not member:
            # evicted (or never joined): librdkafka reports the assignment as lost
            # from its close, and a lost partition must not be committed
            return
        self._revoked_on_close = True
        try:
            if held:
                self._on_revoke(held)
        finally:
            self._forget(held)

    def __enter__(self) -> ConfluentConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- producer


class ConfluentProducer:
    """:class:`~offsetledger.core.ProducerPort` over ``confluent_kafka.Producer``.

    ``config`` is a librdkafka configuration dict. ``enable.idempotence`` defaults
    to true (no duplicates or reordering from the client's own retries) and
    ``acks`` must be all/-1 (see the module docstring). An explicit
    ``enable.idempotence=false`` is accepted, e.g. for clusters without the
    idempotent-write permission.

    Errors raised by librdkafka while enqueueing (message too large, unknown
    partition) are not raised from :meth:`produce`: they become a failed
    :class:`~offsetledger.core.DeliveryReport` served by the next :meth:`poll` or
    :meth:`flush`, so every message gets exactly one report. A full local queue is
    waited out (serving reports) for up to ``queue_full_timeout`` seconds, then
    :class:`~offsetledger.core.BrokerError` ``_QUEUE_FULL`` is raised.
    """

    def __init__(
        self,
        config: Mapping[str, object],
        *,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        queue_full_timeout: float = 30.0,
    ) -> None:
        ck = import_confluent_kafka()
        conf, effective = _producer_config(config)
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

    def produce(self, message: Outbound, on_delivery: DeliveryCallback) -> None:
        """Enqueue ``message``; ``on_delivery`` gets its report from poll/flush."""
        if self._fatal is not None:
            raise self._fatal

        # one closure per message (librdkafka calls it with (err, msg)); the
        # success report is built by the fast constructor (see _RECORD_SETTERS)
        def delivered(err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
            if err is None:
                on_delivery(_delivered_report(message, msg.partition(), msg.offset()))
            else:
                on_delivery(DeliveryReport(message, error_info(err)))

        if message.topic not in self._valid_topics:
            try:
                validate_topic_name(message.topic)
            except ValueError as exc:
                info = BrokerErrorInfo(
                    name="INVALID_TOPIC_EXCEPTION", message=str(exc), retriable=False
                )
                self._local.append((on_delivery, DeliveryReport(message, info)))
                return
            self._valid_topics.add(message.topic)
        headers = message.headers
        partition = message.partition
        try:
            self._produce(
                message.topic,
                value=message.value,
                key=message.key,
                partition=-1 if partition is None else partition,
                headers=list(headers) if headers else None,
                on_delivery=delivered,
            )
        except BufferError as exc:
            # the local queue is full: wait it out, serving reports; the deadline is
            # only computed here, off the per-message path
            self._produce_when_queue_frees(message, on_delivery, delivered, exc)
        except self._kafka_exception as exc:
            err = _kafka_error(exc)
            if err is None:
                raise
            self._local.append((on_delivery, DeliveryReport(message, error_info(err))))

    def _produce_when_queue_frees(
        self,
        message: Outbound,
        on_delivery: DeliveryCallback,
        delivered: Callable[[Any, Any], None],
        full: BufferError,
    ) -> None:
        deadline = time.monotonic() + self._queue_full_timeout
        headers = message.headers
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
                self._produce(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    partition=-1 if message.partition is None else message.partition,
                    headers=list(headers) if headers else None,
                    on_delivery=delivered,
                )
                return
            except BufferError as exc:
                full = exc
            except self._kafka_exception as exc:
                err = _kafka_error(exc)
                if err is None:
                    raise
                self._local.append((on_delivery, DeliveryReport(message, error_info(err))))
                return

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

"""Validation of client configuration given with librdkafka key names.

Every key is checked: an unknown or unsupported key, a wrong type or a value out
of range raises :class:`~offsetledger.core.ConfigError` naming the key. Values may
be given as Python values or as strings (``"true"``, ``"5000"``), as librdkafka
accepts both.

So that an application's real configuration runs unchanged, the keys of the real
client that the simulator does not model are *accepted, not modelled*
(:data:`ACCEPTED_NOT_MODELLED` and the prefixes in
:data:`ACCEPTED_NOT_MODELLED_PREFIXES`: security, SASL, SSL, fetch sizes, socket
and reconnect tuning, client.rack, ...): any value is taken and has no effect.
Defaults match the confluent adapter's where it differs from librdkafka:
``enable.auto.offset.store`` defaults to false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from offsetledger._internal import AUTO_OFFSET_RESET_ALIASES
from offsetledger.core import ConfigError

__all__ = [
    "ACCEPTED_NOT_MODELLED",
    "ACCEPTED_NOT_MODELLED_PREFIXES",
    "ConsumerConfig",
    "ProducerConfig",
    "parse_consumer_config",
    "parse_producer_config",
]


def _bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(key, f"expected a boolean (True/False or 'true'/'false'), got {value!r}")


def _int(key: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value)
    else:
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if not lo <= number <= hi:
        raise ConfigError(key, f"{number} is out of range [{lo}..{hi}]")
    return number


def _float(key: str, value: object, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a number, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {value!r}") from None
    else:
        raise ConfigError(key, f"expected a number, got {value!r}")
    if not lo <= number <= hi:
        raise ConfigError(key, f"{number} is out of range [{lo}..{hi}]")
    return number


def _str(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, f"expected a string, got {value!r}")
    return value


def _enum(key: str, value: object, allowed: Mapping[str, str]) -> str:
    text = _str(key, value)
    if text not in allowed:
        raise ConfigError(key, f"{text!r} is not one of {', '.join(sorted(allowed))}")
    return allowed[text]


@attrs.frozen
class ConsumerConfig:
    """A validated consumer configuration (defaults follow librdkafka, except
    ``enable.auto.offset.store``: false, as in the confluent adapter)."""

    group_id: str
    client_id: str = "rdkafka"
    enable_auto_commit: bool = True
    enable_auto_offset_store: bool = False
    auto_commit_interval_ms: int = 5000
    auto_offset_reset: str = "latest"  #: earliest | latest | error
    session_timeout_ms: int = 45000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    assignment_strategies: tuple[str, ...] = ("range", "roundrobin")
    isolation_level: str = "read_committed"
    #: ``classic`` or ``consumer`` (KIP-848)
    group_protocol: str = "classic"
    #: the broker-side assignor asked for (``group.remote.assignor``; KIP-848 only)
    remote_assignor: str | None = None
    #: static membership (KIP-345), None for a dynamic member
    group_instance_id: str | None = None

    @property
    def cooperative(self) -> bool:
        """Incremental rebalances: cooperative-sticky, or any KIP-848 member."""
        return self.kip848 or self.assignment_strategies == ("cooperative-sticky",)

    @property
    def kip848(self) -> bool:
        return self.group_protocol == "consumer"

    def librdkafka(self) -> dict[str, object]:
        """The configuration under librdkafka's key names."""
        out: dict[str, object] = {
            "group.id": self.group_id,
            "client.id": self.client_id,
            "enable.auto.commit": self.enable_auto_commit,
            "enable.auto.offset.store": self.enable_auto_offset_store,
            "auto.commit.interval.ms": self.auto_commit_interval_ms,
            "auto.offset.reset": self.auto_offset_reset,
            "max.poll.interval.ms": self.max_poll_interval_ms,
            "group.protocol": self.group_protocol,
            "isolation.level": self.isolation_level,
        }
        if not self.kip848:
            out["session.timeout.ms"] = self.session_timeout_ms
            out["heartbeat.interval.ms"] = self.heartbeat_interval_ms
            out["partition.assignment.strategy"] = ",".join(self.assignment_strategies)
        elif self.remote_assignor is not None:
            out["group.remote.assignor"] = self.remote_assignor
        if self.group_instance_id is not None:
            out["group.instance.id"] = self.group_instance_id
        return out


@attrs.frozen
class ProducerConfig:
    """A validated producer configuration (defaults follow librdkafka)."""

    client_id: str = "rdkafka"
    acks: int = -1  #: -1 (all), 0 or 1
    linger_ms: float = 5.0
    message_timeout_ms: int = 300000
    enable_idempotence: bool = False
    #: ``retries`` / ``message.send.max.retries`` as given (None: not given, see
    #: :attr:`internal_retries`)
    retries: int | None = None
    retry_backoff_ms: int = 100

    @property
    def internal_retries(self) -> int:
        """How often the client itself resends a message after a retriable error.

        librdkafka's default is 2147483647; the simulator retries internally only
        when ``enable.idempotence`` is true or ``retries`` is given, so that the
        fault menu's retriable delivery failures reach the application by default
        (a departure, documented in :class:`~offsetledger.simulator.SimProducer`)."""
        if self.retries is not None:
            return self.retries
        return _INT32_MAX if self.enable_idempotence else 0

    def librdkafka(self) -> dict[str, object]:
        """The configuration under librdkafka's key names."""
        return {
            "client.id": self.client_id,
            "acks": "all" if self.acks == -1 else str(self.acks),
            "linger.ms": self.linger_ms,
            "message.timeout.ms": self.message_timeout_ms,
            "enable.idempotence": self.enable_idempotence,
            "message.send.max.retries": self.internal_retries,
            "retry.backoff.ms": self.retry_backoff_ms,
        }


_INT32_MAX = 2_147_483_647


_RESET = AUTO_OFFSET_RESET_ALIASES
_STRATEGIES = frozenset({"range", "roundrobin", "cooperative-sticky"})
_REMOTE_ASSIGNORS = {"uniform": "uniform", "range": "range"}
_IGNORED = frozenset({"bootstrap.servers", "metadata.broker.list"})

#: Keys of the real client (consumer or producer) taken with any value and not
#: modelled by the simulator.
ACCEPTED_NOT_MODELLED = frozenset(
    {
        "allow.auto.create.topics",
        "api.version.request",
        "batch.num.messages",
        "batch.size",
        "broker.address.family",
        "check.crcs",
        "client.dns.lookup",
        "client.rack",
        "compression.codec",
        "compression.type",
        "connections.max.idle.ms",
        "coordinator.query.interval.ms",
        "debug",
        "enable.partition.eof",
        "enable.ssl.certificate.verification",
        "error_cb",
        "fetch.error.backoff.ms",
        "fetch.max.bytes",
        "fetch.min.bytes",
        "fetch.wait.max.ms",
        "log.connection.close",
        "log_cb",
        "log_level",
        "logger",
        "max.in.flight",
        "max.in.flight.requests.per.connection",
        "max.partition.fetch.bytes",
        "message.max.bytes",
        "metadata.max.age.ms",
        "oauth_cb",
        "partitioner",
        "queue.buffering.max.kbytes",
        "queue.buffering.max.messages",
        "queued.max.messages.kbytes",
        "queued.min.messages",
        "receive.message.max.bytes",
        "request.timeout.ms",
        "retry.backoff.max.ms",
        "security.protocol",
        "stats_cb",
        "statistics.interval.ms",
        "sticky.partitioning.linger.ms",
        "topic.metadata.refresh.interval.ms",
        "transaction.timeout.ms",
    }
)
#: Key prefixes accepted, not modelled (credentials, TLS, sockets, reconnects).
ACCEPTED_NOT_MODELLED_PREFIXES = ("sasl.", "ssl.", "socket.", "reconnect.", "sasl_", "ssl_")


def _strategies(key: str, value: object) -> tuple[str, ...]:
    names = tuple(s.strip() for s in _str(key, value).split(",") if s.strip())
    if not names:
        raise ConfigError(key, "at least one assignor is required")
    for name in names:
        if name not in _STRATEGIES:
            raise ConfigError(
                key, f"unknown assignor {name!r} (supported: {', '.join(sorted(_STRATEGIES))})"
            )
    if "cooperative-sticky" in names and len(names) > 1:
        raise ConfigError(key, "cooperative-sticky cannot be mixed with eager assignors")
    return names


Parser = Callable[[str, object], tuple[str, Any]]

_CONSUMER: dict[str, Parser] = {
    "group.id": lambda k, v: ("group_id", _str(k, v)),
    "client.id": lambda k, v: ("client_id", _str(k, v)),
    "enable.auto.commit": lambda k, v: ("enable_auto_commit", _bool(k, v)),
    "enable.auto.offset.store": lambda k, v: ("enable_auto_offset_store", _bool(k, v)),
    "auto.commit.interval.ms": lambda k, v: ("auto_commit_interval_ms", _int(k, v, 0, 86_400_000)),
    "auto.offset.reset": lambda k, v: ("auto_offset_reset", _enum(k, v, _RESET)),
    "session.timeout.ms": lambda k, v: ("session_timeout_ms", _int(k, v, 1, 3_600_000)),
    "heartbeat.interval.ms": lambda k, v: ("heartbeat_interval_ms", _int(k, v, 1, 3_600_000)),
    "max.poll.interval.ms": lambda k, v: ("max_poll_interval_ms", _int(k, v, 1, 86_400_000)),
    "partition.assignment.strategy": lambda k, v: ("assignment_strategies", _strategies(k, v)),
    "isolation.level": lambda k, v: (
        "isolation_level",
        _enum(k, v, {"read_committed": "read_committed", "read_uncommitted": "read_uncommitted"}),
    ),
    "group.remote.assignor": lambda k, v: ("remote_assignor", _enum(k, v, _REMOTE_ASSIGNORS)),
    "group.instance.id": lambda k, v: ("group_instance_id", _instance_id(k, v)),
}

#: Rejected with group.protocol=consumer (KIP-848), as librdkafka does: the broker owns them.
_CLASSIC_ONLY = {
    "session.timeout.ms": "it is set on the broker (group.consumer.session.timeout.ms)",
    "heartbeat.interval.ms": "it is set on the broker (group.consumer.heartbeat.interval.ms)",
    "partition.assignment.strategy": "the broker assigns; use group.remote.assignor instead",
}


def _instance_id(key: str, value: object) -> str:
    text = _str(key, value)
    if not text.strip():
        raise ConfigError(key, "must not be empty (leave it out for a dynamic member)")
    return text


_PRODUCER: dict[str, Parser] = {
    "client.id": lambda k, v: ("client_id", _str(k, v)),
    "acks": lambda k, v: ("acks", _acks(k, v)),
    "request.required.acks": lambda k, v: ("acks", _acks(k, v)),
    "linger.ms": lambda k, v: ("linger_ms", _float(k, v, 0.0, 900_000.0)),
    "queue.buffering.max.ms": lambda k, v: ("linger_ms", _float(k, v, 0.0, 900_000.0)),
    "message.timeout.ms": lambda k, v: ("message_timeout_ms", _int(k, v, 0, 2_147_483_647)),
    "delivery.timeout.ms": lambda k, v: ("message_timeout_ms", _int(k, v, 0, 2_147_483_647)),
    "enable.idempotence": lambda k, v: ("enable_idempotence", _bool(k, v)),
    "retries": lambda k, v: ("retries", _int(k, v, 0, _INT32_MAX)),
    "message.send.max.retries": lambda k, v: ("retries", _int(k, v, 0, _INT32_MAX)),
    "retry.backoff.ms": lambda k, v: ("retry_backoff_ms", _int(k, v, 1, 300_000)),
}


def _acks(key: str, value: object) -> int:
    if value in ("all", -1, "-1"):
        return -1
    if value in (0, "0"):
        return 0
    if value in (1, "1"):
        return 1
    raise ConfigError(key, f"expected all, -1, 0 or 1, got {value!r}")


def _collect(
    config: Mapping[str, object], table: Mapping[str, Parser], what: str
) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise TypeError(
            f"{what} configuration must be a mapping of librdkafka keys, got {config!r}"
        )
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigError(str(key), "configuration keys must be strings")
        if key in _IGNORED:
            _str(key, value)
            continue
        if key in ACCEPTED_NOT_MODELLED or key.startswith(ACCEPTED_NOT_MODELLED_PREFIXES):
            continue  # the real client's; the simulator does not model it
        parser = table.get(key)
        if parser is None:
            raise ConfigError(
                key,
                f"unknown or unsupported {what} configuration key for the simulator "
                f"(modelled: {', '.join(sorted(set(table) | _IGNORED))}; accepted, not "
                "modelled: security, SASL, SSL, fetch, socket and other real-client keys, "
                "see docs/testing.md)",
            )
        field, parsed = parser(key, value)
        out[field] = parsed
    return out


def parse_consumer_config(config: Mapping[str, object]) -> ConsumerConfig:
    """Validate a consumer configuration; ``group.id`` is required.

    ``group.protocol`` is ``classic`` (default) or ``consumer`` (KIP-848). With
    ``consumer``, ``session.timeout.ms``, ``heartbeat.interval.ms`` and
    ``partition.assignment.strategy`` are rejected (the broker owns them, as
    librdkafka and the confluent adapter say) and ``group.remote.assignor``
    (``uniform`` or ``range``) may be given; with ``classic`` the remote assignor
    is rejected. ``group.instance.id`` makes the member static (KIP-345).
    """
    rest = dict(config)
    protocol = rest.pop("group.protocol", "classic")
    if protocol not in ("classic", "consumer"):
        raise ConfigError(
            "group.protocol", f"expected 'classic' or 'consumer' (KIP-848), got {protocol!r}"
        )
    if protocol == "consumer":
        for key, why in _CLASSIC_ONLY.items():
            if key in rest:
                raise ConfigError(key, f"not supported with group.protocol=consumer: {why}")
    elif "group.remote.assignor" in rest:
        raise ConfigError(
            "group.remote.assignor",
            "only used with group.protocol=consumer; for the classic protocol set "
            "partition.assignment.strategy",
        )
    fields = _collect(rest, _CONSUMER, "consumer")
    if "group_id" not in fields:
        raise ConfigError("group.id", "required for a group consumer")
    if not fields["group_id"]:
        raise ConfigError("group.id", "must not be empty")
    parsed = ConsumerConfig(group_protocol=protocol, **fields)
    if not parsed.kip848 and parsed.max_poll_interval_ms < parsed.session_timeout_ms:
        raise ConfigError(
            "max.poll.interval.ms",
            f"{parsed.max_poll_interval_ms} must be >= session.timeout.ms "
            f"({parsed.session_timeout_ms})",
        )
    return parsed


def parse_producer_config(config: Mapping[str, object] | None) -> ProducerConfig:
    """Validate a producer configuration. ``enable.idempotence=true`` requires
    ``acks`` all, as in librdkafka."""
    fields = _collect(config or {}, _PRODUCER, "producer")
    parsed = ProducerConfig(**fields)
    if parsed.enable_idempotence and parsed.acks != -1:
        raise ConfigError("acks", "must be 'all' (-1) when enable.idempotence is true")
    return parsed

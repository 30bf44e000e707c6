"""Configuration of the confluent clients: the bootstrap list, type checks of
librdkafka keys, the at-least-once rules (manual offset store, ``acks=all``), the
effective configuration the ports expose, and client creation with a bounded
wait for a broker."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from offsetledger._internal import AUTO_OFFSET_RESET_ALIASES
from offsetledger.adapters.confluent._errors import (
    _kafka_error,
    hint_for,
    import_confluent_kafka,
)
from offsetledger.core import BrokerError, ConfigError

__all__ = ["validate_bootstrap_servers"]


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


def _producer_config(
    config: object, *, transactional: bool = False
) -> tuple[dict[str, Any], dict[str, object]]:
    """Validate a producer configuration; returns (librdkafka config, effective config).

    ``transactional`` is false for the plain producer, which refuses a
    ``transactional.id``: librdkafka would then refuse every produce outside a
    transaction (``_STATE``), and nothing would ever begin one."""
    conf = _check_values(config, "producer")
    if not transactional and conf.get("transactional.id") not in (None, ""):
        raise ConfigError(
            "transactional.id",
            f"is {conf['transactional.id']!r} on a plain (at-least-once) ConfluentProducer, "
            "which never begins a transaction, so librdkafka would fail every produce; for "
            "exactly-once use ConfluentTransactionalProducer (offsetledger.adapters.confluent) "
            "with CommitMode.TRANSACTIONAL, otherwise remove transactional.id",
        )
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

"""Names and objects the runtime and the adapters check before any I/O: Kafka's rule
for topic names, and raw client objects passed where a port is expected."""

from __future__ import annotations

import re

__all__ = ["MAX_TOPIC_NAME_LENGTH", "reject_raw_client", "validate_topic_name"]

#: Kafka's limit on a topic name's length (``Topic.MAX_NAME_LENGTH``).
MAX_TOPIC_NAME_LENGTH = 249
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]+")


def validate_topic_name(name: object, what: str = "topic") -> str:
    """``name`` if Kafka can ever accept it as a topic name, else ValueError saying
    why: 1 to 249 characters of ASCII letters, digits, ``.``, ``_`` and ``-``, and
    not ``.`` or ``..`` (Kafka's own rule; such a name is never created, so
    waiting or creating it cannot help). ``what`` names the role in the message
    (e.g. "dead-letter topic")."""
    if not isinstance(name, str):
        raise ValueError(f"{what} name must be a str, got {type(name).__name__} {name!r}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    if name in (".", ".."):
        raise ValueError(f"{what} name {name!r} is not allowed by Kafka")
    if len(name) > MAX_TOPIC_NAME_LENGTH:
        raise ValueError(
            f"{what} name is {len(name)} characters long; Kafka allows at most "
            f"{MAX_TOPIC_NAME_LENGTH}: {name[:40]!r}..."
        )
    if not _TOPIC_NAME.fullmatch(name):
        bad = sorted({c for c in name if not _TOPIC_NAME.fullmatch(c)})
        raise ValueError(
            f"{what} name {name!r} can never exist in Kafka: it contains "
            f"{', '.join(repr(c) for c in bad)}; only ASCII letters, digits, '.', '_' and "
            "'-' are allowed"
        )
    return name


def reject_raw_client(client: object, role: str) -> None:
    """Raise TypeError if ``client`` is a raw ``confluent_kafka`` Consumer or
    Producer where a port is expected (``role``: "consumer" or "producer"): they
    store offsets and report deliveries differently; wrap the configuration in
    :class:`ConfluentConsumer` / :class:`ConfluentProducer` instead. Does not
    import confluent_kafka."""
    cls = type(client)
    if not any(k.__module__.split(".")[0] in ("confluent_kafka", "cimpl") for k in cls.__mro__):
        return
    wrapper = "ConfluentConsumer" if role == "consumer" else "ConfluentProducer"
    raise TypeError(
        f"the {role} is a raw confluent_kafka.{cls.__qualname__}; offsetledger needs its "
        f"port: pass offsetledger.adapters.confluent.{wrapper}(config) built from the same "
        "configuration dict instead"
    )

"""Serializers and deserializers around a handler, in confluent-kafka's shape.

A *deserializer* is any callable ``(data: bytes | None, ctx) -> object`` and a
*serializer* any callable ``(obj, ctx) -> bytes | None``, where ``ctx`` is a
``confluent_kafka.serialization.SerializationContext`` (topic, field, headers) —
the shape of confluent-kafka's ``Serializer``/``Deserializer``, so its Schema
Registry serde (``JSONSerializer``, ``AvroDeserializer``, ``ProtobufSerializer``,
...) plug in as they are. Without confluent-kafka installed, ``ctx`` is a
:class:`Context` with the same three attributes.

:func:`with_serde` wraps a handler: it deserializes each record's key and value
before the handler sees them (as a :class:`Decoded`), and serializes the key and
value of every :class:`Message` the handler returns (an :class:`~offsetledger.core.Outbound`
passes through as it is).

A record that fails to deserialize is a *poison record*: the wrapper raises
:class:`DeserializationError`, a ``TypeError``, which the default
:class:`~offsetledger.runtime.RetryPolicy` treats as fatal
(:data:`~offsetledger.runtime.PROGRAMMING_ERRORS`): not retried, written to the
dead-letter topic with the reason in its ``offsetledger.error`` header (or, with
no dead-letter topic, a stall: never dropped, never a crash loop). A policy with
its own ``fatal`` should list :class:`SerdeError` in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

from offsetledger.core import Header, Outbound, Record, TopicPartition

__all__ = [
    "Context",
    "Decoded",
    "DeserializationError",
    "Deserializer",
    "Message",
    "SerdeError",
    "SerializationError",
    "Serializer",
    "with_serde",
]


class SerdeError(TypeError):
    """A key or value could not be (de)serialized. A ``TypeError``, so the default
    retry policy treats it as fatal: the same bytes fail the same way every time."""


class DeserializationError(SerdeError):
    """A record's key or value failed to deserialize: a poison record."""


class SerializationError(SerdeError):
    """An output's key or value failed to serialize (or has no serializer and is
    not bytes)."""


@attrs.frozen
class Context:
    """Stand-in for ``confluent_kafka.serialization.SerializationContext`` when
    confluent-kafka is not installed: ``field`` is ``"key"`` or ``"value"``."""

    topic: str
    field: str
    headers: list[tuple[str, bytes | None]] | None = None


class Deserializer(Protocol):
    def __call__(self, data: bytes | None, ctx: Any, /) -> Any: ...


class Serializer(Protocol):
    def __call__(self, obj: Any, ctx: Any, /) -> bytes | None: ...


@attrs.frozen
class Decoded:
    """A record with its key and value deserialized; ``record`` is the raw one."""

    record: Record
    key: Any
    value: Any

    @property
    def topic(self) -> str:
        return self.record.topic

    @property
    def partition(self) -> int:
        return self.record.partition

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def headers(self) -> tuple[Header, ...]:
        return self.record.headers

    @property
    def tp(self) -> TopicPartition:
        return self.record.tp


@attrs.frozen
class Message:
    """An output whose key and value are objects, serialized by :func:`with_serde`."""

    topic: str
    value: Any = None
    key: Any = None
    headers: tuple[Header, ...] = ()
    partition: int | None = None


def _context_factory() -> Callable[[str, str, list[tuple[str, bytes | None]] | None], Any]:
    try:
        from confluent_kafka.serialization import (  # noqa: PLC0415 (optional)
            MessageField,
            SerializationContext,
        )
    except ImportError:
        return Context
    fields = {"key": MessageField.KEY, "value": MessageField.VALUE}

    def make(topic: str, field: str, headers: list[tuple[str, bytes | None]] | None) -> Any:
        return SerializationContext(topic, fields[field], headers)  # type: ignore[arg-type]

    return make


def with_serde(
    handler: Callable[[Decoded], Iterable[Message | Outbound]],
    *,
    key_deserializer: Deserializer | None = None,
    value_deserializer: Deserializer | None = None,
    key_serializer: Serializer | None = None,
    value_serializer: Serializer | None = None,
) -> Callable[[Record], list[Outbound]]:
    """A Processor handler that deserializes, calls ``handler``, and serializes.

    A missing deserializer leaves the bytes as they are; ``None`` (a tombstone, a
    record without key) stays ``None`` without calling it, and so does a ``None``
    key or value of an output. A :class:`Message`'s key or value is serialized
    with the serializer of its field; without one it must already be bytes or None
    (else :class:`SerializationError`). The serializers see the output's topic
    and headers in their context (Schema Registry subjects are named after the
    topic by default).
    """
    context = _context_factory()

    def decode(record: Record, field: str, data: bytes | None, fn: Deserializer | None) -> Any:
        if fn is None or data is None:
            return data
        try:
            return fn(data, context(record.topic, field, list(record.headers)))
        except Exception as exc:
            raise DeserializationError(
                f"{field} of {record.tp} offset {record.offset} failed to deserialize: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def encode(out: Message, field: str, obj: Any, fn: Serializer | None) -> bytes | None:
        if obj is None:
            return None
        if fn is None:
            if isinstance(obj, bytes):
                return obj
            raise SerializationError(
                f"{field} of an output to {out.topic!r} is {type(obj).__name__}, "
                f"not bytes, and with_serde has no {field}_serializer"
            )
        try:
            data = fn(obj, context(out.topic, field, list(out.headers)))
        except Exception as exc:
            raise SerializationError(
                f"{field} of an output to {out.topic!r} failed to serialize: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if data is not None and not isinstance(data, bytes):
            raise SerializationError(
                f"the {field} serializer returned {type(data).__name__}, not bytes"
            )
        return data

    def handle(record: Record) -> list[Outbound]:
        decoded = Decoded(
            record,
            key=decode(record, "key", record.key, key_deserializer),
            value=decode(record, "value", record.value, value_deserializer),
        )
        outputs: list[Outbound] = []
        for out in handler(decoded):
            if isinstance(out, Outbound):
                outputs.append(out)
                continue
            outputs.append(
                Outbound(
                    out.topic,
                    value=encode(out, "value", out.value, value_serializer),
                    key=encode(out, "key", out.key, key_serializer),
                    headers=out.headers,
                    partition=out.partition,
                )
            )
        return outputs

    handle.__wrapped__ = handler  # type: ignore[attr-defined]
    return handle

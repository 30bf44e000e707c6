"""with_serde on the simulator: objects in and out, and a value that fails to
deserialize is a poison record — dead-lettered once with the reason, never retried,
never a crash loop; with confluent-kafka's own JSON Schema serde when installed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from offsetledger.core import Outbound, Record
from offsetledger.history import ERROR_HEADER
from offsetledger.runtime import (
    ATTEMPTS_HEADER,
    InMemoryMetrics,
    ProcessorConfig,
    ProcessorState,
    RetryPolicy,
)
from offsetledger.serde import (
    Context,
    Decoded,
    DeserializationError,
    Message,
    SerializationError,
    with_serde,
)
from offsetledger.simulator import World
from tests.ops.helpers import drive, processor


def json_in(data: bytes | None, ctx: Any) -> Any:
    return json.loads(data or b"")


def json_out(obj: Any, ctx: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode()


def doubled(rec: Decoded) -> Iterable[Message]:
    return [Message("out", value={"n": rec.value["n"] * 2}, key=rec.key)]


def world_of(seed: int, values: list[bytes]) -> World:
    world = World(seed=seed)
    for name in ("in", "out", "dlq"):
        world.create_topic(name, partitions=1)
    for i, value in enumerate(values):
        world.append("in", 0, key=f"k{i}".encode(), value=value)
    return world


def values_of(world: World, topic: str) -> list[bytes | None]:
    return [e.value for e in world.log(topic, 0) if not e.control]


def dlq_config(**retry: Any) -> ProcessorConfig:
    return ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic="dlq",
        retry=RetryPolicy(backoff_base=0.01, backoff_max=0.1, **retry),
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_objects_in_objects_out(seed: int) -> None:
    world = world_of(seed, [json.dumps({"n": i}).encode() for i in range(5)])
    metrics = InMemoryMetrics()
    handler = with_serde(doubled, value_deserializer=json_in, value_serializer=json_out)
    proc = processor(world, handler, metrics=metrics)
    drive(world, proc, lambda: metrics.count("records_done") == 5)
    assert values_of(world, "out") == [json.dumps({"n": 2 * i}).encode() for i in range(5)]
    assert [e.key for e in world.log("out", 0)] == [f"k{i}".encode() for i in range(5)]


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_a_value_that_fails_to_deserialize_is_dead_lettered_once(seed: int) -> None:
    values = [b'{"n": 1}', b"not json", b'{"n": 3}']
    world = world_of(seed, values)
    metrics = InMemoryMetrics()
    handler = with_serde(doubled, value_deserializer=json_in, value_serializer=json_out)
    proc = processor(world, handler, metrics=metrics, config=dlq_config(max_attempts=5))
    drive(world, proc, lambda: metrics.count("records_done") == 3)
    assert values_of(world, "out") == [b'{"n": 2}', b'{"n": 6}'], f"seed={seed}"
    [dead] = list(world.log("dlq", 0))
    headers = dict(dead.headers)
    assert dead.value == b"not json"
    error = (headers[ERROR_HEADER] or b"").decode()
    assert error.startswith("DeserializationError: value of in[0] offset 1 failed to deserialize")
    assert "JSONDecodeError" in error
    assert headers[ATTEMPTS_HEADER] == b"1", "a poison record is not retried"
    assert metrics.count("retries") == 0
    assert metrics.count("dead_letters") == 1


def test_without_a_dead_letter_topic_a_poison_record_stalls_not_crashes() -> None:
    world = world_of(6, [b"{bad", b'{"n": 2}'])
    metrics = InMemoryMetrics()
    handler = with_serde(doubled, value_deserializer=json_in, value_serializer=json_out)
    config = ProcessorConfig(poll_timeout=0.05, retry=RetryPolicy(backoff_max=0.2))
    proc = processor(world, handler, metrics=metrics, config=config)
    drive(world, proc, lambda: metrics.count("stalls") == 1)
    for _ in range(50):
        proc.step()
    assert proc.state is ProcessorState.RUNNING
    assert metrics.count("stalls") == 1
    assert world.committed("g", "in", 0).position in (None, 0)


def test_an_output_without_serializer_must_be_bytes() -> None:
    world = world_of(7, [b'{"n": 1}'])
    metrics = InMemoryMetrics()
    handler = with_serde(doubled, value_deserializer=json_in)  # no value_serializer
    proc = processor(world, handler, metrics=metrics, config=dlq_config())
    drive(world, proc, lambda: metrics.count("records_done") == 1)
    [dead] = list(world.log("dlq", 0))
    error = (dict(dead.headers)[ERROR_HEADER] or b"").decode()
    assert error == (
        "SerializationError: value of an output to 'out' is dict, not bytes, "
        "and with_serde has no value_serializer"
    )


def test_contexts_name_topic_field_and_headers_none_is_not_deserialized() -> None:
    seen: list[tuple[str, str, Any]] = []

    def spy_in(data: bytes | None, ctx: Any) -> Any:
        seen.append((ctx.topic, str(ctx.field), ctx.headers))
        return (data or b"").decode()

    def spy_out(obj: Any, ctx: Any) -> bytes:
        seen.append((ctx.topic, str(ctx.field), ctx.headers))
        return str(obj).encode()

    def handle(rec: Decoded) -> list[Message | Outbound]:
        assert (rec.topic, rec.partition, rec.offset) == ("in", 0, 4)
        return [
            Message("out", value=rec.value.upper(), key=rec.key, headers=(("h", b"1"),)),
            Outbound("raw", value=b"as is"),
        ]

    handler = with_serde(
        handle,
        key_deserializer=spy_in,
        value_deserializer=spy_in,
        key_serializer=spy_out,
        value_serializer=spy_out,
    )
    out = handler(Record("in", 0, 4, key=None, value=b"abc", headers=(("x", b"y"),)))
    assert out == [
        Outbound("out", value=b"ABC", key=None, headers=(("h", b"1"),)),
        Outbound("raw", value=b"as is"),
    ]
    # key None: neither deserialized nor serialized
    assert [(t, f.rsplit(".", 1)[-1].lower()) for t, f, _ in seen] == [
        ("in", "value"),
        ("out", "value"),
    ]
    assert seen[0][2] == [("x", b"y")]
    assert seen[1][2] == [("h", b"1")]


def test_errors_are_type_errors_the_default_policy_treats_as_fatal() -> None:
    policy = RetryPolicy()
    assert policy.is_fatal(DeserializationError("x"))
    assert policy.is_fatal(SerializationError("x"))
    handler = with_serde(doubled, key_deserializer=lambda d, c: int(d or b""))
    with pytest.raises(DeserializationError, match="key of in\\[0\\] offset 0") as info:
        handler(Record("in", 0, 0, key=b"zz", value=b"{}"))
    assert isinstance(info.value.__cause__, ValueError)


def test_context_stand_in_has_confluents_attributes() -> None:
    ctx = Context("t", "value", None)
    assert (ctx.topic, ctx.field, ctx.headers) == ("t", "value", None)


# -- confluent-kafka's JSON Schema serde, with its in-memory registry client ------------

SCHEMA = json.dumps(
    {
        "title": "Reading",
        "type": "object",
        "properties": {"sensor": {"type": "string"}, "celsius": {"type": "number"}},
        "required": ["sensor", "celsius"],
    }
)


def confluent_json() -> tuple[Any, Any]:
    pytest.importorskip("jsonschema", reason="confluent-kafka[json] is not installed")
    sr = pytest.importorskip("confluent_kafka.schema_registry")
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer

    # "mock://": confluent-kafka's own in-memory registry client (no Schema Registry here)
    registry = sr.SchemaRegistryClient.new_client({"url": "mock://"})
    return JSONSerializer(SCHEMA, registry), JSONDeserializer(SCHEMA)


def fahrenheit(rec: Decoded) -> list[Message]:
    value = rec.value
    return [Message("out", value={"sensor": value["sensor"], "celsius": value["celsius"] * 1.8})]


def test_confluent_json_schema_serde_on_the_simulator() -> None:
    serializer, deserializer = confluent_json()
    from confluent_kafka.serialization import MessageField, SerializationContext

    good = serializer(
        {"sensor": "a", "celsius": 10}, SerializationContext("in", MessageField.VALUE)
    )
    wrong_schema = good[:5] + b'{"sensor": "b"}'  # framed, but invalid against the schema
    world = world_of(8, [good, b'{"sensor": "c", "celsius": 1}', wrong_schema])
    metrics = InMemoryMetrics()
    handler = with_serde(fahrenheit, value_deserializer=deserializer, value_serializer=serializer)
    proc = processor(world, handler, metrics=metrics, config=dlq_config())
    drive(world, proc, lambda: metrics.count("records_done") == 3)
    [out] = values_of(world, "out")
    assert deserializer(out, SerializationContext("out", MessageField.VALUE)) == {
        "sensor": "a",
        "celsius": 18.0,
    }
    errors = [(dict(e.headers)[ERROR_HEADER] or b"").decode() for e in world.log("dlq", 0)]
    assert len(errors) == 2
    assert "offset 1 failed to deserialize: SerializationError" in errors[0]  # no magic byte
    assert "'celsius' is a required property" in errors[1]
    assert metrics.count("retries") == 0


def test_a_serializer_that_returns_no_bytes_is_a_serialization_error() -> None:
    handler = with_serde(
        lambda rec: [Message("out", value={"a": 1})],
        value_serializer=lambda obj, ctx: json.dumps(obj),  # type: ignore[arg-type]  # str, not bytes
    )
    with pytest.raises(SerializationError, match="the value serializer returned str, not bytes"):
        handler(Record("in", 0, 0, value=b"x"))
    failing = with_serde(
        lambda rec: [Message("out", key=object())],
        key_serializer=lambda obj, ctx: json.dumps(obj).encode(),
    )
    with pytest.raises(SerializationError, match="key of an output to 'out' failed to serialize"):
        failing(Record("in", 0, 0, value=b"x"))

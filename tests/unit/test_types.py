"""Value types validate at construction and name the offending field."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from offsetledger.core import (
    BrokerErrorInfo,
    CommitResult,
    CommittedPosition,
    DeliveryReport,
    Outbound,
    Record,
    StoredPosition,
    TopicPartition,
)
from tests.strategies import headers, topic_partitions

TP = TopicPartition("orders", 3)


# -- TopicPartition ---------------------------------------------------------------


def test_topic_partition_is_a_hashable_ordered_value() -> None:
    assert TopicPartition("a", 1) == TopicPartition("a", 1)
    assert len({TopicPartition("a", 1), TopicPartition("a", 1)}) == 1
    assert sorted([TopicPartition("b", 0), TopicPartition("a", 2), TopicPartition("a", 1)]) == [
        TopicPartition("a", 1),
        TopicPartition("a", 2),
        TopicPartition("b", 0),
    ]
    assert str(TP) == "orders[3]"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        TP.partition = 4  # type: ignore[misc]


@pytest.mark.parametrize("topic", ["", None, 7, b"orders"])
def test_topic_must_be_a_non_empty_string(topic: Any) -> None:
    with pytest.raises(ValueError, match=r"topic must be a non-empty string"):
        TopicPartition(topic, 0)


def test_partition_must_be_a_non_negative_int() -> None:
    with pytest.raises(ValueError, match=r"partition must be >= 0, got -1"):
        TopicPartition("orders", -1)
    with pytest.raises(TypeError, match=r"partition"):
        TopicPartition("orders", "0")  # type: ignore[arg-type]


@given(topic_partitions)
def test_topic_partitions_round_trip_through_evolve(tp: TopicPartition) -> None:
    assert attrs.evolve(tp) == tp
    assert str(tp) == f"{tp.topic}[{tp.partition}]"


# -- Record -----------------------------------------------------------------------


def test_record_defaults_and_tp() -> None:
    record = Record("orders", 3, 42)
    assert record.tp == TP
    assert (record.key, record.value, record.headers) == (None, None, ())
    assert record.timestamp_ms is None
    assert record.leader_epoch is None


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"offset": -1}, r"offset must be >= 0, got -1"),
        ({"partition": -2}, r"partition must be >= 0, got -2"),
        ({"topic": ""}, r"topic must be a non-empty string"),
    ],
)
def test_record_rejects_impossible_coordinates(kwargs: dict[str, Any], problem: str) -> None:
    base: dict[str, Any] = {"topic": "orders", "partition": 0, "offset": 0}
    with pytest.raises(ValueError, match=problem):
        Record(**(base | kwargs))


@pytest.mark.parametrize("field", ["key", "value"])
def test_record_key_and_value_must_be_bytes(field: str) -> None:
    kwargs: dict[str, Any] = {field: "text"}
    with pytest.raises(TypeError, match=rf"{field} must be bytes or None, got str"):
        Record("orders", 0, 0, **kwargs)


def test_record_headers_accept_pairs_or_a_mapping_and_keep_order() -> None:
    pairs = Record("t", 0, 0, headers=[("a", b"1"), ("b", None), ("a", b"2")])
    assert pairs.headers == (("a", b"1"), ("b", None), ("a", b"2"))
    assert pairs.header("a") == b"2"  # the last value wins
    assert pairs.header("b") is None
    assert pairs.header("missing") is None
    mapping = Record("t", 0, 0, headers={"x": b"y"})
    assert mapping.headers == (("x", b"y"),)


@pytest.mark.parametrize(
    ("bad", "error", "problem"),
    [
        ([(1, b"v")], TypeError, r"header name must be str, got 1"),
        ([("h", "text")], TypeError, r"header 'h' value must be bytes or None, got str"),
        ({"h": 5}, TypeError, r"header 'h' value must be bytes or None, got int"),
        ([("only-a-name",)], ValueError, r"not enough values to unpack"),
    ],
)
def test_record_rejects_wrong_header_types(bad: Any, error: type[Exception], problem: str) -> None:
    with pytest.raises(error, match=problem):
        Record("t", 0, 0, headers=bad)


@given(headers)
def test_valid_headers_are_kept_verbatim(hs: list[tuple[str, bytes | None]]) -> None:
    assert Record("t", 0, 0, headers=hs).headers == tuple(hs)


# -- Outbound, DeliveryReport ------------------------------------------------------


def test_outbound_validates() -> None:
    out = Outbound("out", b"v", b"k", [("h", b"1")], partition=2)
    assert out.headers == (("h", b"1"),)
    with pytest.raises(ValueError, match=r"topic must be a non-empty string"):
        Outbound("")
    with pytest.raises(ValueError, match=r"partition must be >= 0, got -1"):
        Outbound("out", partition=-1)
    with pytest.raises(TypeError, match=r"value must be bytes or None, got str"):
        Outbound("out", value="v")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"key must be bytes or None, got int"):
        Outbound("out", key=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"header name must be str"):
        Outbound("out", headers=[(b"h", b"1")])  # type: ignore[list-item]


def test_delivery_report_ok_only_without_error() -> None:
    msg = Outbound("out", b"v")
    assert DeliveryReport(msg, partition=0, offset=5).ok
    failed = DeliveryReport(msg, BrokerErrorInfo("MSG_TIMED_OUT", "no ack", retriable=True))
    assert not failed.ok
    assert str(failed.error) == "MSG_TIMED_OUT: no ack"
    assert str(BrokerErrorInfo("X")) == "X"


# -- positions --------------------------------------------------------------------


def test_positions_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match=r"position must be >= 0, got -1"):
        StoredPosition(TP, -1)
    with pytest.raises(ValueError, match=r"position must be >= 0, got -5"):
        CommittedPosition(TP, -5)


def test_position_values() -> None:
    assert StoredPosition(TP, 0).metadata is None
    assert CommittedPosition(TP).position is None  # nothing committed yet
    assert CommittedPosition(TP, 7, "m", 2) == CommittedPosition(TP, 7, "m", 2)
    assert CommitResult(TP, 7).ok
    assert not CommitResult(TP, 7, BrokerErrorInfo("REBALANCE_IN_PROGRESS")).ok


@given(st.integers(min_value=0, max_value=2**63))
def test_any_non_negative_position_is_accepted(position: int) -> None:
    assert StoredPosition(TP, position).position == position

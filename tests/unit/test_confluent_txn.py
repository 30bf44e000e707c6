"""ConfluentTransactionalProducer without a broker: error mapping, config checks,
the bounded send_offsets_to_transaction (librdkafka#5456)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent import (
    ConfluentTransactionalProducer,
    transaction_error,
    validate_transactional_config,
)
from offsetledger.core import StoredPosition, TopicPartition, TransactionError
from offsetledger.core._errors import ConfigError


class _Err:
    def __init__(self, *, fatal: bool = False, abort: bool = False, retry: bool = False) -> None:
        self._f, self._a, self._r = fatal, abort, retry

    def name(self) -> str:
        return "SOME_ERROR"

    def code(self) -> int:
        return 1

    def str(self) -> str:
        return "text"

    def fatal(self) -> bool:
        return self._f

    def txn_requires_abort(self) -> bool:
        return self._a

    def retriable(self) -> bool:
        return self._r


def test_error_mapping_in_order_fatal_abortable_retriable() -> None:
    assert transaction_error(Exception(_Err(fatal=True, abort=True)), "x").fatal
    assert transaction_error(Exception(_Err(abort=True, retry=True)), "x").abortable
    assert transaction_error(Exception(_Err(retry=True)), "x").retriable
    assert transaction_error(Exception(_Err()), "x").fatal  # unknown state: restart
    assert transaction_error(RuntimeError("boom"), "x").fatal


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({}, "transactional.id"),
        ({"transactional.id": ""}, "transactional.id"),
        ({"transactional.id": 5}, "transactional.id"),
        ({"transactional.id": "t", "enable.idempotence": False}, "enable.idempotence"),
    ],
)
def test_config_rejected(config: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_transactional_config(config)
    assert info.value.key == key


def test_send_offsets_is_bounded_and_blocks_commit_until_abort() -> None:
    release = threading.Event()

    class Blocking:
        def send_offsets_to_transaction(self, *_a: Any) -> None:
            release.wait(10)

        def commit_transaction(self, _t: float) -> None:
            raise AssertionError("commit must be refused")

        def abort_transaction(self, _t: float) -> None:
            return None

    import confluent_kafka

    p = object.__new__(ConfluentTransactionalProducer)
    p._producer = Blocking()  # type: ignore[assignment]
    p._tp_class = confluent_kafka.TopicPartition
    p._abandoned = None
    p._kafka_exception = confluent_kafka.KafkaException
    p._local = __import__("collections").deque()
    with pytest.raises(TransactionError) as info:
        p.send_offsets_to_transaction([StoredPosition(TopicPartition("t", 0), 1)], object(), 0.1)
    assert info.value.retriable
    with pytest.raises(TransactionError) as info:
        p.commit_transaction(1)
    assert info.value.abortable
    release.set()
    p.abort_transaction(5)

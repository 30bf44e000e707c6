"""tools/kafka/broker.py itself: the cluster ids it generates are always usable, and
``restart`` brings a killed broker back on the same port with its data."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.kafka_broker import load_broker_module

broker = load_broker_module()


def test_cluster_id_never_starts_with_a_dash() -> None:
    # 0xF8 as the first byte encodes to "-" in URL-safe base64 (index 62): the storage
    # tool's parser took such an id for an option and `up` failed (1 start in 64)
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    plain = uuid.UUID(bytes=bytes([0x10]) + bytes(15))
    drawn = iter([dashed, dashed, plain])
    cid = broker._cluster_id(lambda: next(drawn))
    assert not cid.startswith("-")
    assert cid == broker._cluster_id(lambda: plain)
    assert next(drawn, None) is None  # both dashed ids were drawn and rejected


def test_generated_cluster_ids_have_kafkas_form() -> None:
    for _ in range(2000):
        cid = broker._cluster_id()
        assert len(cid) == 22, cid
        assert not cid.startswith("-"), cid


def test_restart_without_a_broker_set_up_says_so(tmp_path: Path) -> None:
    with pytest.raises(broker.BrokerError, match="run `up` first"):
        broker.restart(tmp_path / "none")


@pytest.mark.kafka
def test_restart_after_kill_keeps_port_and_data(tmp_path: Path) -> None:
    ok, why = broker.can_start()
    if not ok:
        if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
            pytest.fail(f"cannot start a broker: {why}")
        pytest.skip(why)
    from offsetledger.adapters.confluent import ConfluentProducer
    from offsetledger.adapters.confluent_admin import create_topics, read_topic
    from offsetledger.core import Outbound

    d = tmp_path / "kafka"
    bootstrap = broker.up(d)
    try:
        create_topics(bootstrap, {"kept": 1})
        with ConfluentProducer({"bootstrap.servers": bootstrap}) as producer:
            reports: list[object] = []
            producer.produce(Outbound("kept", value=b"before"), reports.append)
            assert producer.flush(30) == 0
            assert len(reports) == 1
        pid = int((d / "broker.pid").read_text())
        assert broker.kill(d)
        assert not broker.answers(bootstrap, timeout=1.0)
        again = broker.restart(d)
        assert again == bootstrap
        assert int((d / "broker.pid").read_text()) != pid
        assert [r.value for r in read_topic(bootstrap, "kept", timeout=30)] == [b"before"]
    finally:
        broker.down(d)

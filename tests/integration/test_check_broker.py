"""`offsetledger check --bootstrap` and `check_broker` on a real broker: what the
topics and the group's committed positions say after a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
    import confluent_kafka
else:
    confluent_kafka = pytest.importorskip("confluent_kafka")

from offsetledger.adapters.confluent_admin import create_topics
from offsetledger.checker import AnomalyKind, check_broker
from offsetledger.history import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC

pytestmark = pytest.mark.kafka


def _run(bootstrap: str, *, outputs_for: range, committed: int) -> tuple[str, str, str]:
    """Topics ``in`` (5 records) and ``out`` (outputs for ``outputs_for``) and a group
    that committed position ``committed`` on ``in``."""
    tag = uuid.uuid4().hex[:10]
    t_in, t_out, group = f"chk-{tag}-in", f"chk-{tag}-out", f"chk-{tag}-g"
    create_topics(bootstrap, {t_in: 1, t_out: 1})
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap})
    for i in range(5):
        producer.produce(t_in, value=b"v%d" % i, partition=0)
    for i in outputs_for:
        headers: list[tuple[str, str | bytes | None]] = [
            (SOURCE_TOPIC, t_in.encode()),
            (SOURCE_PARTITION, b"0"),
            (SOURCE_OFFSET, str(i).encode()),
        ]
        producer.produce(t_out, value=b"V%d" % i, partition=0, headers=headers)
    assert producer.flush(10) == 0
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(
            offsets=[confluent_kafka.TopicPartition(t_in, 0, committed)], asynchronous=False
        )
    finally:
        consumer.close()
    return t_in, t_out, group


def test_check_broker_clean_and_lost(kafka_bootstrap: str) -> None:
    t_in, t_out, group = _run(kafka_bootstrap, outputs_for=range(5), committed=5)
    report = check_broker(kafka_bootstrap, inputs=[t_in], outputs=[t_out], group=group)
    assert report.ok, report.summary()
    assert (report.stats.inputs, report.stats.acknowledged) == (5, 5)

    t_in, t_out, group = _run(kafka_bootstrap, outputs_for=range(4), committed=5)
    report = check_broker(kafka_bootstrap, inputs=[t_in], outputs=[t_out], group=group)
    kinds = {a.kind for a in report.anomalies}
    assert AnomalyKind.LOST in kinds
    assert AnomalyKind.COMMIT_PAST_UNFINISHED in kinds
    assert {a.offset for a in report.of(AnomalyKind.LOST)} == {4}


def test_cli_check_bootstrap(kafka_bootstrap: str) -> None:
    t_in, t_out, group = _run(kafka_bootstrap, outputs_for=range(3), committed=3)

    def cli(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "offsetledger.cli", "check", "--bootstrap", kafka_bootstrap,
             "--inputs", t_in, "--outputs", t_out, "--group", group, *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    drained = cli("--json")
    assert drained.returncode == 1, drained.stderr  # 3 and 4 have no output: lost
    data = json.loads(drained.stdout)
    assert data["counts"] == {"lost": 2}
    assert data["source"] == "topics"
    undrained = cli("--not-drained")
    assert undrained.returncode == 0, undrained.stdout + undrained.stderr
    missing_group = subprocess.run(
        [sys.executable, "-m", "offsetledger.cli", "check", "--bootstrap", kafka_bootstrap,
         "--inputs", t_in, "--outputs", t_out],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing_group.returncode == 2
    assert "--group is required" in missing_group.stderr

"""Chaos on the real broker: 50,000 records, 3 worker processes, 10 SIGKILLs spread
over the processing (each followed by a restart); the broker's contents must show
no loss and no anomaly other than duplicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from offsetledger.chaos import ChaosResult, Kill, run_chaos
from offsetledger.checker import AnomalyKind, check_topics
from offsetledger.core import Record, TopicPartition
from offsetledger.history import SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC
from tests.kafka_broker import load_broker_module

RECORDS = 50_000
WORKERS = 3
KILLS = 10
SEED = int(os.environ.get("OFFSETLEDGER_CHAOS_SEED", "0"))


def test_chaos_module_imports_without_confluent_kafka() -> None:
    code = (
        "import sys; sys.modules['confluent_kafka'] = None\n"
        "import offsetledger.chaos as c\n"
        "assert callable(c.run_chaos)\n"
        "assert 'confluent_kafka' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.kafka
def test_sigkilled_workers_lose_nothing(kafka_bootstrap: str) -> None:
    pytest.importorskip("confluent_kafka")

    lines: list[str] = []
    started = time.monotonic()
    result = run_chaos(
        kafka_bootstrap,
        records=RECORDS,
        workers=WORKERS,
        kills=KILLS,
        partitions=6,
        seed=SEED,
        progress=lines.append,
    )
    elapsed = time.monotonic() - started
    print(f"\n{result.summary()}\n(measured {elapsed:.1f} s; seed {result.seed})")

    assert result.records == RECORDS
    assert result.kills >= KILLS
    assert result.kills_in_flight >= KILLS, [k.to_dict() for k in result.kill_log]
    assert result.completed, result.summary()
    assert result.lost == 0, result.summary()
    other = [a for a in result.report.anomalies if a.kind is not AnomalyKind.UNEXPLAINED_DUPLICATE]
    assert other == [], result.summary()
    assert result.ok
    assert result.report.stats.acknowledged == RECORDS
    assert result.outputs == RECORDS + result.duplicates
    json.dumps(result.to_dict())  # serialisable for the CLI
    assert any(line.startswith(f"kill {KILLS}/{KILLS}") for line in lines)


def _result(inputs: int, outputs: int, *, completed: bool = True) -> ChaosResult:
    """A ChaosResult over synthetic broker contents: ``inputs`` inputs in one
    partition, the first ``outputs`` of them with an output."""
    source = [Record("in", 0, i, value=f"v{i}".encode()) for i in range(inputs)]
    sink = [
        Record(
            "out",
            0,
            i,
            value=b"out:" + (r.value or b""),
            headers=[
                (SOURCE_TOPIC, b"in"),
                (SOURCE_PARTITION, b"0"),
                (SOURCE_OFFSET, str(r.offset).encode()),
            ],
        )
        for i, r in enumerate(source[:outputs])
    ]
    report = check_topics(source, sink, {TopicPartition("in", 0): outputs}, group="g")
    return ChaosResult(
        records=inputs,
        kills=1,
        lost=report.stats.lost,
        duplicates=report.stats.duplicates,
        outputs=report.stats.outputs,
        wall_seconds=1.0,
        report=report,
        seed=7,
        workers=1,
        partitions=1,
        protocol="classic",
        completed=completed,
        input_topic="in",
        output_topic="out",
        group="g",
        kill_log=(Kill(at=0.5, worker=0, incarnation=1, pid=1, worker_done=3, lag=2),),
        log_tails={"worker-0": "last words"},
        log_dir="/tmp/logs",
    )


def test_chaos_result_verdict_and_texts() -> None:
    good = _result(5, 5)
    assert good.ok
    assert good.kills_in_flight == 1
    assert "OK (seed 7" in good.summary()
    assert "last words" not in good.summary()
    assert json.loads(json.dumps(good.to_dict()))["ok"] is True

    lossy = _result(5, 3)
    assert lossy.lost == 2
    assert not lossy.ok
    assert lossy.anomalies_besides_duplicates == ("lost",)
    text = lossy.summary()
    assert "FAILED" in text
    assert "last words" in text
    assert "/tmp/logs" in text

    unfinished = _result(5, 5, completed=False)
    assert not unfinished.ok
    assert "did not commit every input" in unfinished.summary()


def _own_broker_dir(tmp_path: Path) -> Path:
    """A broker of this test's own (never the shared one: it gets killed)."""
    broker = load_broker_module()
    ok, why = broker.can_start()
    if not ok:
        if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
            pytest.fail(f"cannot start a broker of its own: {why}")
        pytest.skip(why)
    return tmp_path / "kafka"


def _assert_nothing_lost(result: ChaosResult, records: int) -> None:
    print(f"\n{result.summary()}")
    assert result.completed, result.summary()
    assert result.lost == 0, result.summary()
    other = [a for a in result.report.anomalies if a.kind is not AnomalyKind.UNEXPLAINED_DUPLICATE]
    assert other == [], result.summary()
    assert result.ok
    assert result.report.stats.acknowledged == records
    assert result.outputs == records + result.duplicates


@pytest.mark.kafka
def test_broker_killed_and_restarted_mid_run_loses_nothing(tmp_path: Path) -> None:
    """The broker itself SIGKILLed twice mid-run and restarted on the same port and
    data (broker.py restart); the workers are not restarted and must recover.
    Interleaved with one worker kill."""
    pytest.importorskip("confluent_kafka")
    broker = load_broker_module()
    d = _own_broker_dir(tmp_path)
    bootstrap = broker.up(d)
    restarts: list[str] = []

    def bounce() -> None:
        restarts.append(broker.restart(d, kill_first=True))

    try:
        records = 6000
        result = run_chaos(
            bootstrap,
            records=records,
            workers=2,
            kills=1,
            broker_restarts=2,
            restart_broker=bounce,
            partitions=4,
            seed=SEED,
        )
    finally:
        broker.down(d)
    assert restarts == [bootstrap, bootstrap]
    assert [k.kind for k in result.kill_log].count("broker") == 2
    _assert_nothing_lost(result, records)


@pytest.mark.kafka
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_zombie_member_loses_nothing(kafka_bootstrap: str, protocol: str) -> None:
    """A worker SIGSTOPped past its session timeout (the group moves its partitions
    to the others), then SIGCONT: not restarted, it finds out it was evicted; its
    late commits are rejected or harmless (the checker sees no unsafe commit)."""
    pytest.importorskip("confluent_kafka")
    records = 6000
    result = run_chaos(
        kafka_bootstrap,
        records=records,
        workers=3,
        kills=0,
        zombies=2,
        partitions=6,
        seed=SEED,
        protocol=protocol,  # type: ignore[arg-type]
    )
    assert [k.kind for k in result.kill_log] == ["zombie", "zombie"]
    assert result.kills_in_flight >= 1, [k.to_dict() for k in result.kill_log]
    _assert_nothing_lost(result, records)


def test_fault_schedule_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="needs restart_broker"):
        run_chaos("127.0.0.1:1", records=1, broker_restarts=1)
    with pytest.raises(ValueError, match="must be >= 0"):
        run_chaos("127.0.0.1:1", records=1, zombies=-1)


@pytest.mark.kafka
def test_hand_loop_baseline_loses_nothing(kafka_bootstrap: str) -> None:
    """The hand-written loop the Processor's duplicates per kill are compared with
    is itself sound (else the comparison means nothing)."""
    pytest.importorskip("confluent_kafka")
    records = 3000
    result = run_chaos(
        kafka_bootstrap, records=records, workers=2, kills=2, partitions=4, seed=SEED, loop="hand"
    )
    _assert_nothing_lost(result, records)


@pytest.mark.kafka
def test_static_members_sigkilled_and_restarted_lose_nothing(kafka_bootstrap: str) -> None:
    """Static membership (group.instance.id per worker slot), classic protocol: a
    SIGKILLed worker restarts under the same instance id and takes its partitions
    back. (Under KIP-848 the restart is refused, fatally, with
    UNRELEASED_INSTANCE_ID until the broker's session timeout removes the killed
    member — 45 s by default; this run found that, and the simulator models it:
    tests/simulator/test_kip848.py.)"""
    pytest.importorskip("confluent_kafka")
    records = 3000
    result = run_chaos(
        kafka_bootstrap,
        records=records,
        workers=2,
        kills=2,
        partitions=4,
        seed=SEED,
        static=True,
    )
    assert [k.kind for k in result.kill_log].count("kill") == 2, result.kill_log
    _assert_nothing_lost(result, records)

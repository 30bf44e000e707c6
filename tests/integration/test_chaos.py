"""Chaos on the real broker: 50,000 records, 3 worker processes, 10 SIGKILLs spread
over the processing (each followed by a restart); the broker's contents must show
no loss and no anomaly other than duplicates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from offsetledger.checker import AnomalyKind

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
    from offsetledger.chaos import run_chaos

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

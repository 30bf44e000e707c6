"""Chaos on the real broker with an async handler (awaiting 1-20 ms per record):
worker processes SIGKILLed and restarted by the harness of ``offsetledger.chaos``;
nothing may be lost. The harness starts ``python -m offsetledger.chaos worker``;
here ``sys.executable`` is, for the run, a wrapper that starts
``tests/aio/chaos_async_worker.py`` with the same arguments instead."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from offsetledger.chaos import run_chaos

RECORDS = int(os.environ.get("OFFSETLEDGER_ASYNC_CHAOS_RECORDS", "20000"))
SEED = int(os.environ.get("OFFSETLEDGER_CHAOS_SEED", "0"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.kafka
@pytest.mark.slow
def test_sigkilled_async_workers_lose_nothing(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("confluent_kafka")
    wrapper = tmp_path / "python-async-worker"
    worker = ROOT / "tests" / "aio" / "chaos_async_worker.py"
    # the harness runs: <python> -m offsetledger.chaos worker ARGS...; drop "-m offsetledger.chaos"
    wrapper.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{worker}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    )
    lines: list[str] = []
    result = run_chaos(
        kafka_bootstrap,
        records=RECORDS,
        workers=3,
        kills=6,
        partitions=6,
        seed=SEED,
        max_in_flight=200,
        progress=lines.append,
    )
    print(f"\n{result.summary()}\n(seed {result.seed})")
    assert result.kills >= 6, "\n".join(lines[-20:])
    assert result.lost == 0, f"seed={SEED}: {result.summary()}"
    assert result.ok, f"seed={SEED}: {result.summary()}"

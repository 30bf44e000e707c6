"""A chaos worker (re)started while the broker is down waits for it: the chaos
broker-bounce flake was a worker restarted during a broker restart failing the
adapter's 10 s connect check in its consumer's constructor and dying."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import pytest

from offsetledger.chaos import WORKER_CONNECT_TIMEOUT, run_worker
from tests.kafka_broker import load_broker_module


def _own_broker_dir(tmp_path: Path) -> Path:
    """A broker of this test's own (never the shared one: it is killed)."""
    broker = load_broker_module()
    ok, why = broker.can_start()
    if not ok:
        if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
            pytest.fail(f"cannot start a broker of its own: {why}")
        pytest.skip(why)
    return tmp_path / "kafka"


def _done(progress: Path) -> int:
    try:
        return int(json.loads(progress.read_text()).get("records_done", 0))
    except (OSError, ValueError):
        return 0


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_started_while_the_broker_is_down_waits_for_it(tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    from offsetledger.adapters.confluent import ConfluentProducer
    from offsetledger.adapters.confluent._admin import create_topics
    from offsetledger.adapters.confluent._errors import DEFAULT_CONNECT_TIMEOUT
    from offsetledger.core import Outbound

    assert WORKER_CONNECT_TIMEOUT > 10 * DEFAULT_CONNECT_TIMEOUT
    broker = load_broker_module()
    d = _own_broker_dir(tmp_path)
    bootstrap = broker.up(d)
    run = uuid.uuid4().hex[:8]
    inputs, outputs = f"in-{run}", f"out-{run}"
    records = 50
    stop = threading.Event()
    failure: list[BaseException] = []
    progress = tmp_path / "progress.json"
    try:
        create_topics(bootstrap, {inputs: 2, outputs: 2})
        producer = ConfluentProducer({"bootstrap.servers": bootstrap})
        try:
            failed: list[object] = []
            producer.produce_many(
                [Outbound(inputs, key=b"%d" % i, value=b"v") for i in range(records)],
                lambda _i, error: failed.append(error) if error is not None else None,
            )
            assert producer.flush(30.0) == 0
            assert failed == []
        finally:
            producer.close(5.0)
        assert broker.kill(d)

        def work() -> None:
            try:
                run_worker(
                    bootstrap=bootstrap,
                    input_topic=inputs,
                    output_topic=outputs,
                    group=f"g-{run}",
                    progress=progress,
                    name="w0",
                    stop=stop,
                )
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=work, name="chaos-worker", daemon=True)
        worker.start()
        # longer than the adapter's default connect check: the worker must still wait
        time.sleep(DEFAULT_CONNECT_TIMEOUT + 3.0)
        assert worker.is_alive(), f"the worker gave up while the broker was down: {failure}"
        assert failure == []
        assert broker.restart(d) == bootstrap
        deadline = time.monotonic() + 120.0
        while _done(progress) < records and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.5)
        assert failure == [], failure
        assert _done(progress) >= records, (
            f"the worker finished {_done(progress)} of {records} inputs after the broker came back"
        )
    finally:
        stop.set()
        if "worker" in locals():
            worker.join(60.0)
        broker.down(d)
    assert failure == [], failure

"""A chaos worker whose handler is ``async def`` (awaits 1-20 ms per record).

``offsetledger.chaos`` starts its workers as ``python -m offsetledger.chaos worker
...`` with a fixed sync handler; this module is started in its place (see
``test_async_chaos.py``) with the same arguments, swaps the harness's ``run_worker``
for :func:`run_async_worker` and hands over to the harness's own entry point, so
signals, progress files and the driver's checks are the harness's."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Literal

from offsetledger import chaos


def run_async_worker(
    *,
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    protocol: Literal["classic", "consumer"] = "classic",
    work_ms: float = 0.0,
    max_in_flight: int = 64,
    progress: Path | None = None,
    name: str | None = None,
    connect_timeout: float = chaos.WORKER_CONNECT_TIMEOUT,
    stop: threading.Event | None = None,
    auto_commit_ms: int = 1000,
    static: bool = False,
) -> dict[str, int]:
    """:func:`offsetledger.chaos.run_worker` with an async handler: each record
    awaits a uniform 1-20 ms (``work_ms`` is ignored), on the runner's own loop."""
    from offsetledger.adapters.confluent import (
        ConfluentConsumer,
        ConfluentProducer,
    )
    from offsetledger.core import Outbound, Record
    from offsetledger.runtime import (
        InMemoryMetrics,
        OrderingMode,
        Processor,
        ProcessorConfig,
    )
    from offsetledger.runtime._runners.aio import AsyncLoop

    stop_event = stop if stop is not None else threading.Event()
    rng = random.Random(f"{name}-{os.getpid()}")

    async def handler(record: Record) -> list[Outbound]:
        await asyncio.sleep(rng.uniform(0.001, 0.020))
        return [
            Outbound(
                output_topic, key=record.key, value=chaos._OUTPUT_PREFIX + (record.value or b"")
            )
        ]

    metrics = InMemoryMetrics()
    config = chaos._consumer_config(bootstrap, group, protocol, name, static)
    config["auto.commit.interval.ms"] = auto_commit_ms
    consumer = ConfluentConsumer(config, connect_timeout=connect_timeout)
    producer = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5}, connect_timeout=connect_timeout
    )
    processor = Processor(
        consumer,
        producer,
        handler,
        topics=[input_topic],
        executor=AsyncLoop(max_concurrency=max_in_flight),
        config=ProcessorConfig(
            ordering=OrderingMode.KEY,
            max_in_flight_total=max_in_flight,
            max_in_flight_per_partition=max_in_flight,
            poll_timeout=0.05,
            drain_timeout=5.0,
            shutdown_timeout=10.0,
        ),
        metrics=metrics,
    )

    def counters() -> dict[str, int]:
        names = ("records_in", "records_done", "records_out", "skipped_duplicates", "abandoned")
        return {n: metrics.count(n) for n in names} | {"pid": os.getpid()}

    next_report = 0.0
    try:
        while not stop_event.is_set():
            processor.step()
            now = time.monotonic()
            if now >= next_report:
                next_report = now + 0.25
                chaos._write_progress(progress, counters())
    finally:
        processor.stop()
        producer.close(5.0)
    final = counters()
    chaos._write_progress(progress, final | {"stopped": 1})
    return final


if __name__ == "__main__":
    chaos.run_worker = run_async_worker
    sys.exit(chaos.main(sys.argv[1:]))

"""Async handlers on a real Kafka broker: I/O-bound work hidden by concurrency.

One pre-filled input topic (``--records`` records, 100-byte values, keys ``k0`` ..
``k{keys-1}``, each key on one of ``--partitions`` partitions), ``KEY`` ordering (one
record of a key at a time, delivery included), one output per input to a fresh
topic, a fresh consumer group per run, at-least-once (auto-commit of stored
positions). Every contender runs ``ProcessorConfig(ordering=OrderingMode.KEY)`` and
nothing else: the defaults, as README.md's example leaves them (in flight at most
4000 records, 1000 per partition; lineage headers on). Contenders, interleaved
round-robin within one invocation (the default set: ``noop,async,pool8,pool64``):

* ``noop``: the same pipeline with a no-op handler (returns the output at once),
  run inline (the fastest runner for it): the ceiling.
* ``async``: ``async def`` handler awaiting ``asyncio.sleep(--sleep)`` (a stand-in
  for an HTTP call), on the asyncio runner at its default concurrency
  (``AsyncLoop()``: its loop driven on the Processor's thread; its cap of 1000 live
  tasks is the bound that binds).
* ``async-thread``: the same, the runner's loop on a thread of its own
  (``AsyncLoop(in_thread=True)``).
* ``async-app``: the same inside an application's loop: ``await run_async(p)`` with
  ``AsyncLoop.current()`` (the Processor on its own thread, the coroutines on the
  application's loop).
* ``async-uvloop``: ``async``, on a uvloop loop (``AsyncLoop(uvloop.new_event_loop())``;
  uvloop is not a dependency: install it to run this contender).
* ``pool8`` / ``pool64``: a plain handler ``time.sleep(--sleep)`` on
  ``ThreadPoolExecutorAdapter(8 / 64)`` (the workers are the bound that binds).
* ``pool8-scan`` / ``pool64-scan``: the same pool behind a user's own
  :class:`~offsetledger.core.Executor` wrapper (``submit``/``wait``/``shutdown``
  only), so the runtime's generic runner waits with ``Executor.wait`` over every
  running future: what the pool itself did before it got its own event-woken runner.

Timing: from the first handler call to the moment the last input is finished (its
output acknowledged), both seen in process (``time.monotonic``); the shutdown after
it is not timed. The ratio column is against ``noop`` of the same round.

``--aio-compare`` also measures confluent-kafka's own asyncio consumer
(``confluent_kafka.aio.AIOConsumer``) against the sync consumer the runtime uses:
the cost of one consumer call (``assignment()``) awaited through AIOConsumer's
executor hop vs. called directly, and reading the whole input topic with
``consume(500)`` both ways.

Run::

    export KAFKA_BOOTSTRAP_SERVERS=$(cat /work/main/.kafka/bootstrap)
    .venv/bin/python benchmarks/bench_async_kafka.py --records 200000 --runs 3

The loop placements and the AIOConsumer comparison: ``--contenders
noop,async,async-thread,async-app --aio-compare``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

VALUE_SIZE = 100
PRODUCER_SETTINGS = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
CONTENDERS = (
    "noop",
    "async",
    "async-thread",
    "async-app",
    "async-uvloop",
    "pool8",
    "pool64",
    "pool8-scan",
    "pool64-scan",
)
DEFAULT_CONTENDERS = ("noop", "async", "pool8", "pool64")


class _Wrapped:
    """A user's own Executor over the pool: no ``make_runner``, so the runtime's
    generic runner (``Executor.wait`` over every running future) serves it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.max_workers = pool.max_workers

    def submit(self, task: Any) -> Any:
        return self._pool.submit(task)

    def wait(self, futures: Any, timeout: float) -> None:
        self._pool.wait(futures, timeout)

    def shutdown(self, *, cancel_pending: bool = False) -> None:
        self._pool.shutdown(cancel_pending=cancel_pending)


def fill_input(bootstrap: str, topic: str, records: int, keys: int, partitions: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 50, "acks": "all", "batch.size": 1_000_000}
    )
    for i in range(records):
        k = i % keys
        value = (b"record-%09d-" % i).ljust(VALUE_SIZE, b"x")
        while True:
            try:
                producer.produce(topic, value, b"k%d" % k, partition=k % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError("input records not delivered")


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for f in futures.values():
        f.result(30)


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.delete_topics(names).values():
        with contextlib.suppress(Exception):  # best effort clean-up
            f.result(30)


class _Done:
    """ProcessingObserver counting finished records; notes first/last times."""

    def __init__(self, records: int, on_all: Callable[[], None]) -> None:
        self.records = records
        self.done = 0
        self.t_first: float | None = None
        self.t_last: float | None = None
        self._on_all = on_all

    def started(self) -> None:
        if self.t_first is None:
            self.t_first = time.monotonic()

    def record_done(self, record: Any, outputs: int, dead_lettered: bool) -> None:
        self.done += 1
        if self.done == self.records:
            self.t_last = time.monotonic()
            self._on_all()


def one_run(  # noqa: PLR0917 - a benchmark's run, called in one place
    contender: str, bootstrap: str, in_topic: str, records: int, sleep: float, partitions: int
) -> dict[str, Any]:
    from offsetledger.adapters.confluent import (
        ConfluentConsumer,
        ConfluentProducer,
    )
    from offsetledger.core import Outbound, Record
    from offsetledger.runtime import (
        InlineExecutor,
        NullMetrics,
        OrderingMode,
        Processor,
        ProcessorConfig,
        ThreadPoolExecutorAdapter,
    )
    from offsetledger.runtime._aio import run_async
    from offsetledger.runtime._runners.aio import AsyncLoop

    out_topic = f"bench-async-out-{uuid.uuid4().hex[:8]}"
    group = f"bench-async-{contender}-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [out_topic], partitions)
    processor: Processor | None = None

    def stop() -> None:
        assert processor is not None
        processor.stop()

    done = _Done(records, stop)

    def noop(record: Record) -> list[Outbound]:
        done.started()
        return [Outbound(out_topic, value=record.value, key=record.key)]

    def blocking(record: Record) -> list[Outbound]:
        done.started()
        time.sleep(sleep)
        return [Outbound(out_topic, value=record.value, key=record.key)]

    async def awaiting(record: Record) -> list[Outbound]:
        done.started()
        await asyncio.sleep(sleep)
        return [Outbound(out_topic, value=record.value, key=record.key)]

    # the defaults, as README.md's example leaves them: only the ordering is chosen
    # (in flight 4000 in total, 1000 per partition; buffers 10,000 / 50,000; lineage
    # headers on); every contender the same
    config = ProcessorConfig(ordering=OrderingMode.KEY)
    consumer = ConfluentConsumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
            "enable.auto.commit": True,
        }
    )
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, **PRODUCER_SETTINGS})

    def build(handler: Any, executor: Any) -> Processor:
        return Processor(
            consumer,
            producer,
            handler,
            topics=[in_topic],
            executor=executor,
            config=config,
            metrics=NullMetrics(),
            observer=done,
        )

    cpu0 = time.process_time()
    pool: Any = None
    if contender == "async-app":

        async def app() -> None:
            nonlocal processor
            processor = build(awaiting, AsyncLoop.current())
            await run_async(processor)

        asyncio.run(app())
    else:
        if contender == "noop":
            processor = build(noop, InlineExecutor())
        elif contender == "async":
            processor = build(awaiting, AsyncLoop())
        elif contender == "async-uvloop":
            # optional (not a project dependency): imported by name, so type checks
            # pass where it is not installed
            uvloop = importlib.import_module("uvloop")
            processor = build(awaiting, AsyncLoop(uvloop.new_event_loop()))
        elif contender == "async-thread":
            processor = build(awaiting, AsyncLoop(in_thread=True))
        else:
            workers = int(contender.removeprefix("pool").removesuffix("-scan"))
            pool = ThreadPoolExecutorAdapter(workers)
            executor = _Wrapped(pool) if contender.endswith("-scan") else pool
            processor = build(blocking, executor)
        processor.run()
    cpu = time.process_time() - cpu0
    producer.close(30)
    if pool is not None:
        pool.shutdown()
    delete_topics(bootstrap, [out_topic])
    if done.t_first is None or done.t_last is None:
        raise RuntimeError(f"{contender}: {done.done} of {records} records finished")
    seconds = done.t_last - done.t_first
    return {
        "contender": contender,
        "seconds": seconds,
        "records_per_s": records / seconds,
        "cpu_s": cpu,
    }


def aio_compare(bootstrap: str, in_topic: str, records: int) -> dict[str, float]:
    """AIOConsumer vs the sync Consumer: per-call cost and a full read of the topic."""
    from confluent_kafka import Consumer
    from confluent_kafka.aio import AIOConsumer

    def conf() -> dict[str, Any]:
        return {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-aio-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }

    calls = 2000
    sync = Consumer(conf())
    sync.subscribe([in_topic])
    t0 = time.perf_counter()
    for _ in range(calls):
        sync.assignment()
    sync_call_us = (time.perf_counter() - t0) / calls * 1e6
    t0 = time.perf_counter()
    seen = 0
    first: float | None = None
    while seen < records:
        batch = sync.consume(500, 1.0)
        if batch and first is None:
            first = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    sync_read = time.perf_counter() - (first or t0)
    sync.close()

    async def aio() -> tuple[float, float]:
        consumer = AIOConsumer(conf())
        await consumer.subscribe([in_topic])
        t0 = time.perf_counter()
        for _ in range(calls):
            await consumer.assignment()
        call_us = (time.perf_counter() - t0) / calls * 1e6
        seen = 0
        first: float | None = None
        t0 = time.perf_counter()
        while seen < records:
            batch = await consumer.consume(500, 1.0)
            if batch and first is None:
                first = time.perf_counter()
            seen += sum(1 for m in batch if m.error() is None)
        read = time.perf_counter() - (first or t0)
        await consumer.close()
        return call_us, read

    aio_call_us, aio_read = asyncio.run(aio())
    return {
        "sync_call_us": sync_call_us,
        "aio_call_us": aio_call_us,
        "sync_read_records_per_s": records / sync_read,
        "aio_read_records_per_s": records / aio_read,
    }


def commit_sha() -> str:
    """The checked-out commit (``+dirty`` with uncommitted changes), or ``?``."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return sha + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.005)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"of {','.join(CONTENDERS)}"
    )
    parser.add_argument("--aio-compare", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        print("set KAFKA_BOOTSTRAP_SERVERS", file=sys.stderr)
        return 2
    contenders = [c for c in args.contenders.split(",") if c]
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}")
    in_topic = f"bench-async-in-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, [in_topic], args.partitions)
    fill_input(bootstrap, in_topic, args.records, args.keys, args.partitions)
    load = os.getloadavg()
    sha = commit_sha()
    print(
        f"commit {sha}; records {args.records}, keys {args.keys}, partitions "
        f"{args.partitions}, sleep {args.sleep * 1000:g} ms, runs {args.runs}; "
        f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    try:
        for r in range(args.runs):
            order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
            for contender in order:
                res = one_run(
                    contender, bootstrap, in_topic, args.records, args.sleep, args.partitions
                )
                res["round"] = r
                results.append(res)
                print(
                    f"  round {r} {contender:13s} {res['records_per_s']:10.0f} rec/s "
                    f"({res['seconds']:.2f} s, cpu {res['cpu_s']:.1f} s)",
                    flush=True,
                )
        compare = aio_compare(bootstrap, in_topic, args.records) if args.aio_compare else None
    finally:
        delete_topics(bootstrap, [in_topic])
    load_end = os.getloadavg()
    print(
        f"\nmedians over {args.runs} rounds (load now {load_end[0]:.2f} {load_end[1]:.2f} "
        f"{load_end[2]:.2f}):"
    )
    medians = {
        c: statistics.median(x["records_per_s"] for x in results if x["contender"] == c)
        for c in contenders
    }
    ratios: dict[str, float] = {}
    for c in contenders:
        per_round = [
            x["records_per_s"] / n["records_per_s"]
            for x in results
            if x["contender"] == c
            for n in results
            if n["contender"] == "noop" and n["round"] == x["round"]
        ]
        ratios[c] = statistics.median(per_round) if per_round else float("nan")
        cpu_us = statistics.median(
            x["cpu_s"] / args.records * 1e6 for x in results if x["contender"] == c
        )
        print(
            f"  {c:13s} {medians[c]:10.0f} rec/s   x{ratios[c]:.2f} of noop (same round)   "
            f"cpu {cpu_us:.0f} us/record"
        )
    if compare is not None:
        print(
            "\nconfluent_kafka.aio.AIOConsumer vs Consumer: "
            f"one call {compare['aio_call_us']:.0f} us vs {compare['sync_call_us']:.1f} us; "
            f"consume(500) read {compare['aio_read_records_per_s']:.0f} vs "
            f"{compare['sync_read_records_per_s']:.0f} rec/s"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "results": results,
                    "medians": medians,
                    "ratios": ratios,
                    "aio_compare": compare,
                    "load": load,
                    "load_end": load_end,
                    "commit": sha,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

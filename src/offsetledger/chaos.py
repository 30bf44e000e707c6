"""Chaos on a real Kafka broker: SIGKILL Processor workers while they work, then
prove from what the broker holds that no input was lost.

:func:`run_chaos` is the driver. It creates fresh input and output topics,
produces the inputs, and starts ``workers`` worker OS processes
(``python -m offsetledger.chaos worker ...``), each a
:class:`~offsetledger.runtime.Processor` running a consume-transform-produce
pipeline (one output per input after ``work_ms`` of simulated work, lineage
headers on) in one consumer group. While they work it kills a seeded-random
worker with SIGKILL and restarts it at once, ``kills`` times. Kill ``n`` comes
a seeded-random 0.5-2 s after the previous one at the earliest, and waits
until ``n / kills`` of 85 % of the inputs are committed (so the kills are spread
over the processing and the last still leaves work in flight) and until the
victim has finished records since the previous kill (so it lands while work
flows, not while its partitions wait for a rebalance; a victim that cannot
progress is replaced by a seeded choice among those that do). After the last
kill the driver waits until the group has committed every input, stops the
workers gracefully (SIGTERM: the worker calls
:meth:`~offsetledger.runtime.Processor.stop`), reads both topics and the
group's committed positions back and runs
:func:`offsetledger.checker.check_topics`.

A kill -9 loses everything the worker did not commit, so the records it had
finished since its last commit are processed again by whoever gets the
partition next: duplicates are expected, loss never.

The randomness (victims, intervals) comes from ``random.Random(seed)``; the
timing is wall-clock time, so two runs with one seed kill the same workers in
the same order but not at the same records.

confluent-kafka is imported lazily: this module imports without it.

Worker command line (the driver builds it; useful for debugging one)::

    python -m offsetledger.chaos worker --bootstrap HOST:PORT --input IN \\
        --output OUT --group GROUP [--protocol classic|consumer] [--work-ms 20] \\
        [--progress FILE]

The driver is :func:`run_chaos`; people run it as ``offsetledger chaos
--bootstrap HOST:PORT [--records N] [--protocol consumer] ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any, Literal

import attrs

from offsetledger.checker import AnomalyKind, Report

__all__ = [
    "DEFAULT_TIMEOUT",
    "ChaosError",
    "ChaosResult",
    "Kill",
    "main",
    "run_chaos",
    "run_hand_loop",
    "run_worker",
]

log = logging.getLogger("offsetledger.chaos")

#: Seconds :func:`run_chaos` waits, after the last kill, for every input to be
#: committed.
DEFAULT_TIMEOUT = 240.0
#: Seconds the workers get to stop after SIGTERM.
STOP_TIMEOUT = 60.0

Protocol = Literal["classic", "consumer"]

#: Seconds between kills are drawn uniformly from this range.
KILL_INTERVAL = (0.5, 2.0)
#: Longest wait for the progress a kill waits for (else :class:`ChaosError`).
PROGRESS_WAIT = 60.0
#: Longest wait for the drawn victim to make progress before another is drawn.
VICTIM_WAIT = 2.0
#: The last kill waits until this fraction of the inputs is committed; the kills
#: before it at even steps up to it. The rest is left for work in flight.
LAST_KILL_AT = 0.85
#: Distinct keys of the inputs (KEY ordering: records of one key run in order).
KEYS = 1000
#: Bytes of each input value.
VALUE_SIZE = 100
#: Lines of each worker's log kept in a failed result.
TAIL_LINES = 40
#: How long a (re)started worker waits for the broker in its clients' constructors
#: (seconds). Long: a worker restarted while the broker itself restarts must wait
#: for it, not fail the adapter's 10 s default check and die (a chaos flake).
WORKER_CONNECT_TIMEOUT = 240.0

_OUTPUT_PREFIX = b"out:"


class ChaosError(RuntimeError):
    """The chaos run could not be carried out (a worker failed to start or died on
    its own, the broker did not answer, ...): an infrastructure or worker failure,
    not a verdict on the data. ``tails`` holds the last lines of each worker's log."""

    def __init__(self, message: str, tails: Mapping[str, str] | None = None) -> None:
        self.tails: Mapping[str, str] = dict(tails or {})
        text = message
        for name, tail in self.tails.items():
            text += f"\n--- {name} (last lines) ---\n{tail}"
        super().__init__(text)


@attrs.frozen(kw_only=True)
class Kill:
    """One SIGKILL: when (seconds since the workers started), which worker and
    incarnation, how many records the victim had finished since the previous kill
    (its ``records_done`` counter), and how many inputs the group had not yet
    committed at that moment (``lag``; > 0: work was in flight).

    ``kind`` is the fault: ``"kill"`` (SIGKILL the worker, then restart it),
    ``"zombie"`` (SIGSTOP the worker past its session timeout, then SIGCONT: it
    is not restarted and must find out it was evicted) or ``"broker"`` (the
    broker itself killed and restarted on the same port and data; ``worker`` is
    -1 and the workers are not restarted)."""

    at: float
    worker: int
    incarnation: int
    pid: int
    worker_done: int
    lag: int
    kind: str = "kill"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class ChaosResult:
    """The outcome of :func:`run_chaos`.

    * ``records``: inputs produced; ``outputs``: output records in the output topic.
    * ``kills``: SIGKILLs delivered (each followed by a restart); ``kill_log``: each.
    * ``lost``: inputs without an output (the checker's LOST anomalies).
    * ``duplicates``: output copies beyond the first per input.
    * ``completed``: the group committed every input before the timeout.
    * ``report``: the checker's :class:`~offsetledger.checker.Report`.
    * ``wall_seconds``: the whole run, topic creation to check.
    * ``log_tails``: the end of each worker's log, kept when the run is not ok.
    * ``log_dir``: where the workers' logs are ("" once a temporary one is removed).
    """

    records: int
    kills: int
    lost: int
    duplicates: int
    outputs: int
    wall_seconds: float
    report: Report
    seed: int
    workers: int
    partitions: int
    protocol: str
    completed: bool
    input_topic: str
    output_topic: str
    group: str
    kill_log: tuple[Kill, ...] = ()
    log_tails: Mapping[str, str] = attrs.field(factory=dict)
    log_dir: str = ""

    @property
    def kills_in_flight(self) -> int:
        """Kills that hit a worker which had finished records since the previous
        kill while the group still had uncommitted inputs."""
        return sum(1 for k in self.kill_log if k.lag > 0 and k.worker_done > 0)

    @property
    def anomalies_besides_duplicates(self) -> tuple[str, ...]:
        """The checker's anomaly kinds other than duplicates (should be empty)."""
        return tuple(
            sorted(
                {a.kind.value for a in self.report.anomalies}
                - {AnomalyKind.UNEXPLAINED_DUPLICATE.value}
            )
        )

    @property
    def ok(self) -> bool:
        """Every input was finished in time and the checker found nothing but
        duplicates (which at-least-once allows)."""
        return self.completed and self.lost == 0 and not self.anomalies_besides_duplicates

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (the checker report included)."""
        return {
            "ok": self.ok,
            "records": self.records,
            "kills": self.kills,
            "kills_in_flight": self.kills_in_flight,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "outputs": self.outputs,
            "wall_seconds": round(self.wall_seconds, 3),
            "seed": self.seed,
            "workers": self.workers,
            "partitions": self.partitions,
            "protocol": self.protocol,
            "completed": self.completed,
            "input_topic": self.input_topic,
            "output_topic": self.output_topic,
            "group": self.group,
            "kill_log": [k.to_dict() for k in self.kill_log],
            "report": self.report.to_dict(),
            "log_tails": dict(self.log_tails),
            "log_dir": self.log_dir,
        }

    def summary(self) -> str:
        """Human-readable text: verdict, numbers, the checker's summary and, when
        not ok, the workers' log tails."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"offsetledger chaos: {verdict} (seed {self.seed}, {self.protocol} protocol)",
            (
                f"  records {self.records}, outputs {self.outputs}, "
                f"duplicates {self.duplicates}, lost {self.lost}"
            ),
            (
                f"  workers {self.workers}, partitions {self.partitions}, kills {self.kills} "
                f"({self.kills_in_flight} with work in flight), wall {self.wall_seconds:.1f} s"
            ),
        ]
        if self.kill_log:
            lines.append(
                "  kills (s after start: worker, inputs uncommitted): "
                + ", ".join(f"{k.at:.1f}: {_fault_label(k)}, {k.lag}" for k in self.kill_log)
            )
        if not self.completed:
            lines.append("  the group did not commit every input before the timeout")
        lines.extend("  " + line for line in self.report.summary(limit=10).splitlines())
        if not self.ok:
            if self.log_dir:
                lines.append(f"  worker logs: {self.log_dir}")
            for name, tail in self.log_tails.items():
                lines.append(f"--- {name} (last lines) ---")
                lines.append(tail)
        return "\n".join(lines)


def _fault_label(k: Kill) -> str:
    if k.kind == "broker":
        return "broker"
    return f"w{k.worker}" + (" stopped" if k.kind == "zombie" else "")


# --------------------------------------------------------------------------- worker


def _consumer_config(
    bootstrap: str, group: str, protocol: str, instance: str | None, static: bool = False
) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "auto.offset.reset": "earliest",
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
    }
    if protocol == "classic":
        # a killed member holds its partitions until its session expires: keep it short
        config["session.timeout.ms"] = 4000
        config["heartbeat.interval.ms"] = 500
    if instance is not None:
        config["client.id"] = instance
        if static:  # one id per worker slot ("worker-0.3" is slot 0, incarnation 3)
            config["group.instance.id"] = f"{group}-{instance.split('.')[0]}"
    return config


def _write_progress(path: Path | None, data: Mapping[str, object]) -> None:
    if path is None:
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def run_worker(
    *,
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    protocol: Protocol = "classic",
    work_ms: float = 0.0,
    max_in_flight: int = 64,
    progress: Path | None = None,
    name: str | None = None,
    connect_timeout: float = WORKER_CONNECT_TIMEOUT,
    stop: threading.Event | None = None,
    auto_commit_ms: int = 1000,
    static: bool = False,
    make_handler: Callable[[str], Any] | None = None,
) -> dict[str, int]:
    """Run one chaos worker until ``stop`` is set (SIGTERM/SIGINT set it when this
    runs as ``python -m offsetledger.chaos worker``), then stop the Processor
    gracefully. Each input becomes one output to ``output_topic`` with the same
    key and the value prefixed ``out:``, after ``work_ms`` milliseconds of
    simulated work (``make_handler(output_topic)``, when given, makes the
    handler instead: e.g. an ``async def`` one). Every quarter second the
    Processor's counters are written to ``progress`` (JSON, replaced
    atomically). The clients wait up to ``connect_timeout`` seconds for the
    broker. Returns the final counters."""
    from offsetledger.adapters.confluent import (  # noqa: PLC0415 - optional dependency
        ConfluentConsumer,
        ConfluentProducer,
    )
    from offsetledger.core import Outbound, Record  # noqa: PLC0415
    from offsetledger.runtime import (  # noqa: PLC0415
        InMemoryMetrics,
        OrderingMode,
        Processor,
        ProcessorConfig,
    )

    stop_event = stop if stop is not None else threading.Event()
    work = max(work_ms, 0.0) / 1000.0

    def handler(record: Record) -> list[Outbound]:
        if work:
            time.sleep(work)
        return [
            Outbound(output_topic, key=record.key, value=_OUTPUT_PREFIX + (record.value or b""))
        ]

    metrics = InMemoryMetrics()
    config = _consumer_config(bootstrap, group, protocol, name, static)
    config["auto.commit.interval.ms"] = auto_commit_ms
    consumer = ConfluentConsumer(config, connect_timeout=connect_timeout)
    producer = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5}, connect_timeout=connect_timeout
    )
    processor = Processor(
        consumer,
        producer,
        handler if make_handler is None else make_handler(output_topic),
        topics=[input_topic],
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
                _write_progress(progress, counters())
    finally:
        processor.stop()
        producer.close(5.0)
    final = counters()
    _write_progress(progress, final | {"stopped": 1})
    return final


def run_hand_loop(
    *,
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    protocol: Protocol = "classic",
    work_ms: float = 0.0,
    max_in_flight: int = 64,
    progress: Path | None = None,
    name: str | None = None,
    connect_timeout: float = WORKER_CONNECT_TIMEOUT,
    stop: threading.Event | None = None,
    auto_commit_ms: int = 200,
    static: bool = False,
) -> dict[str, int]:
    """The baseline :func:`run_worker` is compared with: the seed pattern written
    by hand over the adapter, no Processor. Poll up to ``max_in_flight`` records,
    handle them one by one (same outputs, same ``work_ms``), flush the producer,
    then store each partition's position after the batch; librdkafka auto-commits
    the stored positions every ``auto_commit_ms``. Sequential, so its throughput
    is lower; it bounds redelivery after a kill by one batch plus one commit
    interval."""
    from offsetledger.adapters.confluent import (  # noqa: PLC0415 - optional dependency
        ConfluentConsumer,
        ConfluentProducer,
    )
    from offsetledger.core import (  # noqa: PLC0415
        DeliveryReport,
        Outbound,
        PartitionNotAssignedError,
        StoredPosition,
        TopicPartition,
    )
    from offsetledger.history import (  # noqa: PLC0415
        SOURCE_OFFSET,
        SOURCE_PARTITION,
        SOURCE_TOPIC,
    )

    stop_event = stop if stop is not None else threading.Event()
    work = max(work_ms, 0.0) / 1000.0
    config = _consumer_config(bootstrap, group, protocol, name, static)
    config["auto.commit.interval.ms"] = auto_commit_ms
    consumer = ConfluentConsumer(config, connect_timeout=connect_timeout)
    producer = ConfluentProducer(
        {"bootstrap.servers": bootstrap, "linger.ms": 5}, connect_timeout=connect_timeout
    )
    done = {"records_in": 0, "records_done": 0, "records_out": 0}

    def noop(_parts: object) -> None:
        return None

    failed: list[DeliveryReport] = []

    def on_delivery(report: DeliveryReport) -> None:
        if not report.ok:
            failed.append(report)

    consumer.subscribe([input_topic], on_assign=noop, on_revoke=noop, on_lost=noop)
    next_report = 0.0
    try:
        while not stop_event.is_set():
            batch = consumer.poll(max_in_flight, 0.05)
            failed.clear()
            for record in batch:
                if work:
                    time.sleep(work)
                # the lineage headers the Processor adds, so the checker links them
                lineage = [
                    (SOURCE_TOPIC, record.topic.encode()),
                    (SOURCE_PARTITION, str(record.partition).encode()),
                    (SOURCE_OFFSET, str(record.offset).encode()),
                ]
                out = Outbound(
                    output_topic,
                    key=record.key,
                    value=_OUTPUT_PREFIX + (record.value or b""),
                    headers=lineage,
                )
                producer.produce(out, on_delivery)
            if batch:
                if producer.flush(30.0) or failed:
                    raise RuntimeError(f"hand loop: {len(failed)} outputs failed: {failed[:1]}")
                positions: dict[TopicPartition, int] = {}
                for record in batch:
                    tp = TopicPartition(record.topic, record.partition)
                    positions[tp] = max(positions.get(tp, 0), record.offset + 1)
                # revoked meanwhile: the new owner redoes them
                with contextlib.suppress(PartitionNotAssignedError):
                    consumer.store([StoredPosition(tp, pos) for tp, pos in positions.items()])
                done["records_in"] += len(batch)
                done["records_done"] += len(batch)
                done["records_out"] += len(batch)
            now = time.monotonic()
            if now >= next_report:
                next_report = now + 0.25
                _write_progress(progress, done | {"pid": os.getpid()})
    finally:
        producer.close(5.0)
        consumer.close()
    final = done | {"pid": os.getpid()}
    _write_progress(progress, final | {"stopped": 1})
    return final


def _worker_command(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: signal %d, stopping", args.name, signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()

    def orphan_watch() -> None:  # the driver died (even by SIGKILL): stop as well
        while not stop.wait(0.5):
            if os.getppid() != parent:
                log.warning("worker %s: the driver (pid %d) is gone, stopping", args.name, parent)
                stop.set()

    threading.Thread(target=orphan_watch, name="orphan-watch", daemon=True).start()
    progress = Path(args.progress) if args.progress else None
    # tells the driver that SIGTERM is handled from now on
    _write_progress(progress, {"records_done": 0, "pid": os.getpid()})
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.name or 'worker'} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run = run_hand_loop if args.loop == "hand" else run_worker
    final = run(
        bootstrap=args.bootstrap,
        input_topic=args.input,
        output_topic=args.output,
        group=args.group,
        protocol=args.protocol,
        work_ms=args.work_ms,
        max_in_flight=args.max_in_flight,
        progress=progress,
        name=args.name,
        stop=stop,
        static=args.static,
        **({} if args.auto_commit_ms is None else {"auto_commit_ms": args.auto_commit_ms}),
    )
    print(json.dumps({"worker": args.name, "stopped": final}), flush=True)
    return 0


# --------------------------------------------------------------------------- driver


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


class _Worker:
    """One worker slot: its current OS process, its log file (all incarnations)
    and the progress file of the current incarnation."""

    def __init__(self, index: int, base_command: Sequence[str], log_dir: Path) -> None:
        self.index = index
        self.name = f"worker-{index}"
        self.base_command = list(base_command)
        self.log_dir = log_dir
        self.log_path = log_dir / f"{self.name}.log"
        self.incarnation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.progress_path: Path | None = None
        self._log: IO[bytes] | None = None

    def start(self, env: Mapping[str, str]) -> None:
        self.incarnation += 1
        self.progress_path = self.log_dir / f"{self.name}.{self.incarnation}.json"
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._log.write(f"=== {self.name} incarnation {self.incarnation} ===\n".encode())
        self._log.flush()
        command = [
            *self.base_command,
            "--name",
            f"{self.name}.{self.incarnation}",
            "--progress",
            str(self.progress_path),
        ]
        self.proc = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=dict(env)
        )

    def done(self) -> int:
        """The current incarnation's records_done (0 before its first report)."""
        if self.progress_path is None:
            return 0
        try:
            data = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            return 0
        return int(data.get("records_done", 0))

    def ready(self) -> bool:
        """The current incarnation installed its SIGTERM handler (it wrote its
        progress file)."""
        return self.progress_path is not None and self.progress_path.exists()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL the current process and reap it; returns its pid."""
        assert self.proc is not None
        pid = self.proc.pid
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return pid

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Make sure no process is left behind; close the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                log.error("%s (pid %d) did not die after SIGKILL", self.name, self.proc.pid)
        if self._log is not None:
            self._log.close()
            self._log = None


def _tails(slots: Iterable[_Worker]) -> dict[str, str]:
    return {s.name: _tail(s.log_path) for s in slots}


def _worker_env() -> dict[str, str]:
    """The environment for workers: this one, with the directory this package
    was imported from first on PYTHONPATH (the workers must run the same code)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _produce_inputs(bootstrap: str, topic: str, records: int, partitions: int) -> dict[int, int]:
    """Produce ``records`` inputs round-robin over the partitions; returns each
    partition's end offset (the position after its last input)."""
    from offsetledger.adapters.confluent import ConfluentProducer  # noqa: PLC0415
    from offsetledger.core import DeliveryReport, Outbound  # noqa: PLC0415

    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    ends: dict[int, int] = {}
    failed: list[DeliveryReport] = []

    def delivered(report: DeliveryReport) -> None:
        if report.ok and report.partition is not None and report.offset is not None:
            ends[report.partition] = max(ends.get(report.partition, 0), report.offset + 1)
        else:
            failed.append(report)

    for i in range(records):
        value = f"input-{i:09d}-".encode().ljust(VALUE_SIZE, b".")
        producer.produce(
            Outbound(topic, key=f"k{i % KEYS}".encode(), value=value, partition=i % partitions),
            delivered,
        )
        if i % 1000 == 999:
            producer.poll(0)
    left = producer.flush(60.0)
    if left or failed:
        first = failed[0].error if failed else None
        raise ChaosError(
            f"producing the inputs failed: {len(failed)} failed deliveries (first: {first}), "
            f"{left} unacknowledged after 60 s"
        )
    return ends


def _lag(bootstrap: str, group: str, topic: str, ends: Mapping[int, int]) -> int:
    """Inputs the group has not committed yet (sum over partitions)."""
    from offsetledger.adapters.confluent_admin import committed_positions  # noqa: PLC0415

    committed = {
        tp.partition: cp.position or 0
        for tp, cp in committed_positions(bootstrap, group, topic, timeout=10.0).items()
    }
    return sum(max(end - committed.get(partition, 0), 0) for partition, end in ends.items())


def _lag_retrying(
    bootstrap: str, group: str, topic: str, ends: Mapping[int, int], wait: float = 60.0
) -> int:
    """:func:`_lag`, retried for up to ``wait`` seconds while the broker (just
    restarted) or its group coordinator is not answering yet."""
    from offsetledger.core import BrokerError  # noqa: PLC0415

    deadline = time.monotonic() + wait
    while True:
        try:
            return _lag(bootstrap, group, topic, ends)
        except BrokerError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _await_kill_moment(
    n: int,
    victim: _Worker,
    slots: Sequence[_Worker],
    baseline: Sequence[int],
    rng: random.Random,
    *,
    lag: Callable[[], int],
    most_lag: int,
    check_alive: Callable[[], None],
) -> _Worker:
    """Wait until the group's uncommitted inputs are at most ``most_lag`` and
    ``victim`` finished records since the previous kill; return the worker to kill.

    A victim that makes no progress for :data:`VICTIM_WAIT` seconds (its
    partitions are done, or it is waiting for a rebalance) is replaced by a seeded
    choice among the workers that do. If every input is committed, the victim is
    returned at once: the kill cannot land in flight any more, and the result says
    so (:attr:`Kill.lag` 0). Raises :class:`ChaosError` when nobody makes progress
    for :data:`PROGRESS_WAIT` seconds."""
    started = time.monotonic()
    while True:
        check_alive()
        uncommitted = lag()
        if uncommitted == 0:
            return victim
        progressed = [s for s in slots if s.done() > baseline[s.index]]
        if uncommitted <= most_lag:
            if victim in progressed:
                return victim
            if progressed and time.monotonic() - started > VICTIM_WAIT:
                return progressed[rng.randrange(len(progressed))]
        if time.monotonic() - started > PROGRESS_WAIT:
            raise ChaosError(
                f"kill {n}: waited {PROGRESS_WAIT:g} s for progress: {uncommitted} inputs "
                f"uncommitted (waiting for at most {most_lag}); workers with records finished "
                f"since the previous kill: {[s.name for s in progressed] or 'none'}",
                _tails(slots),
            )
        time.sleep(0.2)


def _delete_topics(bootstrap: str, topics: Sequence[str]) -> None:
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 - optional dependency

    from offsetledger.adapters.confluent import _LIBRDKAFKA_LOG  # noqa: PLC0415

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _LIBRDKAFKA_LOG}
    admin = AdminClient(config)
    for name, future in admin.delete_topics(list(topics), operation_timeout=30).items():
        try:
            future.result(30)
        except Exception as exc:  # cleanup only: never fail a run over it
            log.warning("could not delete chaos topic %s: %s", name, exc)


def run_chaos(
    bootstrap: str,
    *,
    records: int = 50_000,
    workers: int = 3,
    kills: int = 10,
    partitions: int = 6,
    seed: int = 0,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], None] | None = None,
    protocol: Protocol = "classic",
    work_ms: float = 20.0,
    max_in_flight: int = 16,
    log_dir: str | os.PathLike[str] | None = None,
    keep_topics: bool = False,
    zombies: int = 0,
    zombie_pause: float | None = None,
    broker_restarts: int = 0,
    restart_broker: Callable[[], object] | None = None,
    loop: Literal["processor", "hand"] = "processor",
    auto_commit_ms: int | None = None,
    static: bool = False,
) -> ChaosResult:
    """Run a chaos experiment on the broker at ``bootstrap`` (see the module
    docstring) and return its :class:`ChaosResult`.

    ``records`` inputs are spread round-robin over ``partitions`` partitions;
    ``workers`` worker processes consume them in one group (``protocol``: classic
    or KIP-848 ``consumer``); each handler spends ``work_ms`` milliseconds per
    record, at most ``max_in_flight`` records at a time per worker. ``kills``
    SIGKILLs hit seeded-random workers (``random.Random(seed)``), each at least a
    seeded 0.5-2 s after the previous one and spread over the processing (see the
    module docstring). ``timeout`` bounds the wait for the group to commit every
    input after the last kill. ``progress`` receives one line per step. Worker
    logs go to ``log_dir``, or to a temporary directory that is removed when the
    run is ok and kept (its path in :attr:`ChaosResult.log_dir` and in the
    progress lines) when not. Topics are deleted at the end of a run that is ok
    unless ``keep_topics``.

    ``static`` gives every worker slot a ``group.instance.id`` (kept by its
    restarts): a worker restarted after a SIGKILL within the session timeout takes
    its partitions back without a rebalance.

    ``loop="hand"`` runs :func:`run_hand_loop` workers instead of the Processor:
    the baseline for the duplicates a kill costs. ``auto_commit_ms`` sets the
    workers' ``auto.commit.interval.ms`` (default 1000 for the Processor, 200 for
    the hand loop).

    ``zombies`` more faults SIGSTOP a worker for ``zombie_pause`` seconds (default:
    past the session timeout: 6 s classic, 12 s KIP-848) and then SIGCONT it; it is
    not restarted. ``broker_restarts`` more faults call ``restart_broker`` (which
    must kill the broker and start it again on the same port with its data, e.g.
    ``tools/kafka/broker.py``'s ``restart(dir, kill_first=True)``); the workers are
    not restarted and must recover. All faults are shuffled into one seeded
    schedule and spread over the processing like the kills.

    Raises :class:`ChaosError` when the run cannot be carried out (a worker dies
    on its own, the broker fails); a data problem (loss, unsafe commits) is
    reported in the result, not raised. No worker process outlives the call.
    """
    if records < 1 or workers < 1 or kills < 0 or partitions < 1:
        raise ValueError(
            f"records, workers and partitions must be >= 1 and kills >= 0; got records={records}, "
            f"workers={workers}, kills={kills}, partitions={partitions}"
        )
    if protocol not in ("classic", "consumer"):
        raise ValueError(f"protocol must be 'classic' or 'consumer', got {protocol!r}")
    if zombies < 0 or broker_restarts < 0:
        raise ValueError(
            f"zombies and broker_restarts must be >= 0; got {zombies}, {broker_restarts}"
        )
    if broker_restarts and restart_broker is None:
        raise ValueError(
            "broker_restarts needs restart_broker (a callable that bounces the broker)"
        )
    pause = zombie_pause if zombie_pause is not None else (6.0 if protocol == "classic" else 12.0)
    from offsetledger.adapters.confluent_admin import (  # noqa: PLC0415 - optional dependency
        create_topics,
    )
    from offsetledger.checker import check_broker  # noqa: PLC0415

    say = progress if progress is not None else (lambda _line: None)
    rng = random.Random(seed)
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:10]
    input_topic, output_topic = f"chaos-{run_id}-in", f"chaos-{run_id}-out"
    group = f"chaos-{run_id}"
    own_dir = log_dir is None
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="ol-chaos-"))
    logs.mkdir(parents=True, exist_ok=True)

    base = [
        sys.executable,
        "-m",
        "offsetledger.chaos",
        "worker",
        "--bootstrap",
        bootstrap,
        "--input",
        input_topic,
        "--output",
        output_topic,
        "--group",
        group,
        "--protocol",
        protocol,
        "--work-ms",
        str(work_ms),
        "--max-in-flight",
        str(max_in_flight),
        "--loop",
        loop,
        *([] if auto_commit_ms is None else ["--auto-commit-ms", str(auto_commit_ms)]),
        *(["--static"] if static else []),
    ]
    slots = [_Worker(i, base, logs) for i in range(workers)]
    env = _worker_env()
    kill_log: list[Kill] = []
    completed = False
    ok = False
    try:
        create_topics(bootstrap, {input_topic: partitions, output_topic: partitions})
        ends = _produce_inputs(bootstrap, input_topic, records, partitions)
        say(f"produced {records} inputs to {input_topic} ({partitions} partitions)")
        for slot in slots:
            slot.start(env)
        t0 = time.monotonic()
        say(f"started {workers} workers (group {group}, logs in {logs})")

        def check_alive() -> None:
            for s in slots:
                if not s.alive():
                    code = s.proc.returncode if s.proc is not None else None
                    raise ChaosError(
                        f"{s.name} (incarnation {s.incarnation}) exited on its own with "
                        f"code {code}",
                        _tails(slots),
                    )

        baseline = [0] * workers  # each worker's records_done at the previous kill
        schedule = ["kill"] * kills + ["zombie"] * zombies + ["broker"] * broker_restarts
        if zombies or broker_restarts:  # keep the kills-only schedule of a seed as it was
            rng.shuffle(schedule)
        total = len(schedule)
        kills = total
        for n, kind in enumerate(schedule, start=1):
            victim = slots[rng.randrange(workers)]
            interval = rng.uniform(*KILL_INTERVAL)
            time.sleep(interval)
            # spread the kills over the processing: kill n once n/kills of LAST_KILL_AT
            # of the inputs are committed, and only a victim making progress
            most_lag = records - int(records * LAST_KILL_AT * n / kills)
            victim = _await_kill_moment(
                n,
                victim,
                slots,
                baseline,
                rng,
                lag=lambda: _lag_retrying(bootstrap, group, input_topic, ends),
                most_lag=most_lag,
                check_alive=check_alive,
            )
            lag = _lag_retrying(bootstrap, group, input_topic, ends)
            done = victim.done()
            at = round(time.monotonic() - t0, 3)
            if kind == "broker":
                assert restart_broker is not None
                progressed = sum(s.done() - baseline[s.index] for s in slots)
                restart_broker()
                kill_log.append(
                    Kill(
                        at=at,
                        worker=-1,
                        incarnation=0,
                        pid=0,
                        worker_done=progressed,
                        lag=lag,
                        kind="broker",
                    )
                )
                say(
                    f"kill {n}/{total}: the broker, restarted on the same port after "
                    f"{interval:.2f} s ({lag} inputs uncommitted)"
                )
                for s in slots:
                    baseline[s.index] = s.done()
                continue
            if kind == "zombie":
                assert victim.proc is not None
                pid = victim.proc.pid
                victim.proc.send_signal(signal.SIGSTOP)
                try:
                    time.sleep(pause)
                finally:
                    victim.proc.send_signal(signal.SIGCONT)
                kill_log.append(
                    Kill(
                        at=at,
                        worker=victim.index,
                        incarnation=victim.incarnation,
                        pid=pid,
                        worker_done=done - baseline[victim.index],
                        lag=lag,
                        kind="zombie",
                    )
                )
                say(
                    f"kill {n}/{total}: {victim.name} pid {pid} stopped for {pause:g} s "
                    f"(SIGSTOP, then SIGCONT; {lag} inputs uncommitted)"
                )
                for s in slots:
                    baseline[s.index] = s.done()
                continue
            pid = victim.kill()
            kill_log.append(
                Kill(
                    at=at,
                    worker=victim.index,
                    incarnation=victim.incarnation,
                    pid=pid,
                    worker_done=done - baseline[victim.index],
                    lag=lag,
                )
            )
            say(
                f"kill {n}/{total}: {victim.name} pid {pid} after {interval:.2f} s "
                f"(it finished {done - baseline[victim.index]} records since the previous "
                f"kill; {lag} inputs uncommitted)"
            )
            victim.start(env)
            baseline[victim.index] = 0
            for s in slots:
                if s is not victim:
                    baseline[s.index] = s.done()

        deadline = time.monotonic() + timeout
        lag = -1
        while time.monotonic() < deadline:
            check_alive()
            lag = _lag_retrying(bootstrap, group, input_topic, ends)
            if lag == 0:
                completed = True
                break
            time.sleep(0.5)
        say(
            "every input committed"
            if completed
            else f"timed out after {timeout:g} s with {lag} inputs uncommitted"
        )

        for slot in slots:  # a worker restarted just now may not handle SIGTERM yet
            ready_by = time.monotonic() + 30.0
            while not slot.ready() and slot.alive() and time.monotonic() < ready_by:
                time.sleep(0.05)
        for slot in slots:
            slot.terminate()
        stop_deadline = time.monotonic() + STOP_TIMEOUT
        for slot in slots:
            assert slot.proc is not None
            try:
                code = slot.proc.wait(max(stop_deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise ChaosError(
                    f"{slot.name} did not stop within {STOP_TIMEOUT:g} s of SIGTERM",
                    _tails(slots),
                ) from None
            if code != 0:
                raise ChaosError(f"{slot.name} exited with code {code} on SIGTERM", _tails(slots))
        say("workers stopped gracefully")

        report = check_broker(bootstrap, inputs=[input_topic], outputs=[output_topic], group=group)
        result = ChaosResult(
            records=records,
            kills=len(kill_log),
            lost=report.stats.lost,
            duplicates=report.stats.duplicates,
            outputs=report.stats.outputs,
            wall_seconds=time.monotonic() - started,
            report=report,
            seed=seed,
            workers=workers,
            partitions=partitions,
            protocol=protocol,
            completed=completed,
            input_topic=input_topic,
            output_topic=output_topic,
            group=group,
            kill_log=tuple(kill_log),
        )
        if not result.ok:
            result = attrs.evolve(result, log_tails=_tails(slots), log_dir=str(logs))
        elif not own_dir:
            result = attrs.evolve(result, log_dir=str(logs))
        ok = result.ok
        say(
            f"checked: {result.outputs} outputs, {result.duplicates} duplicates, "
            f"{result.lost} lost, {'OK' if ok else 'FAILED'}"
        )
        return result
    finally:
        for slot in slots:
            slot.close()
        if ok and not keep_topics:
            _delete_topics(bootstrap, [input_topic, output_topic])
        if own_dir and ok:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            say(f"worker logs kept in {logs}")


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m offsetledger.chaos",
        description="SIGKILL Processor workers on a real Kafka broker and check nothing is lost.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="one consume-transform-produce worker (internal)")
    worker.add_argument("--bootstrap", required=True)
    worker.add_argument("--input", required=True)
    worker.add_argument("--output", required=True)
    worker.add_argument("--group", required=True)
    worker.add_argument("--protocol", choices=("classic", "consumer"), default="classic")
    worker.add_argument("--work-ms", type=float, default=0.0)
    worker.add_argument("--max-in-flight", type=int, default=64)
    worker.add_argument("--progress", default=None)
    worker.add_argument("--name", default=None)
    worker.add_argument("--loop", choices=("processor", "hand"), default="processor")
    worker.add_argument("--auto-commit-ms", type=int, default=None)
    worker.add_argument("--static", action="store_true")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m offsetledger.chaos worker`` (the driver starts the
    workers this way; people run ``offsetledger chaos``)."""
    args = _parser().parse_args(argv)
    return _worker_command(args)


if __name__ == "__main__":
    sys.exit(main())

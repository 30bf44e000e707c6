"""Exactly-once chaos on a real broker: kill -9 (and SIGSTOP zombies) against
``CommitMode.TRANSACTIONAL`` workers, judged by a ``read_committed`` reader:
every input's output exactly once, none lost, no duplicate.

Workers run as subprocesses (``python -c`` calling :func:`run_eos_worker`); each
worker slot keeps its ``transactional.id`` across restarts, so a restarted slot's
``init_transactions`` fences its killed predecessor and aborts its open
transaction. A zombie (SIGSTOP past the session timeout, then SIGCONT) must not
commit: its partitions were reassigned, so either the rebalance it sees on waking
aborts its open transaction, or its commit carries stale group metadata and the
group coordinator fences it (KIP-447).

The workers use the real adapters:
:class:`~offsetledger.adapters.confluent.ConfluentConsumer` (its
``group_metadata``/``seek`` make it a ``TransactionalConsumerPort``) and
:class:`~offsetledger.adapters.confluent.ConfluentTransactionalProducer`. Each
worker's log (INFO and up: assignments, revokes, aborts) goes to a file; the
result counts the worker incarnations that logged a fencing error
(:data:`FENCING_ERRORS`) and the aborted transactions.
"""

from __future__ import annotations

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
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from offsetledger.chaos import _consumer_config

__all__ = ["EosChaosResult", "run_eos_chaos", "run_eos_worker"]


#: What a fenced member or producer logs (the runtime's abort or must-restart
#: warning carries the broker's error name).
FENCING_ERRORS = (
    "UNKNOWN_MEMBER_ID",
    "ILLEGAL_GENERATION",
    "FENCED_INSTANCE_ID",
    "PRODUCER_FENCED",
    "INVALID_PRODUCER_EPOCH",
    "_FENCED",  # librdkafka: the producer epoch was bumped (e.g. the transaction timed out)
)


#: The Processor's logger (its "assigned ..." lines tell the worker holds partitions).
_PROCESSOR_LOG = "offsetledger.processor"

#: Seconds after SIGCONT before the next fault: the zombie's stale commit happens.
ZOMBIE_GRACE = 3.0


def run_eos_worker(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    group: str,
    *,
    protocol: str,
    slot: str,
    handler_delay: float = 0.0,
) -> None:
    """One TRANSACTIONAL worker until SIGTERM; output value = ``out:`` + input value.
    ``handler_delay`` seconds of sleep per record keep work in flight (thread pool)."""
    import logging  # noqa: PLC0415

    from offsetledger.adapters.confluent import (  # noqa: PLC0415
        ConfluentConsumer,
        ConfluentTransactionalProducer,
    )
    from offsetledger.core import Outbound, Record  # noqa: PLC0415
    from offsetledger.runtime import (  # noqa: PLC0415
        CommitMode,
        Processor,
        ProcessorConfig,
        ProcessorMustRestartError,
    )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = _consumer_config(bootstrap, group, protocol, f"{slot}.{os.getpid()}")
    config["enable.auto.commit"] = False
    config.pop("auto.commit.interval.ms", None)
    config["isolation.level"] = "read_committed"
    consumer = ConfluentConsumer(config)
    producer = ConfluentTransactionalProducer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "transactional.id": f"{group}-{slot}",
            "transaction.timeout.ms": 30_000,
        }
    )

    def handler(record: Record) -> list[Outbound]:
        if handler_delay:
            time.sleep(handler_delay)
        return [Outbound(output_topic, key=record.key, value=b"out:" + (record.value or b""))]

    processor = Processor(
        consumer,
        producer,
        handler,
        topics=[input_topic],
        config=ProcessorConfig(
            poll_timeout=0.05, drain_timeout=5.0, commit_mode=CommitMode.TRANSACTIONAL
        ),
    )
    try:
        while not stop.is_set():
            processor.step()
    except ProcessorMustRestartError as exc:  # fenced: the slot is restarted (or not)
        logging.getLogger("offsetledger.chaos_eos").warning("must restart: %s", exc)
    finally:
        processor.stop()
        producer.close(5.0)


@attrs.frozen
class EosChaosResult:
    records: int
    kills: int
    zombies: int
    lost: int
    duplicates: int
    seconds: float
    #: worker incarnations whose log names a fencing error (see FENCING_ERRORS)
    fenced: int = 0
    #: the fencing errors seen, by name
    fencing_errors: tuple[str, ...] = ()
    #: transactions the workers aborted (the runtime's "aborting the transaction")
    aborts: int = 0
    #: the workers' logs: kept when the run failed (or ``keep_logs``), removed otherwise
    logs: str = ""

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0


def _spawn(
    bootstrap: str,
    topics: tuple[str, str],
    group: str,
    *,
    protocol: str,
    slot: str,
    handler_delay: float,
    log: Path,
) -> Any:
    code = (
        "from offsetledger.chaos_eos import run_eos_worker; "
        f"run_eos_worker({bootstrap!r}, {topics[0]!r}, {topics[1]!r}, {group!r}, "
        f"protocol={protocol!r}, slot={slot!r}, handler_delay={handler_delay!r})"
    )
    with log.open("ab") as err:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=err)


def _fencing(logs: Path) -> tuple[int, tuple[str, ...], int]:
    fenced, names, aborts = 0, set(), 0
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        found = {name for name in FENCING_ERRORS if name in text}
        fenced += bool(found)
        names |= found
        aborts += text.count("aborting the transaction")
    return fenced, tuple(sorted(names)), aborts


def _await_assigned(logs: Path, timeout: float) -> None:
    """Wait until every worker's log says it was assigned partitions."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = [log.read_text(errors="replace") for log in sorted(logs.glob("*.log"))]
        if texts and all(f"{_PROCESSOR_LOG} assigned " in t for t in texts):
            return
        time.sleep(0.2)


def _await_output(bootstrap: str, topic: str, partitions: int, timeout: float) -> None:
    """Wait until ``topic`` has a record (committed or not), up to ``timeout`` s."""
    import confluent_kafka  # noqa: PLC0415

    c = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"probe-{uuid.uuid4().hex}"}
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            parts = [confluent_kafka.TopicPartition(topic, p) for p in range(partitions)]
            if any(c.get_watermark_offsets(tp, 5.0)[1] > 0 for tp in parts):
                return
            time.sleep(0.2)
    finally:
        c.close()


def _read_committed(bootstrap: str, topic: str, expected: int, timeout: float) -> Counter[bytes]:
    import confluent_kafka  # noqa: PLC0415

    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"judge-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    seen: Counter[bytes] = Counter()
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    while time.monotonic() < deadline:
        batch = c.consume(1000, 0.5)
        for m in batch:
            if m.error() is None:
                seen[m.value() or b""] += 1
        if batch:
            idle_since = time.monotonic()
        elif sum(seen.values()) >= expected and time.monotonic() - idle_since > 5:
            break
    c.close()
    return seen


def run_eos_chaos(
    bootstrap: str,
    *,
    records: int = 50_000,
    workers: int = 3,
    kills: int = 10,
    zombies: int = 0,
    protocol: str = "classic",
    partitions: int = 6,
    seed: int = 0,
    timeout: float = 300.0,
    handler_delay: float = 0.0,
    keep_logs: bool = False,
) -> EosChaosResult:
    """Fill an input topic, run ``workers`` TRANSACTIONAL workers, SIGKILL seeded
    random ones ``kills`` times (each restarted in its slot) and SIGSTOP ``zombies``
    past the session timeout, then judge the output as a read_committed reader."""
    import confluent_kafka  # noqa: PLC0415
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # noqa: PLC0415

    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    topics = (f"eos-chaos-in-{run}", f"eos-chaos-out-{run}")
    group = f"eos-chaos-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(t, partitions, 1) for t in topics]).values():
        f.result(30)
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(records):
        while True:
            try:
                p.produce(topics[0], key=b"k%d" % i, value=b"%d" % i, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)
    logs = Path(tempfile.mkdtemp(prefix=f"eos-chaos-{run}-"))
    incarnation = Counter[str]()

    def spawn(slot: str) -> Any:
        incarnation[slot] += 1
        log = logs / f"{slot}.{incarnation[slot]}.log"
        return _spawn(
            bootstrap,
            topics,
            group,
            protocol=protocol,
            slot=slot,
            handler_delay=handler_delay,
            log=log,
        )

    started = time.monotonic()
    slots = {f"w{i}": spawn(f"w{i}") for i in range(workers)}
    pause = 6.0 if protocol == "classic" else 50.0
    faults = ["kill"] * kills + ["zombie"] * zombies
    rng.shuffle(faults)
    # faults start once every worker holds partitions and a transaction is
    # producing: a fault during the first joins hits a worker with nothing assigned
    # (and a SIGSTOP then, while the group awaits its join, evicts nobody)
    _await_assigned(logs, timeout=60)
    _await_output(bootstrap, topics[1], partitions, timeout=60)
    for fault in faults:
        time.sleep(rng.uniform(0.5, 2.0))
        slot = rng.choice(sorted(slots))
        proc = slots[slot]
        if fault == "kill":
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            slots[slot] = spawn(slot)
        else:
            proc.send_signal(signal.SIGSTOP)
            time.sleep(pause)
            proc.send_signal(signal.SIGCONT)
            # let the zombie act on its stale state (commit, get fenced) before the
            # next fault, which may kill it
            time.sleep(ZOMBIE_GRACE)
    seen = _read_committed(bootstrap, topics[1], records, timeout)
    for proc in slots.values():
        proc.send_signal(signal.SIGTERM)
    for proc in slots.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    expected = {b"out:%d" % i for i in range(records)}
    fenced, names, aborts = _fencing(logs)
    result = EosChaosResult(
        records=records,
        kills=kills,
        zombies=zombies,
        lost=len(expected - set(seen)),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        seconds=time.monotonic() - started,
        fenced=fenced,
        fencing_errors=names,
        aborts=aborts,
        logs=str(logs),
    )
    if result.ok and not keep_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return result

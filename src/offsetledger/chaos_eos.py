"""Exactly-once chaos on a real broker: kill -9 (and SIGSTOP zombies) against
``CommitMode.TRANSACTIONAL`` workers, judged by a ``read_committed`` reader:
every input's output exactly once, none lost, no duplicate.

Workers run as subprocesses (``python -c`` calling :func:`run_eos_worker`); each
worker slot keeps its ``transactional.id`` across restarts, so a restarted slot's
``init_transactions`` fences its killed predecessor and aborts its open
transaction; a zombie (SIGSTOP past the session timeout) is fenced by its stale
group metadata (KIP-447).

The workers use the real adapters: :class:`~offsetledger.adapters.confluent.ConfluentConsumer`
(its ``group_metadata``/``seek`` make it a ``TransactionalConsumerPort``) and
:class:`~offsetledger.adapters.confluent.ConfluentTransactionalProducer`. Each
worker's log (warnings and up) goes to a file; the result counts the worker
incarnations that logged a fencing error (``UNKNOWN_MEMBER_ID``,
``ILLEGAL_GENERATION``, ``FENCED_INSTANCE_ID``, ``PRODUCER_FENCED``,
``INVALID_PRODUCER_EPOCH``), to show a zombie was fenced rather than lucky.
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
)


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

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
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
    #: the workers' logs: kept when the run failed, removed otherwise
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


def _fencing(logs: Path) -> tuple[int, tuple[str, ...]]:
    fenced, names = 0, set()
    for log in sorted(logs.glob("*.log")):
        text = log.read_text(errors="replace")
        found = {name for name in FENCING_ERRORS if name in text}
        fenced += bool(found)
        names |= found
    return fenced, tuple(sorted(names))


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
    seen = _read_committed(bootstrap, topics[1], records, timeout)
    for proc in slots.values():
        proc.send_signal(signal.SIGTERM)
    for proc in slots.values():
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    expected = {b"out:%d" % i for i in range(records)}
    fenced, names = _fencing(logs)
    result = EosChaosResult(
        records=records,
        kills=kills,
        zombies=zombies,
        lost=len(expected - set(seen)),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        seconds=time.monotonic() - started,
        fenced=fenced,
        fencing_errors=names,
        logs=str(logs),
    )
    if result.ok:
        shutil.rmtree(logs, ignore_errors=True)
    return result

"""Exactly-once chaos on a real broker: kill -9 (and SIGSTOP zombies) against
``CommitMode.TRANSACTIONAL`` workers, judged by a ``read_committed`` reader:
every input's output exactly once, none lost, no duplicate.

Workers run as subprocesses (``python -c`` calling :func:`run_eos_worker`); each
worker slot keeps its ``transactional.id`` across restarts, so a restarted slot's
``init_transactions`` fences its killed predecessor and aborts its open
transaction; a zombie (SIGSTOP past the session timeout) is fenced by its stale
group metadata (KIP-447).

Until the confluent transactional adapter is merged this module carries a minimal
stand-in (:class:`StandInTxnProducer`, :class:`StandInTxnConsumer`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from offsetledger.chaos import _consumer_config
from offsetledger.core import StoredPosition, TransactionError

__all__ = ["EosChaosResult", "run_eos_chaos", "run_eos_worker"]


def _txn_error(exc: Exception) -> TransactionError:
    err = exc.args[0] if exc.args else None
    if err is None or not hasattr(err, "fatal"):
        return TransactionError("UNKNOWN", str(exc), abortable=True)
    fatal = bool(err.fatal())
    abortable = not fatal and bool(err.txn_requires_abort())
    retriable = not fatal and not abortable and bool(err.retriable())
    if not (fatal or abortable or retriable):
        abortable = True
    return TransactionError(
        err.name(), err.str(), fatal=fatal, abortable=abortable, retriable=retriable
    )


def _standins() -> tuple[type[Any], type[Any]]:
    import confluent_kafka  # noqa: PLC0415 - optional dependency

    from offsetledger.adapters.confluent import (  # noqa: PLC0415
        ConfluentConsumer,
        ConfluentProducer,
    )

    class StandInTxnProducer(ConfluentProducer):
        def _call(self, call: Callable[..., Any], *args: Any) -> None:
            try:
                call(*args)
            except confluent_kafka.KafkaException as exc:
                raise _txn_error(exc) from exc

        def init_transactions(self, timeout: float) -> None:
            self._call(self.client.init_transactions, timeout)

        def begin_transaction(self) -> None:
            self._call(self.client.begin_transaction)

        def send_offsets_to_transaction(
            self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
        ) -> None:
            tps = []
            for sp in positions:
                tp = confluent_kafka.TopicPartition(sp.tp.topic, sp.tp.partition, sp.position)
                if sp.metadata is not None:
                    tp = confluent_kafka.TopicPartition(
                        sp.tp.topic, sp.tp.partition, sp.position, metadata=sp.metadata
                    )
                tps.append(tp)
            self._call(self.client.send_offsets_to_transaction, tps, group_metadata, timeout)

        def commit_transaction(self, timeout: float) -> None:
            self._call(self.client.commit_transaction, timeout)

        def abort_transaction(self, timeout: float) -> None:
            self._call(self.client.abort_transaction, timeout)

    class StandInTxnConsumer(ConfluentConsumer):
        def group_metadata(self) -> object:
            return self.client.consumer_group_metadata()

        def seek(self, position: StoredPosition) -> None:
            tp = position.tp
            self.client.seek(
                confluent_kafka.TopicPartition(tp.topic, tp.partition, position.position)
            )

    return StandInTxnProducer, StandInTxnConsumer


def run_eos_worker(
    bootstrap: str, input_topic: str, output_topic: str, group: str, *, protocol: str, slot: str
) -> None:
    """One TRANSACTIONAL worker until SIGTERM; output value = ``out:`` + input value."""
    from offsetledger.core import Outbound, Record  # noqa: PLC0415
    from offsetledger.runtime import CommitMode, Processor, ProcessorConfig  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer_cls, consumer_cls = _standins()
    config = _consumer_config(bootstrap, group, protocol, f"{slot}.{os.getpid()}")
    config["enable.auto.commit"] = False
    config.pop("auto.commit.interval.ms", None)
    config["isolation.level"] = "read_committed"
    consumer = consumer_cls(config)
    producer = producer_cls(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "transactional.id": f"{group}-{slot}",
            "transaction.timeout.ms": 30_000,
        }
    )

    def handler(record: Record) -> list[Outbound]:
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

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicates == 0


def _spawn(bootstrap: str, topics: tuple[str, str], group: str, protocol: str, slot: str) -> Any:
    code = (
        "from offsetledger.chaos_eos import run_eos_worker; "
        f"run_eos_worker({bootstrap!r}, {topics[0]!r}, {topics[1]!r}, {group!r}, "
        f"protocol={protocol!r}, slot={slot!r})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


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
    started = time.monotonic()
    slots = {f"w{i}": _spawn(bootstrap, topics, group, protocol, f"w{i}") for i in range(workers)}
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
            slots[slot] = _spawn(bootstrap, topics, group, protocol, slot)
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
    return EosChaosResult(
        records=records,
        kills=kills,
        zombies=zombies,
        lost=len(expected - set(seen)),
        duplicates=sum(n - 1 for n in seen.values() if n > 1),
        seconds=time.monotonic() - started,
    )

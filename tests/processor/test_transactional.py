"""CommitMode.TRANSACTIONAL over recording fakes (the simulator's clients plus the
transactional calls, recorded): lazy begin, positions (+1, with the group metadata)
inside the transaction, abort and rewind on an abortable error, fatal errors out of
run, configuration errors. The exactly-once verdict over a simulated transactional
broker lives in the model test and the swarm."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from offsetledger.core import (
    ConfigError,
    Outbound,
    Record,
    StoredPosition,
    TransactionalConsumerPort,
    TransactionalProducerPort,
    TransactionError,
)
from offsetledger.runtime import (
    CommitMode,
    InMemoryMetrics,
    Processor,
    ProcessorConfig,
    ProcessorMustRestartError,
    RetryPolicy,
)
from offsetledger.simulator import World
from tests.processor.helpers import consumer_config, drive, seed_world, upper


class TxnConsumer:
    """The simulator's consumer plus group_metadata() and a recorded seek()."""

    def __init__(self, inner: Any, config: dict[str, object]) -> None:
        self._inner = inner
        self._config = config
        self.seeks: list[StoredPosition] = []
        self.on_lost: Any = None

    def subscribe(self, topics: Sequence[str], **callbacks: Any) -> None:
        self.on_lost = callbacks["on_lost"]  # what the client calls when partitions are lost
        self._inner.subscribe(topics, **callbacks)

    @property
    def config(self) -> dict[str, object]:
        return self._config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def group_metadata(self) -> object:
        return ("g", "gen")

    def seek(self, position: StoredPosition) -> None:
        self.seeks.append(position)


class PlainConsumer:
    """A consumer without the transactional methods (the simulator's has them)."""

    def __init__(self, inner: Any, config: dict[str, object]) -> None:
        self._inner = inner
        self.config = config

    def __getattr__(self, name: str) -> Any:
        if name in ("group_metadata", "seek"):
            raise AttributeError(name)
        return getattr(self._inner, name)


class TxnProducer:
    """The simulator's producer plus recorded transactional calls; ``fail`` maps a
    call name to the errors its next calls raise."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: list[tuple[str, object]] = []
        self.fail: dict[str, list[TransactionError]] = {}
        self.config = {"transactional.id": "t1", "transaction.timeout.ms": 60_000}
        self.in_txn = False
        #: messages produced while no transaction was open (must stay empty)
        self.outside: list[Outbound] = []

    def _maybe_fail(self, name: str) -> None:
        errors = self.fail.get(name)
        if errors:
            raise errors.pop(0)

    def produce(self, message: Outbound, on_delivery: Any) -> None:
        self._maybe_fail("produce")
        if not self.in_txn:
            self.outside.append(message)
        self.calls.append(("produce", message.topic))
        self._inner.produce(message, on_delivery)

    def poll(self, timeout: float) -> int:
        n: int = self._inner.poll(timeout)
        return n

    def flush(self, timeout: float) -> int:
        n: int = self._inner.flush(timeout)
        return n

    def init_transactions(self, timeout: float) -> None:
        self._maybe_fail("init")
        self.calls.append(("init", None))

    def begin_transaction(self) -> None:
        self.calls.append(("begin", None))
        self.in_txn = True

    def send_offsets_to_transaction(
        self, positions: Sequence[StoredPosition], group_metadata: object, timeout: float
    ) -> None:
        self._maybe_fail("send_offsets")
        self.calls.append(("send_offsets", (tuple(positions), group_metadata)))

    def commit_transaction(self, timeout: float) -> None:
        self._maybe_fail("commit")
        self._inner.flush(timeout)
        self.calls.append(("commit", None))
        self.in_txn = False

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append(("abort", None))
        self.in_txn = False


def failing(record: Record) -> Iterable[Outbound]:
    raise ValueError(f"poison {record.offset}")


def _setup(
    world: World, cfg: ProcessorConfig | None = None, handler: Any = upper
) -> tuple[Processor, TxnConsumer, TxnProducer]:
    cfg = cfg or ProcessorConfig(poll_timeout=0.05, commit_mode=CommitMode.TRANSACTIONAL)
    config = consumer_config(auto_commit=False)
    consumer = TxnConsumer(world.consumer(config, "m1"), config)
    producer = TxnProducer(world.producer(name="m1-producer", member="m1"))
    assert isinstance(consumer, TransactionalConsumerPort)
    assert isinstance(producer, TransactionalProducerPort)
    p = Processor(
        consumer,
        producer,
        handler,
        topics=["in"],
        executor=world.executor(name="m1-executor", member="m1"),
        clock=world.clock,
        config=cfg,
        metrics=InMemoryMetrics(),
    )
    return p, consumer, producer


def _sent(producer: TxnProducer) -> list[StoredPosition]:
    return [sp for name, arg in producer.calls if name == "send_offsets" for sp in arg[0]]  # type: ignore[index]


def test_positions_go_into_the_transaction_plus_one_with_group_metadata() -> None:
    world = seed_world(1, partitions=2, records=20)
    p, _consumer, producer = _setup(world)
    drive(world, [p], lambda: any(n == "commit" for n, _ in producer.calls))
    drive(world, [p], lambda: {sp.position for sp in _sent(producer)} >= {10})
    p.stop()
    names = [n for n, _ in producer.calls]
    assert names[0] == "init"
    # each transaction: begin (lazily, with the first output), offsets, commit
    assert names.count("begin") == names.count("commit") >= 1
    assert "abort" not in names
    for name, arg in producer.calls:
        if name == "send_offsets":
            assert arg[1] == ("g", "gen")  # type: ignore[index]
    final = {sp.tp.partition: sp.position for sp in _sent(producer)}
    assert final == {0: 10, 1: 10}  # 10 records per partition, offsets 0..9: +1
    # nothing was committed through the consumer
    assert world.committed("g", "in", 0).position is None


def test_an_abortable_commit_error_aborts_and_rewinds_to_the_committed_position() -> None:
    world = seed_world(2, partitions=1, records=10)
    p, consumer, producer = _setup(world)
    producer.fail["commit"] = [TransactionError("ABORTABLE", abortable=True)]
    drive(world, [p], lambda: any(n == "abort" for n, _ in producer.calls))
    # nothing was committed before: the rewind seeks to the first offset polled
    assert consumer.seeks
    assert consumer.seeks[0].position == 0
    assert p.ledger.watermark(consumer.seeks[0].tp) in (None, 0)
    # (the fake does not move the fetch position) later records are produced in a
    # new transaction, begun after the abort
    world.append("in", 0, key=b"k", value=b"later")
    drive(world, [p], lambda: [n for n, _ in producer.calls].count("commit") >= 1)
    names = [n for n, _ in producer.calls]
    assert names.index("begin", names.index("abort")) < names.index("commit")
    assert producer.outside == []


def test_a_retriable_error_is_retried_within_the_bound() -> None:
    world = seed_world(3, partitions=1, records=10)
    p, _consumer, producer = _setup(world)
    producer.fail["send_offsets"] = [TransactionError("COORDINATOR_NOT_AVAILABLE", retriable=True)]
    drive(world, [p], lambda: any(n == "commit" for n, _ in producer.calls))
    assert producer.fail["send_offsets"] == []  # the error was raised, then retried
    assert "abort" not in [n for n, _ in producer.calls]


def test_a_fenced_producer_stops_run_with_a_clear_error() -> None:
    world = seed_world(4, partitions=1, records=10)
    p, _consumer, producer = _setup(world)
    producer.fail["commit"] = [TransactionError("PRODUCER_FENCED", fatal=True)]
    with pytest.raises(ProcessorMustRestartError, match="restart"):
        drive(world, [p], lambda: False, max_steps=200)
    p.stop()
    names = [n for n, _ in producer.calls]
    assert "commit" not in names  # nothing more was committed after the fatal error
    assert "abort" not in names


def test_configuration_errors() -> None:
    world = seed_world(5, partitions=1, records=1)
    cfg = ProcessorConfig(commit_mode=CommitMode.TRANSACTIONAL)
    config = consumer_config(auto_commit=False)
    plain = world.producer(name="x", member="m1")
    consumer = TxnConsumer(world.consumer(config, "m1"), config)
    with pytest.raises(ConfigError, match="TransactionalProducerPort"):
        Processor(consumer, plain, upper, topics=["in"], config=cfg, clock=world.clock)
    producer = TxnProducer(plain)
    with pytest.raises(ConfigError, match="TransactionalConsumerPort"):
        Processor(
            PlainConsumer(world.consumer(config, "m2"), config),
            producer,
            upper,
            topics=["in"],
            config=cfg,
        )
    producer.config["transaction.timeout.ms"] = 5_000
    with pytest.raises(ConfigError, match=r"transaction\.timeout\.ms"):
        Processor(consumer, producer, upper, topics=["in"], config=cfg, clock=world.clock)
    auto = consumer_config(auto_commit=True)
    with pytest.raises(ConfigError, match=r"enable\.auto\.commit"):
        Processor(
            TxnConsumer(world.consumer(auto, "m3"), auto),
            TxnProducer(plain),
            upper,
            topics=["in"],
            config=cfg,
        )


def test_lost_mid_transaction_aborts_and_never_commits() -> None:
    world = seed_world(6, partitions=2, records=20)
    p, consumer, producer = _setup(world)
    drive(world, [p], lambda: any(n == "produce" for n, _ in producer.calls))
    assert producer.in_txn
    before = len(producer.calls)
    consumer.on_lost(sorted(consumer.assignment(), key=str))
    after = [n for n, _ in producer.calls[before:]]
    assert after == ["abort"], after


def test_dead_letters_go_into_the_transaction() -> None:
    world = seed_world(7, partitions=1, records=5, topics=("out", "dlq"))
    cfg = ProcessorConfig(
        poll_timeout=0.05,
        commit_mode=CommitMode.TRANSACTIONAL,
        dead_letter_topic="dlq",
        retry=RetryPolicy(max_attempts=1),
    )
    p, _consumer, producer = _setup(world, cfg, handler=failing)
    drive(world, [p], lambda: bool(_sent(producer)) and _sent(producer)[-1].position == 5)
    assert ("produce", "dlq") in producer.calls
    assert producer.outside == []


def test_init_transactions_not_done_in_time_must_restart() -> None:
    """The coordinator stays unavailable through init_transactions' bound: nothing to
    abort, no transaction can begin; the Processor says restart (it used to leak
    the keeper's internal abort error)."""
    world = seed_world(8, partitions=1, records=5)
    cfg = ProcessorConfig(
        poll_timeout=0.05, commit_mode=CommitMode.TRANSACTIONAL, transaction_call_timeout=0.2
    )
    p, _consumer, producer = _setup(world, cfg)
    producer.fail["init"] = [
        TransactionError("COORDINATOR_NOT_AVAILABLE", retriable=True) for _ in range(100)
    ]
    with pytest.raises(ProcessorMustRestartError, match="init_transactions"):
        p.step()
    assert 0 < 100 - len(producer.fail["init"]) < 100  # tried again within the bound


def test_a_producer_fenced_at_produce_must_restart() -> None:
    """A newer instance (or the transaction timeout) fenced the producer: produce
    raises a fatal error, which is ProcessorMustRestartError, not a raw client error."""
    world = seed_world(9, partitions=1, records=5)
    p, _consumer, producer = _setup(world)
    producer.fail["produce"] = [TransactionError("PRODUCER_FENCED", fatal=True)]
    with pytest.raises(ProcessorMustRestartError, match="PRODUCER_FENCED"):
        drive(world, [p], lambda: False, max_steps=200)
    assert "commit" not in [n for n, _ in producer.calls]


def test_an_abort_at_shutdown_commits_no_position_of_the_aborted_work() -> None:
    """Shutdown with a doomed transaction (a delivery failed in it): the final
    commit aborts, and the partitions are forgotten (leaving: not sought, not kept),
    so the close's revoke commits no position of the aborted work (swarm seed 15)."""
    world = seed_world(10, partitions=2, records=10)
    cfg = ProcessorConfig(
        poll_timeout=0.05, commit_mode=CommitMode.TRANSACTIONAL, transaction_interval=30.0
    )
    p, consumer, producer = _setup(world, cfg)
    world.faults.schedule("delivery_retriable")
    drive(world, [p], lambda: world.faults.fired != [] and p.in_flight == 0)
    assert producer.in_txn
    before = len(producer.calls)
    p.stop()
    after = [n for n, _ in producer.calls[before:]]
    assert "abort" in after, after
    assert "send_offsets" not in after, after
    assert "commit" not in after, after
    assert consumer.seeks == []  # leaving: nothing is sought

"""Transactions in the simulator: coordinator, fencing, LSO, markers, require_stable, faults."""

from __future__ import annotations

import pytest

from offsetledger.core import (
    BrokerError,
    DeliveryReport,
    Outbound,
    StoredPosition,
    TopicPartition,
    TransactionError,
)
from offsetledger.core._errors import ConfigError
from offsetledger.history import Seek, TxnBegin, TxnEnd
from offsetledger.simulator import SimConsumer, World

TP = TopicPartition("out", 0)
IN = TopicPartition("in", 0)


def _world(seed: int = 7) -> World:
    world = World(seed)
    world.create_topic("in", 1)
    world.create_topic("out", 1)
    return world


def _noop(_r: DeliveryReport) -> None:
    return None


def _none(_p: object) -> None:
    return None


def _consumer(world: World, name: str, isolation: str = "read_committed") -> SimConsumer:
    c = world.consumer(
        {
            "group.id": f"g-{name}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        },
        name,
    )
    c.subscribe(["out"], on_assign=_none, on_revoke=_none, on_lost=_none)
    return c


def _values(c: SimConsumer) -> list[bytes | None]:
    return [r.value for r in c.poll(100, 0.5)]


def test_commit_visible_abort_invisible_markers_are_gaps() -> None:
    world = _world()
    p = world.transactional_producer({"transactional.id": "t"}, "p")
    p.init_transactions(5)
    p.begin_transaction()
    p.produce(Outbound("out", value=b"a", partition=0), _noop)
    p.commit_transaction(5)
    p.begin_transaction()
    p.produce(Outbound("out", value=b"x", partition=0), _noop)
    p.flush(1)  # written, then aborted (unflushed messages are purged instead)
    p.abort_transaction(5)
    committed, uncommitted = _consumer(world, "rc"), _consumer(world, "ru", "read_uncommitted")
    assert _values(committed) == [b"a"]
    assert _values(uncommitted) == [b"a", b"x"]
    assert [e.control for e in world.log("out", 0)] == [False, True, False, True]
    assert committed.position(TP) == 4
    ends = [e for e in world.history if isinstance(e, TxnEnd)]
    assert [(e.committed, e.writes) for e in ends] == [
        (True, (("out", 0, 0),)),
        (False, (("out", 0, 2),)),
    ]
    assert sum(isinstance(e, TxnBegin) for e in world.history) == 2


def test_open_transaction_holds_the_lso() -> None:
    world = _world()
    p = world.transactional_producer({"transactional.id": "t"}, "p")
    p.init_transactions(5)
    p.begin_transaction()
    p.produce(Outbound("out", value=b"open", partition=0), _noop)
    p.flush(1)
    world.append("out", 0, value=b"plain")
    assert world.last_stable_offset("out", 0) == 0
    committed, uncommitted = _consumer(world, "rc"), _consumer(world, "ru", "read_uncommitted")
    assert _values(committed) == []
    assert _values(uncommitted) == [b"open", b"plain"]
    p.commit_transaction(5)
    assert _values(committed) == [b"open", b"plain"]


def test_reinit_fences_the_zombie_and_aborts_its_transaction() -> None:
    world = _world()
    old = world.transactional_producer({"transactional.id": "t"}, "old")
    old.init_transactions(5)
    old.begin_transaction()
    old.produce(Outbound("out", value=b"zombie", partition=0), _noop)
    old.flush(1)
    new = world.transactional_producer({"transactional.id": "t"}, "new")
    new.init_transactions(5)
    with pytest.raises(TransactionError) as info:
        old.commit_transaction(5)
    assert info.value.fatal
    with pytest.raises(TransactionError) as info:
        old.produce(Outbound("out", value=b"late", partition=0), _noop)
    assert info.value.fatal
    assert _values(_consumer(world, "rc")) == []
    end = next(e for e in world.history if isinstance(e, TxnEnd))
    assert (end.committed, end.reason, end.by) == (False, "fenced", "old")


def test_transaction_timeout_aborts_and_fences() -> None:
    world = _world()
    p = world.transactional_producer({"transactional.id": "t", "transaction.timeout.ms": 2000})
    p.init_transactions(5)
    p.begin_transaction()
    p.produce(Outbound("out", value=b"slow", partition=0), _noop)
    p.flush(1)
    world.advance(3)
    assert world.last_stable_offset("out", 0) == world.end_offset("out", 0)
    with pytest.raises(TransactionError) as info:
        p.commit_transaction(5)
    assert info.value.fatal
    end = next(e for e in world.history if isinstance(e, TxnEnd))
    assert end.reason == "timeout"


def _group_consumer(world: World, name: str) -> SimConsumer:
    c = world.consumer(
        {"group.id": "g", "auto.offset.reset": "earliest", "enable.auto.commit": False}, name
    )
    c.subscribe(["in"], on_assign=_none, on_revoke=_none, on_lost=_none)
    return c


def test_offsets_commit_with_the_transaction_only() -> None:
    world = _world()
    world.append("in", 0, value=b"i")
    c = _group_consumer(world, "m")
    assert len(c.poll(10, 1)) == 1
    p = world.transactional_producer({"transactional.id": "t"})
    p.init_transactions(5)
    p.begin_transaction()
    p.send_offsets_to_transaction([StoredPosition(IN, 1)], c.group_metadata(), 5)
    p.abort_transaction(5)
    assert world.committed("g", "in", 0).position is None
    p.begin_transaction()
    p.send_offsets_to_transaction([StoredPosition(IN, 1)], c.group_metadata(), 5)
    # require_stable: a read_committed committed() waits for the open transaction
    with pytest.raises(BrokerError) as info:
        c.committed([IN], 0.5)
    assert info.value.retriable
    p.commit_transaction(5)
    assert world.committed("g", "in", 0).position == 1
    assert c.committed([IN], 0.5)[IN].position == 1


def test_stale_group_metadata_is_abortable() -> None:
    world = _world()
    world.append("in", 0, value=b"i")
    c = _group_consumer(world, "m")
    c.poll(10, 1)
    stale = c.group_metadata()
    other = _group_consumer(world, "n")
    other.poll(1, 0.1)
    c.poll(1, 0.1)
    assert c.group_metadata().generation != stale.generation
    p = world.transactional_producer({"transactional.id": "t"})
    p.init_transactions(5)
    p.begin_transaction()
    with pytest.raises(TransactionError) as info:
        p.send_offsets_to_transaction([StoredPosition(IN, 1)], stale, 5)
    assert info.value.abortable
    p.abort_transaction(5)


def test_seek_rewinds_and_is_recorded() -> None:
    world = _world()
    for v in (b"a", b"b"):
        world.append("in", 0, value=v)
    c = _group_consumer(world, "m")
    assert [r.value for r in c.poll(10, 1)] == [b"a", b"b"]
    c.seek(StoredPosition(IN, 0))
    assert [r.value for r in c.poll(10, 1)] == [b"a", b"b"]
    assert any(isinstance(e, Seek) and e.position == 0 for e in world.history)


def test_faults_coordinator_unavailable_abortable_fenced() -> None:
    world = _world()
    p = world.transactional_producer({"transactional.id": "t"})
    p.init_transactions(5)
    world.faults.schedule("txn_coordinator_unavailable")
    p.begin_transaction()
    p.produce(Outbound("out", value=b"a", partition=0), _noop)
    before = world.clock.now()
    with pytest.raises(TransactionError) as info:
        p.commit_transaction(2)
    assert info.value.retriable
    assert world.clock.now() >= before + 2
    p.commit_transaction(2)  # retried: goes through
    world.faults.schedule("txn_abortable")
    p.begin_transaction()
    p.produce(Outbound("out", value=b"b", partition=0), _noop)
    with pytest.raises(TransactionError) as info:
        p.commit_transaction(2)
    assert info.value.abortable
    p.abort_transaction(2)
    world.faults.schedule("txn_fenced")
    p.begin_transaction()
    with pytest.raises(TransactionError) as info:
        p.commit_transaction(2)
    assert info.value.fatal
    assert _values(_consumer(world, "rc")) == [b"a"]


def test_crash_mid_transaction_aborted_on_reinit() -> None:
    world = _world()
    p = world.transactional_producer({"transactional.id": "t"}, "p", member="proc")
    p.init_transactions(5)
    p.begin_transaction()
    p.produce(Outbound("out", value=b"a", partition=0), _noop)
    p.flush(1)
    world.crash("proc")
    assert world.last_stable_offset("out", 0) == 0
    again = world.transactional_producer({"transactional.id": "t"}, "p", member="proc")
    again.init_transactions(5)
    assert world.last_stable_offset("out", 0) == world.end_offset("out", 0)
    assert _values(_consumer(world, "rc")) == []


def test_config_validation() -> None:
    world = _world()
    with pytest.raises(ConfigError, match=r"transactional\.id"):
        world.transactional_producer({})
    with pytest.raises(ConfigError, match=r"transactional\.id"):
        world.transactional_producer({"transactional.id": " "})
    with pytest.raises(ConfigError, match=r"enable\.idempotence"):
        world.transactional_producer({"transactional.id": "t", "enable.idempotence": False})
    p = world.transactional_producer({"transactional.id": "t"})
    with pytest.raises(TransactionError):
        p.begin_transaction()  # before init_transactions


def test_same_seed_same_trace() -> None:
    def run() -> str:
        world = _world(3)
        p = world.transactional_producer({"transactional.id": "t"})
        p.init_transactions(5)
        world.faults.set_probability("txn_coordinator_unavailable", 0.3)
        for i in range(5):
            p.begin_transaction()
            p.produce(Outbound("out", value=bytes([i])), _noop)
            try:
                p.commit_transaction(1)
            except TransactionError:
                while p.in_transaction:
                    try:
                        p.abort_transaction(1)
                    except TransactionError as exc:
                        if not exc.retriable:
                            raise
        return world.trace()

    assert run() == run()

"""The logging helpers: extra fields on the LogRecord, the rate limiter on a
virtual clock (one line per interval with the count), the formatter."""

from __future__ import annotations

import logging

import pytest

from offsetledger._logging import (
    ContextFormatter,
    RateLimiter,
    RateLimitFilter,
    key_text,
    partition_extra,
    record_extra,
)
from offsetledger.core import ConfigError, Record, TopicPartition
from offsetledger.simulator import SimClock

TP = TopicPartition("in", 2)
LOG = logging.getLogger("offsetledger.test_ops")


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOG.name]


def test_record_extra_lands_on_the_log_record(caplog: pytest.LogCaptureFixture) -> None:
    record = Record("in", 2, 41, key=b"user-\xff", value=b"v")
    with caplog.at_level(logging.INFO, logger=LOG.name):
        LOG.info("handled", extra=record_extra(record))
        LOG.info("paused", extra=partition_extra(TP))
    first, second = lines(caplog)
    assert (first.topic, first.partition, first.offset, first.key) == (  # type: ignore[attr-defined]
        "in",
        2,
        41,
        "user-\\xff",
    )
    assert (second.topic, second.partition) == ("in", 2)  # type: ignore[attr-defined]
    assert not hasattr(second, "offset")


def test_key_text_cuts_long_keys() -> None:
    assert key_text(None) is None
    assert key_text(b"k" * 100, limit=10) == "k" * 9 + "…"
    assert key_text(b"short") == "short"


def test_one_line_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock()
    limiter = RateLimiter(clock, interval=10.0)
    key = (TP, 41, "dlq")
    logged = []
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for _ in range(79):  # a stuck dead-letter write retried every 0.5 s for ~40 s
            logged.append(
                limiter.log(
                    LOG, logging.ERROR, key, "%s: write failed", TP, extra=partition_extra(TP)
                )
            )
            clock.sleep(0.5)
    got = lines(caplog)
    assert sum(logged) == len(got) == 4
    assert got[0].getMessage() == "in[2]: write failed"
    assert got[0].suppressed == 0  # type: ignore[attr-defined]
    assert got[1].getMessage() == "in[2]: write failed [19 similar suppressed in 10.0s]"
    assert got[1].suppressed == 19  # type: ignore[attr-defined]
    assert got[1].topic == "in"  # type: ignore[attr-defined]
    assert limiter.forget(key) == 18  # the calls after the last line


def test_keys_are_limited_apart(caplog: pytest.LogCaptureFixture) -> None:
    clock = SimClock()
    limiter = RateLimiter(clock, interval=10.0, max_keys=2)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert limiter.log(LOG, logging.WARNING, "a", "a")
        assert limiter.log(LOG, logging.WARNING, "b", "b")  # another key: its own first line
        assert not limiter.log(LOG, logging.WARNING, "a", "a")
        assert limiter.log(LOG, logging.WARNING, "c", "c")  # forgets the oldest, "a"... re-logged
        assert limiter.log(LOG, logging.WARNING, "a", "a")
    assert [r.getMessage() for r in lines(caplog)] == ["a", "b", "c", "a"]


def test_a_disabled_level_is_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(SimClock(), interval=10.0)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert not limiter.log(LOG, logging.DEBUG, "k", "quiet")
    assert limiter.forget("k") == 0


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match=r"log\.interval"):
        RateLimiter(SimClock(), interval=-1)
    with pytest.raises(ConfigError, match=r"log\.max_keys"):
        RateLimiter(SimClock(), max_keys=0)


def test_context_formatter_appends_the_fields() -> None:
    formatter = ContextFormatter("%(levelname)s %(name)s %(message)s")
    record = LOG.makeRecord(
        LOG.name,
        logging.ERROR,
        __file__,
        1,
        "write failed",
        (),
        None,
        extra={**record_extra(Record("in", 0, 7, key=b"k1")), "suppressed": 3},
    )
    assert formatter.format(record) == (
        "ERROR offsetledger.test_ops write failed topic=in partition=0 offset=7 key=k1 suppressed=3"
    )
    plain = LOG.makeRecord(LOG.name, logging.INFO, __file__, 1, "hello", (), None)
    assert formatter.format(plain) == "INFO offsetledger.test_ops hello"


def _stuck_dead_letter_lines(seed: int, caplog: pytest.LogCaptureFixture, *, limited: bool) -> int:
    """Lines ``offsetledger.processor`` logs at WARNING and above while one record's
    dead-letter write keeps failing for 120 virtual seconds."""
    from offsetledger.core import Outbound
    from offsetledger.runtime import InMemoryMetrics, ProcessorConfig, RetryPolicy
    from tests.ops.helpers import processor, world_with

    def poison(record: Record) -> list[Outbound]:
        if record.value == b"v0":
            raise ValueError("poison")
        return [Outbound("out", value=record.value)]

    world = world_with(seed, partitions=1, records=3)  # no topic "dlq": every write fails
    config = ProcessorConfig(
        poll_timeout=0.05,
        dead_letter_topic="dlq",
        retry=RetryPolicy(max_attempts=1, backoff_base=0.5, backoff_max=1.5),
    )
    proc = processor(world, poison, metrics=InMemoryMetrics(), config=config)
    target = logging.getLogger("offsetledger.processor")
    limiter = RateLimitFilter(world.clock, interval=30.0)
    if limited:
        target.addFilter(limiter)
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="offsetledger.processor"):
            while world.clock.now() < 120.0:
                proc.step()
    finally:
        target.removeFilter(limiter)
    return len([r for r in caplog.records if r.name == "offsetledger.processor"])


@pytest.mark.parametrize("seed", [1, 2])
def test_a_stuck_dead_letter_write_logs_one_line_per_interval_by_default(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    unlimited = _stuck_dead_letter_lines(seed, caplog, limited=False)
    # the Processor limits its own repeating lines per record (REPEAT_LOG_INTERVAL):
    # without any filter, 120 s of a failing write is its first line and one per
    # 30 s (about 80 lines before), plus the exhausted handler's line
    assert 2 <= unlimited <= 2 + 4, f"seed={seed}: {unlimited} lines without a filter"
    counted = [r for r in caplog.records if getattr(r, "suppressed", 0)]
    assert counted, f"seed={seed}: no line of the Processor's says what it suppressed"
    assert "similar suppressed in 30." in counted[0].getMessage()
    # the record's fields ride on every line as extra
    assert all(getattr(r, "offset", None) == 0 for r in counted), f"seed={seed}"
    assert all(getattr(r, "topic", None) == "in" for r in counted), f"seed={seed}"
    # a user's RateLimitFilter on top never adds a line
    limited = _stuck_dead_letter_lines(seed, caplog, limited=True)
    assert limited <= unlimited, f"seed={seed}: {limited} lines with the filter"


def test_the_filter_passes_low_levels_and_unhashable_args() -> None:
    clock = SimClock()
    flt = RateLimitFilter(clock, interval=10.0)

    def rec(level: int, *args: object) -> logging.LogRecord:
        return LOG.makeRecord(LOG.name, level, __file__, 1, "m %s", args, None)

    assert all(flt.filter(rec(logging.INFO, 1)) for _ in range(5))
    assert all(flt.filter(rec(logging.ERROR, [1])) for _ in range(5))
    assert flt.filter(rec(logging.ERROR, 1))
    assert not flt.filter(rec(logging.ERROR, 1))
    assert flt.filter(rec(logging.ERROR, 2))  # another first argument: its own line


def test_partition_fields_from_the_processors_own_lines(caplog: pytest.LogCaptureFixture) -> None:
    from offsetledger._logging import PartitionFieldsFilter
    from offsetledger.core import Outbound
    from offsetledger.runtime import InMemoryMetrics, ProcessorConfig, RetryPolicy
    from offsetledger.simulator import World
    from tests.ops.helpers import drive, processor

    def poison(record: Record) -> list[Outbound]:
        if record.value == b"bad":
            raise ValueError("poison")
        return [Outbound("out", value=record.value)]

    world = World(seed=3)
    for name in ("in", "out", "dlq"):
        world.create_topic(name, partitions=1)
    for value in (b"ok", b"bad"):
        world.append("in", 0, key=b"k", value=value)
    metrics = InMemoryMetrics()
    config = ProcessorConfig(
        poll_timeout=0.05, dead_letter_topic="dlq", retry=RetryPolicy(max_attempts=1)
    )
    proc = processor(world, poison, metrics=metrics, config=config)
    target = logging.getLogger("offsetledger.processor")
    fields = PartitionFieldsFilter()
    target.addFilter(fields)
    try:
        with caplog.at_level(logging.WARNING, logger="offsetledger.processor"):
            drive(world, proc, lambda: metrics.count("dead_letters") == 1)
    finally:
        target.removeFilter(fields)
    lines = [r for r in caplog.records if r.name == "offsetledger.processor"]
    assert lines, "seed=3: no warning logged"
    for line in lines:
        got = (line.topic, line.partition, line.offset)  # type: ignore[attr-defined]
        assert got == ("in", 0, 1), (line.getMessage(), got)

"""Logging helpers: structured ``extra`` fields for a record, and a rate limiter
for lines that repeat (a dead-letter write retried every backoff, a commit that
keeps failing).

* :func:`record_extra` / :func:`partition_extra` build the ``extra=`` mapping that
  puts ``topic``, ``partition``, ``offset`` and ``key`` on a
  :class:`logging.LogRecord` (as attributes a JSON formatter or ``%(offset)s`` in a
  format string can read).
* :class:`RateLimiter` lets the first line of a kind through, then at most one per
  ``interval`` seconds of the injected clock, adding how many it suppressed
  meanwhile (``suppressed`` on the record and `` [N similar suppressed in 30.0s]``
  on the message).
* :class:`RateLimitFilter` does the same as a :class:`logging.Filter`, for
  loggers whose calls you do not own (``offsetledger.processor`` today).
* :class:`PartitionFieldsFilter` adds ``topic``/``partition``/``offset`` to lines
  that carry a partition as their first argument but no ``extra``.
* :class:`ContextFormatter` appends those fields (``topic=... partition=...``) to
  the usual line, for plain-text logs.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

from offsetledger.core import Clock, ConfigError, Record, TopicPartition

__all__ = [
    "EXTRA_FIELDS",
    "ContextFormatter",
    "PartitionFieldsFilter",
    "RateLimitFilter",
    "RateLimiter",
    "key_text",
    "partition_extra",
    "record_extra",
]

#: The ``extra`` fields offsetledger puts on its log records, in this order.
EXTRA_FIELDS = ("topic", "partition", "offset", "key", "suppressed")

_KEY_LIMIT = 64


def key_text(key: bytes | None, limit: int = _KEY_LIMIT) -> str | None:
    """A record key as log text: UTF-8 with undecodable bytes escaped, cut at
    ``limit`` characters (a trailing ``…`` says it was cut); None stays None."""
    if key is None:
        return None
    text = key.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def record_extra(record: Record) -> dict[str, Any]:
    """``extra=`` for a line about one record: topic, partition, offset and key."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": key_text(record.key),
    }


def partition_extra(tp: TopicPartition, offset: int | None = None) -> dict[str, Any]:
    """``extra=`` for a line about a partition (and an offset in it)."""
    extra: dict[str, Any] = {"topic": tp.topic, "partition": tp.partition}
    if offset is not None:
        extra["offset"] = offset
    return extra


class RateLimiter:
    """Lets one line per ``key`` through per ``interval`` seconds of ``clock``.

    The first call for a key logs at once. Calls within ``interval`` of the last
    line logged for that key are counted, not logged; the next call after the
    interval logs, with the count. A key is anything hashable: ``(tp, offset,
    "dlq")`` limits one record's repeats without hiding another record's first
    line. At most ``max_keys`` keys are remembered (the oldest are forgotten,
    so their next line logs at once). Use it from one thread (the Processor's)::

        limiter = RateLimiter(clock, interval=30.0)
        limiter.log(log, logging.ERROR, (tp, offset), "%s offset %d: failed", tp, offset)
    """

    def __init__(self, clock: Clock, interval: float = 30.0, *, max_keys: int = 10_000) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval < 0:
            raise ConfigError("log.interval", f"must be a number of seconds >= 0, got {interval!r}")
        if max_keys < 1:
            raise ConfigError("log.max_keys", f"must be >= 1, got {max_keys!r}")
        self._clock = clock
        self.interval = float(interval)
        self._max_keys = max_keys
        # key -> (time of the last line logged, calls suppressed since)
        self._seen: dict[Hashable, tuple[float, int]] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        key: Hashable,
        msg: str,
        *args: object,
        extra: Mapping[str, Any] | None = None,
        exc_info: bool = False,
    ) -> bool:
        """Log ``msg % args`` unless a line for ``key`` was logged less than
        ``interval`` ago; returns whether it logged. Nothing is counted when the
        logger would drop the level anyway."""
        if not logger.isEnabledFor(level):
            return False
        passed, suppressed, since = self.check(key)
        if not passed:
            return False
        fields = dict(extra or {})
        fields["suppressed"] = suppressed
        if suppressed:
            msg = f"{msg} [{suppressed} similar suppressed in {since:.1f}s]"
        logger.log(level, msg, *args, extra=fields, exc_info=exc_info, stacklevel=2)
        return True

    def check(self, key: Hashable) -> tuple[bool, int, float]:
        """Count one occurrence of ``key``: ``(passes, suppressed, since)`` — whether
        a line may be logged now, how many were held back before it, and the
        seconds since the last line logged for it (0 for a first line)."""
        now = self._clock.now()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return False, 0, 0.0
        self._remember(key, now)
        if last is None:
            return True, 0, 0.0
        return True, last[1], now - last[0]

    def forget(self, key: Hashable) -> int:
        """Drop ``key`` (its record finished); returns the count it had suppressed."""
        entry = self._seen.pop(key, None)
        return 0 if entry is None else entry[1]

    def _remember(self, key: Hashable, now: float) -> None:
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        while len(self._seen) > self._max_keys:
            del self._seen[next(iter(self._seen))]


class RateLimitFilter(logging.Filter):
    """A :class:`logging.Filter` that rate-limits repeated lines of any logger, for
    code that does not call :class:`RateLimiter` itself (attach it to
    ``offsetledger.processor`` or to a handler).

    Two records are *the same line* when they come from the same logger at the
    same level with the same format string and the same first ``key_args``
    arguments (the Processor's lines start with the partition and the offset:
    ``"%s offset %d: dead-letter write #%d failed (%s)"``, so one stuck record's
    repeats are grouped and another record's first line is not). The first line
    passes; the same line again within ``interval`` seconds of ``clock`` is
    dropped and counted; the next one after the interval passes with
    `` [N similar suppressed in 30.0s]`` appended and ``suppressed=N`` on the
    record. Lines below ``min_level`` (default WARNING) are never limited."""

    def __init__(
        self,
        clock: Clock,
        interval: float = 30.0,
        *,
        key_args: int = 2,
        min_level: int = logging.WARNING,
        max_keys: int = 10_000,
    ) -> None:
        super().__init__()
        self._limiter = RateLimiter(clock, interval, max_keys=max_keys)
        self._key_args = key_args
        self._min_level = min_level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self._min_level:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        try:
            key: Hashable = (record.name, record.levelno, str(record.msg), *args[: self._key_args])
            hash(key)
        except TypeError:  # an unhashable argument: never limited
            return True
        passed, suppressed, since = self._limiter.check(key)
        if passed and suppressed:
            record.msg = f"{record.msg} [{suppressed} similar suppressed in {since:.1f}s]"
        if passed:
            record.suppressed = suppressed
        return passed


class PartitionFieldsFilter(logging.Filter):
    """A :class:`logging.Filter` that gives a line the ``topic``, ``partition`` (and
    ``offset``) fields from its arguments when it has none: a first argument that
    is a :class:`~offsetledger.core.TopicPartition`, and an ``int`` second argument
    when the format string starts ``"%s offset %d"`` (the Processor's per-record
    lines). For loggers whose calls do not pass ``extra=`` yet; it never drops a
    line."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if args and isinstance(args[0], TopicPartition) and not hasattr(record, "topic"):
            record.topic = args[0].topic
            record.partition = args[0].partition
            if (
                len(args) > 1
                and isinstance(args[1], int)
                and str(record.msg).startswith("%s offset %d")
            ):
                record.offset = args[1]
        return True


class ContextFormatter(logging.Formatter):
    """A :class:`logging.Formatter` that appends the ``extra`` fields a record has
    (``topic=in partition=0 offset=41 key=k1``) to the formatted line."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        parts = []
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is None or (name == "suppressed" and not value):
                continue
            parts.append(f"{name}={value}")
        return f"{line} {' '.join(parts)}" if parts else line

"""Health: a stuck detector over the Processor's metric stream, for liveness and
readiness probes.

:class:`HealthMonitor` is a :class:`~offsetledger.runtime.MetricsHook` that wraps
another one (an exporter, :class:`~offsetledger.runtime.InMemoryMetrics`, ...):
every call is forwarded unchanged, and the monitor watches it for

* **a stuck partition**: work on it (records polled and not finished) and its
  watermark has not moved for ``stuck_after`` seconds;
* **a stall**: a record that can neither finish nor be dead-lettered (metric
  ``stalls``: a dead-letter write that keeps failing, or an exhausted record with
  no dead-letter topic); the partition is bad until its watermark moves again;
* **a commit failing repeatedly**: ``commit_failures_limit`` failed commits of a
  partition in a row (a successful one resets the count);
* **no progress at all**: records buffered and none finished for ``stuck_after``;
* **a silent Processor**: no metric at all for ``stuck_after`` seconds (its loop
  is blocked, e.g. by an inline handler, or it is not running).

:meth:`HealthMonitor.health` returns a :class:`HealthStatus`. Time comes from the
injected :class:`~offsetledger.core.Clock` (the simulator's virtual clock in tests).

Per-partition work is exact when the monitor can read the Processor's ledger
(:meth:`HealthMonitor.attach`, on the Processor's thread, once per
``check_interval``); without it the monitor infers work from ``watermark_lag``,
which the Processor sets only when a partition's position moves, so a partition
whose *first* record since it caught up hangs is caught by the *no progress at
all* rule only (when no other partition progresses).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from offsetledger.core import ConfigError, TopicPartition

# the submodules, not the package: the Processor may import this module
from offsetledger.runtime._clock import SystemClock
from offsetledger.runtime._metrics import NullMetrics

if TYPE_CHECKING:
    from offsetledger.core import Clock, OffsetLedger
    from offsetledger.runtime import MetricsHook

__all__ = ["HealthMonitor", "HealthStatus", "PartitionHealth"]

log = logging.getLogger("offsetledger.health")

# the numbers in a reason that change from one check to the next
_DURATION = re.compile(r"\d+(?:\.\d+)?(?=s\b| are buffered| commits failed)")


@attrs.frozen
class PartitionHealth:
    """What the monitor knows about one partition.

    ``unfinished`` is read from the ledger (None without :meth:`HealthMonitor.attach`);
    ``lag`` is the last ``watermark_lag`` (None before the first);
    ``since_progress`` counts seconds since its watermark last moved, or since
    work arrived on an idle partition."""

    tp: TopicPartition
    ok: bool
    reasons: tuple[str, ...] = ()
    unfinished: int | None = None
    lag: float | None = None
    since_progress: float = 0.0
    stalled: bool = False
    commit_failures_in_a_row: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "topic": self.tp.topic,
            "partition": self.tp.partition,
            "ok": self.ok,
            "reasons": list(self.reasons),
            "unfinished": self.unfinished,
            "lag": self.lag,
            "since_progress": round(self.since_progress, 3),
            "stalled": self.stalled,
            "commit_failures_in_a_row": self.commit_failures_in_a_row,
        }


@attrs.frozen
class HealthStatus:
    """The monitor's verdict at ``checked_at`` (the clock's time). ``ok`` is False
    when there is at least one reason; ``partitions`` has every partition the
    monitor tracks, good or bad."""

    ok: bool
    reasons: tuple[str, ...]
    partitions: Mapping[TopicPartition, PartitionHealth]
    checked_at: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a probe endpoint can return)."""
        return {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "checked_at": self.checked_at,
            "partitions": [p.to_dict() for p in self.partitions.values()],
        }


@attrs.define
class _Part:
    progress_at: float  # watermark last moved, or work arrived on an idle partition
    watermark: int | None = None
    unfinished: int | None = None
    lag: float | None = None
    stalled: bool = False
    stalled_below: int | None = None  # the ledger's watermark when the stall was seen
    commit_failures: int = 0

    def busy(self) -> bool:
        if self.stalled:
            return True
        if self.unfinished is not None:
            return self.unfinished > 0
        return self.lag is not None and self.lag > 0


def _moved_past(watermark: int | None, below: int | None) -> bool:
    if watermark is None:
        return False
    return below is None or watermark > below


def _positive(key: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(key, f"must be a finite number of seconds, got {value!r}")
    if value <= 0:
        raise ConfigError(key, f"must be > 0 seconds, got {value!r}")
    return float(value)


class HealthMonitor:
    """A metrics hook that forwards to ``inner`` and watches for a stuck Processor.

    ``stuck_after``: seconds without progress that make busy work stuck (set it
    above the longest handler time plus retry backoff you expect).
    ``commit_failures_limit``: failed commits of a partition in a row that make it
    unhealthy. ``check_interval`` (default ``stuck_after / 10``, at most 1 s): how
    often, on the Processor's thread, the monitor samples the ledger, re-evaluates,
    sets its own gauges on ``inner`` (``health_ok`` 1/0 and
    ``health_stuck_partitions``) and logs a change of verdict (logger
    ``offsetledger.health``: a warning with the reasons when it turns bad or the
    reasons change, an info line when it is ok again).

    :meth:`health` may be called from any thread (a probe's).
    """

    def __init__(
        self,
        inner: MetricsHook | None = None,
        *,
        clock: Clock | None = None,
        stuck_after: float = 60.0,
        commit_failures_limit: int = 3,
        check_interval: float | None = None,
    ) -> None:
        self._inner: MetricsHook = NullMetrics() if inner is None else inner
        self._clock: Clock = SystemClock() if clock is None else clock
        self.stuck_after = _positive("health.stuck_after", stuck_after)
        if (
            isinstance(commit_failures_limit, bool)
            or not isinstance(commit_failures_limit, int)
            or commit_failures_limit < 1
        ):
            raise ConfigError(
                "health.commit_failures_limit",
                f"must be an int >= 1, got {commit_failures_limit!r}",
            )
        self.commit_failures_limit = commit_failures_limit
        self.check_interval = (
            min(self.stuck_after / 10, 1.0)
            if check_interval is None
            else _positive("health.check_interval", check_interval)
        )
        self._lock = threading.Lock()
        self._ledger: OffsetLedger | None = None
        now = self._clock.now()
        self._last_call = now
        self._last_done = now
        self._busy_since: float | None = None
        self._buffered = 0.0
        self._parts: dict[TopicPartition, _Part] = {}
        self._next_check = now
        self._last_reasons: tuple[str, ...] = ()

    # -- wiring --------------------------------------------------------------------

    @property
    def inner(self) -> MetricsHook:
        return self._inner

    def attach(self, ledger: OffsetLedger | None) -> None:
        """Read per-partition work from ``ledger`` (the Processor's
        :attr:`~offsetledger.runtime.Processor.ledger`; a Processor given this
        monitor as ``metrics`` attaches its own); the monitor reads it only inside
        metric calls, which come on the Processor's thread. ``None`` detaches: the
        monitor then infers work from the metric stream alone."""
        self._ledger = ledger

    # -- MetricsHook ---------------------------------------------------------------

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        self._inner.increment(name, value, tp)
        now = self._clock.now()
        with self._lock:
            self._last_call = now
            if name == "records_done":
                self._last_done = now
            elif tp is not None and name in {"stalls", "commit_failures", "commits"}:
                part = self._part(tp, now)
                if name == "stalls":
                    part.stalled = True
                    if self._ledger is not None and self._ledger.is_assigned(tp):
                        part.stalled_below = self._ledger.watermark(tp)
                elif name == "commit_failures":
                    part.commit_failures += value
                else:
                    part.commit_failures = 0
            elif name == "rebalances" and self._ledger is None:
                # without the ledger the monitor cannot tell which partitions went:
                # forget them all; each comes back with its next watermark_lag
                self._parts.clear()
        self._maybe_check(now)

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        self._inner.gauge(name, value, tp)
        now = self._clock.now()
        with self._lock:
            self._last_call = now
            if name == "buffered" and tp is None:
                if value > 0 and self._busy_since is None:
                    self._busy_since = now
                elif value <= 0:
                    self._busy_since = None
                self._buffered = value
            elif name == "watermark_lag" and tp is not None:
                part = self._part(tp, now)
                part.lag = value
                if self._ledger is None:
                    # set when the stored position (or its metadata) moved: progress
                    part.progress_at = now
                    part.stalled = False
        self._maybe_check(now)

    # -- evaluation ----------------------------------------------------------------

    def _part(self, tp: TopicPartition, now: float) -> _Part:
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Part(progress_at=now)
        return part

    def _maybe_check(self, now: float) -> None:
        if now < self._next_check:
            return
        self._next_check = now + self.check_interval
        ledger = self._ledger
        if ledger is not None:
            self._sample(ledger, now)
        status = self.health(now)
        self._inner.gauge("health_ok", 1.0 if status.ok else 0.0)
        stuck = sum(1 for p in status.partitions.values() if not p.ok)
        self._inner.gauge("health_stuck_partitions", float(stuck))
        # the reasons without their durations: log a change of verdict, not every check
        kinds = tuple(_DURATION.sub("", r) for r in status.reasons)
        if kinds != self._last_reasons:
            if status.ok:
                log.info("health: ok again")
            else:
                log.warning("health: not ok: %s", "; ".join(status.reasons))
            self._last_reasons = kinds

    def _sample(self, ledger: OffsetLedger, now: float) -> None:
        assigned = ledger.assigned()
        with self._lock:
            for tp in list(self._parts):
                if tp not in assigned:
                    del self._parts[tp]
            for tp in assigned:
                part = self._part(tp, now)
                watermark = ledger.watermark(tp)
                unfinished = ledger.unfinished(tp)
                was_idle = part.unfinished == 0 and not part.stalled
                if watermark != part.watermark or (was_idle and unfinished > 0):
                    part.progress_at = now
                if part.stalled and _moved_past(watermark, part.stalled_below):
                    part.stalled = False
                part.watermark = watermark
                part.unfinished = unfinished

    def health(self, now: float | None = None) -> HealthStatus:
        """The verdict now (``now`` defaults to the clock's time)."""
        at = self._clock.now() if now is None else now
        limit = self.stuck_after
        with self._lock:
            reasons: list[str] = []
            silent = at - self._last_call
            if silent >= limit:
                reasons.append(
                    f"no metric from the Processor for {silent:.1f}s "
                    "(its loop is blocked or not running)"
                )
            if self._busy_since is not None:
                idle = at - max(self._last_done, self._busy_since)
                if idle >= limit:
                    reasons.append(
                        f"no record finished for {idle:.1f}s "
                        f"while {self._buffered:.0f} are buffered"
                    )
            partitions: dict[TopicPartition, PartitionHealth] = {}
            for tp in sorted(self._parts, key=lambda t: (t.topic, t.partition)):
                part = self._parts[tp]
                since = at - part.progress_at
                mine: list[str] = []
                if part.stalled:
                    mine.append(f"{tp}: stalled (a record can neither finish nor be dead-lettered)")
                elif part.busy() and since >= limit:
                    mine.append(f"{tp}: work in flight and no progress for {since:.1f}s")
                if part.commit_failures >= self.commit_failures_limit:
                    mine.append(f"{tp}: {part.commit_failures} commits failed in a row")
                reasons.extend(mine)
                partitions[tp] = PartitionHealth(
                    tp=tp,
                    ok=not mine,
                    reasons=tuple(mine),
                    unfinished=part.unfinished,
                    lag=part.lag,
                    since_progress=since if part.busy() else 0.0,
                    stalled=part.stalled,
                    commit_failures_in_a_row=part.commit_failures,
                )
        return HealthStatus(
            ok=not reasons, reasons=tuple(reasons), partitions=partitions, checked_at=at
        )

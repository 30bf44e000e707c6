"""OpenTelemetry exporter: :class:`OpenTelemetryMetrics` (extra ``otel``).

Counters become OpenTelemetry ``Counter`` instruments, gauges synchronous
``Gauge`` instruments, named ``<prefix>.<name>``; a value about a partition
carries the attributes ``topic`` and ``partition`` (an int), a total none."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from opentelemetry import metrics as otel_metrics

from offsetledger.core import TopicPartition
from offsetledger.exporters._names import KindConflicts, describe, metric_name
from offsetledger.runtime import COUNTERS, GAUGES

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import Counter, Meter, MeterProvider, _Gauge

__all__ = ["OpenTelemetryMetrics"]

_SCOPE = "offsetledger"


class OpenTelemetryMetrics:
    """A :class:`~offsetledger.runtime.MetricsHook` that records into OpenTelemetry
    instruments of a meter from ``meter_provider`` (default: the global one, set with
    ``opentelemetry.metrics.set_meter_provider``), or of ``meter`` when given.

    Instruments for every name in ``counters`` and ``gauges`` (default: the
    runtime's :data:`~offsetledger.runtime.COUNTERS` and
    :data:`~offsetledger.runtime.GAUGES`) are created at construction; another
    name gets one on first use with the kind of the call. A call for a name that is
    an instrument of the other kind, and a negative increment, are dropped (see
    :attr:`dropped`). Which reader or exporter ships the values (OTLP, Prometheus,
    an ``InMemoryMetricReader`` in tests) is the SDK's configuration, not this hook's.
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        meter: Meter | None = None,
        prefix: str = "offsetledger",
        counters: Iterable[str] = COUNTERS,
        gauges: Iterable[str] = GAUGES,
    ) -> None:
        if meter is None:
            provider = meter_provider or otel_metrics.get_meter_provider()
            meter = provider.get_meter(_SCOPE)
        self._meter = meter
        self._prefix = prefix
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, _Gauge] = {}
        self._attributes: dict[TopicPartition, dict[str, str | int]] = {}  # one per partition
        self._lock = threading.Lock()  # guards lazy creation only
        self._conflicts = KindConflicts("OpenTelemetryMetrics")
        for name in counters:
            self._counter(name)
        for name in gauges:
            self._gauge(name)

    @property
    def dropped(self) -> dict[str, int]:
        """Calls dropped per name (a name of the other kind, a negative increment)."""
        return dict(self._conflicts.dropped)

    def _full(self, name: str) -> str:
        return f"{self._prefix}.{metric_name(name)}" if self._prefix else metric_name(name)

    def _counter(self, name: str) -> Counter | None:
        with self._lock:
            found = self._counters.get(name)
            if found is None and name not in self._gauges:
                found = self._meter.create_counter(self._full(name), description=describe(name))
                self._counters[name] = found
            return found

    def _gauge(self, name: str) -> _Gauge | None:
        with self._lock:
            found = self._gauges.get(name)
            if found is None and name not in self._counters:
                found = self._meter.create_gauge(self._full(name), description=describe(name))
                self._gauges[name] = found
            return found

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        counter = self._counters.get(name) or self._counter(name)
        if counter is None or value < 0:
            self._conflicts.drop(name, "increment")
            return
        counter.add(value, None if tp is None else self._attributes_of(tp))

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        gauge = self._gauges.get(name) or self._gauge(name)
        if gauge is None:
            self._conflicts.drop(name, "gauge")
            return
        gauge.set(value, None if tp is None else self._attributes_of(tp))

    def _attributes_of(self, tp: TopicPartition) -> dict[str, str | int]:
        found = self._attributes.get(tp)
        if found is None:
            found = self._attributes[tp] = {"topic": tp.topic, "partition": tp.partition}
        return found

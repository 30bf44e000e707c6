"""Prometheus exporter: :class:`PrometheusMetrics` (extra ``prometheus``).

Counters become ``prometheus_client`` Counters named ``<namespace>_<name>_total``,
gauges become Gauges named ``<namespace>_<name>``; both carry the labels
``topic`` and ``partition`` (empty for a value about no partition, a total)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from offsetledger.core import TopicPartition
from offsetledger.exporters._names import KindConflicts, describe, labels_of, metric_name
from offsetledger.runtime import COUNTERS, GAUGES

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PrometheusMetrics"]

_LABELS = ("topic", "partition")


class PrometheusMetrics:
    """A :class:`~offsetledger.runtime.MetricsHook` that updates ``prometheus_client``
    metrics in ``registry`` (default: the library's global ``REGISTRY``, which
    ``prometheus_client.start_http_server`` serves).

    Every name in ``counters`` and ``gauges`` (default: the runtime's
    :data:`~offsetledger.runtime.COUNTERS` and :data:`~offsetledger.runtime.GAUGES`)
    is registered at construction, so each metric family is exposed (with ``HELP``
    and ``TYPE``) before its first value. A name not in them is registered on first
    use with the kind of the call; a call for a name already registered as the
    other kind, and a negative increment, are dropped (see :attr:`dropped`).
    Register one instance per registry: a second one raises ``ValueError``
    (duplicated timeseries), as ``prometheus_client`` does.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "offsetledger",
        counters: Iterable[str] = COUNTERS,
        gauges: Iterable[str] = GAUGES,
    ) -> None:
        self._registry = REGISTRY if registry is None else registry
        self._namespace = namespace
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Gauge] = {}
        # the labelled child of each (name, partition): labels() costs microseconds
        self._counter_children: dict[tuple[str, TopicPartition | None], Counter] = {}
        self._gauge_children: dict[tuple[str, TopicPartition | None], Gauge] = {}
        self._lock = threading.Lock()  # guards lazy registration only
        self._conflicts = KindConflicts("PrometheusMetrics")
        for name in counters:
            self._counter(name)
        for name in gauges:
            self._gauge(name)

    @property
    def dropped(self) -> dict[str, int]:
        """Calls dropped per name because the name is a metric of the other kind."""
        return dict(self._conflicts.dropped)

    def _counter(self, name: str) -> Counter | None:
        with self._lock:
            found = self._counters.get(name)
            if found is None and name not in self._gauges:
                found = Counter(
                    metric_name(name),
                    describe(name),
                    _LABELS,
                    namespace=self._namespace,
                    registry=self._registry,
                )
                self._counters[name] = found
            return found

    def _gauge(self, name: str) -> Gauge | None:
        with self._lock:
            found = self._gauges.get(name)
            if found is None and name not in self._counters:
                found = Gauge(
                    metric_name(name),
                    describe(name),
                    _LABELS,
                    namespace=self._namespace,
                    registry=self._registry,
                )
                self._gauges[name] = found
            return found

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        child = self._counter_children.get((name, tp))
        if child is None or value < 0:
            counter = self._counters.get(name) or self._counter(name)
            if counter is None or value < 0:  # the other kind; a counter only goes up
                self._conflicts.drop(name, "increment")
                return
            child = self._counter_children[(name, tp)] = counter.labels(**labels_of(tp))
        child.inc(value)

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        child = self._gauge_children.get((name, tp))
        if child is None:
            gauge = self._gauges.get(name) or self._gauge(name)
            if gauge is None:
                self._conflicts.drop(name, "gauge")
                return
            child = self._gauge_children[(name, tp)] = gauge.labels(**labels_of(tp))
        child.set(value)

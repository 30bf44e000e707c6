"""The exporters, read back through their libraries: Prometheus exposition text
parsed with ``prometheus_client.parser``, OpenTelemetry through an
``InMemoryMetricReader``."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from offsetledger.core import TopicPartition
from offsetledger.runtime import COUNTERS, GAUGES, InMemoryMetrics
from tests.ops.helpers import drive, processor, world_with

prometheus_client = pytest.importorskip("prometheus_client", reason="extra 'prometheus'")
pytest.importorskip("opentelemetry.sdk", reason="extra 'otel'")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from offsetledger.exporters.otel import OpenTelemetryMetrics  # noqa: E402
from offsetledger.exporters.prometheus import PrometheusMetrics  # noqa: E402

TP = TopicPartition("orders", 3)


def exposition(registry: CollectorRegistry) -> dict[str, Any]:
    """family name -> family, from the text a scrape would read."""
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family: Any) -> dict[tuple[str, str], float]:
    """(topic, partition) -> value, for the family's main samples."""
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_prometheus_exposes_every_metric_before_its_first_value() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    families = exposition(registry)
    for name in COUNTERS:
        assert families[f"offsetledger_{name}"].type == "counter", name
    for name in GAUGES:
        assert families[f"offsetledger_{name}"].type == "gauge", name
    assert families["offsetledger_records_in"].documentation == "Records polled."


def test_prometheus_values_and_partition_labels_read_back() -> None:
    registry = CollectorRegistry()
    hook = PrometheusMetrics(registry)
    for i, name in enumerate(COUNTERS, start=1):
        hook.increment(name, i)
        hook.increment(name, 10 * i, tp=TP)
        hook.increment(name, tp=TP)
    for i, name in enumerate(GAUGES, start=1):
        hook.gauge(name, 100.0 + i)
        hook.gauge(name, 0.5 * i, tp=TP)
    families = exposition(registry)
    for i, name in enumerate(COUNTERS, start=1):
        assert samples(families[f"offsetledger_{name}"]) == {
            ("", ""): i,
            ("orders", "3"): 10 * i + 1,
        }, name
    for i, name in enumerate(GAUGES, start=1):
        assert samples(families[f"offsetledger_{name}"]) == {
            ("", ""): 100.0 + i,
            ("orders", "3"): 0.5 * i,
        }, name


def test_prometheus_unknown_names_are_created_on_first_use_conflicts_dropped() -> None:
    registry = CollectorRegistry()
    hook = PrometheusMetrics(registry, namespace="app")
    hook.increment("brand_new", 2, tp=TP)
    hook.gauge("brand_new", 7.0)  # already a counter: dropped, not raised
    hook.gauge("odd-name.x", 1.5)  # sanitised
    hook.increment("records_in", -1)  # a counter never goes down: dropped
    hook.increment("buffered")  # a gauge of the runtime: dropped
    families = exposition(registry)
    assert families["app_brand_new"].type == "counter"
    assert samples(families["app_brand_new"]) == {("orders", "3"): 2}
    assert samples(families["app_odd_name_x"]) == {("", ""): 1.5}
    assert samples(families["app_records_in"]) == {}
    assert hook.dropped == {"brand_new": 1, "records_in": 1, "buffered": 1}


def test_prometheus_second_exporter_on_one_registry_is_refused() -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusMetrics(registry)


def test_prometheus_on_a_processor_counts_what_in_memory_metrics_counts() -> None:
    seed = 11
    world = world_with(seed, partitions=2, records=30)
    registry = CollectorRegistry()
    hook = PrometheusMetrics(registry)
    proc = processor(world, metrics=hook)
    drive(world, proc, lambda: exposition_value(registry, "offsetledger_records_done") >= 30)
    families = exposition(registry)
    assert samples(families["offsetledger_records_in"]) == {("", ""): 30}
    lags = samples(families["offsetledger_watermark_lag"])
    assert set(lags) == {("in", "0"), ("in", "1")}, f"seed={seed}"
    assert all(v == 0 for v in lags.values()), f"seed={seed}: {lags}"


def exposition_value(registry: CollectorRegistry, family: str) -> float:
    return sum(samples(exposition(registry)[family]).values())


def otel_points(reader: InMemoryMetricReader) -> dict[str, dict[tuple[Any, ...], float]]:
    """instrument name -> {sorted attribute items: value}."""
    out: dict[str, dict[tuple[Any, ...], float]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = out.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    points[tuple(sorted((point.attributes or {}).items()))] = point.value
    return out


def otel_kinds(reader: InMemoryMetricReader) -> dict[str, str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: type(m.data).__name__
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def test_otel_values_and_attributes_read_back() -> None:
    reader = InMemoryMetricReader()
    hook = OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]))
    for i, name in enumerate(COUNTERS, start=1):
        hook.increment(name, i)
        hook.increment(name, 10 * i, tp=TP)
    for i, name in enumerate(GAUGES, start=1):
        hook.gauge(name, 100.0 + i)
        hook.gauge(name, 0.5 * i, tp=TP)
    points = otel_points(reader)
    kinds = otel_kinds(reader)
    attrs_tp = (("partition", 3), ("topic", "orders"))
    for i, name in enumerate(COUNTERS, start=1):
        assert kinds[f"offsetledger.{name}"] == "Sum", name
        assert points[f"offsetledger.{name}"] == {(): i, attrs_tp: 10 * i}, name
    for i, name in enumerate(GAUGES, start=1):
        assert kinds[f"offsetledger.{name}"] == "Gauge", name
        assert points[f"offsetledger.{name}"] == {(): 100.0 + i, attrs_tp: 0.5 * i}, name


def test_otel_unknown_names_are_created_on_first_use_conflicts_dropped() -> None:
    reader = InMemoryMetricReader()
    hook = OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]), prefix="app")
    hook.gauge("brand_new", 4.0, tp=TP)
    hook.increment("brand_new")  # already a gauge: dropped
    hook.increment("records_in", -3)  # dropped
    points = otel_points(reader)
    assert points["app.brand_new"] == {(("partition", 3), ("topic", "orders")): 4.0}
    assert hook.dropped == {"brand_new": 1, "records_in": 1}


def test_otel_on_a_processor_counts_what_in_memory_metrics_counts() -> None:
    seed = 12
    world = world_with(seed, partitions=2, records=24)
    reader = InMemoryMetricReader()
    hook = OpenTelemetryMetrics(MeterProvider(metric_readers=[reader]))
    reference = InMemoryMetrics()
    proc = processor(world, metrics=Tee(hook, reference))
    drive(world, proc, lambda: reference.count("records_done") >= 24)
    points = otel_points(reader)
    assert points["offsetledger.records_done"] == {(): 24}, f"seed={seed}"
    assert points["offsetledger.records_in"] == {(): reference.count("records_in")}


class Tee:
    """Sends every metric to two hooks."""

    def __init__(self, *hooks: Any) -> None:
        self.hooks = hooks

    def increment(self, name: str, value: int = 1, tp: TopicPartition | None = None) -> None:
        for h in self.hooks:
            h.increment(name, value, tp)

    def gauge(self, name: str, value: float, tp: TopicPartition | None = None) -> None:
        for h in self.hooks:
            h.gauge(name, value, tp)


def test_offsetledger_imports_without_the_exporters_libraries() -> None:
    code = (
        "import sys\n"
        "for m in ('prometheus_client', 'opentelemetry'): sys.modules[m] = None\n"
        "import offsetledger, offsetledger.exporters, offsetledger.health, offsetledger.serde\n"
        "import offsetledger.runtime\n"
        "try:\n"
        "    import offsetledger.exporters.prometheus\n"
        "except ImportError as exc:\n"
        "    print('refused', exc.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused prometheus_client"


def test_the_health_monitors_gauges_reach_prometheus() -> None:
    from offsetledger.health import HealthMonitor

    seed = 13
    world = world_with(seed, partitions=2, records=10)
    registry = CollectorRegistry()
    monitor = HealthMonitor(PrometheusMetrics(registry), clock=world.clock, stuck_after=2.0)
    proc = processor(world, metrics=monitor)
    monitor.attach(proc.ledger)
    drive(world, proc, lambda: exposition_value(registry, "offsetledger_records_done") >= 10)
    drive(world, proc, lambda: "offsetledger_health_ok" in exposition(registry))
    families = exposition(registry)
    assert families["offsetledger_health_ok"].type == "gauge"
    assert samples(families["offsetledger_health_ok"]) == {("", ""): 1.0}, f"seed={seed}"
    assert samples(families["offsetledger_health_stuck_partitions"]) == {("", ""): 0.0}

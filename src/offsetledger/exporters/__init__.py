"""Metrics exporters: :class:`~offsetledger.runtime.MetricsHook` implementations
that hand the Processor's counters and gauges to a monitoring library.

Each lives in its own module and imports its library there, so ``import
offsetledger`` (and this package) works without them:

* :mod:`offsetledger.exporters.prometheus` — :class:`PrometheusMetrics`, extra
  ``prometheus`` (``prometheus_client``);
* :mod:`offsetledger.exporters.otel` — :class:`OpenTelemetryMetrics`, extra
  ``otel`` (``opentelemetry-api``; an SDK such as ``opentelemetry-sdk`` exports).

Both name every metric of :data:`~offsetledger.runtime.COUNTERS` and
:data:`~offsetledger.runtime.GAUGES` up front, turn the ``tp`` argument into
``topic`` and ``partition`` labels, and accept names they do not know (a metric
added to the runtime later): such a name is created on first use with the kind
of the call (``increment`` → counter, ``gauge`` → gauge). A name used both ways
keeps its first kind and the other calls are dropped (counted in
``dropped``, logged once) — never an exception on the Processor's thread.
"""

from offsetledger.exporters._names import describe, labels_of

__all__ = ["describe", "labels_of"]

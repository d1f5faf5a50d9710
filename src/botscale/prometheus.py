"""Prometheus exposition of a :class:`~botscale.PerformanceMonitor` (extra ``prometheus``).

    from prometheus_client import REGISTRY, start_http_server
    from botscale.prometheus import register

    register(mon)                  # on prometheus_client's default REGISTRY
    start_http_server(9100)        # or mon.serve(): /metrics is built in

Published metrics (``namespace`` defaults to ``botscale``; label ``operation``):

- ``botscale_operation_duration_seconds``: a summary with quantiles 0.5, 0.95,
  0.99 (within 1 %), ``_count`` and ``_sum``; or, given ``buckets=``, a
  histogram with those ``le`` bounds (aggregatable across bot instances).
- ``botscale_operation_duration_max_seconds`` (gauge),
  ``botscale_operation_errors_total``, ``botscale_slow_operations_total``,
  ``botscale_operation_names_overflowed_total`` (counters).
- ``botscale_process_resident_memory_bytes``, ``botscale_process_cpu_seconds_total``,
  ``botscale_process_threads``, ``botscale_event_loop_lag_seconds``,
  ``botscale_event_loop_lag_max_seconds``.
- ``botscale_health_status{status="ok|degraded|unhealthy"}``: 1 for the current
  threshold verdict (checks are not run on a scrape; ``/health`` runs them).

Counters restart from zero after :meth:`PerformanceMonitor.reset`, which
Prometheus treats as a counter reset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import NamedTuple

from ._compat import require

require("prometheus_client", "prometheus", feature="botscale.prometheus")

from prometheus_client.core import (  # noqa: E402
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry  # noqa: E402

from ._monitor import PerformanceMonitor  # noqa: E402
from ._snapshot import HealthStatus  # noqa: E402

__all__ = ["MonitorCollector", "register"]

_QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))


class MonitorCollector(Collector):
    """A prometheus_client collector reading a monitor's snapshot on every scrape.

    Args:
        monitor: the monitor to publish.
        namespace: metric name prefix.
        buckets: ascending ``le`` bounds in seconds; publish durations as a
            Prometheus histogram instead of a summary with quantiles.

    Raises:
        TypeError: ``monitor`` is not a PerformanceMonitor.
        ValueError: ``buckets`` is empty, not ascending, or holds a value <= 0.
    """

    def __init__(
        self,
        monitor: PerformanceMonitor,
        *,
        namespace: str = "botscale",
        buckets: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(monitor, PerformanceMonitor):
            raise TypeError(f"monitor must be a PerformanceMonitor, got {type(monitor).__name__}")
        if buckets is not None:
            bounds = [float(b) for b in buckets if not math.isinf(b)]
            if not bounds or any(b <= 0 or math.isnan(b) for b in bounds):
                raise ValueError(f"buckets must be finite seconds > 0, got {buckets!r}")
            if any(a >= b for a, b in pairwise(bounds)):
                raise ValueError(f"buckets must be strictly ascending, got {buckets!r}")
            self._buckets: list[float] | None = bounds
        else:
            self._buckets = None
        self._monitor = monitor
        self._ns = namespace

    def _families(self) -> _Families:
        ns, op = self._ns, ["operation"]
        duration_doc = "Duration of botscale-monitored operations in seconds."
        return _Families(
            summary=Metric(f"{ns}_operation_duration_seconds", duration_doc, "summary"),
            histogram=HistogramMetricFamily(
                f"{ns}_operation_duration_seconds", duration_doc, labels=op
            ),
            max=GaugeMetricFamily(
                f"{ns}_operation_duration_max_seconds", "Longest duration seen.", labels=op
            ),
            errors=CounterMetricFamily(
                f"{ns}_operation_errors",
                "Operations that raised or were recorded as failed.",
                labels=op,
            ),
            slow=CounterMetricFamily(
                f"{ns}_slow_operations", "Operations slower than their slow threshold.", labels=op
            ),
            overflowed=CounterMetricFamily(
                f"{ns}_operation_names_overflowed",
                "Samples counted under <other> because max_names distinct names were reached.",
            ),
            rss=GaugeMetricFamily(
                f"{ns}_process_resident_memory_bytes", "Resident memory of the bot process."
            ),
            cpu=CounterMetricFamily(
                f"{ns}_process_cpu_seconds", "User and system CPU time of the bot process."
            ),
            threads=GaugeMetricFamily(f"{ns}_process_threads", "Python threads alive."),
            lag=GaugeMetricFamily(
                f"{ns}_event_loop_lag_seconds", "Last measured asyncio event-loop lag."
            ),
            lag_max=GaugeMetricFamily(
                f"{ns}_event_loop_lag_max_seconds", "Largest event-loop lag since start or reset."
            ),
            health=GaugeMetricFamily(
                f"{ns}_health_status",
                "1 for the current health verdict of the thresholds.",
                labels=["status"],
            ),
        )

    def _published(self, f: _Families) -> Iterator[Metric]:
        yield f.summary if self._buckets is None else f.histogram
        yield from f[2:]

    def describe(self) -> Iterator[Metric]:
        """The metric families (empty), so a registry can detect duplicate names."""
        return self._published(self._families())

    def collect(self) -> Iterator[Metric]:
        """Read the monitor and yield every metric family."""
        snapshot = self._monitor.stats()
        f = self._families()
        if self._buckets is not None:
            histograms = self._monitor.histograms()
            for name, stats in snapshot.operations.items():
                counts = (
                    histograms[name].cumulative_counts(self._buckets)
                    if name in histograms
                    else [0] * len(self._buckets)
                )
                buckets = [(repr(b), float(c)) for b, c in zip(self._buckets, counts, strict=True)]
                f.histogram.add_metric(
                    [name], [*buckets, ("+Inf", float(stats.count))], stats.total
                )
        for name, stats in snapshot.operations.items():
            if self._buckets is None:
                summary = f.summary
                for label, field in _QUANTILES:
                    quantile = getattr(stats, field)
                    summary.add_sample(
                        summary.name, {"operation": name, "quantile": label}, quantile
                    )
                summary.add_sample(f"{summary.name}_count", {"operation": name}, stats.count)
                summary.add_sample(f"{summary.name}_sum", {"operation": name}, stats.total)
            f.max.add_metric([name], stats.max)
            f.errors.add_metric([name], stats.errors)
            f.slow.add_metric([name], stats.slow)
        f.overflowed.add_metric([], snapshot.overflowed)
        process = snapshot.process
        if process.rss_bytes is not None:
            f.rss.add_metric([], process.rss_bytes)
        f.cpu.add_metric([], process.cpu_seconds)
        f.threads.add_metric([], process.threads)
        if process.event_loop_lag is not None:
            f.lag.add_metric([], process.event_loop_lag)
            f.lag_max.add_metric([], process.event_loop_lag_max or 0.0)
        for status in HealthStatus:
            f.health.add_metric([status.value], 1.0 if snapshot.health.status is status else 0.0)
        return self._published(f)


class _Families(NamedTuple):
    summary: Metric
    histogram: HistogramMetricFamily
    max: GaugeMetricFamily
    errors: CounterMetricFamily
    slow: CounterMetricFamily
    overflowed: CounterMetricFamily
    rss: GaugeMetricFamily
    cpu: CounterMetricFamily
    threads: GaugeMetricFamily
    lag: GaugeMetricFamily
    lag_max: GaugeMetricFamily
    health: GaugeMetricFamily


def register(
    monitor: PerformanceMonitor,
    registry: CollectorRegistry | None = None,
    *,
    namespace: str = "botscale",
    buckets: Sequence[float] | None = None,
) -> MonitorCollector:
    """Create a :class:`MonitorCollector` and register it (default: prometheus_client's REGISTRY).

    Raises:
        ValueError: the registry already holds metrics of these names.
    """
    collector = MonitorCollector(monitor, namespace=namespace, buckets=buckets)
    (REGISTRY if registry is None else registry).register(collector)
    return collector

"""botscale.prometheus: the collector's metrics parse and carry the monitor's figures."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from botscale import PerformanceMonitor
from botscale.prometheus import MonitorCollector, register
from botscale.testing import FakeClock


def scrape(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    (match,) = [s.value for s in samples if s.name == name and s.labels == labels]
    return match


@pytest.fixture
def mon(clock: FakeClock) -> PerformanceMonitor:
    m = PerformanceMonitor(clock=clock, slow_threshold=1.0)
    for ms in range(1, 101):
        m.record("db.save", ms / 1000, error=ms % 25 == 0)
    m.record("ai.reply", 4.0)
    m.note_loop_lag(0.003)
    return m


def test_summary_publishes_quantiles_count_sum_and_counters(mon: PerformanceMonitor) -> None:
    registry = CollectorRegistry()
    register(mon, registry)
    metrics = scrape(registry)
    duration = metrics["botscale_operation_duration_seconds"]
    name = "botscale_operation_duration_seconds"
    assert value(duration, name, operation="db.save", quantile="0.5") == pytest.approx(
        0.05, rel=0.01
    )
    assert value(duration, name, operation="db.save", quantile="0.95") == pytest.approx(
        0.095, rel=0.01
    )
    assert value(duration, name, operation="db.save", quantile="0.99") == pytest.approx(
        0.099, rel=0.01
    )
    assert value(duration, f"{name}_count", operation="db.save") == 100
    assert value(duration, f"{name}_sum", operation="db.save") == pytest.approx(5.05)
    errors = metrics["botscale_operation_errors"]
    assert value(errors, "botscale_operation_errors_total", operation="db.save") == 4
    slow = metrics["botscale_slow_operations"]
    assert value(slow, "botscale_slow_operations_total", operation="ai.reply") == 1
    assert value(slow, "botscale_slow_operations_total", operation="db.save") == 0
    maximum = metrics["botscale_operation_duration_max_seconds"]
    assert value(maximum, "botscale_operation_duration_max_seconds", operation="ai.reply") == 4.0
    lag = metrics["botscale_event_loop_lag_seconds"]
    assert value(lag, "botscale_event_loop_lag_seconds") == pytest.approx(0.003)
    assert value(metrics["botscale_process_cpu_seconds"], "botscale_process_cpu_seconds_total") > 0
    assert value(metrics["botscale_process_threads"], "botscale_process_threads") >= 1
    health = metrics["botscale_health_status"]
    # db.save fails 4 % of calls: degraded by the default 1 % rule.
    assert value(health, "botscale_health_status", status="degraded") == 1
    assert value(health, "botscale_health_status", status="ok") == 0


def test_histogram_mode_publishes_cumulative_buckets(mon: PerformanceMonitor) -> None:
    registry = CollectorRegistry()
    # Bounds 5 % away from every sample (1, 2, ..., 100 ms): well beyond the 1 % error.
    register(mon, registry, buckets=[0.0105, 0.0505, 0.1005, 1.0, 10.0])
    duration = scrape(registry)["botscale_operation_duration_seconds"]
    name = "botscale_operation_duration_seconds_bucket"
    les = ("0.0105", "0.0505", "0.1005", "1.0", "10.0", "+Inf")
    assert [value(duration, name, operation="db.save", le=le) for le in les] == [
        10,
        50,
        100,
        100,
        100,
        100,
    ]
    assert [value(duration, name, operation="ai.reply", le=le) for le in les] == [0, 0, 0, 0, 1, 1]
    assert value(duration, "botscale_operation_duration_seconds_count", operation="ai.reply") == 1
    assert value(duration, "botscale_operation_duration_seconds_sum", operation="ai.reply") == 4.0


def test_namespace_and_label_escaping(clock: FakeClock) -> None:
    mon = PerformanceMonitor(clock=clock)
    mon.record('say "hi"\\n', 0.1)
    registry = CollectorRegistry()
    register(mon, registry, namespace="mybot")
    duration = scrape(registry)["mybot_operation_duration_seconds"]
    count = value(duration, "mybot_operation_duration_seconds_count", operation='say "hi"\\n')
    assert count == 1


def test_registering_twice_on_one_registry_is_refused(mon: PerformanceMonitor) -> None:
    registry = CollectorRegistry()
    register(mon, registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register(mon, registry)


def test_bad_collector_arguments_are_refused(mon: PerformanceMonitor) -> None:
    with pytest.raises(TypeError, match="PerformanceMonitor"):
        MonitorCollector(object())  # type: ignore[arg-type]
    for buckets in ([], [0.1, 0.1], [1.0, 0.5], [-1.0], [float("nan")]):
        with pytest.raises(ValueError, match="buckets"):
            MonitorCollector(mon, buckets=buckets)


def test_an_empty_monitor_still_scrapes(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    register(PerformanceMonitor(clock=clock), registry)
    metrics = scrape(registry)
    assert metrics["botscale_operation_duration_seconds"] == []
    assert value(metrics["botscale_health_status"], "botscale_health_status", status="ok") == 1

"""The monitor's HTTP endpoints over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from botscale import HealthThresholds, MonitorServer, PerformanceMonitor
from botscale.testing import FakeClock


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    """Status, content type and body of one request (error statuses included)."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], err.read()


def get_json(url: str) -> tuple[int, Any]:
    status, content_type, body = get(url)
    assert content_type == "application/json; charset=utf-8"
    return status, json.loads(body)


@pytest.fixture
def mon(clock: FakeClock) -> PerformanceMonitor:
    m = PerformanceMonitor(clock=clock, health=HealthThresholds(min_count=1))
    m.record("db.save", 0.012)
    m.record("handler.start", 0.2, user_id=42)
    return m


@pytest.fixture
def server(mon: PerformanceMonitor) -> Iterator[MonitorServer]:
    with mon.serve_in_thread(port=0) as srv:
        yield srv


def test_binds_loopback_on_an_ephemeral_port(server: MonitorServer) -> None:
    assert server.running
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_health_answers_200_while_healthy(server: MonitorServer) -> None:
    status, body = get_json(server.url + "/health")
    assert status == 200
    assert body == {"status": "ok", "reasons": [], "checks": {}}


def test_stats_serves_the_json_snapshot(server: MonitorServer) -> None:
    status, body = get_json(server.url + "/stats")
    assert status == 200
    assert body["operations"]["db.save"]["count"] == 1
    assert body["operations"]["handler.start"]["p95"] == pytest.approx(0.2, rel=0.01)
    assert body["health"]["status"] == "ok"
    assert body["process"]["threads"] >= 2


def test_metrics_serves_prometheus_text_that_parses(server: MonitorServer) -> None:
    status, content_type, body = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in families["botscale_operation_duration_seconds"].samples
    }
    assert samples[("botscale_operation_duration_seconds_count", (("operation", "db.save"),))] == 1
    assert "botscale_operation_errors" in families
    assert "botscale_process_resident_memory_bytes" in families


def test_unknown_paths_get_404_and_head_has_no_body(server: MonitorServer) -> None:
    status, body = get_json(server.url + "/nope")
    assert status == 404
    assert body["endpoints"] == ["/health", "/stats", "/metrics"]
    status, _, payload = get(server.url + "/health", method="HEAD")
    assert (status, payload) == (200, b"")
    assert get_json(server.url + "/stats/?pretty=1")[0] == 200  # slash and query ignored


def test_a_raising_check_gives_503_with_the_error_and_the_server_keeps_serving(
    mon: PerformanceMonitor, server: MonitorServer
) -> None:
    def database() -> None:
        raise ConnectionError("connection refused")

    mon.add_check("database", database)
    for _ in range(3):
        status, body = get_json(server.url + "/health")
        assert status == 503
        assert body["status"] == "unhealthy"
        assert body["reasons"] == ["check database: ConnectionError: connection refused"]
        assert body["checks"] == {"database": "ConnectionError: connection refused"}
    assert get_json(server.url + "/stats")[0] == 200
    mon.remove_check("database")
    assert get_json(server.url + "/health")[0] == 200


def test_a_crossed_threshold_gives_503_with_the_reason(
    mon: PerformanceMonitor, server: MonitorServer
) -> None:
    mon.record("api.send", 3.0, error=True)
    status, body = get_json(server.url + "/health")
    assert status == 503
    assert body["status"] == "degraded"
    assert any(r.startswith("api.send: p95 3.00 s above 1.00 s") for r in body["reasons"])
    assert any(r.startswith("api.send: error rate 100.0%") for r in body["reasons"])


def test_an_endpoint_that_fails_answers_500_and_the_server_survives(
    mon: PerformanceMonitor, server: MonitorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("snapshot failed")

    monkeypatch.setattr(mon, "stats", broken)
    status, body = get_json(server.url + "/stats")
    assert status == 500
    assert body == {"error": "RuntimeError: snapshot failed"}
    monkeypatch.undo()
    assert get_json(server.url + "/stats")[0] == 200


def test_metrics_without_prometheus_client_is_a_clear_501(
    server: MonitorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "botscale.prometheus", raising=False)
    status, content_type, body = get(server.url + "/metrics")
    assert status == 501
    assert content_type.startswith("text/plain")
    assert b"pip install 'botscale[prometheus]'" in body


def test_concurrent_requests_are_all_answered(server: MonitorServer) -> None:
    results: list[int] = []

    def hit() -> None:
        for path in ("/health", "/stats", "/metrics"):
            results.append(get(server.url + path)[0])

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 24


def test_stop_closes_the_port_and_is_idempotent(mon: PerformanceMonitor) -> None:
    server = mon.serve_in_thread()
    port = server.port
    server.stop()
    server.stop()
    assert not server.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_a_started_server_cannot_start_twice_and_a_taken_port_raises(
    mon: PerformanceMonitor, server: MonitorServer
) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    with pytest.raises(OSError):
        mon.serve_in_thread(port=server.port)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"port": -1}, ValueError, "port"),
        ({"port": 70000}, ValueError, "port"),
        ({"port": "8080"}, TypeError, "port"),
        ({"host": 127}, TypeError, "host"),
    ],
)
def test_bad_addresses_are_refused(
    mon: PerformanceMonitor, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        mon.serve(**kwargs)


async def test_async_server_runs_async_checks_in_the_bots_loop(mon: PerformanceMonitor) -> None:
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()  # bound to this loop, like a redis.asyncio client
    ready.set()
    seen: list[asyncio.AbstractEventLoop] = []

    async def redis_ping() -> bool:
        seen.append(asyncio.get_running_loop())
        await ready.wait()
        return True

    mon.add_check("redis", redis_ping)
    async with mon.serve(port=0) as server:
        status, body = await asyncio.to_thread(get_json, server.url + "/health")
        assert (status, body["checks"]) == (200, {"redis": "ok"})
        assert seen == [loop]
    assert not server.running


async def test_async_server_reports_a_hung_async_check_as_timed_out(clock: FakeClock) -> None:
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    mon = PerformanceMonitor(clock=clock, checks={"redis": stuck}, check_timeout=0.05)
    async with mon.serve() as server:
        status, body = await asyncio.to_thread(get_json, server.url + "/health")
    assert status == 503
    assert body["checks"] == {"redis": "timed out after 0.05 s"}


def test_a_given_registry_is_what_metrics_serves(mon: PerformanceMonitor) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from botscale.prometheus import register

    registry = CollectorRegistry()
    Counter("bot_messages", "Messages handled.", registry=registry).inc(3)
    register(mon, registry, namespace="mybot")
    with mon.serve_in_thread(registry=registry) as server:
        status, _, body = get(server.url + "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert status == 200
    assert families["bot_messages"].samples[0].value == 3
    assert "mybot_operation_duration_seconds" in families
    assert "botscale_operation_duration_seconds" not in families

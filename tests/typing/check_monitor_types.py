"""Static typing checks of the monitor (mypy --strict only, never executed).

``timed`` must keep the decorated signatures, sync and async; the snapshot is a
typed mapping; the Prometheus collector is a prometheus_client Collector.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from prometheus_client.registry import Collector
from typing_extensions import assert_type

from botscale import (
    Health,
    HealthStatus,
    MonitorServer,
    MonitorSnapshot,
    OperationStats,
    PerformanceMonitor,
    ProcessStats,
    SlowOperation,
    SummaryThread,
    Tracker,
)
from botscale.prometheus import MonitorCollector, register

mon = PerformanceMonitor(slow_threshold=2.0, slow_thresholds={"db.save": 0.5})


@mon.timed("db.load")
def load(user_id: int, *, fresh: bool = False) -> dict[str, int]:
    return {"id": user_id}


@mon.timed()
async def fetch(url: str) -> bytes:
    return url.encode()


assert_type(load(1, fresh=True), dict[str, int])


async def use_fetch() -> None:
    assert_type(await fetch(url="x"), bytes)
    coro: Coroutine[Any, Any, bytes] = fetch("x")
    await coro


with mon.track("handler.start", user_id=42, update="message") as op:
    assert_type(op, Tracker)
    assert_type(op.seconds, float | None)
mon.record("api.send", 0.2, error=True, chat_id=-100)

snapshot = mon.stats()
assert_type(snapshot, MonitorSnapshot)
assert_type(snapshot["db.load"], OperationStats)
assert_type(snapshot["db.load"].p95, float)
assert_type(snapshot.process, ProcessStats)
assert_type(snapshot.process.rss_bytes, int | None)
assert_type(snapshot.health, Health)
assert_type(snapshot.health.status, HealthStatus)
assert_type(snapshot.slow_operations, tuple[SlowOperation, ...])
assert_type(mon.check_health(), Health)
assert_type(mon.log_summary(), MonitorSnapshot)
assert_type(mon.start_summary_thread(3600.0), SummaryThread)
assert_type(mon.serve(port=0), MonitorServer)
assert_type(mon.serve_in_thread().port, int)

collector = register(mon)
assert_type(collector, MonitorCollector)
checked: Collector = collector

"""PerformanceMonitor: recording, slow log, name cap, snapshot, health, background work."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from botscale import (
    Health,
    HealthStatus,
    HealthThresholds,
    MonitorSnapshot,
    OperationStats,
    PerformanceMonitor,
)
from botscale._monitor import OTHER_OPERATION
from botscale._process import ProcessReader
from botscale.testing import FakeClock

LOGGER = "botscale.monitor"


def monitor(clock: FakeClock, **kwargs: object) -> PerformanceMonitor:
    return PerformanceMonitor(clock=clock, **kwargs)  # type: ignore[arg-type]


def slow_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("slow operation")]


def yielding_sleep(clock: FakeClock, extra: float = 0.0) -> Callable[[float], Awaitable[None]]:
    """A sleep that advances the fake clock (plus ``extra``) and lets other tasks run."""

    async def sleep(seconds: float) -> None:
        clock.advance(seconds + extra)
        await asyncio.sleep(0)

    return sleep


# ---------------------------------------------------------------------- recording


def test_track_times_a_block_by_the_injected_clock(clock: FakeClock) -> None:
    mon = monitor(clock)
    for seconds in (0.1, 0.2, 0.3):
        with mon.track("db.save") as tracker:
            clock.advance(seconds)
        assert tracker.seconds == pytest.approx(seconds)
    stats = mon.stats()["db.save"]
    assert (stats.count, stats.errors, stats.slow) == (3, 0, 0)
    assert stats.mean == pytest.approx(0.2)
    assert stats.min == pytest.approx(0.1)
    assert stats.max == pytest.approx(0.3)
    assert stats.p50 == pytest.approx(0.2, rel=0.01)


def test_errors_are_counted_and_the_exception_propagates(clock: FakeClock) -> None:
    mon = monitor(clock)
    with pytest.raises(KeyError, match="boom"), mon.track("db.save"):
        raise KeyError("boom")
    with mon.track("db.save"):
        pass
    stats = mon.stats()["db.save"]
    assert (stats.count, stats.errors, stats.error_rate) == (2, 1, 0.5)


async def test_async_track_counts_errors_and_propagates(clock: FakeClock) -> None:
    mon = monitor(clock)
    async with mon.track("api.call"):
        clock.advance(0.05)
    with pytest.raises(ConnectionError):
        async with mon.track("api.call"):
            raise ConnectionError("down")
    stats = mon.stats()["api.call"]
    assert (stats.count, stats.errors) == (2, 1)
    assert stats.max == pytest.approx(0.05)


async def test_cancellation_is_timed_but_not_an_error(clock: FakeClock) -> None:
    mon = monitor(clock)
    with pytest.raises(asyncio.CancelledError):
        async with mon.track("handler"):
            raise asyncio.CancelledError
    assert (mon.stats()["handler"].count, mon.stats()["handler"].errors) == (1, 0)


def test_timed_decorates_sync_functions_keeping_name_and_signature(clock: FakeClock) -> None:
    mon = monitor(clock)

    @mon.timed("db.load")
    def load(user_id: int, *, fresh: bool = False) -> dict[str, int]:
        """Load a user."""
        clock.advance(0.01)
        if user_id < 0:
            raise LookupError(user_id)
        return {"id": user_id}

    assert load(7) == {"id": 7}
    with pytest.raises(LookupError):
        load(-1)
    assert load.__name__ == "load"
    assert load.__doc__ == "Load a user."
    assert list(inspect.signature(load).parameters) == ["user_id", "fresh"]
    stats = mon.stats()["db.load"]
    assert (stats.count, stats.errors) == (2, 1)


async def test_timed_decorates_async_functions(clock: FakeClock) -> None:
    mon = monitor(clock)

    @mon.timed()
    async def fetch(n: int) -> int:
        clock.advance(0.02)
        if n == 0:
            raise ZeroDivisionError
        return n * 2

    assert inspect.iscoroutinefunction(fetch)
    assert await fetch(3) == 6
    with pytest.raises(ZeroDivisionError):
        await fetch(0)
    name = f"{__name__}.test_timed_decorates_async_functions.<locals>.fetch"
    stats = mon.stats()[name]
    assert (stats.count, stats.errors) == (2, 1)
    assert stats.mean == pytest.approx(0.02)


def test_timed_refuses_generators(clock: FakeClock) -> None:
    mon = monitor(clock)

    def numbers() -> object:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        mon.timed("gen")(numbers)


def test_record_counts_a_measured_duration(clock: FakeClock) -> None:
    mon = monitor(clock)
    mon.record("api.send", 0.25)
    mon.record("api.send", 1, error=True)
    stats = mon.stats()["api.send"]
    assert (stats.count, stats.errors, stats.total) == (2, 1, 1.25)


def test_counts_are_exact_under_threads() -> None:
    mon = PerformanceMonitor()
    workers, each = 8, 2_000

    def work(i: int) -> None:
        for n in range(each):
            mon.record(f"op{i % 2}", 0.001, error=n % 10 == 0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = mon.stats()
    assert snap.count == workers * each
    assert snap.errors == workers * each // 10
    assert snap["op0"].count == snap["op1"].count == workers * each // 2


def test_stats_with_reset_loses_no_sample_recorded_meanwhile() -> None:
    mon = PerformanceMonitor()
    total = 20_000
    done = threading.Event()

    def recorder() -> None:
        for _ in range(total):
            mon.record("op", 0.001)
        done.set()

    seen = 0
    thread = threading.Thread(target=recorder)
    thread.start()
    while not done.is_set():
        seen += sum(op.count for op in mon.stats(reset=True).operations.values())
    thread.join()
    seen += sum(op.count for op in mon.stats(reset=True).operations.values())
    assert seen == total


def test_concurrent_readers_and_window_rotation_agree(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(window=1.0, min_count=1))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                mon.record("op", 0.01)
                clock.advance(0.05)
                mon.stats()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert mon.stats()["op"].count == 1200


# ---------------------------------------------------------------------- slow operations


def test_a_slow_operation_is_logged_exactly_once_with_its_context(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock, slow_threshold=1.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    with mon.track("handler.start", user_id=42, chat_id=-100, update="message"):
        clock.advance(1.5)
    with mon.track("handler.start", user_id=43):
        clock.advance(0.5)  # fast: not logged

    (record,) = slow_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.name == LOGGER
    message = record.getMessage()
    assert "handler.start" in message
    assert "1.50 s" in message
    assert "user_id=42" in message
    assert "chat_id=-100" in message
    assert "update='message'" in message
    assert record.botscale_operation == "handler.start"  # type: ignore[attr-defined]
    assert record.botscale_seconds == pytest.approx(1.5)  # type: ignore[attr-defined]
    assert record.botscale_context == {"user_id": 42, "chat_id": -100, "update": "message"}  # type: ignore[attr-defined]

    snap = mon.stats()
    assert snap["handler.start"].slow == 1
    (slow,) = snap.slow_operations
    assert slow.name == "handler.start"
    assert slow.seconds == pytest.approx(1.5)
    assert slow.threshold == 1.0
    assert dict(slow.context) == {"user_id": 42, "chat_id": -100, "update": "message"}
    assert not slow.error


def test_context_can_be_attached_inside_the_block(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock, slow_threshold=1.0)
    with mon.track("handler") as tracker:
        tracker.context["user_id"] = 7
        clock.advance(2.0)
    assert "user_id=7" in slow_records(caplog)[0].getMessage()


def test_per_name_threshold_overrides_the_default(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock, slow_threshold=2.0, slow_thresholds={"db.save": 0.5})
    mon.record("db.save", 0.6)
    mon.record("ai.reply", 0.6)
    mon.record("ai.reply", 2.5, error=True)
    logged = [r.botscale_operation for r in slow_records(caplog)]  # type: ignore[attr-defined]
    assert logged == ["db.save", "ai.reply"]
    assert "and failed" in slow_records(caplog)[1].getMessage()
    snap = mon.stats()
    assert (snap["db.save"].slow, snap["ai.reply"].slow) == (1, 1)
    assert [s.threshold for s in snap.slow_operations] == [0.5, 2.0]


def test_slow_ring_is_bounded_and_keeps_the_latest(clock: FakeClock) -> None:
    mon = monitor(clock, slow_threshold=0.1, slow_log_size=3)
    for i in range(10):
        mon.record("op", 1.0 + i)
    snap = mon.stats()
    assert [s.seconds for s in snap.slow_operations] == [8.0, 9.0, 10.0]
    assert snap["op"].slow == 10  # every one counted, only the ring is bounded


# ---------------------------------------------------------------------- name cap


def test_names_beyond_the_cap_are_counted_under_other(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock, max_names=3)
    for i in range(10):
        mon.record(f"user:{i}", 0.01)
    mon.record("user:0", 0.01)  # a known name keeps its own figures
    snap = mon.stats()
    assert set(snap) == {"user:0", "user:1", "user:2", OTHER_OPERATION}
    assert snap[OTHER_OPERATION].count == snap.overflowed == 7
    assert snap["user:0"].count == 2
    assert snap.count == 11  # nothing lost
    warnings = [r for r in caplog.records if "max_names" in r.getMessage()]
    assert len(warnings) == 1


# ---------------------------------------------------------------------- snapshot


def test_snapshot_is_a_frozen_mapping_and_serialises_to_json(clock: FakeClock) -> None:
    mon = monitor(clock, slow_threshold=0.5)
    mon.record("a", 0.1)
    mon.record("b", 1.0, user=object())
    snap = mon.stats()
    assert isinstance(snap, MonitorSnapshot)
    assert isinstance(snap["a"], OperationStats)
    assert len(snap) == 2
    assert "a" in snap
    assert sorted(snap) == ["a", "b"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap["a"].count = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.operations["c"] = snap["a"]  # type: ignore[index]
    data = json.loads(snap.to_json())
    assert data["operations"]["a"]["count"] == 1
    assert data["health"]["status"] == "ok"
    assert data["slow_operations"][0]["context"]["user"].startswith("<object")
    assert set(data["process"]) >= {"rss_bytes", "cpu_seconds", "threads", "event_loop_lag"}


def test_stats_of_a_fresh_monitor_are_empty_and_healthy(clock: FakeClock) -> None:
    snap = monitor(clock).stats()
    assert len(snap) == 0
    assert snap.count == 0
    assert snap.health == Health(HealthStatus.OK)


def test_process_figures_are_read(clock: FakeClock) -> None:
    clock.advance(5.0)
    process = monitor(clock).stats().process
    assert process.cpu_seconds > 0
    assert process.threads >= 1
    if sys.platform == "linux":
        assert process.rss_bytes is not None
        assert process.rss_bytes > 1024 * 1024
    assert process.event_loop_lag is None  # no probe ran


def test_process_figures_need_no_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)  # makes `import psutil` fail
    reader = ProcessReader()
    assert reader.rss_source in {"procfs", "ru_maxrss", "none"}
    if sys.platform == "linux":
        assert reader.rss_source == "procfs"
        rss = reader.rss_bytes()
        assert rss is not None
        assert rss > 1024 * 1024


def test_log_summary_logs_one_readable_record_and_can_reset(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock)
    mon.record("db.save", 0.012)
    mon.record("api.send", 0.3, error=True)
    caplog.set_level(logging.INFO, logger=LOGGER)
    snap = mon.log_summary(reset=True)
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.INFO
    assert "2 calls, 1 errors in 2 operations" in text
    assert "db.save: 1 calls" in text
    assert "p95 12.0 ms" in text
    assert "process: rss" in text
    assert snap.count == 2
    assert mon.stats().count == 0


def test_reset_forgets_samples_slow_operations_and_lag(clock: FakeClock) -> None:
    mon = monitor(clock, slow_threshold=0.1, max_names=1)
    mon.record("a", 1.0)
    mon.record("b", 1.0)
    mon.note_loop_lag(0.2)
    mon.reset()
    snap = mon.stats()
    assert (len(snap), snap.overflowed, snap.slow_operations) == (0, 0, ())
    assert snap.process.event_loop_lag is None


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("seconds", [-0.001, -1, math.nan, math.inf])
def test_record_refuses_negative_nan_and_infinite_durations(
    clock: FakeClock, seconds: float
) -> None:
    mon = monitor(clock)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        mon.record("op", seconds)
    assert mon.stats().count == 0


@pytest.mark.parametrize("seconds", ["1.0", None, True])
def test_record_refuses_durations_that_are_not_numbers(clock: FakeClock, seconds: object) -> None:
    with pytest.raises(TypeError, match="seconds must be a number"):
        monitor(clock).record("op", seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [42, None, b"op", ("a",)])
def test_names_must_be_str(clock: FakeClock, name: object) -> None:
    mon = monitor(clock)
    with pytest.raises(TypeError, match="operation name must be str"):
        mon.record(name, 0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="operation name must be str"):
        mon.track(name)  # type: ignore[arg-type]
    if name is not None:  # timed() without a name uses the function's
        with pytest.raises(TypeError, match="operation name must be str"):
            mon.timed(name)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be str"):
        monitor(clock, slow_thresholds={name: 1.0})


def test_empty_names_are_refused(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="empty"):
        monitor(clock).record("", 0.1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"slow_threshold": 0}, ValueError, "slow_threshold"),
        ({"slow_threshold": -1.0}, ValueError, "slow_threshold"),
        ({"slow_threshold": math.nan}, ValueError, "slow_threshold"),
        ({"slow_threshold": "2"}, TypeError, "slow_threshold"),
        ({"slow_thresholds": {"db": 0.0}}, ValueError, r"slow_thresholds\['db'\]"),
        ({"max_names": 0}, ValueError, "max_names"),
        ({"slow_log_size": 0}, ValueError, "slow_log_size"),
        ({"check_timeout": 0}, ValueError, "check_timeout"),
        ({"health": {"p95": 1.0}}, TypeError, "health must be HealthThresholds"),
        ({"clock": 5}, TypeError, "clock must be callable"),
    ],
)
def test_bad_configuration_fails_at_construction(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        PerformanceMonitor(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"p95": 0}, ValueError, "p95"),
        ({"error_rate": -0.1}, ValueError, "error_rate"),
        ({"error_rate": 1.5}, ValueError, "error_rate"),
        ({"max_rss": 0}, ValueError, "max_rss"),
        ({"max_rss": 1.5}, TypeError, "max_rss"),
        ({"max_loop_lag": -1}, ValueError, "max_loop_lag"),
        ({"operation_p95": {"ai": 0}}, ValueError, "operation_p95"),
        ({"operation_p95": {1: 1.0}}, TypeError, "operation_p95"),
        ({"min_count": 0}, ValueError, "min_count"),
        ({"window": 0}, ValueError, "window"),
    ],
)
def test_bad_health_thresholds_are_refused(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        HealthThresholds(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- health


def test_health_degrades_when_p95_crosses_the_threshold(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(p95=1.0, min_count=10))
    for _ in range(9):
        mon.record("db.save", 0.1)
    for _ in range(3):
        mon.record("db.save", 1.5)
    health = mon.stats().health
    assert health.status is HealthStatus.DEGRADED
    assert not health.ok
    (reason,) = health.reasons
    assert reason.startswith("db.save: p95 1.50 s above 1.00 s (12 calls")


def test_health_degrades_when_the_error_rate_crosses_the_threshold(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(error_rate=0.01, min_count=20))
    for i in range(100):
        mon.record("api.send", 0.01, error=i < 1)
    assert mon.stats().health.ok  # 1 % is not above 1 %
    mon.record("api.send", 0.01, error=True)
    health = mon.stats().health
    assert health.status is HealthStatus.DEGRADED
    assert "api.send: error rate 2.0% above 1.0% (2 of 101 calls" in health.reasons[0]


def test_operations_with_few_calls_are_not_judged(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(min_count=5))
    for _ in range(4):
        mon.record("rare", 9.0, error=True)
    assert mon.stats().health.ok


def test_a_per_operation_p95_overrides_the_default(clock: FakeClock) -> None:
    thresholds = HealthThresholds(p95=1.0, operation_p95={"ai.reply": 10.0}, min_count=1)
    mon = monitor(clock, health=thresholds)
    mon.record("ai.reply", 5.0)
    assert mon.stats().health.ok
    mon.record("db.save", 5.0)
    assert [r.split(":")[0] for r in mon.stats().health.reasons] == ["db.save"]


def test_memory_and_loop_lag_thresholds(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(max_rss=1024, max_loop_lag=0.5))
    mon.note_loop_lag(0.8)
    health = mon.stats().health
    assert health.status is HealthStatus.DEGRADED
    assert any(r.startswith("event loop lag 800.0 ms above 500.0 ms") for r in health.reasons)
    if sys.platform == "linux":
        assert any(r.startswith("resident memory") for r in health.reasons)


def test_health_recovers_once_bad_calls_leave_the_window(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(window=60.0, min_count=10))
    for _ in range(20):
        mon.record("db.save", 0.01, error=True)
    assert mon.stats().health.status is HealthStatus.DEGRADED
    # Health read regularly (as /health and scrapes do) while good calls arrive.
    for _ in range(3):
        clock.advance(60.0)
        for _ in range(20):
            mon.record("db.save", 0.01)
        mon.stats()
    assert mon.stats().health.ok
    assert mon.stats()["db.save"].errors == 20  # the cumulative figures keep them


def test_without_a_window_health_judges_everything_since_start(clock: FakeClock) -> None:
    mon = monitor(clock, health=HealthThresholds(window=None, min_count=10))
    for _ in range(20):
        mon.record("db.save", 0.01, error=True)
    for _ in range(3):
        clock.advance(60.0)
        for _ in range(20):
            mon.record("db.save", 0.01)
        assert mon.stats().health.status is HealthStatus.DEGRADED


def test_a_raising_check_makes_health_unhealthy_with_the_error(clock: FakeClock) -> None:
    def database() -> None:
        raise ConnectionError("connection refused")

    mon = monitor(clock, checks={"database": database, "cache": lambda: True})
    health = mon.check_health()
    assert health.status is HealthStatus.UNHEALTHY
    assert health.reasons == ("check database: ConnectionError: connection refused",)
    assert dict(health.checks) == {
        "database": "ConnectionError: connection refused",
        "cache": "ok",
    }
    mon.remove_check("database")
    assert mon.check_health().ok


def test_a_check_returning_false_fails(clock: FakeClock) -> None:
    mon = monitor(clock)
    mon.add_check("queue", lambda: False)
    assert mon.check_health().checks["queue"] == "failed: returned False"


def test_async_checks_run_from_sync_code(clock: FakeClock) -> None:
    async def ping() -> bool:
        await asyncio.sleep(0)
        return True

    async def broken() -> None:
        raise OSError("redis down")

    mon = monitor(clock, checks={"ping": ping, "redis": broken})
    health = mon.check_health()
    assert dict(health.checks) == {"ping": "ok", "redis": "OSError: redis down"}


async def test_acheck_health_awaits_checks_in_the_running_loop(clock: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    seen: list[asyncio.AbstractEventLoop] = []

    async def ping() -> None:
        seen.append(asyncio.get_running_loop())

    mon = monitor(clock, checks={"ping": ping, "sync": lambda: None})
    mon.record("op", 0.01)
    health = await mon.acheck_health()
    assert health.ok
    assert dict(health.checks) == {"ping": "ok", "sync": "ok"}
    assert seen == [loop]


async def test_sync_check_health_inside_a_loop_reports_instead_of_hanging(
    clock: FakeClock,
) -> None:
    async def ping() -> None:
        return None

    mon = monitor(clock, checks={"ping": ping})
    health = mon.check_health()  # wrong from a coroutine, but it must not hang or crash
    assert health.status is HealthStatus.UNHEALTHY
    assert "inside a running event loop" in health.checks["ping"]


def test_a_hung_check_times_out_and_never_piles_up_threads() -> None:
    release = threading.Event()
    calls: list[int] = []

    def stuck() -> None:
        calls.append(1)
        release.wait(10)

    mon = PerformanceMonitor(checks={"db": stuck}, check_timeout=0.05)
    try:
        first = mon.check_health()
        second = mon.check_health()
        assert first.checks["db"] == second.checks["db"] == "timed out after 0.05 s"
        assert first.status is HealthStatus.UNHEALTHY
        assert len(calls) == 1  # the still-running call was not started again
    finally:
        release.set()


def test_bad_checks_are_refused(clock: FakeClock) -> None:
    mon = monitor(clock)
    with pytest.raises(TypeError, match="callable"):
        mon.add_check("db", "SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="check name"):
        mon.add_check(5, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        mon.add_check("", lambda: None)


# ---------------------------------------------------------------------- background work


async def test_lag_probe_measures_how_late_the_loop_wakes(clock: FakeClock) -> None:
    mon = monitor(clock)
    task = asyncio.create_task(mon.run_lag_probe(0.5, sleep=yielding_sleep(clock, extra=0.03)))
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    process = mon.stats().process
    assert process.event_loop_lag == pytest.approx(0.03)
    assert process.event_loop_lag_max == pytest.approx(0.03)


async def test_lag_probe_on_the_real_loop_sees_a_blocking_call() -> None:
    mon = PerformanceMonitor()
    task = asyncio.create_task(mon.run_lag_probe(0.01))
    await asyncio.sleep(0)  # the probe starts its first sleep
    time.sleep(0.1)  # noqa: ASYNC251  (a handler blocking the loop: what the probe is for)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lag_max = mon.stats().process.event_loop_lag_max
    assert lag_max is not None
    assert lag_max >= 0.05


async def test_periodic_summary_task_logs_until_cancelled(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    mon = monitor(clock)
    mon.record("op", 0.01)
    caplog.set_level(logging.INFO, logger=LOGGER)
    task = asyncio.create_task(mon.run_summary(3600.0, reset=True, sleep=yielding_sleep(clock)))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    summaries = [r for r in caplog.records if r.getMessage().startswith("performance:")]
    assert len(summaries) >= 2
    assert "1 calls" in summaries[0].getMessage()
    assert "0 calls" in summaries[1].getMessage()  # reset after each summary


def test_summary_thread_logs_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    mon = PerformanceMonitor()
    caplog.set_level(logging.INFO, logger=LOGGER)
    with mon.start_summary_thread(0.01) as thread:
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.005)
        was_running = thread.running
    assert was_running
    assert not thread.running
    assert caplog.records[0].getMessage().startswith("performance:")


@pytest.mark.parametrize("every", [0, -1.0])
def test_background_periods_must_be_positive(clock: FakeClock, every: float) -> None:
    mon = monitor(clock)
    with pytest.raises(ValueError, match="every"):
        mon.start_summary_thread(every)
    with pytest.raises(ValueError, match="interval"):
        asyncio.run(mon.run_lag_probe(every))


# ---------------------------------------------------------------------- docs


def test_docs_examples_run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # keep pytest's handlers
    page = Path(__file__).resolve().parents[1] / "docs" / "monitoring.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert len(blocks) >= 9
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs_example"})
    out = capsys.readouterr().out
    assert "1 0 p95=0.0" in out
    context = "{'user_id': 42, 'chat_id': 42, 'update': 'message', 'command': '/start'}"
    assert f"handler.start 2.5 2.0 {context}" in out
    assert "('ai.reply: p95 1.80 s above 1.00 s (10 calls since start)',)" in out
    assert "check database: ConnectionError: connection refused" in out
    assert "{'status': 'ok', 'reasons': [], 'checks': {'redis': 'ok'}}" in out
    assert 'botscale_operation_errors_total{operation="db.save"} 0.0' in out
    assert 'botscale_operation_duration_seconds_bucket{le="0.05",operation="db.save"} 1.0' in out

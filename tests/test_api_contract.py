"""The public surface promised in shared/API.md, exercised the way its snippets use it.

Docs, examples and outside checks rely on these names and meanings; if one of
these tests fails, the contract broke, not just an implementation detail.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import botscale
from botscale import (
    AsyncBatchWriter,
    AsyncRateLimiter,
    BatchWriter,
    Decision,
    Deduplicator,
    MemoryStateStore,
    PerformanceMonitor,
    Rate,
    RateLimiter,
    RateLimitExceeded,
    Settings,
    cached,
    rate_limited,
    retry,
)
from botscale.testing import FakeClock


def test_rate_and_limiter_semantics(clock: FakeClock) -> None:
    rate = Rate(30, 60.0)
    assert Rate.parse("30/minute") == rate
    lim = RateLimiter(rate, burst=5, clock=clock)
    decisions = [lim.try_acquire("user:42", cost=1) for _ in range(6)]
    assert all(isinstance(d, Decision) for d in decisions)
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[4].remaining == 0
    assert decisions[5].retry_after == pytest.approx(2.0)  # one token per 2 s
    assert decisions[0].retry_after == 0.0
    with pytest.raises(RateLimitExceeded):
        lim.acquire("user:42", timeout=1.0)
    with pytest.raises(ValueError, match="cost"):
        lim.try_acquire("user:42", cost=6)
    with pytest.raises(TypeError, match="key"):
        lim.try_acquire(4.2)  # type: ignore[arg-type]


async def test_async_limiter_and_decorator(clock: FakeClock) -> None:
    alim = AsyncRateLimiter(Rate(1, 1.0), burst=2, clock=clock)
    assert (await alim.try_acquire("k")).allowed
    assert (await alim.try_acquire("k")).allowed
    assert not (await alim.try_acquire("k")).allowed

    lim = RateLimiter(Rate(1, 60.0), burst=1, clock=clock)

    @rate_limited(lim, key="job")
    def job() -> str:
        return "done"

    assert job() == "done"
    with pytest.raises(RateLimitExceeded):
        job()


def test_retry_requires_on_and_retries() -> None:
    calls = []

    @retry(on=ConnectionError, attempts=3, timeout=30.0)
    def save() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("db away")
        return "saved"

    with botscale.retry_testing():
        assert save() == "saved"
    assert len(calls) == 3
    with pytest.raises(TypeError):
        retry(attempts=3)  # type: ignore[call-arg]


async def test_cached_state_and_dedup(clock: FakeClock) -> None:
    calls = []

    @cached(ttl=300.0, maxsize=5000)
    async def user_stats(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        await asyncio.sleep(0)
        return {"score": user_id}

    results = await asyncio.gather(*(user_stats(7) for _ in range(20)))
    assert results == [{"score": 7}] * 20
    assert calls == [7]

    store = MemoryStateStore(maxsize=2000, ttl=3600.0, clock=clock)
    store.set(42, {"step": 1})
    assert store.get(42) == {"step": 1}
    assert len(store) == 1
    assert store.delete(42)
    assert store.get(42) is None

    dedup = Deduplicator(ttl=60.0, maxsize=100, clock=clock)
    assert dedup.seen(1001) is False
    assert dedup.seen(1001) is True


async def test_monitor_track_and_stats() -> None:
    mon = PerformanceMonitor(slow_threshold=2.0)
    with mon.track("db.save"):
        pass
    async with mon.track("db.save"):
        pass

    @mon.timed("api.call")
    async def call() -> int:
        return 1

    assert await call() == 1
    stats = mon.stats()["db.save"]
    assert stats.count == 2
    assert stats.errors == 0
    for field in ("mean", "p50", "p95", "p99", "max"):
        assert getattr(stats, field) >= 0.0
    mon.log_summary()


async def test_batch_writer_into_sqlite(tmp_path: Path) -> None:
    from botscale.sinks import SQLiteSink

    db = tmp_path / "bot.db"
    async with AsyncBatchWriter(
        SQLiteSink(str(db), "answers", ["user_id", "ok"]), max_batch=50, max_delay=2.0
    ) as w:
        for user in range(120):
            await w.put((user, True))
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from answers").fetchone() == (120,)

    rows: list[object] = []
    with BatchWriter(rows.extend, max_batch=10, max_delay=2.0) as sync_writer:
        for i in range(25):
            sync_writer.put(i)
    assert rows == list(range(25))


def test_optional_modules_and_names_exist() -> None:
    from botscale.backends.redis import (
        AsyncRedisBackend,
        AsyncRedisStateStore,
        RedisBackend,
        RedisStateStore,
    )
    from botscale.sinks import PostgresSink, SQLiteSink
    from botscale.testing import TelegramSimulator

    for obj in (
        AsyncRedisBackend,
        AsyncRedisStateStore,
        RedisBackend,
        RedisStateStore,
        PostgresSink,
        SQLiteSink,
        TelegramSimulator,
    ):
        assert callable(obj)
    import botscale.adapters.aiogram
    import botscale.adapters.ptb
    import botscale.adapters.telebot  # noqa: F401


def test_settings_from_env() -> None:
    settings = Settings.from_env({"BOTSCALE_STATE_MAXSIZE": "500"})
    assert settings.state_maxsize == 500
    with pytest.raises(ValueError, match="BOTSCALE_STATE_MAXSIZE"):
        Settings.from_env({"BOTSCALE_STATE_MAXSIZE": "zero"})


@pytest.mark.parametrize("argv", [["-m", "botscale", "loadtest", "--help"]])
def test_command_line_entry_point(argv: list[str]) -> None:
    out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--users" in out.stdout
    assert "--duration" in out.stdout

"""Deduplicator and its async twin: the contract, bounded memory, stats."""

from __future__ import annotations

import sys
import threading

import pytest

from botscale import (
    AsyncDeduplicator,
    ConfigurationError,
    Deduplicator,
    DedupStats,
)
from botscale.testing import FakeClock
from contracts.dedup import AsyncDedupContract, DedupContract, DedupFactory


class TestDeduplicatorContract(DedupContract):
    @pytest.fixture
    def make_dedup(self, clock: FakeClock) -> DedupFactory:
        def make(*, ttl: float = 600.0, maxsize: int = 1000) -> Deduplicator:
            return Deduplicator(ttl, maxsize, clock=clock)

        return make


class TestAsyncDeduplicatorContract(AsyncDedupContract):
    @pytest.fixture
    def make_dedup(self, clock: FakeClock) -> DedupFactory:
        def make(*, ttl: float = 600.0, maxsize: int = 1000) -> AsyncDeduplicator:
            return AsyncDeduplicator(ttl, maxsize, clock=clock)

        return make


class TestAioViewContract(AsyncDedupContract):
    @pytest.fixture
    def make_dedup(self, clock: FakeClock) -> DedupFactory:
        def make(*, ttl: float = 600.0, maxsize: int = 1000) -> AsyncDeduplicator:
            return Deduplicator(ttl, maxsize, clock=clock).aio

        return make


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ConfigurationError, match="ttl must be a finite number > 0, got 0"):
        Deduplicator(ttl=0)
    with pytest.raises(ConfigurationError, match="maxsize must be an int >= 1, got 0"):
        Deduplicator(maxsize=0)
    with pytest.raises(TypeError, match="maxsize"):
        Deduplicator(maxsize=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock"):
        Deduplicator(clock=None)  # type: ignore[arg-type]


def test_stats_add_up(clock: FakeClock) -> None:
    dedup = Deduplicator(ttl=10.0, maxsize=3, clock=clock)
    for update_id in (1, 2, 1, 3, 4):  # 4 evicts 1 (the window is full)
        dedup.seen(update_id)
    dedup.forget(2)
    clock.advance(10.0)
    dedup.seen(5)  # 3 and 4 expired
    assert dedup.stats() == DedupStats(
        size=1,
        maxsize=3,
        accepted=5,
        duplicates=1,
        forgotten=1,
        evictions_size=1,
        evictions_ttl=2,
    )
    assert len(dedup) == 1


def test_a_million_updates_keep_memory_bounded(clock: FakeClock) -> None:
    dedup = Deduplicator(ttl=60.0, maxsize=5000, clock=clock)
    for update_id in range(1_000_000):
        assert dedup.seen(update_id) is False
        if update_id % 1000 == 0:
            clock.advance(0.1)
    assert len(dedup._ids) <= 5000
    stats = dedup.stats()
    assert stats.accepted == 1_000_000
    assert stats.size + stats.evictions_size + stats.evictions_ttl == 1_000_000


def test_expired_ids_are_swept_by_later_arrivals(clock: FakeClock) -> None:
    dedup = Deduplicator(ttl=5.0, maxsize=100_000, clock=clock)
    for update_id in range(1000):
        dedup.seen(update_id)
    clock.advance(5.0)
    for update_id in range(1000, 1400):
        dedup.seen(update_id)  # each arrival reclaims a few expired ids
    assert len(dedup._ids) < 1000
    assert len(dedup) == 400


def test_a_full_window_evicts_an_expired_id_before_a_live_one(clock: FakeClock) -> None:
    dedup = Deduplicator(ttl=10.0, maxsize=2, clock=clock)
    dedup.seen(1)
    clock.advance(5.0)
    dedup.seen(2)
    clock.advance(5.0)  # 1 expires now
    dedup.seen(3)
    assert dedup.seen(2) is True
    stats = dedup.stats()
    assert (stats.evictions_ttl, stats.evictions_size) == (1, 0)


async def test_the_async_twin_shares_the_window_with_its_sync_deduplicator() -> None:
    dedup = AsyncDeduplicator(ttl=60.0, maxsize=10)
    assert await dedup.seen(1) is False
    assert dedup.sync.seen(1) is True
    assert dedup.sync.aio is dedup
    assert await dedup.forget(1) is True
    assert await dedup.size() == 0
    assert dedup.stats().accepted == 1
    assert (dedup.ttl, dedup.maxsize) == (60.0, 10)
    assert "maxsize=10" in repr(dedup)


def test_seen_is_atomic_even_when_threads_switch_constantly() -> None:
    dedup = Deduplicator(ttl=600.0, maxsize=100_000)
    threads, ids = 4, 10_000
    start = threading.Barrier(threads)
    wins = [0] * threads
    interval = sys.getswitchinterval()

    def work(n: int) -> None:
        start.wait()
        wins[n] = sum(not dedup.seen(update_id) for update_id in range(ids))

    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert sum(wins) == ids

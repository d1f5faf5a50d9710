"""RedisDeduplicator / AsyncRedisDeduplicator: one window of update ids for every process."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio as aredis

from botscale import AsyncDedupStore, BackendError, DedupStore
from botscale.backends.redis import AsyncRedisDeduplicator, RedisDeduplicator

pytestmark = pytest.mark.redis


def test_first_arrival_is_new_then_duplicate(client: redis.Redis, prefix: str) -> None:
    dedup = RedisDeduplicator(client, prefix=prefix, ttl=60.0)
    assert isinstance(dedup, DedupStore)
    assert dedup.seen(1001) is False
    assert dedup.seen(1001) is True
    assert dedup.seen("1001") is False  # str and int ids are distinct
    assert 59_000 < client.pttl(dedup.redis_key(1001)) <= 60_000
    stats = dedup.stats()
    assert (stats.accepted, stats.duplicates) == (2, 1)


def test_a_duplicate_does_not_extend_the_window(client: redis.Redis, prefix: str) -> None:
    dedup = RedisDeduplicator(client, prefix=prefix, ttl=60.0)
    dedup.seen(5)
    client.pexpire(dedup.redis_key(5), 1000)
    dedup.seen(5)
    assert client.pttl(dedup.redis_key(5)) <= 1000


def test_forget_lets_the_retry_through(client: redis.Redis, prefix: str) -> None:
    dedup = RedisDeduplicator(client, prefix=prefix)
    dedup.seen(7)
    assert dedup.forget(7) is True
    assert dedup.forget(7) is False
    assert dedup.seen(7) is False
    assert dedup.stats().forgotten == 1


def test_exactly_one_of_many_processes_accepts_an_update(redis_url: str, prefix: str) -> None:
    accepted: list[int] = []
    lock = threading.Lock()

    def instance() -> None:
        with redis.Redis.from_url(redis_url) as own:
            dedup = RedisDeduplicator(own, prefix=prefix)
            for update_id in range(200):
                if not dedup.seen(update_id):
                    with lock:
                        accepted.append(update_id)

    threads = [threading.Thread(target=instance) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(accepted) == list(range(200))


def test_policies(dead_client: redis.Redis) -> None:
    opened = RedisDeduplicator(dead_client, prefix="bot")
    assert opened.seen(1) is False
    assert opened.seen(1) is False  # without Redis every id is new: process rather than drop
    assert opened.forget(1) is False
    assert opened.stats().redis.degraded == 3
    closed = RedisDeduplicator(dead_client, prefix="bot", on_error="closed")
    with pytest.raises(BackendError):
        closed.seen(1)


def test_ttl_is_validated(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="ttl"):
        RedisDeduplicator(client, prefix="bot", ttl=0)


async def test_async_twin(aclient: aredis.Redis, prefix: str) -> None:
    dedup = AsyncRedisDeduplicator(aclient, prefix=prefix)
    assert isinstance(dedup, AsyncDedupStore)
    results = await asyncio.gather(*(dedup.seen(99) for _ in range(10)))
    assert sorted(results) == [False] + [True] * 9
    assert await dedup.forget(99) is True
    assert await dedup.seen(99) is False

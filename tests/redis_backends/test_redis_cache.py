"""RedisCache / AsyncRedisCache: results shared across processes, one computation per key."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio as aredis

from botscale import BackendError
from botscale.backends.redis import AsyncRedisCache, RedisCache, RedisCacheInfo

pytestmark = pytest.mark.redis


def test_results_are_cached_per_arguments(client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix=prefix)
    calls: list[int] = []

    @cache.cached(ttl=60.0)
    def stats(user_id: int, *, detail: bool = False) -> dict[str, int]:
        calls.append(user_id)
        return {"user": user_id, "answers": 3}

    assert stats(1) == {"user": 1, "answers": 3}
    assert stats(1) == {"user": 1, "answers": 3}
    assert stats(2)["user"] == 2
    assert stats(1, detail=True)["user"] == 1
    assert calls == [1, 2, 1]
    assert stats.cache_info() == RedisCacheInfo(hits=1, misses=3, coalesced=0, uncached=0)
    assert getattr(stats, "__name__", None) == "stats"
    keys = sorted(k.decode() for k in client.scan_iter(match="{" + prefix + ":ca:*"))
    assert len(keys) == 3
    assert all(k.startswith("{" + prefix + ":ca:") and "stats:" in k for k in keys)
    assert 59_000 < client.pttl(keys[0]) <= 60_000


def test_none_is_a_cached_result(client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix=prefix)
    calls = 0

    @cache.cached()
    def nothing() -> None:
        nonlocal calls
        calls += 1

    nothing()
    nothing()
    assert calls == 1


def test_results_are_shared_between_processes_and_invalidated(
    redis_url: str, client: redis.Redis, prefix: str
) -> None:
    with redis.Redis.from_url(redis_url) as other:
        calls = 0

        def compute(x: int) -> int:
            nonlocal calls
            calls += 1
            return x * 10

        a = RedisCache(client, prefix=prefix).cached(name="compute")(compute)
        b = RedisCache(other, prefix=prefix).cached(name="compute")(compute)
        assert a(4) == 40
        assert b(4) == 40
        assert calls == 1
        assert b.invalidate(4) is True
        assert b.invalidate(4) is False
        assert a(4) == 40
        assert calls == 2
        a(5)
        assert a.clear() == 2


def test_one_computation_per_key_across_processes(redis_url: str, prefix: str) -> None:
    calls = 0
    started = threading.Barrier(4)

    def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        threading.Event().wait(0.2)  # long enough for every follower to arrive
        return x + 1

    results: list[int] = []
    infos: list[RedisCacheInfo] = []

    def instance() -> None:
        with redis.Redis.from_url(redis_url) as own:
            fn = RedisCache(own, prefix=prefix).cached(name="slow")(slow)
            started.wait()
            results.append(fn(1))
            infos.append(fn.cache_info())

    threads = [threading.Thread(target=instance) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [2, 2, 2, 2]
    assert calls == 1
    assert sum(i.misses for i in infos) == 1
    assert sum(i.coalesced + i.hits for i in infos) == 3


def test_exceptions_are_not_cached(client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix=prefix)
    attempts = 0

    @cache.cached()
    def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("db down")
        return 7

    with pytest.raises(ConnectionError):
        flaky()
    assert flaky() == 7
    assert not RedisCache(client, prefix=prefix)._locks.locked(
        f"{__name__}.test_exceptions_are_not_cached.<locals>.flaky:[]"
    )


def test_results_and_arguments_must_be_json(client: redis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix=prefix)

    @cache.cached()
    def pair(x: object) -> tuple[int, int]:
        return (1, 2)

    with pytest.raises(TypeError, match=r"result .*tuple"):
        pair(1)
    with pytest.raises(TypeError, match=r"arguments\[0\] .*set"):
        pair({1})

    @cache.cached(key=lambda x: sorted(x))
    def keyed(x: set[int]) -> int:
        return len(x)

    assert keyed({1, 2}) == 2
    assert keyed({2, 1}) == 2
    assert keyed.cache_info().hits == 1


def test_decorating_the_wrong_kind_of_function(client: redis.Redis, aclient: aredis.Redis) -> None:
    async def coro() -> int:
        return 1

    def plain() -> int:
        return 1

    with pytest.raises(TypeError, match="AsyncRedisCache"):
        RedisCache(client, prefix="bot").cached()(coro)
    with pytest.raises(TypeError, match="RedisCache"):
        AsyncRedisCache(aclient, prefix="bot").cached()(plain)  # type: ignore[arg-type]


def test_policies(dead_client: redis.Redis) -> None:
    calls = 0

    def compute() -> int:
        nonlocal calls
        calls += 1
        return 1

    opened = RedisCache(dead_client, prefix="bot").cached()(compute)
    assert opened() == 1
    assert opened() == 1
    assert calls == 2
    assert opened.cache_info().uncached == 2
    closed = RedisCache(dead_client, prefix="bot", on_error="closed").cached()(compute)
    with pytest.raises(BackendError):
        closed()


async def test_async_twin_single_flight(aclient: aredis.Redis, prefix: str) -> None:
    cache = AsyncRedisCache(aclient, prefix=prefix)
    calls = 0

    @cache.cached(ttl=30.0)
    async def fetch(x: int) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return [x, x]

    results = await asyncio.gather(*(fetch(3) for _ in range(5)))
    assert results == [[3, 3]] * 5
    assert calls == 1
    info = fetch.cache_info()
    assert info.misses == 1
    assert info.coalesced + info.hits == 4
    assert await fetch.invalidate(3) is True
    assert await fetch.clear() == 0

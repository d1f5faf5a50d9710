"""RedisStateStore / AsyncRedisStateStore against the real Redis."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import redis
import redis.asyncio as aredis

from botscale import AsyncStateStore, BackendError, ConfigurationError, StateStore
from botscale.backends.redis import AsyncRedisStateStore, RedisStateStore

pytestmark = pytest.mark.redis


def test_is_a_state_store(client: redis.Redis, prefix: str) -> None:
    assert isinstance(RedisStateStore(client, prefix=prefix), StateStore)


def test_round_trip_of_json_values(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    value = {"step": 2, "answers": [1, "b", None, True, 2.5], "nested": {"x": {}}}
    store.set(42, value)
    assert store.get(42) == value
    assert store.get(43) is None
    assert store.get(43, "none") == "none"


def test_int_and_str_keys_are_different_entries(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    store.set(42, "int")
    store.set("42", "str")
    assert (store.get(42), store.get("42")) == ("int", "str")
    assert client.get("{" + prefix + ":st:42}") == b'"int"'
    assert client.get("{" + prefix + ":st:s:42}") == b'"str"'


def test_delete_reports_whether_a_value_was_live(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    store.set("a", 1)
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None


def test_default_and_per_key_ttl_become_redis_expiry(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix, ttl=60.0)
    store.set(1, "default")
    store.set(2, "short", ttl=0.5)
    assert 59_000 < client.pttl(store.redis_key(1)) <= 60_000
    assert 0 < client.pttl(store.redis_key(2)) <= 500
    forever = RedisStateStore(client, prefix=prefix)
    forever.set(3, "x")
    assert client.pttl(forever.redis_key(3)) == -1


def test_ttl_is_validated(client: redis.Redis, prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisStateStore(client, prefix=prefix, ttl=0)
    store = RedisStateStore(client, prefix=prefix)
    with pytest.raises(ConfigurationError, match="ttl"):
        store.set(1, 1, ttl=-1)


def test_non_json_value_is_a_type_error_naming_the_type(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    with pytest.raises(TypeError, match="Decimal"):
        store.set(1, {"price": Decimal("1.5")})
    assert store.get(1) is None


def test_len_counts_live_entries_of_this_prefix_only(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    other = RedisStateStore(client, prefix=prefix + "x")
    try:
        for i in range(25):
            store.set(i, i)
        other.set(1, 1)
        client.set("{" + prefix + ":rl:1}", "1")  # another component's key
        assert len(store) == 25
        store.delete(0)
        assert len(store) == 24
        assert store.clear() == 24
        assert len(store) == 0
        assert len(other) == 1
    finally:
        other.clear()


def test_update_applies_the_function_atomically(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix)
    assert store.update("n", lambda v: v + 1, default=0) == 1
    assert store.update("n", lambda v: v + 1, default=0) == 2
    assert store.get("n") == 2


def test_concurrent_updates_lose_nothing(redis_url: str, prefix: str) -> None:
    threads, increments = 4, 50

    def work() -> None:
        with redis.Redis.from_url(redis_url) as own:
            store = RedisStateStore(own, prefix=prefix, max_retries=1000)
            for _ in range(increments):
                store.update("counter", lambda v: {"n": v["n"] + 1}, default={"n": 0})

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=60)
    with redis.Redis.from_url(redis_url) as own:
        assert RedisStateStore(own, prefix=prefix).get("counter") == {"n": threads * increments}


def test_update_retries_are_bounded(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix, max_retries=3)
    calls = 0

    def meddle(value: int) -> int:
        nonlocal calls
        calls += 1
        client.set(store.redis_key("k"), str(calls * 100))  # another process wins every race
        return value + 1

    with pytest.raises(BackendError, match="changed under it 3 times"):
        store.update("k", meddle, default=0)
    assert calls == 3


def test_update_keeps_the_old_value_when_fn_fails_or_returns_non_json(
    client: redis.Redis, prefix: str
) -> None:
    store = RedisStateStore(client, prefix=prefix)
    store.set("k", [1])

    def boom(value: object) -> object:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        store.update("k", boom)
    with pytest.raises(TypeError, match="set"):
        store.update("k", lambda v: {1, 2})
    assert store.get("k") == [1]
    assert store.update("k", lambda v: [*v, 2]) == [1, 2]


def test_update_sets_the_ttl_like_set(client: redis.Redis, prefix: str) -> None:
    store = RedisStateStore(client, prefix=prefix, ttl=30.0)
    store.update("k", lambda v: 1, default=0)
    assert 29_000 < client.pttl(store.redis_key("k")) <= 30_000
    store.update("k", lambda v: 2, ttl=5.0)
    assert 0 < client.pttl(store.redis_key("k")) <= 5_000


def test_works_with_a_decode_responses_client(redis_url: str, prefix: str) -> None:
    with redis.Redis.from_url(redis_url, decode_responses=True) as text_client:
        store = RedisStateStore(text_client, prefix=prefix)
        store.set("k", {"é": "ü"})
        assert store.get("k") == {"é": "ü"}
        assert store.update("k", lambda v: {**v, "n": 1}) == {"é": "ü", "n": 1}
        assert len(store) == 1


async def test_async_twin(aclient: aredis.Redis, prefix: str) -> None:
    store = AsyncRedisStateStore(aclient, prefix=prefix, ttl=10.0)
    assert isinstance(store, AsyncStateStore)
    await store.set(1, {"a": 1})
    assert await store.get(1) == {"a": 1}
    assert await store.update(1, lambda v: {**v, "b": 2}) == {"a": 1, "b": 2}
    assert await store.size() == 1
    assert await store.delete(1) is True
    assert await store.delete(1) is False
    with pytest.raises(TypeError, match="tuple"):
        await store.set(2, (1, 2))
    await store.set(3, 3)
    assert await store.clear() == 1


async def test_async_concurrent_updates_lose_nothing(redis_url: str, prefix: str) -> None:
    import asyncio

    clients = [aredis.Redis.from_url(redis_url) for _ in range(4)]
    try:
        stores = [AsyncRedisStateStore(c, prefix=prefix, max_retries=1000) for c in clients]

        async def work(store: AsyncRedisStateStore) -> None:
            for _ in range(25):
                await store.update("n", lambda v: v + 1, default=0)

        await asyncio.gather(*(work(s) for s in stores))
        assert await stores[0].get("n") == 100
    finally:
        for c in clients:
            await c.aclose()


def test_store_values_are_shared_between_processes(redis_url: str, prefix: str) -> None:
    import subprocess
    import sys

    code = (
        "import redis, sys; from botscale.backends.redis import RedisStateStore; "
        f"s = RedisStateStore(redis.Redis.from_url({redis_url!r}), prefix={prefix!r}); "
        "s.set(7, {'step': 3})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with redis.Redis.from_url(redis_url) as own:
        assert RedisStateStore(own, prefix=prefix).get(7) == {"step": 3}

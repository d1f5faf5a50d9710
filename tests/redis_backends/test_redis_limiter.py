"""RedisBackend / AsyncRedisBackend against the real Redis: GCRA semantics, TTL, keys, NOSCRIPT.

Redis decides with its own clock, so these tests check properties that hold
whatever the (small) real time between calls: exact counts of a full bucket,
retry_after within [expected - elapsed, expected], TTL bounds.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from botscale import Decision, RateLimitBackend
from botscale.backends._redis_base import LuaScript
from botscale.backends._redis_limiter import _GCRA, micros
from botscale.backends.redis import AsyncRedisBackend, RedisBackend

pytestmark = pytest.mark.redis

INTERVAL = 2.0  # long enough that refill during a test is negligible but measurable


def take(backend: RedisBackend, key: str = "k", *, burst: int = 5, cost: int = 1) -> Decision:
    return backend.acquire(key, now=0.0, interval=INTERVAL, burst=burst, cost=cost)


def test_is_a_rate_limit_backend(client: redis.Redis, prefix: str) -> None:
    assert isinstance(RedisBackend(client, prefix=prefix), RateLimitBackend)


def test_a_full_bucket_grants_exactly_burst_then_denies(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    started = time.monotonic()
    grants = [take(backend) for _ in range(5)]
    assert [d.allowed for d in grants] == [True] * 5
    assert [d.remaining for d in grants] == [4, 3, 2, 1, 0]
    assert all(d.retry_after == 0.0 for d in grants)
    denied = take(backend)
    elapsed = time.monotonic() - started
    assert not denied.allowed
    assert denied.remaining == 0
    # One token refills INTERVAL after the first grant.
    assert INTERVAL - elapsed - 1e-3 <= denied.retry_after <= INTERVAL


def test_cost_takes_several_tokens_with_gcra_maths(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    started = time.monotonic()
    first = take(backend, cost=3)
    assert first == Decision(True, 2, 0.0)
    second = take(backend, cost=3)  # needs 1 more token than the bucket holds
    elapsed = time.monotonic() - started
    assert not second.allowed
    assert second.remaining == 2
    assert INTERVAL - elapsed - 1e-3 <= second.retry_after <= INTERVAL
    assert take(backend, cost=2) == Decision(True, 0, 0.0)


def test_cost_above_burst_is_never_allowed(client: redis.Redis, prefix: str) -> None:
    d = take(RedisBackend(client, prefix=prefix), burst=2, cost=3)
    assert not d.allowed
    assert d.remaining == 2
    assert d.retry_after == pytest.approx(INTERVAL, abs=1e-6)


def test_a_denial_leaves_the_bucket_unchanged(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    take(backend, burst=1)
    stored = client.get(backend.redis_key("k"))
    assert not take(backend, burst=1).allowed
    assert client.get(backend.redis_key("k")) == stored


def test_key_lives_until_the_bucket_is_full_again(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    started = time.monotonic()
    for _ in range(3):
        take(backend)
    ttl_ms = client.pttl(backend.redis_key("k"))
    elapsed_ms = (time.monotonic() - started) * 1000
    assert 3 * INTERVAL * 1000 - elapsed_ms - 2 <= ttl_ms <= 3 * INTERVAL * 1000


def test_key_name_is_a_cluster_hash_tag_under_the_prefix(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    take(backend, "user:42")
    assert backend.redis_key("user:42") == "{" + prefix + ":rl:user:42}"
    assert client.exists("{" + prefix + ":rl:user:42}") == 1


def test_bucket_refills_over_real_time(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    interval = 0.05
    assert backend.acquire("k", now=0.0, interval=interval, burst=1, cost=1).allowed
    denied = backend.acquire("k", now=0.0, interval=interval, burst=1, cost=1)
    assert not denied.allowed
    time.sleep(denied.retry_after + 0.002)  # server time cannot be driven: one short real wait
    assert backend.acquire("k", now=0.0, interval=interval, burst=1, cost=1).allowed


def test_prefixes_and_keys_are_independent(client: redis.Redis, prefix: str) -> None:
    a = RedisBackend(client, prefix=prefix)
    b = RedisBackend(client, prefix=prefix + "b")
    try:
        assert take(a, burst=1).allowed
        assert not take(a, burst=1).allowed
        assert take(a, "other", burst=1).allowed
        assert take(b, burst=1).allowed
    finally:
        b.reset("k")


def test_reset_refills(client: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(client, prefix=prefix)
    take(backend, burst=1)
    backend.reset("k")
    assert client.exists(backend.redis_key("k")) == 0
    assert take(backend, burst=1).allowed


def test_unknown_script_is_loaded_on_noscript(client: redis.Redis, prefix: str) -> None:
    script = LuaScript("gcra.lua")
    script.source += f"\n-- {prefix}\n"  # a sha no server has seen
    import hashlib

    script.sha = hashlib.sha1(script.source.encode()).hexdigest()
    assert client.script_exists(script.sha) == [False]
    reply = script.run(client, 1, "{" + prefix + ":rl:x}", micros(1.0), 3, 1)
    assert reply == 2  # allowed, two tokens left
    assert client.script_exists(script.sha) == [True]


def test_shipped_script_matches_its_sha(client: redis.Redis) -> None:
    assert client.script_load(_GCRA.source) == _GCRA.sha


async def test_async_twin_has_the_same_semantics(aclient: aredis.Redis, prefix: str) -> None:
    backend = AsyncRedisBackend(aclient, prefix=prefix)
    grants = [
        await backend.acquire("k", now=0.0, interval=INTERVAL, burst=3, cost=1) for _ in range(3)
    ]
    assert [d.remaining for d in grants] == [2, 1, 0]
    denied = await backend.acquire("k", now=0.0, interval=INTERVAL, burst=3, cost=1)
    assert not denied.allowed
    assert 0 < denied.retry_after <= INTERVAL
    await backend.reset("k")
    assert (await backend.acquire("k", now=0.0, interval=INTERVAL, burst=3, cost=3)).allowed


async def test_async_and_sync_share_buckets(
    client: redis.Redis, aclient: aredis.Redis, prefix: str
) -> None:
    sync = RedisBackend(client, prefix=prefix)
    asyn = AsyncRedisBackend(aclient, prefix=prefix)
    assert take(sync, burst=2).allowed
    assert (await asyn.acquire("k", now=0.0, interval=INTERVAL, burst=2, cost=1)).allowed
    assert not take(sync, burst=2).allowed


def test_from_url_builds_a_client_with_timeouts(redis_url: str, prefix: str) -> None:
    backend = RedisBackend.from_url(redis_url, prefix=prefix, socket_timeout=0.7)
    try:
        kwargs = backend.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.7
        assert kwargs["socket_connect_timeout"] == 1.0
        assert take(backend).allowed
    finally:
        backend.close()


async def test_async_from_url(redis_url: str, prefix: str) -> None:
    backend = AsyncRedisBackend.from_url(redis_url, prefix=prefix)
    try:
        assert (await backend.acquire("k", now=0.0, interval=1.0, burst=1, cost=1)).allowed
    finally:
        await backend.aclose()


class ForgetfulRedis(redis.Redis):
    """A client whose server 'lost' its scripts once (restart, SCRIPT FLUSH, failover)."""

    lost = 1

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        if self.lost:
            self.lost -= 1
            raise redis.exceptions.NoScriptError("NOSCRIPT No matching script.")
        return super().evalsha(sha, numkeys, *keys_and_args)


def test_backend_reloads_its_script_on_noscript(redis_url: str, prefix: str) -> None:
    with ForgetfulRedis.from_url(redis_url) as forgetful:
        backend = RedisBackend(forgetful, prefix=prefix, on_error="closed")
        assert take(backend) == Decision(True, 4, 0.0)
        assert forgetful.lost == 0
        assert backend.stats().errors == 0
        assert take(backend) == Decision(True, 3, 0.0)

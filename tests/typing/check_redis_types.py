"""Static typing checks of botscale.backends.redis, run by mypy --strict (nox -s typecheck).

Never executed by pytest; mypy verifies that the Redis components satisfy the
Protocols they are passed as, and that decorated functions keep their types.
"""

from __future__ import annotations

import redis
import redis.asyncio as aredis
from typing_extensions import assert_type

from botscale import (
    AsyncDedupStore,
    AsyncFloodBudget,
    AsyncRateLimitBackend,
    AsyncRateLimiter,
    AsyncStateStore,
    DedupStore,
    FloodBudget,
    FloodControl,
    Rate,
    RateLimitBackend,
    RateLimiter,
    StateStore,
)
from botscale.backends.redis import (
    AsyncRedisBackend,
    AsyncRedisCache,
    AsyncRedisDeduplicator,
    AsyncRedisFloodBudget,
    AsyncRedisStateStore,
    CircuitBreaker,
    RedisBackend,
    RedisCache,
    RedisCacheInfo,
    RedisDeduplicator,
    RedisFloodBudget,
    RedisStateStore,
    RedisStats,
    connect,
    connect_async,
)

client: redis.Redis = connect("redis://127.0.0.1:6379/0")
aclient: aredis.Redis = connect_async("redis://127.0.0.1:6379/0")
breaker = CircuitBreaker(failures=5, cooldown=5.0)

backend: RateLimitBackend = RedisBackend(client, prefix="bot", breaker=breaker)
abackend: AsyncRateLimitBackend = AsyncRedisBackend(aclient, prefix="bot")
limiter = RateLimiter(Rate(30, 60.0), backend=RedisBackend(client, prefix="bot"))
alimiter = AsyncRateLimiter(Rate(30, 60.0), backend=abackend)
assert_type(RedisBackend.from_url("redis://localhost", prefix="bot"), RedisBackend)
assert_type(RedisBackend(client, prefix="bot").stats(), RedisStats)

store: StateStore = RedisStateStore(client, prefix="bot", ttl=3600.0)
astore: AsyncStateStore = AsyncRedisStateStore(aclient, prefix="bot")
dedup: DedupStore = RedisDeduplicator(client, prefix="bot")
adedup: AsyncDedupStore = AsyncRedisDeduplicator(aclient, prefix="bot")
budget: FloodBudget = RedisFloodBudget(client, prefix="bot", local_share=1 / 3)
abudget: AsyncFloodBudget = AsyncRedisFloodBudget(aclient, prefix="bot")
flood = FloodControl(budget=budget)

cache = RedisCache(client, prefix="bot")


@cache.cached(ttl=300.0)
def stats(user_id: int) -> dict[str, int]:
    return {"answers": user_id}


assert_type(stats(7), dict[str, int])
assert_type(stats.cache_info(), RedisCacheInfo)
assert_type(stats.invalidate(7), bool)

acache = AsyncRedisCache(aclient, prefix="bot")


@acache.cached(ttl=60.0)
async def fetch(user_id: int) -> list[int]:
    return [user_id]


async def use() -> None:
    assert_type(await fetch(3), list[int])
    assert_type(await fetch.invalidate(3), bool)

"""Redis backends: several bot processes behave as one bot.

Needs the ``redis`` extra (redis-py 5+); redis-py is imported when a component
is built, not when this module is imported.

- :class:`RedisBackend` / :class:`AsyncRedisBackend`: GCRA buckets for
  ``RateLimiter`` / ``AsyncRateLimiter``, one Lua script per decision, server time.
- :class:`RedisStateStore` / :class:`AsyncRedisStateStore`: JSON state with TTL.
- :class:`RedisKeyedLock` / :class:`AsyncRedisKeyedLock`: per-key locks with TTL.
- :class:`RedisFloodBudget` / :class:`AsyncRedisFloodBudget`: flood control's
  outgoing budget and 429 cooldowns shared by every process of one bot.
- :class:`RedisDeduplicator` / :class:`AsyncRedisDeduplicator`: update ids, ``SET NX PX``.
- :class:`RedisCache` / :class:`AsyncRedisCache`: ``@cache.cached(ttl=...)`` with
  single-flight across processes.
- :class:`CircuitBreaker`, :class:`RedisStats`: the failure handling every
  component shares (``on_error="open"`` / ``"closed"``).
- :func:`connect` / :func:`connect_async`: clients with timeouts from a URL.

See ``docs/redis.md`` for the key layout and the failure policies.
"""

from __future__ import annotations

from ._breaker import BreakerState, CircuitBreaker, FailurePolicy, RedisStats
from ._redis_base import connect, connect_async, mask_url
from ._redis_budget import AsyncRedisFloodBudget, BudgetPolicy, RedisFloodBudget
from ._redis_cache import (
    AsyncRedisCache,
    AsyncRedisCached,
    RedisCache,
    RedisCached,
    RedisCacheInfo,
)
from ._redis_dedup import AsyncRedisDeduplicator, RedisDeduplicator, RedisDedupStats
from ._redis_limiter import AsyncRedisBackend, LimiterPolicy, RedisBackend
from ._redis_lock import AsyncRedisKeyedLock, RedisKeyedLock
from ._redis_state import AsyncRedisStateStore, RedisStateStore

__all__ = [
    "AsyncRedisBackend",
    "AsyncRedisCache",
    "AsyncRedisCached",
    "AsyncRedisDeduplicator",
    "AsyncRedisFloodBudget",
    "AsyncRedisKeyedLock",
    "AsyncRedisStateStore",
    "BreakerState",
    "BudgetPolicy",
    "CircuitBreaker",
    "FailurePolicy",
    "LimiterPolicy",
    "RedisBackend",
    "RedisCache",
    "RedisCacheInfo",
    "RedisCached",
    "RedisDedupStats",
    "RedisDeduplicator",
    "RedisFloodBudget",
    "RedisKeyedLock",
    "RedisStateStore",
    "RedisStats",
    "connect",
    "connect_async",
    "mask_url",
]

"""The shared contract suites (tests/contracts) run against the real Redis.

Redis decides with its own clock, so each suite runs with ``drives_time =
False`` (the time-driven tests are skipped with the reason; the Redis-specific
tests in this folder cover expiry and refill with server time) and, for
stores, ``bounded = False`` (Redis bounds memory with TTLs, not a maxsize).
Every store gets a fresh prefix; the ``prefixes`` fixture deletes their keys.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from botscale import AsyncRateLimiter, Rate, RateLimiter
from botscale.backends.redis import (
    AsyncRedisBackend,
    AsyncRedisDeduplicator,
    AsyncRedisStateStore,
    RedisBackend,
    RedisDeduplicator,
    RedisStateStore,
)
from botscale.testing import FakeClock
from contracts.dedup import AsyncDedupContract, DedupContract, DedupFactory
from contracts.rate_limit import LimiterFactory, RateLimitBackendContract
from contracts.state import AsyncStateStoreContract, StateStoreContract, StoreFactory

pytestmark = pytest.mark.redis


@pytest.fixture
def prefixes(redis_url: str) -> Iterator[list[str]]:
    """Fresh prefixes handed out during a test; their keys are deleted afterwards."""
    made: list[str] = []
    yield made
    with redis.Redis.from_url(redis_url) as client:
        for name in made:
            keys = list(client.scan_iter(match="{" + name + ":*", count=1000))
            if keys:
                client.delete(*keys)


def fresh(prefixes: list[str]) -> str:
    name = "c" + uuid.uuid4().hex[:12]
    prefixes.append(name)
    return name


@pytest.fixture
async def async_client(redis_url: str) -> AsyncIterator[aredis.Redis]:
    """One asyncio client per test, closed in the test's own event loop."""
    client = aredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


# -- rate limiting -----------------------------------------------------------------------------


class TestRedisBackendContract(RateLimitBackendContract):
    drives_time = False

    @pytest.fixture
    def make_limiter(
        self, clock: FakeClock, client: redis.Redis, prefixes: list[str]
    ) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> RateLimiter:
            backend = RedisBackend(client, prefix=fresh(prefixes), on_error="closed")
            return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep, backend=backend)

        return make


class TestAsyncRedisBackendContract(RateLimitBackendContract):
    drives_time = False

    @pytest.fixture
    def make_limiter(
        self, clock: FakeClock, async_client: aredis.Redis, prefixes: list[str]
    ) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> AsyncRateLimiter:
            backend = AsyncRedisBackend(async_client, prefix=fresh(prefixes), on_error="closed")
            return AsyncRateLimiter(rate, burst, clock=clock, sleep=clock.asleep, backend=backend)

        return make


# -- state ---------------------------------------------------------------------------------


class TestRedisStateStoreContract(StateStoreContract):
    drives_time = False
    bounded = False

    @pytest.fixture
    def make_store(self, client: redis.Redis, prefixes: list[str]) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> RedisStateStore:
            return RedisStateStore(client, prefix=fresh(prefixes), ttl=ttl)

        return make


class TestAsyncRedisStateStoreContract(AsyncStateStoreContract):
    drives_time = False
    bounded = False

    @pytest.fixture
    def make_store(self, async_client: aredis.Redis, prefixes: list[str]) -> StoreFactory:
        def make(*, maxsize: int = 100, ttl: float | None = None) -> AsyncRedisStateStore:
            return AsyncRedisStateStore(async_client, prefix=fresh(prefixes), ttl=ttl)

        return make


# -- de-duplication ------------------------------------------------------------------------


class TestRedisDeduplicatorContract(DedupContract):
    drives_time = False
    bounded = False

    @pytest.fixture
    def make_dedup(self, client: redis.Redis, prefixes: list[str]) -> DedupFactory:
        def make(*, ttl: float = 600.0, maxsize: int = 100) -> RedisDeduplicator:
            return RedisDeduplicator(client, prefix=fresh(prefixes), ttl=ttl, on_error="closed")

        return make


class TestAsyncRedisDeduplicatorContract(AsyncDedupContract):
    drives_time = False
    bounded = False

    @pytest.fixture
    def make_dedup(self, async_client: aredis.Redis, prefixes: list[str]) -> DedupFactory:
        def make(*, ttl: float = 600.0, maxsize: int = 100) -> Any:
            return AsyncRedisDeduplicator(
                async_client, prefix=fresh(prefixes), ttl=ttl, on_error="closed"
            )

        return make

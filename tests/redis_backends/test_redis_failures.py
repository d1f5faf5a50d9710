"""Failure policies and the circuit breaker, against a port where no Redis listens."""

from __future__ import annotations

import logging

import pytest
import redis
import redis.asyncio as aredis

from botscale import BackendError, ConfigurationError, Decision
from botscale.backends.redis import (
    AsyncRedisBackend,
    AsyncRedisStateStore,
    CircuitBreaker,
    RedisBackend,
    RedisStateStore,
)
from botscale.testing import FakeClock


def take(backend: RedisBackend, key: str = "k", *, cost: int = 1) -> Decision:
    return backend.acquire(key, now=0.0, interval=1.0, burst=5, cost=cost)


def test_limiter_fails_open_by_default_and_counts(
    dead_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisBackend(dead_client, prefix="bot")
    assert backend.on_error == "open"
    with caplog.at_level(logging.WARNING, logger="botscale.redis"):
        decision = take(backend, cost=2)
    assert decision == Decision(True, 3, 0.0)
    stats = backend.stats()
    assert (stats.errors, stats.degraded, stats.raised) == (1, 1, 0)
    assert "Redis call failed" in caplog.text


def test_limiter_fails_closed_with_backend_error_from_the_client_error(
    dead_client: redis.Redis,
) -> None:
    backend = RedisBackend(dead_client, prefix="bot", on_error="closed")
    with pytest.raises(BackendError, match="Redis call failed") as info:
        take(backend)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert backend.stats().raised == 1


def test_breaker_stops_calling_a_dead_redis_then_probes(
    dead_client: redis.Redis, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failures=3, cooldown=5.0, clock=clock)
    backend = RedisBackend(dead_client, prefix="bot", breaker=breaker)
    for _ in range(10):
        assert take(backend).allowed
    stats = backend.stats()
    assert stats.errors == 3  # only three calls reached the network
    assert stats.short_circuited == 7
    assert stats.degraded == 10
    assert stats.breaker == "open"
    assert stats.breaker_opened == 1
    clock.advance(5.0)
    assert take(backend).allowed  # the probe fails too
    assert backend.stats().errors == 4
    assert backend.stats().breaker_opened == 2


def test_open_breaker_under_closed_policy_raises_without_a_cause(
    dead_client: redis.Redis, clock: FakeClock
) -> None:
    backend = RedisBackend(
        dead_client,
        prefix="bot",
        on_error="closed",
        breaker=CircuitBreaker(failures=1, cooldown=1.0, clock=clock),
    )
    with pytest.raises(BackendError):
        take(backend)
    with pytest.raises(BackendError, match="circuit breaker is open"):
        take(backend)
    assert backend.stats().short_circuited == 1


def test_breaker_closes_when_redis_answers_again(
    client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failures=1, cooldown=1.0, clock=clock)
    breaker.record_failure()
    backend = RedisBackend(client, prefix=prefix, breaker=breaker)
    assert take(backend).remaining == 4  # breaker open: answered without Redis, bucket untouched
    assert backend.stats().short_circuited == 1
    clock.advance(1.0)
    assert take(backend).remaining == 4  # the probe reached Redis
    assert breaker.state == "closed"
    assert take(backend).remaining == 3


def test_reset_follows_the_policy(dead_client: redis.Redis) -> None:
    RedisBackend(dead_client, prefix="bot").reset("k")  # open: counted, not raised
    with pytest.raises(BackendError):
        RedisBackend(dead_client, prefix="bot", on_error="closed").reset("k")


async def test_async_limiter_policies(dead_aclient: aredis.Redis) -> None:
    opened = AsyncRedisBackend(dead_aclient, prefix="bot")
    assert (await opened.acquire("k", now=0.0, interval=1.0, burst=2, cost=1)).allowed
    closed = AsyncRedisBackend(dead_aclient, prefix="bot", on_error="closed")
    with pytest.raises(BackendError):
        await closed.acquire("k", now=0.0, interval=1.0, burst=2, cost=1)
    with pytest.raises(BackendError):
        await closed.reset("k")


@pytest.mark.parametrize("policy", ["", "fallback", None, "OPEN"])
def test_unknown_policy_is_rejected(dead_client: redis.Redis, policy: object) -> None:
    with pytest.raises(ConfigurationError, match="on_error must be one of"):
        RedisBackend(dead_client, prefix="bot", on_error=policy)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="on_error must be one of"):
        RedisStateStore(dead_client, prefix="bot", on_error="local")  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [0, 1.5, -0.1])
def test_local_share_must_be_a_fraction(dead_client: redis.Redis, share: float) -> None:
    with pytest.raises(ConfigurationError, match="local_share"):
        RedisBackend(dead_client, prefix="bot", on_error="local", local_share=share)


def test_breaker_must_be_a_breaker(dead_client: redis.Redis) -> None:
    with pytest.raises(TypeError, match="breaker must be a CircuitBreaker"):
        RedisBackend(dead_client, prefix="bot", breaker=3)  # type: ignore[arg-type]


# --- state store ------------------------------------------------------------------------------


def test_state_store_fails_closed_by_default(dead_client: redis.Redis) -> None:
    store = RedisStateStore(dead_client, prefix="bot")
    for call in (
        lambda: store.get(1),
        lambda: store.set(1, {"a": 1}),
        lambda: store.delete(1),
        lambda: store.update(1, lambda v: v),
        lambda: len(store),
    ):
        with pytest.raises(BackendError):
            call()
    assert store.stats().raised == 5


def test_state_store_fail_open_answers_as_an_empty_store(dead_client: redis.Redis) -> None:
    store = RedisStateStore(dead_client, prefix="bot", on_error="open")
    assert store.get(1, "dflt") == "dflt"
    store.set(1, {"a": 1})
    assert store.delete(1) is False
    assert store.update(1, lambda v: v + 1, default=0) == 1
    assert len(store) == 0
    assert store.stats().degraded == 5


def test_bad_value_is_refused_before_any_network_call(dead_client: redis.Redis) -> None:
    store = RedisStateStore(dead_client, prefix="bot")
    with pytest.raises(TypeError, match="set"):
        store.set(1, {1, 2})
    assert store.stats().errors == 0


async def test_async_state_store_policies(dead_aclient: aredis.Redis) -> None:
    closed = AsyncRedisStateStore(dead_aclient, prefix="bot")
    with pytest.raises(BackendError):
        await closed.get(1)
    opened = AsyncRedisStateStore(dead_aclient, prefix="bot", on_error="open")
    assert await opened.get(1, 7) == 7
    assert await opened.size() == 0
    assert await opened.update(1, lambda v: [*v, 1], default=[]) == [1]


def test_local_policy_decides_in_process_with_a_share_of_the_rate(
    dead_client: redis.Redis, clock: FakeClock
) -> None:
    from botscale import Rate, RateLimiter

    backend = RedisBackend(dead_client, prefix="bot", on_error="local", local_share=0.5)
    limiter = RateLimiter(Rate(10, 1.0), 4, clock=clock, backend=backend)  # 0.1 s per token
    grants = [limiter.try_acquire("user") for _ in range(3)]
    assert [d.allowed for d in grants] == [True, True, False]  # burst 4 -> 2 here
    assert grants[2].retry_after == pytest.approx(0.2)  # 10/s -> 5/s here
    clock.advance(0.2)
    assert limiter.try_acquire("user").allowed
    assert backend.stats().degraded == 4
    limiter.reset("user")  # also forgets the local bucket
    assert limiter.try_acquire("user").allowed


async def test_async_local_policy(dead_aclient: aredis.Redis, clock: FakeClock) -> None:
    backend = AsyncRedisBackend(dead_aclient, prefix="bot", on_error="local", local_share=0.25)
    decisions = [
        await backend.acquire("k", now=clock(), interval=0.1, burst=8, cost=1) for _ in range(3)
    ]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[2].retry_after == pytest.approx(0.4)

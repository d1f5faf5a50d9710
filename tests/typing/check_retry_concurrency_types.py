"""Static typing checks of retry, the concurrency tools and Settings (mypy --strict only).

The decorators must keep the decorated signatures, sync and async.
"""

from __future__ import annotations

from typing_extensions import assert_type

from botscale import (
    AsyncKeyedLock,
    ConcurrencyLimiter,
    ConcurrencyStats,
    KeyedLock,
    Rate,
    RetryPolicy,
    RetryStats,
    Settings,
    retry,
    retry_stats,
    retry_testing,
)

policy = retry(on=(ConnectionError, TimeoutError), attempts=3, timeout=30.0)
assert_type(policy, RetryPolicy)
assert_type(policy.stats, RetryStats)
assert_type(retry_stats(), RetryStats)


@policy
def save(user_id: int, *, answer: str = "") -> bool:
    return bool(answer)


@retry(on=lambda exc: isinstance(exc, OSError), retry_after=lambda exc: None)
async def fetch(url: str) -> bytes:
    return url.encode()


assert_type(save(1, answer="B"), bool)
assert_type(policy.call(save, 1, answer="B"), bool)

limiter = ConcurrencyLimiter(8, timeout=5.0)


@limiter
def lookup(user_id: int) -> str:
    return str(user_id)


@limiter
async def ask(prompt: str) -> str:
    return prompt


assert_type(lookup(1), str)
assert_type(limiter.stats(), ConcurrencyStats)
assert_type(limiter.in_flight, int)


async def use() -> None:
    assert_type(await fetch("https://example.org"), bytes)
    assert_type(await policy.acall(fetch, "u"), bytes)
    assert_type(await ask("q"), str)
    async with limiter, AsyncKeyedLock().lock(42):
        pass
    with retry_testing():
        pass


with KeyedLock().lock("chat", timeout=1.0):
    pass

settings = Settings.from_env({})
assert_type(settings.batch_size, int)
assert_type(settings.user_rate, Rate)
assert_type(settings.state_ttl, float | None)
assert_type(settings.redis_url, str | None)

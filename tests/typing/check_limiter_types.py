"""Static typing checks of the rate-limit API, run by mypy --strict (never executed)."""

from __future__ import annotations

from typing_extensions import assert_type

from botscale import (
    AsyncRateLimiter,
    Decision,
    Rate,
    RateLimiter,
    RateLimiterStats,
    rate_limited,
)
from botscale.backends import MemoryBackend

lim = RateLimiter(Rate(30, 60.0), burst=5, backend=MemoryBackend(max_keys=1000))
assert_type(lim.try_acquire("user:42"), Decision)
assert_type(lim.try_acquire(42, cost=2), Decision)
assert_type(lim.acquire(42, timeout=5.0), Decision)
assert_type(lim.stats(), RateLimiterStats)
alim = AsyncRateLimiter("30/minute")


@rate_limited(lim, key=lambda user_id, text: user_id)
def reply(user_id: int, text: str) -> str:
    return text


@rate_limited(alim, key=7, wait=True, timeout=1.0)
async def send(chat_id: int) -> bool:
    return True


async def use() -> None:
    assert_type(reply(1, "hi"), str)
    assert_type(await send(3), bool)
    assert_type(await alim.try_acquire("k"), Decision)
    assert_type(await alim.acquire("k", 2, timeout=1.0), Decision)
    await alim.reset(3)
    reply("not an int", "hi")  # type: ignore[arg-type]

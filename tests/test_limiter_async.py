"""AsyncRateLimiter and async rate_limited: the contract over memory, waiting, bad input."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from botscale import (
    AsyncRateLimiter,
    ConfigurationError,
    Decision,
    Rate,
    RateLimiter,
    RateLimitExceeded,
    rate_limited,
)
from botscale.backends import MemoryBackend
from botscale.backends.memory import MemoryBackendStats
from botscale.testing import FakeClock
from contracts.rate_limit import SLOW, LimiterFactory, RateLimitBackendContract
from test_limiter import ProtocolOnly


class AsyncProtocolOnly:
    """An AsyncRateLimitBackend over a MemoryBackend, as an async custom backend is seen."""

    def __init__(self) -> None:
        self.inner = MemoryBackend()
        self.resets: list[str] = []

    async def acquire(
        self, key: str, *, now: float, interval: float, burst: int, cost: int
    ) -> Decision:
        await asyncio.sleep(0)  # a real round trip would yield here
        return self.inner.acquire(key, now=now, interval=interval, burst=burst, cost=cost)

    async def reset(self, key: str) -> None:
        self.resets.append(key)
        self.inner.reset(key)

    async def stats(self) -> MemoryBackendStats:
        return self.inner.stats()


class TestAsyncMemoryBackend(RateLimitBackendContract):
    """The default async limiter: the memory backend's bound path, called in the loop."""

    drives_time = True

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> AsyncRateLimiter:
            return AsyncRateLimiter(rate, burst, clock=clock, sleep=clock.asleep)

        return make


class TestAsyncBackendThroughTheProtocol(RateLimitBackendContract):
    """An awaitable backend, through the AsyncRateLimitBackend Protocol."""

    drives_time = True

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> AsyncRateLimiter:
            return AsyncRateLimiter(
                rate, burst, clock=clock, sleep=clock.asleep, backend=AsyncProtocolOnly()
            )

        return make


class TestAsyncLimiterOverASyncBackend(RateLimitBackendContract):
    """A non-blocking sync backend other than memory, called directly from the loop."""

    drives_time = True

    @pytest.fixture
    def make_limiter(self, clock: FakeClock) -> LimiterFactory:
        def make(rate: Rate, burst: int | None = None) -> AsyncRateLimiter:
            return AsyncRateLimiter(
                rate, burst, clock=clock, sleep=clock.asleep, backend=ProtocolOnly()
            )

        return make


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"burst": 0}, ConfigurationError, "burst"),
        ({"burst": 2.0}, TypeError, "burst"),
        ({"clock": "now"}, TypeError, "clock"),
        ({"sleep": 0.1}, TypeError, "sleep must be"),
        ({"backend": object()}, TypeError, "backend must implement"),
        ({"max_keys": -5}, ConfigurationError, "max_keys"),
        ({"max_keys": 5, "backend": MemoryBackend()}, ConfigurationError, "max_keys applies"),
    ],
)
def test_bad_constructor_arguments_fail_naming_the_argument(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        AsyncRateLimiter(Rate(1, 1.0), **kwargs)


@pytest.mark.parametrize("backend", [None, "async"])
async def test_bad_keys_costs_and_timeouts_fail_naming_the_argument(
    backend: str | None, clock: FakeClock
) -> None:
    lim = AsyncRateLimiter(
        Rate(1, SLOW),
        3,
        clock=clock,
        sleep=clock.asleep,
        backend=AsyncProtocolOnly() if backend else None,
    )
    for key in (None, 2.5, b"k", True):
        with pytest.raises(TypeError, match="key must be str or int"):
            await lim.try_acquire(key)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="key must be str or int"):
            await lim.reset(key)  # type: ignore[arg-type]
    for cost, error in ((0, ValueError), (4, ValueError), (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="cost"):
            await lim.try_acquire("k", cost)  # type: ignore[arg-type]
        with pytest.raises(error, match="cost"):
            await lim.acquire("k", cost)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        await lim.acquire("k", timeout=-0.5)
    assert await lim.try_acquire("k", 3) == Decision(True, 0, 0.0)


async def test_acquire_awaits_the_injected_sleep_for_exactly_retry_after(clock: FakeClock) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    lim = AsyncRateLimiter(Rate(2, 1.0), 1, clock=clock, sleep=sleep)
    await lim.try_acquire("k")
    assert await lim.acquire("k", timeout=0.5) == Decision(True, 0, 0.0)
    assert slept == [0.5]
    with pytest.raises(RateLimitExceeded):
        await lim.acquire("k", timeout=0.25)
    assert slept == [0.5]  # refused before sleeping
    stats = lim.stats()
    assert (stats.allowed, stats.denied, stats.waits, stats.timeouts) == (2, 2, 1, 1)


async def test_a_cancelled_wait_takes_no_tokens(clock: FakeClock) -> None:
    blocked = asyncio.Event()

    async def sleep(seconds: float) -> None:
        blocked.set()
        await asyncio.Event().wait()  # never ends

    lim = AsyncRateLimiter(Rate(1, 10.0), 1, clock=clock, sleep=sleep)
    await lim.try_acquire("k")
    task = asyncio.create_task(lim.acquire("k"))
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(10.0)
    assert await lim.try_acquire("k") == Decision(True, 0, 0.0)


async def test_reset_awaits_an_async_backend(clock: FakeClock) -> None:
    backend = AsyncProtocolOnly()
    lim = AsyncRateLimiter(Rate(1, SLOW), 1, clock=clock, backend=backend)
    await lim.try_acquire(5)
    await lim.reset(5)
    assert backend.resets == ["5"]
    assert await lim.try_acquire(5)
    assert lim.stats().backend is None  # an async stats() is not called from sync stats()


async def test_the_default_backend_stats_are_included(clock: FakeClock) -> None:
    lim = AsyncRateLimiter(Rate(1, SLOW), clock=clock, max_keys=9)
    await lim.try_acquire("a")
    assert lim.stats().backend == MemoryBackendStats(keys=1, max_keys=9, expired=0, evicted=0)
    assert repr(lim).startswith("AsyncRateLimiter('1/3600s', burst=1")


async def test_rate_limited_async_raises_or_waits(clock: FakeClock) -> None:
    lim = AsyncRateLimiter(Rate(1, 10.0), 1, clock=clock, sleep=clock.asleep)

    @rate_limited(lim, key=lambda chat_id, text: chat_id)
    async def send(chat_id: int, text: str) -> str:
        return text

    @rate_limited(lim, key=lambda chat_id, text: chat_id, wait=True, timeout=10.0)
    async def send_patiently(chat_id: int, text: str) -> str:
        return text

    assert inspect.iscoroutinefunction(send)
    assert str(inspect.signature(send)) == "(chat_id: 'int', text: 'str') -> 'str'"
    assert await send(1, "a") == "a"
    with pytest.raises(RateLimitExceeded) as info:
        await send(1, "b")
    assert info.value.key == 1
    start = clock()
    assert await send_patiently(1, "c") == "c"
    assert clock() - start == pytest.approx(10.0)


def test_a_sync_function_cannot_use_an_async_limiter() -> None:
    lim = AsyncRateLimiter(Rate(1, 1.0))

    def plain() -> None: ...

    with pytest.raises(TypeError, match="not async"):
        rate_limited(lim)(plain)


async def test_tasks_sharing_a_sync_limiter_in_one_loop_get_exactly_burst() -> None:
    lim = RateLimiter(Rate(1, SLOW), 10, clock=FakeClock())

    @rate_limited(lim, key="shared")
    async def work(i: int) -> int:
        await asyncio.sleep(0)
        return i

    results = await asyncio.gather(*(work(i) for i in range(50)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 10
    assert all(isinstance(r, (int, RateLimitExceeded)) for r in results)

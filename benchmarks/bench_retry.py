"""Retry success-path overhead and concurrency-primitive cost, side by side.

Retry: the cost of calling a decorated function that succeeds first time (the
path nearly every call takes), against a plain call (the floor), tenacity's own
``@retry`` and stamina's ``@retry``, sync and async.  Overhead is decorated
minus plain.  The target: botscale's overhead is at most 1/5 of tenacity's.

Concurrency: one uncontended acquire + release of botscale's
``ConcurrencyLimiter`` (shared by threads and tasks, FIFO, counted) against a
bare ``asyncio.Semaphore``, and of ``AsyncKeyedLock`` (idle keys freed) against
the ever-growing ``defaultdict(asyncio.Lock)`` bots write by hand.

The runs are interleaved and each implementation keeps its best, so a busy
machine slows them alike.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

import stamina
import tenacity

import botscale
from _harness import Row, Section, Target
from botscale import AsyncKeyedLock, ConcurrencyLimiter


def _best_of_interleaved(
    fns: dict[str, Callable[[], object]], *, number: int, rounds: int
) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / number)
    return best


def _best_of_interleaved_async(
    fns: dict[str, Callable[[], Awaitable[object]]], *, number: int, rounds: int
) -> dict[str, float]:
    async def once(fn: Callable[[], Awaitable[object]]) -> float:
        start = time.perf_counter()
        for _ in range(number):
            await fn()
        return (time.perf_counter() - start) / number

    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = min(best[name], asyncio.run(once(fn)))
    return best


def _overhead_target(
    best: dict[str, float], plain: str, ours: str, theirs: str, label: str
) -> Target:
    ours_over = max(best[ours] - best[plain], 0.0)
    theirs_over = best[theirs] - best[plain]
    ratio = ours_over / theirs_over
    return Target(
        f"{label}: botscale overhead <= 1/5 of tenacity's",
        ratio <= 0.2,
        f"{ours_over * 1e9:.0f} ns vs {theirs_over * 1e9:.0f} ns (1/{1 / max(ratio, 1e-9):.0f})",
    )


def _retry_sync(quick: bool) -> Section:
    def plain(x: int) -> int:
        return x

    ours = botscale.retry(on=ConnectionError, attempts=3)(plain)
    ours_timed = botscale.retry(on=ConnectionError, attempts=3, timeout=30.0)(plain)
    theirs = tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=5.0),
        reraise=True,
    )(plain)
    hynek = stamina.retry(on=ConnectionError, attempts=3)(plain)
    fns: dict[str, Callable[[], object]] = {
        "plain call": lambda: plain(1),
        "botscale.retry": lambda: ours(1),
        "botscale.retry (timeout=30)": lambda: ours_timed(1),
        "tenacity.retry": lambda: theirs(1),
        "stamina.retry": lambda: hynek(1),
    }
    number = 5_000 if quick else 50_000
    best = _best_of_interleaved(fns, number=number, rounds=3 if quick else 7)
    return Section(
        "Retry: a call that succeeds first time (sync)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline="plain call",
        targets=[
            _overhead_target(best, "plain call", "botscale.retry", "tenacity.retry", "sync"),
            _overhead_target(
                best, "plain call", "botscale.retry (timeout=30)", "tenacity.retry", "sync, timed"
            ),
        ],
        unit="call",
    )


def _retry_async(quick: bool) -> Section:
    async def plain(x: int) -> int:
        return x

    ours = botscale.retry(on=ConnectionError, attempts=3)(plain)
    theirs = tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential_jitter(initial=0.1, max=5.0),
        reraise=True,
    )(plain)
    hynek = stamina.retry(on=ConnectionError, attempts=3)(plain)
    fns: dict[str, Callable[[], Awaitable[object]]] = {
        "plain await": lambda: plain(1),
        "botscale.retry": lambda: ours(1),
        "tenacity.retry": lambda: theirs(1),
        "stamina.retry": lambda: hynek(1),
    }
    number = 3_000 if quick else 30_000
    best = _best_of_interleaved_async(fns, number=number, rounds=3 if quick else 7)
    return Section(
        "Retry: a call that succeeds first time (async)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline="plain await",
        targets=[
            _overhead_target(best, "plain await", "botscale.retry", "tenacity.retry", "async")
        ],
        unit="call",
    )


def _concurrency(quick: bool) -> Section:
    semaphore = asyncio.Semaphore(8)
    limiter = ConcurrencyLimiter(8)
    keyed = AsyncKeyedLock()
    naive: collections.defaultdict[int, asyncio.Lock] = collections.defaultdict(asyncio.Lock)

    async def bare_semaphore() -> None:
        async with semaphore:
            pass

    async def botscale_limiter() -> None:
        async with limiter:
            pass

    async def botscale_keyed() -> None:
        async with keyed.lock(42):
            pass

    async def dict_of_locks() -> None:
        async with naive[42]:
            pass

    fns: dict[str, Callable[[], Awaitable[object]]] = {
        "asyncio.Semaphore": bare_semaphore,
        "ConcurrencyLimiter (async with)": botscale_limiter,
        "defaultdict(asyncio.Lock)[chat] (never freed)": dict_of_locks,
        "AsyncKeyedLock.lock(chat) (freed when idle)": botscale_keyed,
    }
    number = 5_000 if quick else 50_000
    best = _best_of_interleaved_async(fns, number=number, rounds=3 if quick else 7)
    return Section(
        "Concurrency: one uncontended acquire + release (async)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline="asyncio.Semaphore",
        unit="acquire",
    )


def run(quick: bool) -> list[Section]:
    return [_retry_sync(quick), _retry_async(quick), _concurrency(quick)]

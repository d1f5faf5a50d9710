"""botscale's core in one minute: rate limiting, retries, a bulkhead, per-chat order.

No network, no bot token, a few seconds at most:

    python examples/core_demo.py

Each part plays a situation a bot meets once real users arrive, and prints what
botscale did about it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time

from botscale import (
    AsyncKeyedLock,
    ConcurrencyLimiter,
    Rate,
    RateLimiter,
    Settings,
    retry,
    retry_stats,
)
from botscale.testing import FakeClock


def heading(title: str) -> None:
    print(f"\n== {title} ==")


def rate_limiting() -> None:
    heading("1. A user floods the bot (RateLimiter: 30/minute, burst 5)")
    clock = FakeClock(0.0)  # simulated time, so the demo does not wait a minute
    limiter = RateLimiter(Rate.parse("30/minute"), burst=5, clock=clock)
    answers = []
    for _ in range(8):
        decision = limiter.try_acquire("user:42")
        answers.append("ok" if decision.allowed else f"wait {decision.retry_after:.1f}s")
    print(f"user 42 sends 8 messages at once: {', '.join(answers)}")
    print(f"user 7 is not affected:            {limiter.try_acquire('user:7').allowed}")
    clock.advance(2.0)
    print(f"2 s later user 42 may send again:  {limiter.try_acquire('user:42').allowed}")


class Database:
    """A database that drops the connection now and then."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def insert(self, row: str) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("server closed the connection unexpectedly")
        return f"inserted {row!r}"


class TooManyRequests(Exception):
    """What Telegram answers above its flood limits (HTTP 429 with retry_after)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"Too Many Requests: retry after {retry_after:g}")
        self.retry_after = retry_after


def telegram_retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, TooManyRequests) else None


def retries() -> None:
    heading("2. Flaky database, Telegram 429 (retry)")
    db = Database(failures=2)
    save = retry(on=ConnectionError, attempts=3, timeout=5.0, initial=0.05)(db.insert)
    print(save("answer B from user 42"))

    waits = [TooManyRequests(0.2)]

    @retry(on=TooManyRequests, attempts=3, timeout=10.0, retry_after=telegram_retry_after)
    def send_message(text: str) -> str:
        if waits:
            raise waits.pop()
        return f"sent {text!r}"

    start = time.monotonic()
    print(f"{send_message('hello')} after waiting {time.monotonic() - start:.1f} s as told")

    @retry(on=TooManyRequests, attempts=3, timeout=10.0, retry_after=telegram_retry_after)
    def broadcast(text: str) -> str:
        raise TooManyRequests(30.0)

    try:
        broadcast("news")
    except TooManyRequests as exc:
        print(f"a 30 s wait does not fit a 10 s budget: fails at once with {exc}")
    stats = retry_stats()
    print(
        f"retries: {stats.retries}, recovered: {stats.recovered}, "
        f"given up (over budget): {stats.over_budget}"
    )


async def concurrency() -> None:
    heading("3. 20 users ask the AI at once (ConcurrencyLimiter(8))")
    ai = ConcurrencyLimiter(8, name="ai-api")
    peak = 0

    @ai
    async def ask(question: str) -> str:
        nonlocal peak
        peak = max(peak, ai.in_flight)
        await asyncio.sleep(0.05)
        return question[::-1]

    start = time.monotonic()
    answers = await asyncio.gather(*(ask(f"question {i}") for i in range(20)))
    elapsed = time.monotonic() - start
    print(f"{len(answers)} answers in {elapsed:.2f} s, never more than {peak} calls at once")

    heading("4. Updates of 3 chats handled concurrently, each chat in order (AsyncKeyedLock)")
    chats = AsyncKeyedLock()
    handled: dict[int, list[int]] = {}

    async def handle(chat_id: int, update_id: int) -> None:
        async with chats.lock(chat_id):
            await asyncio.sleep(random.uniform(0, 0.01))
            handled.setdefault(chat_id, []).append(update_id)

    await asyncio.gather(*(handle(update % 3, update) for update in range(12)))
    for chat_id, updates in sorted(handled.items()):
        print(f"chat {chat_id}: updates {updates}")
    print(f"locks kept for idle chats: {len(chats)}")


def settings() -> None:
    heading("5. Settings.from_env() (BOTSCALE_* variables)")
    s = Settings.from_env({"BOTSCALE_USER_RATE": "20/minute", "BOTSCALE_MAX_CONCURRENCY": "4"})
    print(
        f"user_rate={s.user_rate}, max_concurrency={s.max_concurrency}, "
        f"batch_size={s.batch_size}, state_maxsize={s.state_maxsize}"
    )


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="  [%(levelname)s %(name)s] %(message)s", stream=sys.stdout
    )
    rate_limiting()
    retries()
    asyncio.run(concurrency())
    settings()


if __name__ == "__main__":
    main()

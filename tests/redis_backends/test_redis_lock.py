"""RedisKeyedLock / AsyncRedisKeyedLock: exclusion across clients, token-checked release, TTL."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis
import redis.asyncio as aredis

from botscale import BackendError, ConcurrencyTimeout
from botscale.backends.redis import AsyncRedisKeyedLock, RedisKeyedLock
from botscale.testing import FakeClock

pytestmark = pytest.mark.redis


def make(client: redis.Redis, prefix: str, clock: FakeClock, **kwargs: float) -> RedisKeyedLock:
    return RedisKeyedLock(client, prefix=prefix, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_a_held_key_is_refused_to_another_process_until_released(
    redis_url: str, client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    with redis.Redis.from_url(redis_url) as other_client:
        mine = make(client, prefix, clock)
        theirs = make(other_client, prefix, clock)
        assert mine.acquire(42)
        assert mine.locked(42)
        assert mine.held(42)
        assert not theirs.held(42)
        before = clock()
        assert not theirs.acquire(42, timeout=0.5)
        assert clock() - before == pytest.approx(0.5)  # it polled until the deadline
        assert theirs.acquire(43, timeout=0)  # other keys are free
        theirs.release(43)
        mine.release(42)
        assert not mine.locked(42)
        assert theirs.acquire(42, timeout=0)
        theirs.release(42)


def test_lock_context_raises_concurrency_timeout(
    client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    a, b = make(client, prefix, clock), make(client, prefix, clock)
    with a.lock("chat"):
        with pytest.raises(ConcurrencyTimeout, match="still held"):
            with b.lock("chat", timeout=0.2):
                pass
    with b.lock("chat", timeout=0):
        assert b.held("chat")
    assert not b.locked("chat")


def test_lock_frees_itself_after_ttl_and_an_expired_release_does_not_free_another_holder(
    client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    a, b = make(client, prefix, clock, ttl=30.0), make(client, prefix, clock)
    assert a.acquire("k")
    assert 29_000 < client.pttl(a.redis_key("k")) <= 30_000
    client.delete(a.redis_key("k"))  # what the TTL does to a holder that took too long
    assert b.acquire("k", timeout=0)
    a.release("k")  # must not delete b's lock
    assert a.expired == 1
    assert b.locked("k")
    b.release("k")
    assert b.expired == 0


def test_extend_is_token_checked(client: redis.Redis, prefix: str, clock: FakeClock) -> None:
    a = make(client, prefix, clock, ttl=5.0)
    assert a.acquire("k")
    assert a.extend("k", 60.0)
    assert client.pttl(a.redis_key("k")) > 59_000
    client.set(a.redis_key("k"), "someone else")
    assert not a.extend("k")
    a.release("k")
    assert client.get(a.redis_key("k")) == b"someone else"


def test_release_of_a_key_not_held_is_an_error(
    client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    lock = make(client, prefix, clock)
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.release("nope")
    with pytest.raises(RuntimeError, match="does not hold"):
        lock.extend("nope")


def test_threads_of_two_processes_never_overlap(redis_url: str, prefix: str) -> None:
    inside = 0
    peak = 0
    done = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, peak, done
        with redis.Redis.from_url(redis_url) as own:
            lock = RedisKeyedLock(own, prefix=prefix, poll=0.001, max_poll=0.005)
            for _ in range(15):
                with lock.lock("chat", timeout=30):
                    with guard:
                        inside += 1
                        peak = max(peak, inside)
                    threading.Event().wait(0.001)  # hold it across a thread switch
                    with guard:
                        inside -= 1
                        done += 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert done == 60
    assert peak == 1


def test_closed_policy_raises_and_open_policy_proceeds_locally(dead_client: redis.Redis) -> None:
    closed = RedisKeyedLock(dead_client, prefix="bot")
    with pytest.raises(BackendError):
        closed.acquire(1)
    assert not closed.held(1)
    opened = RedisKeyedLock(dead_client, prefix="bot", on_error="open")
    with opened.lock(1):
        assert opened.held(1)
    assert opened.stats().degraded == 1


async def test_async_twin_excludes_and_times_out(
    redis_url: str, aclient: aredis.Redis, prefix: str, clock: FakeClock
) -> None:
    other_client = aredis.Redis.from_url(redis_url)
    try:
        mine = AsyncRedisKeyedLock(aclient, prefix=prefix, clock=clock, sleep=clock.asleep)
        theirs = AsyncRedisKeyedLock(other_client, prefix=prefix, clock=clock, sleep=clock.asleep)
        async with mine.lock(7):
            assert await theirs.locked(7)
            assert not await theirs.acquire(7, timeout=0.3)
            with pytest.raises(ConcurrencyTimeout):
                async with theirs.lock(7, timeout=0.1):
                    pass
            assert await mine.extend(7)
        assert await theirs.acquire(7, timeout=0)
        await theirs.release(7)
        with pytest.raises(RuntimeError):
            await theirs.release(7)
    finally:
        await other_client.aclose()


async def test_async_tasks_keep_their_order_in_process(aclient: aredis.Redis, prefix: str) -> None:
    lock = AsyncRedisKeyedLock(aclient, prefix=prefix)
    order: list[int] = []

    async def handle(i: int) -> None:
        async with lock.lock("chat"):
            order.append(i)
            await asyncio.sleep(0)

    await asyncio.gather(*(handle(i) for i in range(10)))
    assert order == list(range(10))

"""A private redis-server is stopped mid-run and restarted: every component keeps answering
under its documented policy, the breaker opens and closes, and nothing needs a restart.

The server is this test's own (a spare port on 127.0.0.1, no persistence), started
with subprocess and stopped by its pid; the shared Redis is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from botscale import BackendError, Rate, RateLimiter
from botscale._flood import BucketSpec
from botscale.backends.redis import (
    CircuitBreaker,
    RedisBackend,
    RedisDeduplicator,
    RedisFloodBudget,
    RedisStateStore,
    connect,
)
from botscale.testing import FakeClock

pytestmark = pytest.mark.redis


def state_of(breaker: CircuitBreaker) -> str:
    return breaker.state  # through a call: mypy would narrow the property between asserts


class PrivateRedis:
    """A redis-server process on ``port``, started and stopped by this test."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with redis.Redis(port=self.port, socket_connect_timeout=0.2) as probe:
            for _ in range(200):  # bounded: at most ~10 s for the server to listen
                try:
                    probe.ping()
                    return
                except redis.ConnectionError:
                    time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(free_port: int) -> Iterator[PrivateRedis]:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: the fault test starts a private one"
        if os.environ.get("BOTSCALE_REQUIRE_SERVICES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = PrivateRedis(binary, free_port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_components_ride_out_a_redis_outage_and_recover(
    private_redis: PrivateRedis, clock: FakeClock
) -> None:
    client = connect(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    breaker = CircuitBreaker(failures=3, cooldown=5.0, clock=clock)  # shared by every component
    limiter = RateLimiter(
        Rate(1, 3600.0), 3, backend=RedisBackend(client, prefix="bot", breaker=breaker)
    )
    budget = RedisFloodBudget(client, prefix="bot", local_share=0.5, breaker=breaker)
    lane = BucketSpec("overall", 1 / 30, 4)
    store = RedisStateStore(client, prefix="bot", breaker=breaker)
    dedup = RedisDeduplicator(client, prefix="bot", breaker=breaker)

    # Redis up: the limiter limits, state and dedup work.
    assert [limiter.try_acquire("user").allowed for _ in range(4)] == [True] * 3 + [False]
    store.set("user", {"step": 1})
    assert dedup.seen(1) is False

    private_redis.stop()

    # Redis down: the incoming limiter fails open, the budget decides locally with its
    # share (burst 4 -> 2), state fails closed, dedup fails open.  Every call answers.
    assert limiter.try_acquire("user").allowed
    assert [budget.take(lane, None, clock()).granted for _ in range(3)] == [True, True, False]
    with pytest.raises(BackendError):
        store.get("user")
    assert dedup.seen(1) is False  # processing twice beats dropping
    assert state_of(breaker) == "open"
    assert breaker.opened == 1
    errors = limiter.backend.stats().errors  # type: ignore[attr-defined]
    for _ in range(50):  # the open breaker keeps the dead server from being hammered
        assert limiter.try_acquire("user").allowed
    assert limiter.backend.stats().errors == errors  # type: ignore[attr-defined]
    assert limiter.backend.stats().short_circuited >= 50  # type: ignore[attr-defined]

    private_redis.start()  # an empty server on the same port: data was not persisted

    clock.advance(5.0)  # the cooldown: the next call probes the server, on the same client
    assert limiter.try_acquire("user").allowed
    assert state_of(breaker) == "closed"
    assert [limiter.try_acquire("user").allowed for _ in range(3)] == [True, True, False]
    assert store.get("user") is None  # the new server is empty, and answers
    store.set("user", {"step": 2})
    assert store.get("user") == {"step": 2}
    assert budget.take(lane, None, clock()).granted
    assert dedup.seen(1) is False
    assert dedup.seen(1) is True
    client.close()


def test_a_closed_policy_limiter_raises_during_the_outage_then_recovers(
    private_redis: PrivateRedis, clock: FakeClock
) -> None:
    backend = RedisBackend.from_url(
        private_redis.url,
        prefix="bot",
        on_error="closed",
        breaker=CircuitBreaker(failures=1, cooldown=1.0, clock=clock),
    )
    limiter = RateLimiter(Rate(1, 3600.0), 1, backend=backend)
    assert limiter.try_acquire("k").allowed
    private_redis.stop()
    with pytest.raises(BackendError) as info:
        limiter.try_acquire("k")
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    with pytest.raises(BackendError, match="circuit breaker is open"):
        limiter.try_acquire("k")
    private_redis.start()
    clock.advance(1.0)
    assert limiter.try_acquire("k").allowed
    assert not limiter.try_acquire("k").allowed
    backend.close()


async def test_async_limiter_and_budget_ride_out_an_outage(
    private_redis: PrivateRedis, clock: FakeClock
) -> None:
    from botscale import AsyncRateLimiter
    from botscale.backends.redis import AsyncRedisBackend, AsyncRedisFloodBudget, connect_async

    client = connect_async(private_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    breaker = CircuitBreaker(failures=2, cooldown=5.0, clock=clock)
    limiter = AsyncRateLimiter(
        Rate(1, 3600.0), 2, backend=AsyncRedisBackend(client, prefix="bot", breaker=breaker)
    )
    budget = AsyncRedisFloodBudget(client, prefix="bot", local_share=0.5, breaker=breaker)
    lane = BucketSpec("overall", 1 / 30, 2)
    assert [(await limiter.try_acquire("u")).allowed for _ in range(3)] == [True, True, False]
    private_redis.stop()
    assert (await limiter.try_acquire("u")).allowed
    assert [(await budget.take(lane, None, clock())).granted for _ in range(2)] == [True, False]
    assert state_of(breaker) == "open"
    private_redis.start()
    clock.advance(5.0)
    assert (await limiter.try_acquire("u")).allowed
    assert state_of(breaker) == "closed"
    assert (await budget.take(lane, None, clock())).granted
    await client.aclose()

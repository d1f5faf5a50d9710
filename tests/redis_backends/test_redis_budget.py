"""RedisFloodBudget: the flood-control budget in Redis agrees with MemoryFloodBudget."""

from __future__ import annotations

import random
import time

import pytest
import redis
import redis.asyncio as aredis

from botscale import BackendError
from botscale._flood import BucketSpec, FloodBudget, Grant, MemoryFloodBudget
from botscale.backends.redis import AsyncRedisFloodBudget, CircuitBreaker, RedisFloodBudget
from botscale.testing import FakeClock

pytestmark = pytest.mark.redis

# Slow buckets: the milliseconds a test takes refill nothing that matters.
LANE = BucketSpec("overall", 10.0, 3)
PAID = BucketSpec("paid", 10.0, 1)


def chat(n: int, cost: int = 1) -> BucketSpec:
    return BucketSpec(f"chat:{n}", 20.0, 2, cost)


def same(a: Grant, b: Grant, since: float) -> bool:
    """Equal decisions; waits within the real time elapsed since ``since`` (Redis's clock moves)."""
    slack = time.monotonic() - since + 0.01
    return (
        a.granted == b.granted
        and b.chat_wait - slack <= a.chat_wait <= b.chat_wait + 1e-6
        and b.lane_wait - slack <= a.lane_wait <= b.lane_wait + 1e-6
    )


def test_is_a_flood_budget(client: redis.Redis, prefix: str) -> None:
    assert isinstance(RedisFloodBudget(client, prefix=prefix), FloodBudget)


def test_a_random_sequence_decides_like_the_memory_budget(client: redis.Redis, prefix: str) -> None:
    rng = random.Random(9)
    shared = RedisFloodBudget(client, prefix=prefix)
    local = MemoryFloodBudget()
    started = time.monotonic()
    for step in range(120):
        roll = rng.random()
        if roll < 0.1:
            scope = rng.choice(["bot", "chat:1", "chat:2"])
            seconds = rng.choice([0.0, 5.0, 15.0])
            until = local.pause(scope, seconds, 0.0)
            left = shared.pause(scope, seconds, 0.0)
            assert until - (time.monotonic() - started) - 0.01 <= left <= until, step
            continue
        lane = PAID if roll < 0.2 else LANE
        spec = None if roll < 0.35 else chat(rng.randint(1, 4), cost=rng.choice([1, 1, 2]))
        got, expected = shared.take(lane, spec, 0.0), local.take(lane, spec, 0.0)
        assert same(got, expected, started), (step, lane, spec, got, expected)


def test_chat_and_lane_are_taken_together_or_not_at_all(client: redis.Redis, prefix: str) -> None:
    budget = RedisFloodBudget(client, prefix=prefix)
    assert budget.take(LANE, chat(1), 0.0).granted
    assert budget.take(LANE, chat(1), 0.0).granted
    denied = budget.take(LANE, chat(1), 0.0)  # the chat bucket (burst 2) is empty
    assert not denied.granted
    assert 19.9 < denied.chat_wait <= 20.0
    assert denied.lane_wait == 0.0
    # The lane lost nothing to the refused request: one token is left for chat 2.
    assert budget.take(LANE, chat(2), 0.0).granted
    lane_short = budget.take(LANE, chat(3), 0.0)
    assert not lane_short.granted
    assert 9.9 < lane_short.lane_wait <= 10.0
    assert client.pttl(budget.bucket_key("chat:3")) == -2  # not taken from chat 3


def test_granted_chat_wait_is_the_time_until_the_chat_holds_a_token_again(
    client: redis.Redis, prefix: str
) -> None:
    budget = RedisFloodBudget(client, prefix=prefix)
    first = budget.take(LANE, chat(1), 0.0)
    assert first == Grant(True, 0.0, 0.0)
    second = budget.take(LANE, chat(1), 0.0)
    assert second.granted
    assert 19.9 < second.chat_wait <= 20.0


def test_cooldowns_only_move_forward(client: redis.Redis, prefix: str) -> None:
    budget = RedisFloodBudget(client, prefix=prefix)
    assert 29.9 < budget.pause("chat:1", 30.0, 0.0) <= 30.0
    assert 29.9 < budget.pause("chat:1", 5.0, 0.0) <= 30.0  # a shorter pause never shortens
    assert 59.9 < budget.pause("chat:1", 60.0, 0.0) <= 60.0
    assert 59_000 < client.pttl(budget.cooldown_key("chat:1")) <= 60_000
    assert budget.pause("chat:9", 0.0, 0.0) == 0.0
    held = budget.take(LANE, chat(1), 0.0)
    assert not held.granted
    assert held.chat_wait > 59.9
    assert budget.take(LANE, chat(2), 0.0).granted  # other chats go on


def test_a_bot_wide_cooldown_holds_the_lane(client: redis.Redis, prefix: str) -> None:
    budget = RedisFloodBudget(client, prefix=prefix)
    budget.pause("bot", 3.0, 0.0)
    held = budget.take(LANE, chat(1), 0.0)
    assert not held.granted
    assert 2.9 < held.lane_wait <= 3.0
    assert not budget.take(LANE, None, 0.0).granted


def test_a_pause_in_one_process_holds_the_others(redis_url: str, prefix: str) -> None:
    with redis.Redis.from_url(redis_url) as a, redis.Redis.from_url(redis_url) as b:
        RedisFloodBudget(a, prefix=prefix).pause("bot", 2.0, 0.0)
        assert not RedisFloodBudget(b, prefix=prefix).take(LANE, None, 0.0).granted


def test_keys_share_one_hash_tag(client: redis.Redis, prefix: str) -> None:
    budget = RedisFloodBudget(client, prefix=prefix)
    tag = "{" + prefix + ":out}"
    assert budget.bucket_key("chat:5") == tag + ":b:chat:5"
    assert budget.cooldown_key("bot") == tag + ":hold:bot"


def test_local_fallback_uses_a_share_of_every_rate(
    dead_client: redis.Redis, clock: FakeClock
) -> None:
    budget = RedisFloodBudget(dead_client, prefix="bot", local_share=0.5)
    lane = BucketSpec("overall", 1 / 30, 4)
    grants = [budget.take(lane, None, clock()) for _ in range(3)]
    assert [g.granted for g in grants] == [True, True, False]  # burst 4 -> 2
    assert grants[2].lane_wait == pytest.approx(2 / 30)  # rate 30/s -> 15/s
    assert budget.pause("bot", 1.0, clock()) == 1.0  # remembered locally
    assert not budget.take(lane, None, clock() + 0.5).granted
    stats = budget.stats()
    assert stats.degraded == 5
    assert stats.errors == 5


def test_other_policies(dead_client: redis.Redis, clock: FakeClock) -> None:
    opened = RedisFloodBudget(dead_client, prefix="bot", on_error="open")
    assert all(opened.take(LANE, chat(1), 0.0).granted for _ in range(10))
    closed = RedisFloodBudget(
        dead_client,
        prefix="bot",
        on_error="closed",
        breaker=CircuitBreaker(failures=1, clock=clock),
    )
    with pytest.raises(BackendError):
        closed.take(LANE, None, 0.0)
    with pytest.raises(BackendError, match="circuit breaker is open"):
        closed.pause("bot", 1.0, 0.0)


def test_negative_pause_is_rejected(client: redis.Redis, prefix: str) -> None:
    with pytest.raises(ValueError, match="seconds"):
        RedisFloodBudget(client, prefix=prefix).pause("bot", -1.0, 0.0)


async def test_async_twin_agrees(aclient: aredis.Redis, prefix: str) -> None:
    budget = AsyncRedisFloodBudget(aclient, prefix=prefix)
    local = MemoryFloodBudget()
    started = time.monotonic()
    for spec in [chat(1), chat(1), chat(1), None, chat(2)]:
        assert same(await budget.take(LANE, spec, 0.0), local.take(LANE, spec, 0.0), started)
    assert await budget.pause("bot", 4.0, 0.0) == pytest.approx(4.0, abs=0.05)

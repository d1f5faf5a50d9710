"""The adapters against the simulator: real frameworks, real HTTP, one set of behaviour tests.

Each test runs for aiogram, python-telegram-bot, TeleBot (threads) and
AsyncTeleBot.  The simulator and the bot share scaled-up limits (100 calls/s
per bot, 10/s per private chat) so that a 200-chat broadcast takes about two
seconds instead of seven; the proportions of Telegram's defaults are kept
(the bot's buckets hold far less than the server's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from botscale import IncomingGuard, PerformanceMonitor, Rate, TelegramLimits
from botscale.testing import FloodLimits, TelegramSimulator, serve_bot

from .harness import FRAMEWORKS, HANG, Harness, Setup

OVERALL = 100.0  # calls per second, the simulator's and the bot's
PER_CHAT = 10.0
BUDGET = 0.3  # seconds: the runner's time budget in the slow-update test

SERVER_LIMITS = FloodLimits(
    per_bot=Rate(OVERALL, 1.0),
    per_bot_burst=30,
    per_private_chat=Rate(PER_CHAT, 1.0),
    per_private_chat_burst=3,
)
BOT_LIMITS = TelegramLimits(
    overall=Rate(OVERALL, 1.0),
    overall_burst=3,
    private=Rate(PER_CHAT, 1.0),
    private_burst=2,
    check_ceilings=False,
)

pytestmark = pytest.mark.parametrize("framework", FRAMEWORKS)


@pytest.fixture(autouse=True)
def restore_telebot_globals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from telebot import apihelper, asyncio_helper

    # PTB warns (an error under pytest) when it builds a RetryAfter, unless
    # opted in to its future timedelta attributes.
    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    saved = apihelper.API_URL, asyncio_helper.API_URL
    yield
    apihelper.API_URL, asyncio_helper.API_URL = saved


@asynccontextmanager
async def running(framework: str, setup: Setup) -> AsyncIterator[tuple[TelegramSimulator, Harness]]:
    harness = Harness(framework, setup)
    try:
        async with TelegramSimulator(flood_limits=SERVER_LIMITS) as sim:
            bot = harness.build(sim.base_url, sim.token)
            async with serve_bot(bot, sim, poll_timeout=2) as handle:
                await sim.wait_connected(15)
                yield sim, harness
                sim.release_pollers()
            assert handle.failure() is None
    finally:
        harness.close()


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` (bounded): the bot runs in the background."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def timed(monitor: PerformanceMonitor) -> set[int]:
    """How many times each operation of the guard's monitor was timed (the update
    on telebot, the handler on aiogram, both on PTB): ``{2}`` when each saw two."""
    return {op.count for op in monitor.stats().operations.values()}


def chat_of(call: Any) -> int | None:
    """The call's chat id (form-encoded bodies carry it as text)."""
    value = call.params.get("chat_id")
    return int(value) if value is not None else None


def sends(sim: TelegramSimulator, chats: set[int]) -> list[Any]:
    return [c for c in sim.calls if c.method.lower() == "sendmessage" and chat_of(c) in chats]


def send_times(sim: TelegramSimulator, chats: set[int]) -> list[float]:
    return sorted(c.at for c in sends(sim, chats) if c.status == 200)


def rate_of(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


# --------------------------------------------------------------------------- incoming


async def test_a_burst_from_one_user_reaches_the_handler_only_as_often_as_allowed(
    framework: str,
) -> None:
    guard = IncomingGuard("5/minute")
    async with running(framework, Setup(guard=guard, limits=BOT_LIMITS)) as (sim, harness):
        user = sim.user()
        for i in range(100):
            user.send(f"spam {i}")
        await until(lambda: guard.stats().passed + guard.stats().limited >= 100)
        await until(lambda: sim.sent_count(user.chat_id) >= 6)
        await asyncio.sleep(0.2)  # anything more would show up now
        texts = [m["text"] for m in sim.sent_messages(user.chat_id)]
    assert len(harness.handled) == 5
    assert sorted(harness.handled) == sorted(f"spam {i}" for i in range(5))
    assert sum(t.startswith("echo:") for t in texts) == 5
    notices = [t for t in texts if t.startswith("Too many requests")]
    assert len(notices) == 1  # one notice for 95 limited messages
    assert guard.stats().limited == 95
    assert sim.stats.rate_limited == 0


async def test_updates_run_concurrently_with_each_chats_order_kept(framework: str) -> None:
    async with running(framework, Setup(limits=BOT_LIMITS)) as (sim, harness):
        users = [sim.user() for _ in range(4)]
        for n in range(6):
            for user in users:
                user.send(f"slow {n}")
        await until(lambda: all(sim.sent_count(u.chat_id) >= 6 for u in users))
        replies = {u.chat_id: [m["text"] for m in sim.sent_messages(u.chat_id)] for u in users}
        stats = sim.stats
    expected = [f"echo: slow {n}" for n in range(6)]
    assert all(texts == expected for texts in replies.values()), replies
    assert len(harness.handled) == 24
    assert stats.rate_limited == 0


async def test_a_slow_update_is_cancelled_after_its_time_budget_where_it_can_be(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = PerformanceMonitor()
    guard = IncomingGuard(None, monitor=monitor)
    setup = Setup(guard=guard, limits=BOT_LIMITS, time_budget=BUDGET)
    with caplog.at_level(logging.WARNING, logger="botscale"):
        async with running(framework, setup) as (sim, harness):
            user = sim.user()
            sent = time.monotonic()
            user.send("hang")
            user.send("after")
            await until(lambda: sim.sent_count(user.chat_id) >= 1)
            first_reply = time.monotonic() - sent
            await until(lambda: timed(monitor) == {2})
            texts = [m["text"] for m in sim.sent_messages(user.chat_id)]
            runner = harness.runner.stats()
    assert harness.handled[:2] == ["hang", "after"]
    assert "still running after" in caplog.text  # logged as slow while it ran
    assert runner.slow == 1
    if framework == "telebot":  # a thread cannot be cancelled: it finishes, in order
        assert texts == ["echo: hang", "echo: after"]
        assert runner.cancelled == 0
    else:  # cancelled at its budget: the chat's next update ran long before HANG
        assert texts == ["echo: after"]
        assert runner.cancelled == 1
        assert "cancelled after its time budget" in caplog.text
        assert first_reply < HANG / 2
    operations = monitor.stats().operations.values()
    assert all(op.errors == 0 for op in operations)  # a cancellation is not a handler error


# --------------------------------------------------------------------------- outgoing


@pytest.mark.slow
async def test_broadcast_to_200_chats_has_no_429_and_uses_the_rate(framework: str) -> None:
    async with running(framework, Setup(limits=BOT_LIMITS)) as (sim, harness):
        users = [sim.user() for _ in range(200)]
        chats = [u.chat_id for u in users]
        errors = await harness.broadcast(chats, "news")
        times = send_times(sim, set(chats))
        stats = sim.stats
    assert errors == [None] * 200
    assert len(times) == 200
    assert stats.rate_limited == 0
    assert rate_of(times) >= 0.9 * OVERALL, rate_of(times)
    assert harness.flood is not None
    assert harness.flood.stats().flood_429 == 0


@pytest.mark.slow
async def test_without_flood_control_the_same_broadcast_draws_429s(framework: str) -> None:
    async with running(framework, Setup(limits=BOT_LIMITS, flood=False)) as (sim, harness):
        chats = [sim.user().chat_id for _ in range(200)]
        errors = await harness.broadcast(chats, "news")
        stats = sim.stats
    assert stats.rate_limited > 0  # the difference flood control makes is real
    assert any(e is not None for e in errors)


async def test_a_reply_burst_to_one_chat_has_no_429_and_uses_the_chat_rate(
    framework: str,
) -> None:
    async with running(framework, Setup(limits=BOT_LIMITS)) as (sim, _harness):
        user = sim.user()
        user.send("/burst 15")
        await until(lambda: sim.sent_count(user.chat_id) >= 15)
        times = send_times(sim, {user.chat_id})
        stats = sim.stats
    assert len(times) == 15
    assert stats.rate_limited == 0
    assert rate_of(times) >= 0.9 * PER_CHAT, rate_of(times)


async def test_a_429_for_one_chat_delays_only_that_chat(framework: str) -> None:
    async with running(framework, Setup(limits=BOT_LIMITS)) as (sim, harness):
        chats = [sim.user().chat_id for _ in range(30)]
        victim = chats[7]
        sim.inject_429(victim, retry_after=1)
        started = time.monotonic()
        errors = await harness.broadcast(chats, "news")
        elapsed = time.monotonic() - started
        calls = sends(sim, set(chats))
    assert errors == [None] * 30
    refused = [c for c in calls if c.status == 429]
    assert [chat_of(c) for c in refused] == [victim]
    delivered = {chat_of(c): c.at for c in calls if c.status == 200}
    assert delivered[victim] - refused[0].at >= 1.0  # the victim waited its retry_after
    others = [t for chat, t in delivered.items() if chat != victim]
    assert max(others) - min(others) < 0.8  # nobody else waited for it
    assert elapsed >= 1.0
    assert harness.flood is not None
    s = harness.flood.stats()
    assert s.flood_429 == 1
    assert s.bot_pauses == 0
    assert s.flood_by_chat == {str(victim): 1}


# Telegram's real per-chat pace: replies to one private chat go out at 1 msg/s.
PACED_SERVER_LIMITS = FloodLimits(
    per_bot=Rate(OVERALL, 1.0),
    per_bot_burst=30,
    per_private_chat=Rate(1, 1.0),
    per_private_chat_burst=2,
)
PACED_BOT_LIMITS = TelegramLimits(
    overall=Rate(OVERALL, 1.0),
    overall_burst=3,
    private=Rate(1, 1.0),
    private_burst=1,
    check_ceilings=False,
)


async def test_the_user_limit_sees_a_burst_when_it_arrives_not_at_the_pace_of_replies(
    framework: str,
) -> None:
    # Replies are paced at 1/s per chat; handled one by one at that pace, the
    # burst would refill the user's bucket as fast as it drains (issue 7).
    guard = IncomingGuard("5/10s")
    harness = Harness(framework, Setup(guard=guard, limits=PACED_BOT_LIMITS))
    try:
        async with TelegramSimulator(flood_limits=PACED_SERVER_LIMITS) as sim:
            bot = harness.build(sim.base_url, sim.token)
            async with serve_bot(bot, sim, poll_timeout=2) as handle:
                await sim.wait_connected(15)
                user = sim.user()
                for i in range(30):
                    user.send(f"spam {i}")
                await until(lambda: guard.stats().passed + guard.stats().limited >= 30, 30)
                await until(lambda: sim.sent_count(user.chat_id) >= 6, 30)
                await asyncio.sleep(0.3)  # anything more would show up now
                texts = [m["text"] for m in sim.sent_messages(user.chat_id)]
                stats = sim.stats
                sim.release_pollers()
            assert handle.failure() is None
    finally:
        harness.close()
    assert sorted(harness.handled) == sorted(f"spam {i}" for i in range(5))
    assert sum(t.startswith("echo:") for t in texts) == 5
    assert sum(t.startswith("Too many requests") for t in texts) == 1
    assert guard.stats().limited == 25
    assert stats.rate_limited == 0

"""The incoming guard on Redis: two bot instances share de-duplication, limits and state.

Each test builds two bots the way two processes behind one webhook would:
their own framework objects and guard, one Redis.  The sync pieces
(``RedisDeduplicator``, ``RedisBackend``, ``RedisStateStore``) serve the
threaded TeleBot; their async twins make the guard ``asynchronous`` and the
asyncio adapters (aiogram, python-telegram-bot, AsyncTeleBot) await them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from botscale import AsyncUserState, IncomingGuard, UpdateInfo, UserState
from botscale.backends.redis import (
    AsyncRedisBackend,
    AsyncRedisDeduplicator,
    AsyncRedisStateStore,
    RedisBackend,
    RedisDeduplicator,
    RedisStateStore,
)

pytestmark = pytest.mark.redis


def raw(update_id: int, user: int = 42, text: str = "hi") -> dict[str, Any]:
    person = {"id": user, "is_bot": False, "first_name": "U"}
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 0,
            "from": person,
            "chat": {"id": user, "type": "private", "first_name": "U"},
            "text": text,
        },
    }


def sync_guard(client: redis.Redis, prefix: str) -> IncomingGuard:
    return IncomingGuard(
        "3/minute",
        on_limited="ignore",
        dedup=RedisDeduplicator(client, prefix=prefix),
        backend=RedisBackend(client, prefix=prefix),
        state=RedisStateStore(client, prefix=prefix),
    )


def async_guard(client: aredis.Redis, prefix: str) -> IncomingGuard:
    return IncomingGuard(
        "3/minute",
        on_limited="ignore",
        dedup=AsyncRedisDeduplicator(client, prefix=prefix),
        backend=AsyncRedisBackend(client, prefix=prefix),
        state=AsyncRedisStateStore(client, prefix=prefix),
    )


# The same traffic for every framework: one update delivered to both instances
# (a webhook retry, two instances racing), then more updates than the shared
# limit allows, split between the instances.
TRAFFIC = [(0, 1), (1, 1), (0, 2), (1, 3), (0, 4), (1, 5)]  # (instance, update_id)


def check_shared(calls: list[tuple[int, int, Any]], guards: list[IncomingGuard]) -> None:
    assert [update_id for _, update_id, _ in calls] == [1, 2, 3]  # dup dropped, 3/minute shared
    assert [state for _, _, state in calls] == [1, 2, 3]  # one state, whichever instance
    duplicates = sum(g.stats().duplicates for g in guards)
    limited = sum(g.stats().limited for g in guards)
    assert (duplicates, limited) == (1, 2)


def test_threaded_telebot_instances_share_the_sync_redis_pieces(
    client: redis.Redis, prefix: str
) -> None:
    import telebot
    from telebot import types

    from botscale.adapters.telebot import install

    calls: list[tuple[int, int, Any]] = []
    bots, guards = [], []
    for instance in range(2):
        bot = telebot.TeleBot("123:abc", threaded=False, use_class_middlewares=True)

        def on_text(message: Any, user_state: UserState, instance: int = instance) -> None:
            assert isinstance(user_state, UserState)
            count = user_state.update(lambda n: (n or 0) + 1)
            calls.append((instance, message.message_id, count))

        bot.register_message_handler(on_text, content_types=["text"])
        guard = sync_guard(client, prefix)
        assert not guard.asynchronous
        install(bot, guard=guard, flood=None, runner=None)
        bots.append(bot)
        guards.append(guard)
    for instance, update_id in TRAFFIC:
        bots[instance].process_new_updates([types.Update.de_json(raw(update_id))])  # type: ignore[no-untyped-call]
    check_shared(calls, guards)


def test_async_pieces_make_the_guard_awaited(aclient: aredis.Redis, prefix: str) -> None:
    import telebot

    from botscale.adapters.telebot import install

    guard = async_guard(aclient, prefix)
    assert guard.asynchronous
    info = UpdateInfo("message", 1, 42, 42, "private")
    with pytest.raises(TypeError, match="acheck"):
        guard.check(info)
    with pytest.raises(TypeError, match="async_user_state"):
        guard.user_state(info)
    with pytest.raises(TypeError, match="sync pieces"):
        install(telebot.TeleBot("123:abc", use_class_middlewares=True), guard=guard)


async def test_guard_awaits_async_pieces(aclient: aredis.Redis, prefix: str) -> None:
    a, b = async_guard(aclient, prefix), async_guard(aclient, prefix)
    info = UpdateInfo("message", 7, 42, 42, "private")
    assert (await a.acheck(info)).proceed
    assert (await b.acheck(info)).reason == "duplicate"
    await a.aforget(info)
    assert (await b.acheck(info)).proceed  # forgotten: the retry goes through
    state = a.async_user_state(info)
    assert isinstance(state, AsyncUserState)
    await state.set({"step": 1})
    other = b.async_user_state(info)
    assert other is not None
    assert await other.get() == {"step": 1}
    async with other.session() as session:
        session.value["step"] = 2
    assert await state.get() == {"step": 2}
    assert await state.delete()


Feed = Callable[[int, int], Awaitable[None]]


async def run_traffic(feed: Feed) -> None:
    for instance, update_id in TRAFFIC:
        await feed(instance, update_id)


async def test_aiogram_instances_share_the_async_redis_pieces(
    aclient: aredis.Redis, prefix: str
) -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.types import Message

    from botscale.adapters.aiogram import install

    calls: list[tuple[int, int, Any]] = []
    bot = Bot("123456:abc")
    dispatchers, guards = [], []
    for instance in range(2):
        dp = Dispatcher()

        async def on_text(message: Message, user_state: AsyncUserState, i: int = instance) -> None:
            calls.append((i, message.message_id, await user_state.update(lambda n: (n or 0) + 1)))

        dp.message.register(on_text)
        guard = async_guard(aclient, prefix)
        install(dp, None, guard=guard, flood=None, runner=None)
        dispatchers.append(dp)
        guards.append(guard)

    async def feed(instance: int, update_id: int) -> None:
        await dispatchers[instance].feed_raw_update(bot, raw(update_id))

    await run_traffic(feed)
    await bot.session.close()
    check_shared(calls, guards)


async def test_aiogram_with_a_runner_awaits_the_async_dedup(
    aclient: aredis.Redis, prefix: str
) -> None:
    from aiogram import Bot, Dispatcher
    from aiogram.types import Message

    from botscale import UpdateRunner
    from botscale.adapters.aiogram import install

    handled: list[int] = []
    bot = Bot("123456:abc")
    dp = Dispatcher()

    @dp.message()
    async def on_text(message: Message) -> None:
        handled.append(message.message_id)

    guard = async_guard(aclient, prefix)
    install(dp, None, guard=guard, flood=None, runner=UpdateRunner())
    for update_id in (1, 1, 2):
        await dp.feed_raw_update(bot, raw(update_id, user=update_id))
    await bot.session.close()
    assert handled == [1, 2]
    assert guard.stats().duplicates == 1


async def test_ptb_instances_share_the_async_redis_pieces(
    aclient: aredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    from botscale.adapters.ptb import async_user_state, install, user_state
    from botscale.testing import TelegramSimulator

    monkeypatch.setenv("PTB_TIMEDELTA", "1")
    calls: list[tuple[int, int, Any]] = []
    guards = []
    async with TelegramSimulator() as sim:
        apps = []
        for instance in range(2):

            async def on_text(
                update: Update, context: ContextTypes.DEFAULT_TYPE, i: int = instance
            ) -> None:
                state = async_user_state()
                assert state is not None
                with pytest.raises(TypeError, match="async"):
                    user_state()
                assert update.message is not None
                calls.append(
                    (i, update.message.message_id, await state.update(lambda n: (n or 0) + 1))
                )

            builder = ApplicationBuilder().token(sim.token).base_url(f"{sim.base_url}/bot")
            guard = async_guard(aclient, prefix)
            app = install(builder, guard=guard, flood=None, runner=None)
            app.add_handler(MessageHandler(filters.TEXT, on_text))
            await app.initialize()
            apps.append(app)
            guards.append(guard)

        async def feed(instance: int, update_id: int) -> None:
            app = apps[instance]
            await app.process_update(Update.de_json(raw(update_id), app.bot))

        await run_traffic(feed)
        for app in apps:
            await app.shutdown()
    check_shared(calls, guards)


async def test_async_telebot_instances_share_the_async_redis_pieces(
    aclient: aredis.Redis, prefix: str
) -> None:
    from telebot import types
    from telebot.async_telebot import AsyncTeleBot

    from botscale.adapters.telebot import install

    calls: list[tuple[int, int, Any]] = []
    bots, guards = [], []
    for instance in range(2):
        bot = AsyncTeleBot("123:abc")

        async def on_text(message: Any, user_state: AsyncUserState, i: int = instance) -> None:
            calls.append((i, message.message_id, await user_state.update(lambda n: (n or 0) + 1)))

        bot.register_message_handler(on_text, content_types=["text"])  # type: ignore[arg-type]
        guard = async_guard(aclient, prefix)
        install(bot, guard=guard, flood=None, runner=None)
        bots.append(bot)
        guards.append(guard)

    async def feed(instance: int, update_id: int) -> None:
        await bots[instance].process_new_updates([types.Update.de_json(raw(update_id))])  # type: ignore[no-untyped-call]

    await run_traffic(feed)
    check_shared(calls, guards)

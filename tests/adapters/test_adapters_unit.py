"""The adapters' translations, on each framework's real objects and dispatch paths.

No decision is tested here twice: only that each adapter turns its
framework's updates, errors and handler metadata into the core's values, and
that odd updates (channel posts, polls: no user, no chat) pass without a crash.
"""

from __future__ import annotations

from typing import Any

import pytest

from botscale import FailureKind, IncomingGuard, UpdateInfo

MESSAGE = {
    "update_id": 1,
    "message": {
        "message_id": 5,
        "date": 0,
        "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
        "chat": {"id": 42, "type": "private", "first_name": "Ann"},
        "text": "hi",
    },
}
CALLBACK = {
    "update_id": 2,
    "callback_query": {
        "id": "77",
        "from": {"id": 42, "is_bot": False, "first_name": "Ann"},
        "chat_instance": "1",
        "data": "x",
        "message": {
            "message_id": 6,
            "date": 0,
            "chat": {"id": -100, "type": "supergroup", "title": "g"},
            "text": "pick",
        },
    },
}
CHANNEL_POST = {
    "update_id": 3,
    "channel_post": {
        "message_id": 1,
        "date": 0,
        "chat": {"id": -1001, "type": "channel", "title": "news"},
        "text": "post",
    },
}
POLL = {
    "update_id": 4,
    "poll": {
        "id": "p",
        "question": "?",
        "options": [{"text": "a", "voter_count": 0, "persistent_id": "a"}],
        "total_voter_count": 0,
        "is_closed": False,
        "is_anonymous": True,
        "type": "regular",
        "allows_multiple_answers": False,
        "allows_revoting": False,
        "members_only": False,
    },
}
INLINE = {
    "update_id": 5,
    "inline_query": {
        "id": "q",
        "from": {"id": 9, "is_bot": False, "first_name": "B"},
        "query": "",
        "offset": "",
    },
}
EXPECTED = {
    1: UpdateInfo("message", 1, 42, 42, "private"),
    2: UpdateInfo("callback_query", 2, 42, -100, "supergroup"),
    3: UpdateInfo("channel_post", 3, None, -1001, "channel"),
    4: UpdateInfo("poll", 4, None, None, None),
    5: UpdateInfo("inline_query", 5, 9, None, None),
}
RAW = [MESSAGE, CALLBACK, CHANNEL_POST, POLL, INLINE]


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "1")


def channel_post(update_id: int) -> dict[str, Any]:
    return {**CHANNEL_POST, "update_id": update_id}


# --------------------------------------------------------------------------- translation


@pytest.mark.parametrize("raw", RAW, ids=lambda r: next(k for k in r if k != "update_id"))
def test_core_reads_raw_updates_like_the_adapters(raw: dict[str, Any]) -> None:
    from aiogram.types import Update as AiogramUpdate
    from telebot import types
    from telegram import Update as PtbUpdate

    from botscale.adapters import aiogram, ptb, telebot

    expected = EXPECTED[raw["update_id"]]
    assert UpdateInfo.from_dict(raw) == expected
    assert aiogram.update_info(AiogramUpdate.model_validate(raw)) == expected
    assert ptb.update_info(PtbUpdate.de_json(raw, None)) == expected
    update = types.Update.de_json(raw)  # type: ignore[no-untyped-call]
    kind = expected.kind
    body = getattr(update, kind)
    got = telebot.update_info(body, kind, raw["update_id"])
    assert got == expected


def test_aiogram_errors_are_classified() -> None:
    from aiogram.exceptions import (
        TelegramBadRequest,
        TelegramEntityTooLarge,
        TelegramForbiddenError,
        TelegramNetworkError,
        TelegramRetryAfter,
        TelegramServerError,
    )
    from aiogram.methods import SendMessage

    from botscale.adapters.aiogram import classify

    m = SendMessage(chat_id=1, text="x")
    flood = classify(TelegramRetryAfter(method=m, message="Too Many Requests", retry_after=5))
    assert flood is not None
    assert (flood.kind, flood.retry_after) == (FailureKind.FLOOD, 5.0)
    blocked = classify(TelegramForbiddenError(m, "Forbidden: bot was blocked by the user"))
    assert blocked is not None
    assert blocked.blocked
    kinds = {
        TelegramServerError(m, "Internal"): FailureKind.SERVER,
        TelegramNetworkError(m, "timeout"): FailureKind.NETWORK,
        TelegramEntityTooLarge(m, "too big"): FailureKind.CLIENT,
        TelegramBadRequest(m, "Bad Request: chat not found"): FailureKind.CLIENT,
    }
    for exc, kind in kinds.items():
        failure = classify(exc)
        assert failure is not None
        assert failure.kind is kind, exc
    assert classify(ValueError("not ours")) is None


def test_ptb_errors_are_classified() -> None:
    from telegram.error import (
        BadRequest,
        Forbidden,
        InvalidToken,
        NetworkError,
        RetryAfter,
        TimedOut,
    )

    from botscale.adapters.ptb import classify

    flood = classify(RetryAfter(7))
    assert flood is not None
    assert (flood.kind, flood.retry_after) == (FailureKind.FLOOD, 7.0)
    kinds = {
        Forbidden("Forbidden: bot was blocked by the user"): FailureKind.FORBIDDEN,
        BadRequest("Bad Request: chat not found"): FailureKind.CLIENT,  # a NetworkError subclass
        TimedOut(): FailureKind.NETWORK,
        NetworkError("Bad Gateway"): FailureKind.SERVER,
        InvalidToken(): FailureKind.CLIENT,
    }
    for exc, kind in kinds.items():
        failure = classify(exc)
        assert failure is not None
        assert failure.kind is kind, exc
    assert classify(KeyError("x")) is None


def test_telebot_errors_are_classified() -> None:
    import requests
    from telebot import apihelper, asyncio_helper

    from botscale.adapters.telebot import classify

    class Result:
        status_code = 429
        reason = "Too Many Requests"
        text = ""

    body = {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 3",
        "parameters": {"retry_after": 3},
    }
    for module in (apihelper, asyncio_helper):
        error = module.ApiTelegramException("sendMessage", Result(), body)
        failure = classify(error)
        assert failure is not None
        assert (failure.kind, failure.retry_after) == (FailureKind.FLOOD, 3.0)
    forbidden = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked"}
    refused = apihelper.ApiTelegramException("sendMessage", Result(), forbidden)  # type: ignore[no-untyped-call]
    failure = classify(refused)
    assert failure is not None
    assert failure.kind is FailureKind.FORBIDDEN
    for exc in (asyncio_helper.RequestTimeout("t"), requests.ConnectionError("down")):
        failure = classify(exc)
        assert failure is not None
        assert failure.kind is FailureKind.NETWORK
    assert classify(RuntimeError("x")) is None


# --------------------------------------------------------------------------- dispatch paths


async def test_aiogram_odd_updates_pass_and_flags_override_limits() -> None:
    from aiogram import Bot, Dispatcher, F, Router
    from aiogram.filters import Command
    from aiogram.types import CallbackQuery, Message

    from botscale.adapters.aiogram import install

    bot = Bot("123:abc")
    dp = Dispatcher()
    router = Router()
    calls: list[str] = []

    @router.message(Command("help"), flags={"rate_limit": False})
    async def help_(message: Message) -> None:
        calls.append("help")

    @router.message(Command("report"), flags={"rate_limit": "1/hour"})
    async def report(message: Message) -> None:
        calls.append("report")

    @router.message(F.text)
    async def text(message: Message) -> None:
        calls.append("text")

    @router.channel_post()
    async def post(message: Message) -> None:
        calls.append("post")

    @router.callback_query()
    async def press(query: CallbackQuery) -> None:
        calls.append("press")

    dp.include_router(router)
    guard = IncomingGuard("3/minute", on_limited="ignore")
    kit = install(dp, bot, guard=guard)
    n = 100

    async def feed(raw: dict[str, Any], text: str | None = None) -> None:
        nonlocal n
        n += 1
        update = {**raw, "update_id": n}
        if text is not None:
            update["message"] = {**raw["message"], "text": text}
        await dp.feed_raw_update(bot, update)

    await feed(MESSAGE, "/report")
    await feed(MESSAGE, "/report")  # its own 1/hour limit (the update still counts)
    for _ in range(3):
        await feed(MESSAGE, "hello")  # the user's 3/minute: 2 reports + 1 text
    for _ in range(5):
        await feed(MESSAGE, "/help")  # exempt: answered though over the user's limit
    for _ in range(2):
        await feed(CHANNEL_POST)  # no user: keyed by the channel
    await feed(POLL)  # neither user nor chat: not handled, no crash
    await dp.feed_raw_update(bot, MESSAGE)
    await dp.feed_raw_update(bot, MESSAGE)  # the same update_id twice: one is dropped
    assert calls == ["report", "text", *["help"] * 5, "post", "post"]
    s = guard.stats()
    assert s.duplicates == 1
    assert sorted(kit.polling_kwargs(dp)["allowed_updates"]) == [
        "callback_query",
        "channel_post",
        "message",
    ]
    assert kit.polling_kwargs(dp)["polling_timeout"] == 30
    await bot.session.close()


async def test_aiogram_bounded_fsm_storage() -> None:
    from aiogram.fsm.state import State, StatesGroup
    from aiogram.fsm.storage.base import StorageKey

    from botscale.adapters.aiogram import BoundedStorage

    class Form(StatesGroup):
        name = State()

    storage = BoundedStorage(maxsize=3)
    keys = [StorageKey(bot_id=1, chat_id=i, user_id=i) for i in range(10)]
    await storage.set_state(keys[0], Form.name)
    await storage.set_data(keys[0], {"a": 1})
    assert await storage.get_state(keys[0]) == "Form:name"
    assert await storage.get_data(keys[0]) == {"a": 1}
    for key in keys[1:]:
        await storage.set_data(key, {"n": key.chat_id})
    assert len(storage.store) == 3
    assert storage.store.stats().evictions == 7
    assert await storage.get_state(keys[0]) is None  # evicted, never unbounded
    await storage.close()


def test_telebot_odd_updates_pass_and_duplicates_drop() -> None:
    import telebot
    from telebot import types

    from botscale.adapters.telebot import install, polling_kwargs

    bot = telebot.TeleBot("123:abc", threaded=False, use_class_middlewares=True)
    calls: list[str] = []
    bot.register_message_handler(lambda m: calls.append("text"), content_types=["text"])
    bot.register_channel_post_handler(lambda m: calls.append("post"), content_types=["text"])
    guard = IncomingGuard("1/minute", on_limited="ignore")
    install(bot, guard=guard, flood=None, runner=None)

    def parse(raw: dict[str, Any]) -> Any:
        return types.Update.de_json(raw)  # type: ignore[no-untyped-call]

    bot.process_new_updates([parse(raw) for raw in (MESSAGE, CHANNEL_POST, POLL, INLINE)])
    bot.process_new_updates([parse(MESSAGE)])  # a duplicate
    bot.process_new_updates([parse(channel_post(50))])  # limited (by chat)
    assert calls == ["text", "post"]
    assert guard.stats().duplicates == 1
    assert guard.stats().limited == 1
    kwargs = polling_kwargs(bot)
    assert kwargs["allowed_updates"] == ["message", "channel_post"]
    assert kwargs["long_polling_timeout"] == 30
    with pytest.raises(ValueError, match="use_class_middlewares"):
        install(telebot.TeleBot("123:abc"))


async def test_ptb_odd_updates_pass_and_polling_preset() -> None:
    from telegram import Update
    from telegram.ext import (
        ApplicationBuilder,
        CallbackQueryHandler,
        ContextTypes,
        MessageHandler,
        filters,
    )

    from botscale.adapters.ptb import install, polling_kwargs, user_state
    from botscale.testing import TelegramSimulator

    calls: list[str] = []
    states: list[Any] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        calls.append("text" if update.message else "post")
        states.append(user_state())

    from botscale import MemoryStateStore, PerformanceMonitor

    monitor = PerformanceMonitor()
    guard = IncomingGuard(
        "1/minute", on_limited="ignore", state=MemoryStateStore(10), monitor=monitor
    )
    async with TelegramSimulator() as sim:
        builder = ApplicationBuilder().token(sim.token).base_url(f"{sim.base_url}/bot")
        app = install(builder, guard=guard)
        app.add_handler(MessageHandler(filters.ALL, on_text))
        app.add_handler(CallbackQueryHandler(on_text))
        async with app:
            for raw in (MESSAGE, CHANNEL_POST, POLL, INLINE, MESSAGE, channel_post(60)):
                await app.process_update(Update.de_json(raw, app.bot))
        preset = polling_kwargs(app)
    assert calls == ["text", "post"]
    assert guard.stats().duplicates == 1
    assert guard.stats().limited == 1
    timed = [name for name in monitor.stats().operations if name.endswith("on_text")]
    assert len(timed) == 1  # added after install, timed all the same
    assert monitor.stats()[timed[0]].count == 2
    assert states[0] is not None
    assert states[0].key == 42
    assert states[1] is not None
    assert states[1].key == -1001  # a channel: keyed by its chat
    assert preset == {
        "timeout": 30,
        "allowed_updates": [
            "message",
            "edited_message",
            "channel_post",
            "edited_channel_post",
            "callback_query",
        ],
    }


def test_adapters_are_imported_only_on_demand() -> None:
    import subprocess
    import sys

    code = (
        "import sys, botscale.adapters; print('aiogram' in sys.modules, 'telegram' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"

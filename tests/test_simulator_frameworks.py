"""Real, unmodified aiogram, python-telegram-bot and telebot bots against the simulator.

Every framework runs the echo bot from examples/ in long polling and in
webhook mode (its own HTTP server on 127.0.0.1, fed by the simulator's POSTs
with the secret token), and every message must get its reply.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from botscale.testing import SimulatorThread, TelegramSimulator, serve_bot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ECHO_BOTS = ["echo_aiogram", "echo_ptb", "echo_telebot", "echo_telebot_async"]


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_telebot_urls() -> Iterator[None]:
    """telebot keeps its API URL in module globals: put them back after each test."""
    from telebot import apihelper, asyncio_helper

    saved = apihelper.API_URL, asyncio_helper.API_URL
    yield
    apihelper.API_URL, asyncio_helper.API_URL = saved


@pytest.mark.parametrize("mode", ["polling", "webhook"])
@pytest.mark.parametrize("example", ECHO_BOTS)
async def test_unmodified_echo_bot_answers_every_message(example: str, mode: Any) -> None:
    build = load_example(example).build
    async with TelegramSimulator() as sim:
        bot = build(sim.base_url, sim.token)
        async with serve_bot(bot, sim, mode=mode, poll_timeout=5) as handle:
            await sim.wait_connected(10)
            users = [sim.user() for _ in range(4)]
            group = sim.group("team")
            sent: dict[int, list[str]] = {}
            exchanges = []
            for round_ in range(3):
                for i, user in enumerate(users):
                    text = f"hello {i}.{round_}"
                    sent.setdefault(user.chat_id, []).append(text)
                    exchanges.append(user.send(text))
            exchanges.append(users[0].send("hi all", chat=group))
            sent[group.id] = ["hi all"]
            await asyncio.gather(*(e.wait(15) for e in exchanges))
        assert handle.failure() is None
    for chat_id, texts in sent.items():
        replies = sim.sent_messages(chat_id)
        assert sorted(m["text"] for m in replies) == sorted(texts)
        assert all(m["from"]["id"] == sim.bot_id and m["chat"]["id"] == chat_id for m in replies)
    assert all(e.latency is not None and e.latency >= 0 for e in exchanges)
    stats = sim.stats
    assert stats.replies == stats.updates == len(exchanges)
    assert stats.rate_limited == 0
    assert stats.errors == 0
    if mode == "polling":
        assert stats.calls["getUpdates"] >= 1
        assert stats.webhook_deliveries == 0
    else:
        assert handle.webhook_url is not None
        assert sim.webhook_urls == [handle.webhook_url]
        assert stats.webhook_deliveries == len(exchanges)
        assert "getUpdates" not in stats.calls


async def test_aiogram_polling_wired_by_hand() -> None:
    """The docs' aiogram snippet, without serve_bot."""
    from aiogram import Bot, Dispatcher
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.filters import CommandStart
    from aiogram.types import Message

    async with TelegramSimulator() as sim:
        bot = Bot(sim.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sim.base_url)))
        dp = Dispatcher()

        @dp.message(CommandStart())
        async def start(message: Message) -> None:
            await message.reply(f"welcome, {message.from_user.first_name}")  # type: ignore[union-attr]

        polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        try:
            user = sim.user("Ann")
            reply = await user.ask("/start", timeout=10)
        finally:
            sim.release_pollers()
            await dp.stop_polling()
            await polling
    assert reply["text"] == "welcome, Ann"
    assert reply["reply_to_message"]["text"] == "/start"
    assert sim.stats.calls["getMe"] == 1


def test_sync_telebot_against_simulator_thread() -> None:
    import telebot
    from telebot import apihelper, types

    with SimulatorThread() as st:
        apihelper.API_URL = st.base_url + "/bot{0}/{1}"  # type: ignore[assignment]
        bot = telebot.TeleBot(st.token, threaded=False)

        def shout(message: types.Message) -> None:
            bot.reply_to(message, (message.text or "").upper())

        bot.register_message_handler(shout, content_types=["text"])
        user = st.user()
        exchange = st.call(user.send, "hi")
        updates = bot.get_updates(long_polling_timeout=1)
        bot.process_new_updates(updates)
        reply = st.run(exchange.wait(5))
        assert reply["text"] == "HI"
        assert reply["reply_to_message"]["text"] == "hi"
        # The next poll confirms the update: nothing is delivered twice.
        assert bot.get_updates(offset=updates[-1].update_id + 1, long_polling_timeout=1) == []
        assert st.call(lambda: st.sim.pending_updates) == 0

"""One bot, four frameworks: the same behaviour built on aiogram, PTB, TeleBot and AsyncTeleBot.

Every harness builds a bot with botscale installed through that framework's
``install``, pointed at a :class:`~botscale.testing.TelegramSimulator`.  The
bot answers a text with ``echo: <text>`` and ``/burst N`` with N messages to
the chat; :meth:`Harness.broadcast` sends one message to each of many chats
through the framework's own API (so outgoing flood control is the adapter's).
Tests use only this interface: the behaviour checks are the same for all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field
from typing import Any

from botscale import (
    AsyncFloodControl,
    FloodControl,
    IncomingGuard,
    TelegramLimits,
    UpdateRunner,
)

FRAMEWORKS = ["aiogram", "ptb", "telebot", "telebot-async"]
HANG = 5.0  # seconds an asyncio handler of "hang" sleeps
HANG_SYNC = 0.6  # seconds a threaded one sleeps


@dataclass
class Setup:
    """What the bot under test is built with."""

    guard: IncomingGuard | None = None
    limits: TelegramLimits | None = None
    flood: bool = True
    runner: bool = True
    time_budget: float | None = None  # the runner's; asyncio runners also cancel_slow


@dataclass
class Harness:
    framework: str
    setup: Setup
    handled: list[str] = field(default_factory=list)
    flood: FloodControl | AsyncFloodControl | None = None
    runner: Any = None
    bot: Any = None
    _pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ build

    def build(self, base_url: str, token: str) -> Any:
        return getattr(self, "_build_" + self.framework.replace("-", "_"))(base_url, token)

    def _flood(self, sync: bool = False) -> FloodControl | AsyncFloodControl | None:
        if not self.setup.flood:
            return None
        limits = self.setup.limits or TelegramLimits()
        self.flood = FloodControl(limits) if sync else AsyncFloodControl(limits)
        return self.flood

    def _guard(self) -> IncomingGuard | None:
        return self.setup.guard

    def _runner(self) -> UpdateRunner | None:
        if not self.setup.runner:
            return None
        budget = self.setup.time_budget
        self.runner = UpdateRunner(time_budget=budget, cancel_slow=budget is not None)
        return self.runner

    def _build_aiogram(self, base_url: str, token: str) -> Any:
        from aiogram import Bot, Dispatcher, F
        from aiogram.client.session.aiohttp import AiohttpSession
        from aiogram.client.telegram import TelegramAPIServer
        from aiogram.types import Message

        from botscale.adapters.aiogram import install

        bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
        dp = Dispatcher()

        @dp.message(F.text)
        async def on_text(message: Message) -> None:
            assert message.text is not None
            await self._respond(message.chat.id, message.text, bot.send_message)

        install(
            dp,
            bot,
            guard=self._guard(),
            flood=self._flood(),  # type: ignore[arg-type]
            runner=self._runner(),
        )
        self.bot = bot
        return dp, bot

    def _build_ptb(self, base_url: str, token: str) -> Any:
        from telegram import Update
        from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

        from botscale.adapters.ptb import install

        async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            assert message is not None
            assert message.text is not None
            await self._respond(message.chat.id, message.text, context.bot.send_message)

        builder = ApplicationBuilder().token(token).base_url(f"{base_url}/bot")
        builder = builder.connection_pool_size(64).pool_timeout(30.0)
        app = install(
            builder,
            guard=self._guard(),
            flood=self._flood(),  # type: ignore[arg-type]
            runner=self._runner(),
        )
        app.add_handler(MessageHandler(filters.TEXT, on_text))
        self.bot = app.bot
        return app

    def _build_telebot(self, base_url: str, token: str) -> Any:
        import telebot
        from telebot import apihelper, types

        from botscale import ThreadedUpdateRunner
        from botscale.adapters.telebot import install

        apihelper.API_URL = f"{base_url}/bot{{0}}/{{1}}"  # type: ignore[assignment]
        bot = telebot.TeleBot(token, use_class_middlewares=True, num_threads=4)

        def on_text(message: types.Message) -> None:
            def send(chat_id: int, text: str) -> Any:
                return bot.send_message(chat_id, text)

            self._respond_sync(message.chat.id, message.text or "", send)

        bot.register_message_handler(on_text, content_types=["text"])
        if self.setup.runner:  # a thread cannot be cancelled: slow updates are only logged
            self.runner = ThreadedUpdateRunner(4, time_budget=self.setup.time_budget)
        install(
            bot,
            guard=self._guard(),
            flood=self._flood(sync=True),
            runner=self.runner,
        )
        self.bot = bot
        self._pool = concurrent.futures.ThreadPoolExecutor(32, thread_name_prefix="broadcast")
        return bot

    def _build_telebot_async(self, base_url: str, token: str) -> Any:
        from telebot import asyncio_helper, types
        from telebot.async_telebot import AsyncTeleBot

        from botscale.adapters.telebot import install

        asyncio_helper.API_URL = f"{base_url}/bot{{0}}/{{1}}"
        bot = AsyncTeleBot(token)

        async def on_text(message: types.Message) -> None:
            await self._respond(message.chat.id, message.text or "", bot.send_message)

        bot.register_message_handler(on_text, content_types=["text"])
        install(
            bot,
            guard=self._guard(),
            flood=self._flood(),
            runner=self._runner(),
        )
        self.bot = bot
        return bot

    # ------------------------------------------------------------------ behaviour

    async def _respond(self, chat_id: int, text: str, send: Any) -> None:
        self.handled.append(text)
        if text == "hang":  # far over any time budget a test sets
            await asyncio.sleep(HANG)
        if text.startswith("slow"):  # "slow <n>": takes (n % 3) * 20 ms
            await asyncio.sleep(0.02 * (int(text.split()[1]) % 3))
        if text.startswith("/burst"):
            for i in range(int(text.split()[1])):
                await send(chat_id, f"burst {i}")
        else:
            await send(chat_id, f"echo: {text}")

    def _respond_sync(self, chat_id: int, text: str, send: Any) -> None:
        self.handled.append(text)
        if text == "hang":  # a thread cannot be cancelled: kept short
            time.sleep(HANG_SYNC)
        if text.startswith("slow"):
            time.sleep(0.02 * (int(text.split()[1]) % 3))
        if text.startswith("/burst"):
            for i in range(int(text.split()[1])):
                send(chat_id, f"burst {i}")
        else:
            send(chat_id, f"echo: {text}")

    async def broadcast(self, chat_ids: list[int], text: str) -> list[BaseException | None]:
        """One message to each chat, all at once, through the framework's API."""
        if self.framework == "telebot":
            assert self._pool is not None
            loop = asyncio.get_running_loop()

            def send(chat_id: int) -> BaseException | None:
                try:
                    self.bot.send_message(chat_id, text)
                except Exception as exc:
                    return exc
                return None

            futures = [loop.run_in_executor(self._pool, send, c) for c in chat_ids]
            return list(await asyncio.gather(*futures))
        results = await asyncio.gather(
            *(self.bot.send_message(c, text) for c in chat_ids), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        from botscale.adapters.telebot import uninstall_flood_control

        uninstall_flood_control()

"""The quiz bot on aiogram 3, with every botscale piece wired in.

:func:`build` is also the ``botscale loadtest`` target::

    botscale loadtest examples.quizbot.bot:build --scenario quiz --users 200

What botscale does here (each one is configured in :class:`QuizBot`):

* incoming (``botscale.adapters.aiogram.install``): update de-duplication,
  each chat's updates in order with a global cap, a per-user rate limit with
  one polite "slow down" per window, the per-user quiz state in a bounded
  store (``MemoryStateStore``, or Redis with ``REDIS_URL``), and the monitor
  timing every update and handler;
* outgoing: every Bot API call through ``AsyncFloodControl`` (replies to
  waiting users first, a broadcast as bulk traffic, no 429);
* storage: batched writes, retried and cached reads (:mod:`.storage`);
* a bulkhead of ``BOTSCALE_MAX_CONCURRENCY`` calls to the slow "explain" AI;
* ``PerformanceMonitor`` serving ``/health``, ``/stats`` and ``/metrics``
  on 127.0.0.1 with a database health check.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Final

from aiogram import Bot, Dispatcher, Router
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import (
    CallbackQuery,
    ErrorEvent,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)

from botscale import AsyncFloodControl, PerformanceMonitor, UpdateInfo, UserState
from botscale.adapters.aiogram import install

from .config import QuizConfig
from .flow import Press, QuizFlow, Reply
from .runtime import Runtime, flood_budget, incoming_guard, new_monitor

__all__ = ["QuizBot", "build", "markup", "target"]

log: Final = logging.getLogger("quizbot")


def markup(reply: Reply) -> InlineKeyboardMarkup | None:
    """The reply's buttons as an aiogram inline keyboard."""
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(text=label, callback_data=data) for label, data in row]
            for row in reply.buttons
        ]
    )


class QuizBot:
    """The aiogram quiz bot: ``quiz.pair`` (``Dispatcher``, ``Bot``) is what aiogram runs.

    Resources that need the event loop (the database, the writers, the
    monitor's HTTP server: a :class:`~.runtime.Runtime`) open on the
    dispatcher's startup and close on its shutdown, so the bot runs the same
    under ``dp.start_polling``, a webhook and ``botscale loadtest``.

    Args:
        config: the configuration (its ``token`` is required).
        monitor: the monitor (default: :func:`~.runtime.new_monitor`).
    """

    def __init__(self, config: QuizConfig, *, monitor: PerformanceMonitor | None = None) -> None:
        self.config = config
        self.monitor = monitor or new_monitor(config)
        session = (
            AiohttpSession(api=TelegramAPIServer.from_base(config.api_url))
            if config.api_url
            else None
        )
        self.bot = Bot(config.require_token(), session=session)
        self.dp = Dispatcher()
        self.kit = install(
            self.dp,
            self.bot,
            guard=incoming_guard(config, self.monitor),
            flood=AsyncFloodControl(budget=flood_budget(config)),
        )
        self.dp.include_router(self._router())
        self.dp.errors.register(self._on_error)
        self.dp.startup.register(self._on_startup)
        self.dp.shutdown.register(self._on_shutdown)
        self.runtime: Runtime | None = None

    @property
    def flow(self) -> QuizFlow:
        """The conversation logic (available once the dispatcher started)."""
        if self.runtime is None:
            raise RuntimeError("the quiz bot has not started: run it through its Dispatcher")
        return self.runtime.flow

    @property
    def pair(self) -> tuple[Dispatcher, Bot]:
        """``(Dispatcher, Bot)``: what ``dp.start_polling`` and ``botscale loadtest`` run."""
        return self.dp, self.bot

    async def _on_startup(self) -> None:
        self.runtime = await Runtime.start(self.config, self.monitor)

    async def _on_shutdown(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
            log.info("quiz bot stopped\n%s", self.summary())

    def summary(self) -> str:
        """What botscale did in this process (logged at shutdown)."""
        if self.runtime is None:
            return self.monitor.stats().format()
        return self.runtime.summary(self.kit.guard, self.kit.flood)

    async def _on_error(self, event: ErrorEvent) -> None:
        log.error("update %s failed", event.update.update_id, exc_info=event.exception)

    # ------------------------------------------------------------------ handlers

    def _router(self) -> Router:
        router = Router(name="quiz")
        router.message.register(self._start, CommandStart())
        router.message.register(self._stats, Command("stats"))
        router.message.register(self._top, Command("top"))
        router.message.register(self._broadcast, Command("broadcast"))
        router.message.register(self._help, Command("help"))
        router.message.register(self._help)
        router.callback_query.register(self._press)
        return router

    async def _start(self, message: Message, user_state: UserState | None = None) -> None:
        user = message.from_user
        if user is None:
            return
        reply = await self.flow.start(user_state, user.id, user.first_name)
        await message.answer(reply.text, reply_markup=markup(reply))

    async def _stats(self, message: Message, command: CommandObject) -> None:
        if message.from_user is None:
            return
        reply = await self.flow.stats(message.from_user.id, command.args or "")
        await message.answer(reply.text)

    async def _top(self, message: Message, command: CommandObject) -> None:
        reply = await self.flow.top(command.args or "")
        await message.answer(reply.text)

    async def _help(self, message: Message) -> None:
        await message.answer(self.flow.help().text)

    async def _broadcast(self, message: Message, command: CommandObject) -> None:
        flow = self.flow
        user_id = message.from_user.id if message.from_user else None
        text = command.args or ""
        refusal = flow.check_broadcast(user_id, text)
        if refusal is not None:
            await message.answer(refusal.text)
            return
        await message.answer("📣 Broadcasting to every user…")
        bot, chat_id = self.bot, message.chat.id

        async def send(user: int, body: str) -> None:
            await bot.send_message(user, body)

        async def run() -> None:
            result = await flow.broadcast(text, send)
            await bot.send_message(chat_id, result.summary())

        flow.spawn(run())

    async def _press(
        self,
        query: CallbackQuery,
        update_info: UpdateInfo,
        user_state: UserState | None = None,
    ) -> None:
        flow = self.flow
        press: Press = await flow.press(
            user_state, query.from_user.id, update_info.update_id, query.data
        )
        try:
            await query.answer(press.toast)
        except TelegramBadRequest as exc:  # pressed long ago: Telegram forgot the query
            log.info("callback answer to user %s failed: %s", query.from_user.id, exc.message)
        message = query.message
        chat_id = message.chat.id if message is not None else query.from_user.id
        if press.edit is not None:
            await self._show(chat_id, message, press.edit)
        if press.explain is not None:
            question, bot = press.explain, self.bot

            async def explain() -> None:
                await bot.send_message(chat_id, await flow.explain(question))

            flow.spawn(explain())

    async def _show(self, chat_id: int, message: Any, reply: Reply) -> None:
        """Put ``reply`` in place of the pressed message, or send it if that fails."""
        if isinstance(message, Message):
            try:
                await message.edit_text(reply.text, reply_markup=markup(reply))
                return
            except TelegramBadRequest as exc:  # deleted, too old, or not modified
                log.info("editing message in chat %s failed: %s", chat_id, exc.message)
        await self.bot.send_message(chat_id, reply.text, reply_markup=markup(reply))


def build(base_url: str, token: str) -> tuple[Dispatcher, Bot]:
    """The ``botscale loadtest`` target: the quiz bot against the Bot API at ``base_url``.

    Everything else comes from the environment (``QuizConfig.from_env``).
    """
    config = dataclasses.replace(QuizConfig.from_env(), token=token, api_url=base_url.rstrip("/"))
    return QuizBot(config).pair


target = build
"""The same function under the name the load-test docs use."""

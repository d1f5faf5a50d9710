"""The quiz bot's core flow on pyTelegramBotAPI (threaded ``TeleBot``), via its botscale adapter.

telebot runs handlers in worker threads; the quiz's storage is asyncio code
(batched writes, cached reads), so it runs on an event loop of its own in a
background thread and the handlers call into it.  The adapter keeps each
chat's updates in order on the worker threads and sends every Bot API call
through the (threaded) flood control::

    TELEGRAM_BOT_TOKEN=123:ABC python -m examples.quizbot_telebot
    botscale loadtest examples.quizbot_telebot:run --scenario quiz --users 100
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import telebot
from telebot import apihelper, types

from botscale import ConfigurationError, FloodControl
from botscale.adapters.telebot import install, polling_kwargs, uninstall_flood_control
from examples.quizbot.config import QuizConfig
from examples.quizbot.flow import QuizFlow, Reply
from examples.quizbot.runtime import (
    Runtime,
    flood_budget,
    incoming_guard,
    new_monitor,
    setup_logging,
)

T = TypeVar("T")
log = logging.getLogger("quizbot")


class LoopThread:
    """An asyncio event loop in a daemon thread, for async code called from threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="quizbot-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10.0)
        self.loop.close()


def markup(reply: Reply) -> types.InlineKeyboardMarkup | None:
    """The reply's buttons as a telebot inline keyboard."""
    if not reply.buttons:
        return None
    keyboard = types.InlineKeyboardMarkup()
    for row in reply.buttons:
        keyboard.row(*(types.InlineKeyboardButton(label, callback_data=d) for label, d in row))
    return keyboard


class QuizTeleBot:
    """The threaded telebot quiz bot; :meth:`close` writes what waits and stops the loop."""

    def __init__(self, config: QuizConfig) -> None:
        if config.api_url:
            # telebot declares the setting as None (meaning "api.telegram.org").
            apihelper.API_URL = f"{config.api_url}/bot{{0}}/{{1}}"  # type: ignore[assignment]
        self.monitor = new_monitor(config)
        self.bot = telebot.TeleBot(
            config.require_token(), use_class_middlewares=True, num_threads=8
        )
        self.kit = install(
            self.bot,
            guard=incoming_guard(config, self.monitor),
            flood=FloodControl(budget=flood_budget(config, sync=True)),  # type: ignore[arg-type]
        )
        self.loop = LoopThread()
        self.runtime = self.loop.call(Runtime.start(config, self.monitor))
        self.flow: QuizFlow = self.runtime.flow
        bot = self.bot
        bot.register_message_handler(self.start, commands=["start"])
        bot.register_message_handler(self.stats, commands=["stats"])
        bot.register_message_handler(self.top, commands=["top"])
        bot.register_message_handler(self.other, content_types=telebot.util.content_type_media)
        bot.register_callback_query_handler(self.press, func=lambda call: True)

    def start(self, message: types.Message, data: dict[str, Any]) -> None:
        """``/start``: a new quiz."""
        user = message.from_user
        if user is None:
            return
        reply = self.loop.call(self.flow.start(data.get("user_state"), user.id, user.first_name))
        self.bot.send_message(message.chat.id, reply.text, reply_markup=markup(reply))

    def stats(self, message: types.Message, data: dict[str, Any]) -> None:
        """``/stats``: the user's score."""
        if message.from_user is not None:
            args = telebot.util.extract_arguments(message.text or "") or ""
            reply = self.loop.call(self.flow.stats(message.from_user.id, args))
            self.bot.send_message(message.chat.id, reply.text)

    def top(self, message: types.Message, data: dict[str, Any]) -> None:
        """``/top [N]``: the leaderboard."""
        args = telebot.util.extract_arguments(message.text or "") or ""
        self.bot.send_message(message.chat.id, self.loop.call(self.flow.top(args)).text)

    def other(self, message: types.Message, data: dict[str, Any]) -> None:
        """Anything else: the help text."""
        self.bot.send_message(message.chat.id, self.flow.help().text)

    def press(self, call: types.CallbackQuery, data: dict[str, Any]) -> None:
        """An answer, "explain" or "new quiz" button (telebot does not pass the update id)."""
        flow = self.flow
        result = self.loop.call(
            flow.press(data.get("user_state"), call.from_user.id, None, call.data)
        )
        try:
            self.bot.answer_callback_query(call.id, result.toast)
        except apihelper.ApiTelegramException as exc:  # pressed long ago: Telegram forgot it
            log.info("callback answer to user %s failed: %s", call.from_user.id, exc.description)
        message = call.message
        chat_id = message.chat.id if message is not None else call.from_user.id
        if result.edit is not None:
            self._show(chat_id, message, result.edit)
        if result.explain is not None:
            question, send = result.explain, self.bot.send_message

            async def explain() -> None:  # on the loop: no worker thread waits for the AI
                await asyncio.to_thread(send, chat_id, await flow.explain(question))

            self.loop.loop.call_soon_threadsafe(flow.spawn, explain())

    def _show(self, chat_id: int, message: object, reply: Reply) -> None:
        """Put ``reply`` in place of the pressed message, or send it if that fails."""
        if isinstance(message, types.Message):
            try:
                self.bot.edit_message_text(
                    reply.text, chat_id, message.message_id, reply_markup=markup(reply)
                )
                return
            except apihelper.ApiTelegramException as exc:  # deleted, too old, not modified
                log.info("editing message in chat %s failed: %s", chat_id, exc.description)
        self.bot.send_message(chat_id, reply.text, reply_markup=markup(reply))

    def close(self) -> None:
        """Write every answer still waiting, log the summary, stop the loop."""
        self.loop.call(self.runtime.stop())
        log.info("quiz bot stopped\n%s", self.runtime.summary(self.kit.guard, self.kit.flood))
        self.loop.close()
        uninstall_flood_control()


async def run(base_url: str, token: str, stop: asyncio.Event) -> None:
    """The ``botscale loadtest`` target: poll ``base_url`` in a thread until ``stop`` is set."""
    config = dataclasses.replace(QuizConfig.from_env(), token=token, api_url=base_url.rstrip("/"))
    quiz = await asyncio.to_thread(QuizTeleBot, config)
    polling = asyncio.create_task(
        asyncio.to_thread(quiz.bot.infinity_polling, timeout=10, long_polling_timeout=2)
    )
    try:
        await stop.wait()
    finally:
        quiz.bot.stop_polling()  # type: ignore[no-untyped-call]
        await polling
        await asyncio.to_thread(quiz.close)


def main() -> int:
    """``python -m examples.quizbot_telebot``: poll Telegram until Ctrl-C."""
    try:
        config = QuizConfig.from_env()
        setup_logging(config.settings.log_level)
        quiz = QuizTeleBot(config)
    except ConfigurationError as exc:
        print(f"quizbot_telebot: {exc}", file=sys.stderr)
        return 2
    try:
        quiz.bot.infinity_polling(**polling_kwargs(quiz.bot))
    finally:
        quiz.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

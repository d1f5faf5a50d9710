"""The quiz bot's core flow on python-telegram-bot 22, through ``botscale.adapters.ptb``.

The same conversation as the aiogram bot (``/start``, answer buttons,
"explain", ``/stats``, ``/top``), the same :mod:`examples.quizbot` logic,
storage and settings; only the translation to PTB is here::

    TELEGRAM_BOT_TOKEN=123:ABC python -m examples.quizbot_ptb
    botscale loadtest examples.quizbot_ptb:run --scenario quiz --users 100
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from botscale import AsyncFloodControl, ConfigurationError
from botscale.adapters.ptb import install, installed, polling_kwargs, user_state
from examples.quizbot.config import QuizConfig
from examples.quizbot.flow import QuizFlow, Reply
from examples.quizbot.runtime import (
    Runtime,
    flood_budget,
    incoming_guard,
    new_monitor,
    setup_logging,
)

App = Application[Any, Any, Any, Any, Any, Any]
log = logging.getLogger("quizbot")


def markup(reply: Reply) -> InlineKeyboardMarkup | None:
    """The reply's buttons as a PTB inline keyboard."""
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(label, callback_data=data) for label, data in row]
            for row in reply.buttons
        ]
    )


def _flow(context: ContextTypes.DEFAULT_TYPE) -> QuizFlow:
    runtime: Runtime = context.application.bot_data["runtime"]
    return runtime.flow


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/start``: a new quiz."""
    user, message = update.effective_user, update.effective_message
    if user is None or message is None:
        return
    reply = await _flow(context).start(user_state(), user.id, user.first_name)
    await message.reply_text(reply.text, reply_markup=markup(reply))


async def stats(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/stats``: the user's score."""
    if update.effective_user is None or update.effective_message is None:
        return
    reply = await _flow(context).stats(update.effective_user.id, " ".join(context.args or ()))
    await update.effective_message.reply_text(reply.text)


async def top(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/top [N]``: the leaderboard."""
    if update.effective_message is not None:
        reply = await _flow(context).top(" ".join(context.args or ()))
        await update.effective_message.reply_text(reply.text)


async def other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Anything else: the help text."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(_flow(context).help().text)


async def press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An answer, "explain" or "new quiz" button."""
    query, flow = update.callback_query, _flow(context)
    if query is None:
        return
    result = await flow.press(user_state(), query.from_user.id, update.update_id, query.data)
    try:
        await query.answer(result.toast)
    except BadRequest as exc:  # pressed long ago: Telegram forgot the query
        log.info("callback answer to user %s failed: %s", query.from_user.id, exc.message)
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    if result.edit is not None:
        try:
            await query.edit_message_text(result.edit.text, reply_markup=markup(result.edit))
        except BadRequest as exc:  # deleted, too old, or not modified
            log.info("editing message in chat %s failed: %s", chat_id, exc.message)
            await context.bot.send_message(
                chat_id, result.edit.text, reply_markup=markup(result.edit)
            )
    if result.explain is not None:
        question = result.explain

        async def explain() -> None:
            await context.bot.send_message(chat_id, await flow.explain(question))

        flow.spawn(explain())


def build(config: QuizConfig) -> App:
    """The PTB ``Application`` with botscale installed and the quiz handlers added."""
    monitor = new_monitor(config)
    builder = ApplicationBuilder().token(config.require_token())
    if config.api_url:
        builder = builder.base_url(f"{config.api_url}/bot")
    app = install(
        builder,
        guard=incoming_guard(config, monitor),
        flood=AsyncFloodControl(budget=flood_budget(config)),
    )
    app.add_handler(CommandHandler("start", start))
    app.add_handler(CommandHandler("stats", stats))
    app.add_handler(CommandHandler("top", top))
    app.add_handler(CallbackQueryHandler(press))
    app.add_handler(MessageHandler(filters.ALL, other))

    async def open_runtime(app: App) -> None:
        app.bot_data["runtime"] = await Runtime.start(config, monitor)

    async def close_runtime(app: App) -> None:
        runtime: Runtime = app.bot_data["runtime"]
        await runtime.stop()
        kit = installed(app)
        if kit is not None:
            log.info("quiz bot stopped\n%s", runtime.summary(kit.guard, kit.flood))

    app.post_init = open_runtime
    app.post_shutdown = close_runtime
    return app


async def run(base_url: str, token: str, stop: asyncio.Event) -> None:
    """The ``botscale loadtest`` target: long-poll ``base_url`` until ``stop`` is set.

    PTB calls ``post_init`` / ``post_shutdown`` only from ``run_polling``, so
    this runs them itself around the updater.
    """
    config = dataclasses.replace(QuizConfig.from_env(), token=token, api_url=base_url.rstrip("/"))
    app = build(config)
    async with app:
        assert app.post_init is not None
        assert app.post_shutdown is not None
        await app.post_init(app)
        try:
            assert app.updater is not None
            await app.updater.start_polling(timeout=2, poll_interval=0.0)
            await app.start()
            await stop.wait()
            await app.updater.stop()
            await app.stop()
        finally:
            await app.post_shutdown(app)


def main() -> int:
    """``python -m examples.quizbot_ptb``: poll Telegram until Ctrl-C."""
    try:
        config = QuizConfig.from_env()
        setup_logging(config.settings.log_level)
        app = build(config)
    except ConfigurationError as exc:
        print(f"quizbot_ptb: {exc}", file=sys.stderr)
        return 2
    app.run_polling(**polling_kwargs(app))
    return 0


if __name__ == "__main__":
    sys.exit(main())

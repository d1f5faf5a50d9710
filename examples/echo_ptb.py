"""A python-telegram-bot 22 echo bot, written as a ``botscale loadtest`` target.

``build(base_url, token)`` returns the ``Application``; the load test starts
its updater (long polling) or feeds its update queue from a webhook::

    botscale loadtest examples.echo_ptb:build --users 50 --duration 20

PTB handles one update at a time unless ``concurrent_updates`` is set; try
both and compare the reports.
"""

from __future__ import annotations

from typing import Any

from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Answer a text message with the same text."""
    message = update.effective_message
    if message is not None and message.text:
        await message.reply_text(message.text)


def build(base_url: str, token: str) -> Application[Any, Any, Any, Any, Any, Any]:
    """Build the echo bot against the Bot API at ``base_url``."""
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{base_url}/bot")
        .concurrent_updates(True)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    return app

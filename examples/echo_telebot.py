"""A pyTelegramBotAPI (telebot) echo bot, written as a ``botscale loadtest`` target.

``build(base_url, token)`` returns the synchronous ``TeleBot``; the load test
runs ``infinity_polling`` in a thread, or feeds ``process_new_updates`` from a
webhook::

    botscale loadtest examples.echo_telebot:build --users 50 --duration 20

telebot reads its API URL from a module-level setting, ``apihelper.API_URL``.
"""

from __future__ import annotations

import telebot
from telebot import apihelper, types


def build(base_url: str, token: str) -> telebot.TeleBot:
    """Build the echo bot against the Bot API at ``base_url``."""
    # telebot declares the setting as None (meaning "api.telegram.org").
    apihelper.API_URL = f"{base_url}/bot{{0}}/{{1}}"  # type: ignore[assignment]
    bot = telebot.TeleBot(token, num_threads=4)

    def echo(message: types.Message) -> None:
        bot.send_message(message.chat.id, message.text or "I only echo text.")

    bot.register_message_handler(echo, content_types=["text"])
    return bot

"""A telebot bot whose handler blocks for 200 ms, as a ``botscale loadtest`` target.

The handler stands for a blocking database or HTTP call.  ``TeleBot`` runs
handlers on a pool of worker threads (2 by default), so this bot answers at
most about 10 messages per second however many users wait — the load test's
ramp finds where its latency leaves the target::

    botscale loadtest examples.slow_telebot:build --users 60 --duration 30 --ramp
"""

from __future__ import annotations

import time

import telebot
from telebot import apihelper, types

HANDLER_SECONDS = 0.2


def build(base_url: str, token: str) -> telebot.TeleBot:
    """Build the slow bot against the Bot API at ``base_url``."""
    # telebot declares the setting as None (meaning "api.telegram.org").
    apihelper.API_URL = f"{base_url}/bot{{0}}/{{1}}"  # type: ignore[assignment]
    bot = telebot.TeleBot(token)  # num_threads=2, telebot's default

    def answer(message: types.Message) -> None:
        time.sleep(HANDLER_SECONDS)  # the blocking call
        bot.send_message(message.chat.id, f"saved: {message.text}")

    bot.register_message_handler(answer, content_types=["text"])
    return bot

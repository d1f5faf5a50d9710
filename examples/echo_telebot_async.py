"""An asyncio telebot (``AsyncTeleBot``) echo bot, as a ``botscale loadtest`` target.

    botscale loadtest examples.echo_telebot_async:build --users 50 --duration 20

``AsyncTeleBot`` reads its API URL from ``telebot.asyncio_helper.API_URL``.
"""

from __future__ import annotations

from telebot import asyncio_helper, types
from telebot.async_telebot import AsyncTeleBot


def build(base_url: str, token: str) -> AsyncTeleBot:
    """Build the echo bot against the Bot API at ``base_url``."""
    asyncio_helper.API_URL = f"{base_url}/bot{{0}}/{{1}}"
    bot = AsyncTeleBot(token)

    async def echo(message: types.Message) -> None:
        await bot.send_message(message.chat.id, message.text or "I only echo text.")

    bot.register_message_handler(echo, content_types=["text"])
    return bot

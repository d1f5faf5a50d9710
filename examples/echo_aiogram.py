"""An aiogram 3 echo bot, written as a ``botscale loadtest`` target.

``build(base_url, token)`` returns the ``(Dispatcher, Bot)`` pair; the load
test runs it with long polling or a webhook::

    botscale loadtest examples.echo_aiogram:build --users 50 --duration 20

The only line that knows about the simulator is the session's API server:
in production the same ``Bot`` is built without it.
"""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import Message


def build(base_url: str, token: str) -> tuple[Dispatcher, Bot]:
    """Build the echo bot against the Bot API at ``base_url``."""
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(message.text or "I only echo text.")

    return dp, bot

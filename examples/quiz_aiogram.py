"""A three-question quiz on aiogram 3 with inline buttons, as a ``botscale loadtest`` target.

Virtual users of the ``quiz`` scenario press its buttons::

    botscale loadtest examples.quiz_aiogram:build --scenario quiz --users 100 --duration 30

Each answer is a callback query: the bot answers it (``answerCallbackQuery``)
and edits the message into the next question.
"""

from __future__ import annotations

from aiogram import Bot, Dispatcher, F
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.filters import CommandStart
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

QUESTIONS: list[tuple[str, list[str], int]] = [
    ("Capital of France?", ["Paris", "Rome", "Madrid"], 0),
    ("2 + 2 * 2?", ["8", "6", "4"], 1),
    ("Largest planet?", ["Mars", "Earth", "Jupiter"], 2),
]


def keyboard(question: int, score: int) -> InlineKeyboardMarkup:
    """The answer buttons of one question; the callback data carries the state."""
    _, options, _ = QUESTIONS[question]
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=option, callback_data=f"q:{question}:{i}:{score}")
                for i, option in enumerate(options)
            ]
        ]
    )


def build(base_url: str, token: str) -> tuple[Dispatcher, Bot]:
    """Build the quiz bot against the Bot API at ``base_url``."""
    bot = Bot(token, session=AiohttpSession(api=TelegramAPIServer.from_base(base_url)))
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> None:
        await message.answer(QUESTIONS[0][0], reply_markup=keyboard(0, 0))

    @dp.callback_query(F.data.startswith("q:"))
    async def answer(query: CallbackQuery) -> None:
        _, question_text, choice_text, score_text = (query.data or "q:0:0:0").split(":")
        question, choice, score = int(question_text), int(choice_text), int(score_text)
        right = choice == QUESTIONS[question][2]
        score += right
        await query.answer("Right!" if right else "Wrong")
        if not isinstance(query.message, Message):
            return
        if question + 1 < len(QUESTIONS):
            await query.message.edit_text(
                QUESTIONS[question + 1][0], reply_markup=keyboard(question + 1, score)
            )
        else:
            await query.message.edit_text(f"Score: {score}/{len(QUESTIONS)}. /start to play again.")

    @dp.message()
    async def other(message: Message) -> None:
        await message.answer("Send /start to play.")

    return dp, bot

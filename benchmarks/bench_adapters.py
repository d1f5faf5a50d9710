"""Overhead of botscale's incoming stack on each framework's real dispatch path.

The same trivial handler (it reads the message text and returns) runs on:

* aiogram 3: ``Dispatcher.feed_update(bot, update)``, the handler registered
  with ``F.text`` as usual (aiogram 3.31 evaluates a magic filter in a worker
  thread, ``asyncio.to_thread``, which dominates its cost and its noise), and
  once more without a filter to show the stack's cost on the bare async path;
* python-telegram-bot 22: ``Application.process_update(update)``;
* pyTelegramBotAPI 4: ``TeleBot.process_new_updates([update])`` (``threaded=False``,
  so the handler runs inside the call);

once bare and once with botscale installed through the adapter's ``install``:
de-duplication, the per-user rate limit (high enough that every update
passes: the common path), the per-user state handed to the handler, and the
monitor timing every update (and, where the framework lets the adapter see
it, every handler).  Updates are built beforehand with distinct ids and
alternate between 1000 users, so de-duplication and the limiter see
realistic keys.  Bare and installed runs are interleaved and each keeps its
best, so a busy machine slows them alike; only the ratio means something.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from typing import Any

from _harness import Row, Section, Target
from botscale import IncomingGuard, MemoryStateStore, PerformanceMonitor

USERS = 1000


def _raw(update_id: int) -> dict[str, Any]:
    user = 1_000_000 + update_id % USERS
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1_700_000_000,
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "chat": {"id": user, "type": "private", "first_name": "U"},
            "text": "hello",
        },
    }


def _guard() -> IncomingGuard:
    return IncomingGuard(
        "1000000/s",
        monitor=PerformanceMonitor(),
        state=MemoryStateStore(maxsize=10_000),
    )


def _best(runs: dict[str, Callable[[int], float]], number: int, repeat: int) -> dict[str, float]:
    """Seconds per update of each run: interleaved repeats, best kept."""
    best = dict.fromkeys(runs, float("inf"))
    offset = 0
    for _ in range(repeat):
        for name, run in runs.items():
            gc.collect()
            best[name] = min(best[name], run(offset) / number)
        offset += number
    return best


# --------------------------------------------------------------------------- aiogram


def _aiogram(number: int, repeat: int, *, magic_filter: bool = True) -> Section:
    from aiogram import Bot, Dispatcher, F
    from aiogram.types import Message, Update

    from botscale.adapters.aiogram import install

    loop = asyncio.new_event_loop()
    bot = Bot("123456:bench")

    def dispatcher(stack: bool) -> Dispatcher:
        dp = Dispatcher()

        async def handler(message: Message) -> None:
            _ = message.text

        if magic_filter:
            dp.message.register(handler, F.text)
        else:
            dp.message.register(handler)

        if stack:
            install(dp, None, guard=_guard(), flood=None, runner=None)
        return dp

    bare, installed = dispatcher(False), dispatcher(True)
    total = number * repeat
    updates = [Update.model_validate(_raw(i), context={"bot": bot}) for i in range(total)]

    def timed(dp: Dispatcher) -> Callable[[int], float]:
        def run(offset: int) -> float:
            batch = updates[offset : offset + number]

            async def go() -> float:
                start = time.perf_counter()
                for update in batch:
                    await dp.feed_update(bot, update)
                return time.perf_counter() - start

            return loop.run_until_complete(go())

        return run

    best = _best({"bare": timed(bare), "botscale": timed(installed)}, number, repeat)
    loop.run_until_complete(bot.session.close())
    loop.close()
    if magic_filter:
        return _section("aiogram 3: Dispatcher.feed_update", best, 1.15)
    section = _section(
        "aiogram 3: Dispatcher.feed_update, handler without filters (no thread hop)", best, 1.15
    )
    section.targets = []  # informational: the figure includes aiogram's filter hop
    return section


# --------------------------------------------------------------------------- python-telegram-bot


def _ptb(number: int, repeat: int) -> Section:
    from telegram import Update
    from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

    from botscale.adapters.ptb import install
    from botscale.testing import TelegramSimulator

    os.environ.setdefault("PTB_TIMEDELTA", "1")
    loop = asyncio.new_event_loop()

    async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        _ = update.message.text if update.message else None

    async def build(
        sim: TelegramSimulator, stack: bool
    ) -> Application[Any, Any, Any, Any, Any, Any]:
        builder = ApplicationBuilder().token(sim.token).base_url(f"{sim.base_url}/bot")
        app = builder.build()
        app.add_handler(MessageHandler(filters.TEXT, handler))
        if stack:
            install(app, guard=_guard())
        await app.initialize()  # getMe, once, from the simulator
        return app

    total = number * repeat

    async def main() -> dict[str, float]:
        async with TelegramSimulator() as sim:
            bare, installed = await build(sim, False), await build(sim, True)
            updates = [Update.de_json(_raw(i), bare.bot) for i in range(total)]

            def timed(app: Application[Any, Any, Any, Any, Any, Any]) -> Callable[[int], float]:
                def run(offset: int) -> float:
                    batch = updates[offset : offset + number]

                    async def go() -> float:
                        start = time.perf_counter()
                        for update in batch:
                            await app.process_update(update)
                        return time.perf_counter() - start

                    return asyncio.run_coroutine_threadsafe(go(), loop).result()

                return run

            runs = {"bare": timed(bare), "botscale": timed(installed)}
            best = await asyncio.to_thread(_best, runs, number, repeat)
            await bare.shutdown()
            await installed.shutdown()
            return best

    # The simulator serves from its own loop in a thread, the apps run on `loop`.
    import threading

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        best = asyncio.run_coroutine_threadsafe(main(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
    return _section("python-telegram-bot 22: Application.process_update", best, 2.0)


# --------------------------------------------------------------------------- telebot


def _telebot(number: int, repeat: int) -> Section:
    import telebot
    from telebot import types

    from botscale.adapters.telebot import install

    def bot(stack: bool) -> telebot.TeleBot:
        b = telebot.TeleBot("123456:bench", threaded=False, use_class_middlewares=stack)

        def handler(message: types.Message) -> None:
            _ = message.text

        b.register_message_handler(handler, content_types=["text"])
        if stack:
            install(b, guard=_guard(), flood=None, runner=None)
        return b

    bare, installed = bot(False), bot(True)
    total = number * repeat
    updates = [types.Update.de_json(_raw(i)) for i in range(total)]

    def timed(b: telebot.TeleBot) -> Callable[[int], float]:
        def run(offset: int) -> float:
            batch = updates[offset : offset + number]
            process = b.process_new_updates
            start = time.perf_counter()
            for update in batch:
                process([update])
            return time.perf_counter() - start

        return run

    best = _best({"bare": timed(bare), "botscale": timed(installed)}, number, repeat)
    return _section("pyTelegramBotAPI 4: TeleBot.process_new_updates", best, 2.0)


# --------------------------------------------------------------------------- report


def _section(title: str, best: dict[str, float], target: float) -> Section:
    ratio = best["botscale"] / best["bare"]
    added = (best["botscale"] - best["bare"]) * 1e6
    return Section(
        title=title,
        rows=[
            Row("bare framework", best["bare"]),
            Row("with botscale", best["botscale"], "dedup + limit + state + monitor"),
        ],
        baseline="bare framework",
        unit="update",
        targets=[
            Target(
                f"botscale stack <= {target:g}x bare",
                ratio <= target,
                f"{ratio:.2f}x (+{added:.1f} us per update)",
            )
        ],
    )


def run(quick: bool) -> list[Section]:
    number, repeat = (200, 3) if quick else (2000, 7)
    return [
        _aiogram(number // 2, repeat),
        _aiogram(number // 2, repeat, magic_filter=False),
        _ptb(number, repeat),
        _telebot(number, repeat),
    ]

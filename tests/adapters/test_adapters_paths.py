"""The adapters' fast paths behave exactly like the frameworks' own dispatch.

Each adapter takes a cheaper path than its framework's generic machinery for
the common case (telebot: its class-middleware loop; PTB: a decision made in
``check_update``).  These tests pin that the shortcut changes nothing a bot
can observe: the same handler calls with the same arguments, the same errors
to the same places, the same counts.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from botscale import IncomingGuard, MemoryStateStore, PerformanceMonitor, UpdateInfo

from .test_adapters_unit import MESSAGE


def message(update_id: int, text: str, user: int = 42) -> dict[str, Any]:
    body = {
        **MESSAGE["message"],  # type: ignore[dict-item]
        "message_id": update_id,
        "text": text,
        "from": {"id": user, "is_bot": False, "first_name": "U"},
        "chat": {"id": user, "type": "private", "first_name": "U"},
    }
    return {"update_id": update_id, "message": body}


TEXTS = ["one", "data", "data_bot", "state", "pass_bot", "chain", "boom", "none"]


def telebot_bot(*, through_telebot: bool) -> tuple[Any, list[tuple[Any, ...]], IncomingGuard]:
    """A TeleBot with handlers of every calling convention telebot knows."""
    import telebot
    from telebot import handler_backends

    from botscale.adapters.telebot import install

    bot = telebot.TeleBot("123:abc", threaded=False, use_class_middlewares=True)
    calls: list[tuple[Any, ...]] = []

    class Errors(telebot.ExceptionHandler):
        def handle(self, exception: Exception) -> bool:
            calls.append(("handled", type(exception).__name__, str(exception)))
            return True

    bot.exception_handler = Errors()

    class Nothing(handler_backends.BaseMiddleware):
        def __init__(self) -> None:
            self.update_sensitive = False
            self.update_types = ["message"]

        def pre_process(self, message: Any, data: dict[str, Any]) -> None:
            return None

        def post_process(self, message: Any, data: dict[str, Any], exception: Any) -> None:
            calls.append(("post", type(exception).__name__ if exception else None))

    if through_telebot:  # another middleware: telebot's own loop runs, unchanged
        bot.setup_middleware(Nothing())

    def when(text: str) -> Any:
        return lambda m: m.text == text

    def one(message: Any) -> None:
        calls.append(("one", message.text))

    def with_data(message: Any, data: dict[str, Any]) -> None:
        calls.append(("data", sorted(data), data["user_state"].key))

    def with_data_and_bot(message: Any, data: dict[str, Any], bot: Any) -> None:
        calls.append(("data_bot", sorted(data), bot is this_bot))

    def with_state(message: Any, user_state: Any) -> None:
        calls.append(("state", user_state.key, user_state.update(lambda n: n + 1, default=0)))

    def with_bot(message: Any, bot: Any) -> None:
        calls.append(("pass_bot", bot is this_bot))

    def first(message: Any) -> Any:
        calls.append(("chain", 1))
        return handler_backends.ContinueHandling()

    def second(message: Any) -> None:
        calls.append(("chain", 2))

    def never(message: Any) -> None:
        calls.append(("chain", "never"))

    def boom(message: Any) -> None:
        raise ValueError("handler bug")

    this_bot = bot
    bot.register_message_handler(one, func=when("one"))
    bot.register_message_handler(with_data, func=when("data"))
    bot.register_message_handler(with_data_and_bot, func=when("data_bot"))
    bot.register_message_handler(with_state, func=when("state"))
    bot.register_message_handler(with_bot, func=when("pass_bot"), pass_bot=True)
    bot.register_message_handler(first, func=when("chain"))
    bot.register_message_handler(second, func=when("chain"))
    bot.register_message_handler(never, func=when("chain"))
    bot.register_message_handler(boom, func=when("boom"))
    guard = IncomingGuard(
        "3/minute",
        on_limited="ignore",
        monitor=PerformanceMonitor(),
        state=MemoryStateStore(100),
    )
    install(bot, guard=guard, flood=None, runner=None)
    return bot, calls, guard


def test_telebot_fast_path_calls_handlers_exactly_like_telebot() -> None:
    from telebot import types

    results = []
    for through_telebot in (False, True):
        bot, calls, guard = telebot_bot(through_telebot=through_telebot)
        updates = [message(i + 1, text, user=100 + i) for i, text in enumerate(TEXTS)]
        updates += [message(50 + i, "state", user=7) for i in range(4)]  # the 4th is limited
        for raw in updates:
            bot.process_new_updates([types.Update.de_json(raw)])  # type: ignore[no-untyped-call]
        if through_telebot:  # the extra middleware's own trace: not part of the comparison
            posts = [c for c in calls if c[0] == "post"]
            assert len(posts) == len(updates) - 1  # the limited update never reached it
            assert ("post", "ValueError") in posts
            calls = [c for c in calls if c[0] != "post"]
        assert guard.monitor is not None
        op = guard.monitor.stats()["update.message"]
        results.append((calls, guard.stats(), op.count, op.errors))
    fast, slow = results
    assert fast == slow
    calls, stats, timed, errors = fast
    assert ("data", ["user_state"], 101) in calls  # data holds what the guard puts there only
    assert ("data_bot", ["user_state"], True) in calls
    assert ("pass_bot", True) in calls
    assert [c for c in calls if c[0] == "chain"] == [("chain", 1), ("chain", 2)]
    assert ("handled", "ValueError", "handler bug") in calls
    assert [c for c in calls if c[0] == "state" and c[1] == 7] == [
        ("state", 7, 1),
        ("state", 7, 2),
        ("state", 7, 3),
    ]
    assert (stats.passed, stats.limited) == (len(TEXTS) + 3, 1)
    assert (timed, errors) == (len(TEXTS) + 3, 1)


def test_telebot_fast_path_without_a_handler_still_guards_and_times() -> None:
    import telebot
    from telebot import types

    from botscale.adapters.telebot import install

    bot = telebot.TeleBot("123:abc", threaded=False, use_class_middlewares=True)
    monitor = PerformanceMonitor()
    guard = IncomingGuard("1/minute", on_limited="ignore", monitor=monitor)
    install(bot, guard=guard, flood=None, runner=None)
    for i in range(3):
        bot.process_new_updates([types.Update.de_json(message(i + 1, "x"))])  # type: ignore[no-untyped-call]
    assert (guard.stats().passed, guard.stats().limited) == (1, 2)
    assert monitor.stats()["update.message"].count == 1


def test_threaded_telebot_runner_orders_by_each_updates_chat() -> None:
    import telebot
    from telebot import types

    from botscale import ThreadedUpdateRunner
    from botscale.adapters.telebot import install

    seen: list[UpdateInfo] = []

    class Spy(ThreadedUpdateRunner):
        def submit(self, info: UpdateInfo, work: Any, *, timeout: float | None = None) -> bool:
            seen.append(info)
            return super().submit(info, work, timeout=timeout)

    bot = telebot.TeleBot("123:abc", use_class_middlewares=True, num_threads=2)
    handled: list[str] = []
    bot.register_message_handler(lambda m: handled.append(m.text), content_types=["text"])
    runner = Spy(2)
    install(bot, guard=IncomingGuard(None), flood=None, runner=runner)
    bot.process_new_updates(
        [types.Update.de_json(message(i + 1, f"m{i}", user=5 + i % 2)) for i in range(4)]  # type: ignore[no-untyped-call]
    )
    assert runner.join(timeout=10)
    runner.close()
    assert sorted(handled) == ["m0", "m1", "m2", "m3"]
    # the runner orders by chat: it must be told each update's chat, not "unknown"
    assert [(i.kind, i.chat_id) for i in seen] == [("message", 5), ("message", 6)] * 2


async def test_ptb_guard_stops_updates_also_under_non_blocking_defaults() -> None:
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, Defaults, MessageHandler, filters

    from botscale.adapters.ptb import install
    from botscale.testing import TelegramSimulator

    handled: list[int] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        handled.append(update.update_id)

    guard = IncomingGuard("2/minute", on_limited="ignore")
    async with TelegramSimulator() as sim:
        builder = ApplicationBuilder().token(sim.token).base_url(f"{sim.base_url}/bot")
        app = install(builder.defaults(Defaults(block=False)), guard=guard, runner=None)
        app.add_handler(MessageHandler(filters.TEXT, on_text))
        async with app:
            for i in range(5):
                await app.process_update(Update.de_json(message(i + 1, "hi"), app.bot))
            await app.update_persistence()
            for _ in range(50):  # non-blocking handlers run as tasks: let them finish
                if len(handled) >= 2:
                    break
                import asyncio

                await asyncio.sleep(0.01)
    assert sorted(handled) == [1, 2]
    assert guard.stats().limited == 3


async def test_ptb_user_state_is_built_when_asked_for() -> None:
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    from botscale.adapters.ptb import async_user_state, install, user_state
    from botscale.testing import TelegramSimulator

    seen: list[Any] = []

    async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        state = user_state()
        assert state is not None
        seen.append((state.key, state.update(lambda n: n + 1, default=0)))
        with pytest.raises(TypeError, match="not async"):
            async_user_state()

    guard = IncomingGuard(None, state=MemoryStateStore(10))
    async with TelegramSimulator() as sim:
        builder = ApplicationBuilder().token(sim.token).base_url(f"{sim.base_url}/bot")
        app = install(builder, guard=guard, runner=None, flood=None)
        app.add_handler(MessageHandler(filters.TEXT, on_text))
        async with app:
            for i in range(2):
                await app.process_update(Update.de_json(message(i + 1, "hi"), app.bot))
    assert seen == [(42, 1), (42, 2)]


def test_fast_paths_log_slow_handlers_with_the_update(caplog: pytest.LogCaptureFixture) -> None:
    import telebot
    from telebot import types

    from botscale.adapters.telebot import install
    from botscale.testing import FakeClock

    clock = FakeClock()
    monitor = PerformanceMonitor(slow_threshold=1.0, clock=clock)
    bot = telebot.TeleBot("123:abc", threaded=False, use_class_middlewares=True)
    bot.register_message_handler(lambda m: clock.advance(2.0), content_types=["text"])
    install(bot, guard=IncomingGuard(None, monitor=monitor), flood=None, runner=None)
    with caplog.at_level(logging.WARNING, logger="botscale.monitor"):
        bot.process_new_updates([types.Update.de_json(message(1, "slow", user=9))])  # type: ignore[no-untyped-call]
    assert monitor.stats()["update.message"].slow == 1
    assert "update='message' user_id=9 chat_id=9" in caplog.text

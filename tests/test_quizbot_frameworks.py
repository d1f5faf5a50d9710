"""The quiz bot on aiogram, python-telegram-bot and telebot: one scripted conversation, three runs.

Each version runs in this process against the simulator, through its own
botscale adapter, with the shared quiz logic and a SQLite file of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.quizbot.flow import CORRECT, WRONG  # noqa: E402

from botscale.testing import TelegramSimulator, VirtualUser, serve_bot  # noqa: E402

FRAMEWORKS = ["aiogram", "ptb", "telebot"]


@pytest.fixture(autouse=True)
def restore_telebot_urls() -> Iterator[None]:
    """telebot keeps its API URL in module globals: put them back after each test."""
    from telebot import apihelper, asyncio_helper

    saved = apihelper.API_URL, asyncio_helper.API_URL
    yield
    apihelper.API_URL, asyncio_helper.API_URL = saved


def _bot(framework: str, base_url: str, token: str) -> Any:
    """What ``botscale loadtest`` would run for each version."""
    if framework == "aiogram":
        from examples.quizbot.bot import build

        return build(base_url, token)
    if framework == "ptb":
        from examples.quizbot_ptb import run

        return functools.partial(run, base_url, token)
    from examples.quizbot_telebot import run as run_telebot

    return functools.partial(run_telebot, base_url, token)


@contextlib.asynccontextmanager
async def running(framework: str) -> AsyncIterator[TelegramSimulator]:
    async with TelegramSimulator() as sim:
        async with serve_bot(_bot(framework, sim.base_url, sim.token), sim, poll_timeout=1):
            await sim.wait_connected(20)
            yield sim


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def answers(user: VirtualUser) -> list[dict[str, Any]]:
    return [b for b in user.buttons() if str(b["callback_data"]).startswith("a:")]


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_same_conversation_on_every_framework(
    framework: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'quiz.db'}")
    monkeypatch.setenv("BOTSCALE_BATCH_DELAY", "0.1")
    monkeypatch.setenv("EXPLAIN_LATENCY", "0.05")
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("BOTSCALE_REDIS_URL", raising=False)
    async with running(framework) as sim:
        user = sim.user("Alice")
        welcome = await user.ask("/start", timeout=10)
        assert welcome["text"].startswith("👋 Hi Alice!")
        assert "Question 1/5" in welcome["text"]
        assert len(answers(user)) == 3

        verdicts = []
        for number in range(1, 6):
            buttons = answers(user)
            assert len(buttons) == 3
            before = buttons[0]["callback_data"]
            toast = await user.press(number % 3).wait(10)
            verdicts.append(toast["text"])
            assert toast["text"] in (CORRECT, WRONG)
            await until(
                lambda b=before: not answers(user) or answers(user)[0]["callback_data"] != b
            )
            text = str(user.last_message()["text"])  # type: ignore[index]
            assert text.startswith(("✅", "❌")), text
            if number < 5:
                assert f"Question {number + 1}/5" in text
                assert "💡 Explain the last answer" in [b["text"] for b in user.buttons()]
        assert "🏁 Quiz finished" in text
        assert [b["text"] for b in user.buttons()] == ["▶️ New quiz", "💡 Explain the last answer"]

        explain = await user.press("💡 Explain the last answer").wait(10)
        assert explain["text"] == "🤖 Thinking…"
        await until(lambda: str(user.last_message()["text"]).startswith("💡"))  # type: ignore[index]

        correct = verdicts.count(CORRECT)
        # The answers reach the database in a batch (0.1 s delay): ask until they
        # are counted, a bounded number of times, instead of sleeping a guess.
        stats = ""
        for _ in range(10):
            stats = str((await user.ask("/stats", timeout=10))["text"])
            if f"{correct}/5 correct" in stats:
                break
            await asyncio.sleep(0.2)
        assert f"{correct}/5 correct" in stats, stats
        assert "in 1 quiz." in stats
        top = (await sim.user("Bob").ask("/top 3", timeout=10))["text"]
        assert re.search(rf"1\. Alice: {correct}/5", top), top
        junk = (await sim.user("Carl").ask("/top many", timeout=10))["text"]
        assert "Usage: /top N" in junk
        help_text = (await sim.user("Dan").ask("hello?", timeout=10))["text"]
        assert "/start - a new quiz of 5 questions" in help_text
        assert sim.stats.errors == 0, sim.stats.errors_by_description
        assert sim.stats.rate_limited == 0

"""The example quiz bot: configuration, storage, bad input, a database that goes away, Redis.

The bot runs in this process against the simulator (real aiogram, real
SQLite / PostgreSQL / Redis); the end-to-end demo and the three frameworks
have their own files.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.quizbot.bot import QuizBot  # noqa: E402
from examples.quizbot.config import QuizConfig  # noqa: E402
from examples.quizbot.flow import CORRECT, SLOW_DOWN, WRONG  # noqa: E402
from examples.quizbot.storage import (  # noqa: E402
    PostgresDatabase,
    SQLiteDatabase,
    Storage,
    UserStats,
)

from botscale import ConfigurationError, PerformanceMonitor, UpdateInfo  # noqa: E402
from botscale.testing import Exchange, TelegramSimulator, VirtualUser, serve_bot  # noqa: E402

VERDICTS = (CORRECT, WRONG)


# -- configuration -------------------------------------------------------------------


def test_config_defaults_need_nothing() -> None:
    config = QuizConfig.from_env({})
    assert config.token is None
    assert config.sqlite_path == "quizbot.db"
    assert config.settings.postgres_dsn is None
    assert config.settings.redis_url is None
    assert config.admin_ids == frozenset()
    assert config.database == "SQLite quizbot.db"


def test_config_reads_the_bots_own_variables() -> None:
    config = QuizConfig.from_env(
        {
            "TELEGRAM_BOT_TOKEN": "123456:ABC-def_ghi",
            "DATABASE_URL": "sqlite:////var/lib/quiz.db",
            "ADMIN_IDS": "42, 7 99",
            "EXPLAIN_LATENCY": "0.25",
            "QUIZ_LENGTH": "3",
            "BOTSCALE_USER_RATE": "10/minute",
        }
    )
    assert config.token == "123456:ABC-def_ghi"
    assert config.sqlite_path == "/var/lib/quiz.db"
    assert config.admin_ids == {42, 7, 99}
    assert config.explain_latency == 0.25
    assert config.quiz_length == 3
    assert config.settings.user_rate.limit == 10


def test_a_postgres_database_url_goes_to_botscale_settings_with_its_password_masked() -> None:
    config = QuizConfig.from_env({"DATABASE_URL": "postgresql://bot:s3cret@db.example:5433/quiz"})
    assert config.settings.postgres_dsn == "postgresql://bot:s3cret@db.example:5433/quiz"
    assert config.database == "PostgreSQL db.example:5433/quiz"
    assert "s3cret" not in config.database


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TELEGRAM_BOT_TOKEN", "not a token"),
        ("ADMIN_IDS", "42,admin"),
        ("ADMIN_IDS", "-5"),
        ("EXPLAIN_LATENCY", "slow"),
        ("EXPLAIN_LATENCY", "-1"),
        ("QUIZ_LENGTH", "40"),
        ("DATABASE_URL", "sqlite:quiz.db"),
        ("DATABASE_URL", "mysql://x/y"),
        ("MAX_PENDING_ANSWERS", "3"),
        ("REDIS_PREFIX", "bad prefix"),
        ("TELEGRAM_API_URL", "localhost:8081"),
    ],
)
def test_bad_values_fail_at_start_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        QuizConfig.from_env({variable: value})


def test_a_real_run_without_a_token_says_how_to_get_one() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "examples.quizbot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in done.stderr
    assert "@BotFather" in done.stderr
    assert "--simulate" in done.stderr
    assert "Traceback" not in done.stderr


# -- storage -------------------------------------------------------------------------


async def _exercise_storage(storage: Storage) -> None:
    """Batched writes, reads, and /stats invalidated by the write of its user's batch."""
    assert await storage.user_stats(1) == UserStats(0, 0, 0)  # now cached for 300 s
    await storage.record_start(1, "Ann")
    await storage.record_start(2, "Bob")
    await storage.record_start(1, "Ann")
    rows = [
        (101, 1, "q1", 1, 0, True, 1.0),
        (102, 1, "q1", 2, 1, False, 2.0),
        (103, 2, "q2", 1, 0, True, 3.0),
        (104, 2, "q2", 3, 2, True, 4.0),
        (105, 1, "q3", 4, 1, True, 5.0),
    ]
    for row in rows:
        await storage.record_answer(row)
    await storage.answers.flush(timeout=10)
    assert await storage.user_stats(1) == UserStats(answered=3, correct=2, quizzes=2)
    assert await storage.user_stats(2) == UserStats(answered=2, correct=2, quizzes=1)
    leaders = await storage.top(10)
    assert [
        (leader.user_id, leader.name, leader.correct, leader.answered) for leader in leaders
    ] == [
        (2, "Bob", 2, 2),
        (1, "Ann", 2, 3),
    ]
    assert await storage.known_users() == [1, 2]
    assert await storage.health()
    info = storage.user_stats.cache_info()
    assert info.misses == 3  # user 1 twice (invalidated by the write), user 2 once


async def test_sqlite_storage_batches_reads_and_invalidates_stats_on_write(tmp_path: Path) -> None:
    config = QuizConfig.from_env({"BOTSCALE_BATCH_DELAY": "0.05"})
    db = SQLiteDatabase(str(tmp_path / "quiz.db"))
    storage = Storage(db, config, PerformanceMonitor())
    try:
        await _exercise_storage(storage)
    finally:
        await storage.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "quiz.db")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM quizbot_answers").fetchone() == (5,)


@pytest.mark.postgres
async def test_postgres_storage_behaves_the_same(postgres_dsn: str) -> None:
    import asyncpg

    prefix = f"quiztest_{uuid.uuid4().hex[:8]}_"
    config = QuizConfig.from_env({"BOTSCALE_BATCH_DELAY": "0.05", "DATABASE_URL": postgres_dsn})
    db = await PostgresDatabase.connect(postgres_dsn, prefix=prefix)
    storage = Storage(db, config, PerformanceMonitor())
    try:
        await _exercise_storage(storage)
    finally:
        await storage.close()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}answers", "{prefix}starts"')
        finally:
            await conn.close()


# -- the bot in this process ---------------------------------------------------------


@dataclasses.dataclass
class Running:
    sim: TelegramSimulator
    quiz: QuizBot
    admin: VirtualUser
    db: Path


@contextlib.asynccontextmanager
async def quizbot(tmp_path: Path, **env: str) -> AsyncIterator[Running]:
    """The aiogram quiz bot polling a fresh simulator, with a SQLite file of its own."""
    async with TelegramSimulator() as sim:
        admin = sim.user("Admin")
        db = tmp_path / "quiz.db"
        variables = {
            "DATABASE_URL": f"sqlite:///{db}",
            "ADMIN_IDS": str(admin.id),
            "BOTSCALE_BATCH_DELAY": "0.1",
            "EXPLAIN_LATENCY": "0.05",
            **env,
        }
        config = dataclasses.replace(
            QuizConfig.from_env(variables), token=sim.token, api_url=sim.base_url
        )
        quiz = QuizBot(config)
        async with serve_bot(quiz.pair, sim, poll_timeout=1):
            await sim.wait_connected(10)
            yield Running(sim, quiz, admin, db)


def answer_buttons(user: VirtualUser) -> list[dict[str, Any]]:
    return [b for b in user.buttons() if str(b["callback_data"]).startswith("a:")]


async def press(user: VirtualUser, button: str | int) -> str:
    """Press a button, return the toast, wait until the bot has edited the message."""
    before = user.last_message()
    exchange = user.press(button)
    answer = await exchange.wait(10)
    for _ in range(100):
        if user.last_message() is not before:
            break
        await asyncio.sleep(0.02)
    return str(answer.get("text", ""))


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for ``condition`` (sends to one chat are paced at 1/s by the flood control)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def inject(running: Running, user: VirtualUser, data: str) -> Exchange:
    """A callback query with any data (a client sending garbage) from the user's last message."""
    message = user.last_message()
    assert message is not None
    chat = running.sim.api.chats[user.chat_id]
    return running.sim.api.inject_callback(user.info, chat, message, data)


def health(running: Running) -> tuple[int, dict[str, Any]]:
    assert running.quiz.runtime is not None
    url = f"{running.quiz.runtime.server.url}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


@pytest.fixture
def no_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    yield caplog
    loud = [r for r in caplog.records if r.levelno > logging.INFO]
    assert not loud, [f"{r.levelname} {r.name}: {r.getMessage()}" for r in loud]


async def test_bad_input_gets_friendly_answers_and_nothing_above_info(
    tmp_path: Path, no_warnings: pytest.LogCaptureFixture
) -> None:
    async with quizbot(tmp_path) as running:
        user = running.sim.user("Eve")
        first = await user.ask("/start some-deep-link-payload")
        assert "Question 1/5" in first["text"]
        old_quiz = answer_buttons(user)[0]["callback_data"]

        async def toast(data: str) -> str:
            return str((await inject(running, user, data).wait(10)).get("text", ""))

        assert "I don't know that button" in await toast("lol")
        assert "I don't know that button" in await toast("a:xx:1")
        assert "I don't know that button" in await toast("a:ab:cd:ef:gh")
        assert "I don't know that question" in await toast("x:999")
        assert "I don't know that question" in await toast("x:")
        quiz_id, qid = old_quiz.split(":")[1:3]
        assert "not one of the answers" in await toast(f"a:{quiz_id}:{qid}:7")

        assert await press(user, 0) in VERDICTS
        assert "Already answered" in await toast(old_quiz)  # the same button again

        await user.ask("/start")  # a new quiz: the first one's buttons are old now
        assert "old quiz" in await toast(old_quiz)

        state = running.quiz.kit.guard.user_state(
            UpdateInfo("callback_query", None, user.id, user.chat_id, "private")
        )
        assert state is not None
        state.delete()  # the state expired (TTL) or was evicted (maxsize)
        expired = user.press(0)
        assert "expired" in str((await expired.wait(10)).get("text", ""))
        await until(lambda: [b["text"] for b in user.buttons()] == ["▶️ New quiz"])
        assert await press(user, "▶️ New quiz") == "▶️ New quiz!"
        assert "Question 1/5" in str(user.last_message()["text"])  # type: ignore[index]

        replies = {
            "/top abc": "Usage: /top N",
            "/top 0": "Usage: /top N",
            "/top 99999999999999999999": "Usage: /top N",
            "/top 3": "Top players",
            "/stats please": "/stats takes no arguments",
            "/broadcast hello": "only for the bot's admins",
            "/nonsense": "I am a driving-theory quiz bot",
            "just chatting": "I am a driving-theory quiz bot",
        }
        # one user per command: a chat gets one message per second from the flood control
        asked = [running.sim.user().ask(text) for text in replies]
        asked += [running.admin.ask("/broadcast"), running.sim.user("Admin 2").ask("/broadcast")]
        answers = [str(a["text"]) for a in await asyncio.gather(*asked)]
        for (text, expected), answer in zip(replies.items(), answers[:-2], strict=True):
            assert expected in answer, (text, answer)
        assert "Usage: /broadcast" in answers[-2]
        assert "only for the bot's admins" in answers[-1]
        assert running.sim.stats.errors == 0


async def test_explain_runs_behind_the_bulkhead_and_answers_later(tmp_path: Path) -> None:
    async with quizbot(tmp_path, BOTSCALE_MAX_CONCURRENCY="2", EXPLAIN_LATENCY="0.2") as running:
        users = [running.sim.user(f"U{i}") for i in range(6)]
        for user in users:
            await user.ask("/start")
        for user in users:
            await press(user, 0)
        exchanges = [user.press("💡 Explain the last answer") for user in users]
        toasts = [str((await e.wait(10)).get("text")) for e in exchanges]
        assert toasts == ["🤖 Thinking…"] * 6  # at once, whatever the AI does
        await until(lambda: all(str(u.messages()[-1]["text"]).startswith("💡") for u in users))
        assert running.quiz.runtime is not None
        ai = running.quiz.runtime.flow.explainer.stats()
        assert ai.acquired == 6
        assert ai.peak_in_flight == 2


@pytest.mark.slow
async def test_the_rate_limit_notice_comes_once_per_window(tmp_path: Path) -> None:
    async with quizbot(tmp_path, BOTSCALE_USER_RATE="5/2s") as running:
        user = running.sim.user("Speedy")
        await user.ask("/start")
        toasts = running.sim

        def notices() -> int:
            return sum(
                1
                for call in toasts.calls
                if call.method == "answerCallbackQuery"
                and str(call.params.get("text", "")).startswith(SLOW_DOWN[:10])
            )

        for window in range(2):
            presses = [user.press(0) for _ in range(15)]
            await asyncio.gather(*(_settle(e) for e in presses))
            assert notices() == window + 1
            await asyncio.sleep(2.1)
        assert running.quiz.kit.guard.stats().notices == 2


async def _settle(exchange: Exchange) -> None:
    with contextlib.suppress(TimeoutError):
        await exchange.wait(1.0)


@pytest.mark.slow
async def test_a_locked_database_makes_answers_wait_bounded_and_loses_none(
    tmp_path: Path,
) -> None:
    env = {
        "SQLITE_BUSY_TIMEOUT": "0.05",
        "BOTSCALE_BATCH_SIZE": "2",
        "MAX_PENDING_ANSWERS": "2",
    }
    async with quizbot(tmp_path, **env) as running:
        user = running.sim.user("Dora")
        await user.ask("/start")
        assert running.quiz.runtime is not None
        storage = running.quiz.runtime.storage
        await storage.starts.flush(timeout=10)

        blocker = sqlite3.connect(running.db, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            given = []
            for _ in range(4):  # 2 in the failing batch + 2 pending: the bound
                given.append(answer_buttons(user)[0]["callback_data"])
                assert await press(user, 0) in VERDICTS
            await until(lambda: storage.writer_stats()["answers"].retries > 0)
            stats = storage.writer_stats()["answers"]
            assert stats.written == 0
            assert stats.pending + stats.in_flight == 4
            status, body = await asyncio.to_thread(health, running)
            assert status == 503
            assert body["status"] == "unhealthy"
            assert "answers writes failing" in body["checks"]["database"]
            assert "4 rows waiting, none lost" in body["checks"]["database"]

            # A fifth answer finds the writer full: refused politely, the quiz does not move.
            fifth = answer_buttons(user)[0]["callback_data"]
            toast = str((await user.press(0).wait(10)).get("text", ""))
            assert "can't save answers right now" in toast
            assert answer_buttons(user)[0]["callback_data"] == fifth
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        # the writer's backoff comes back within seconds
        await until(lambda: storage.writer_stats()["answers"].written == 4)
        assert await press(user, 0) in VERDICTS  # pressed again: accepted now
        given.append(fifth)
        await storage.answers.flush(timeout=10)
        status, body = await asyncio.to_thread(health, running)
        assert status == 200, body
        assert storage.writer_stats()["answers"].dead_lettered == 0

    with contextlib.closing(sqlite3.connect(running.db)) as conn:
        rows = conn.execute(
            "SELECT user_id, quiz, question_id, option FROM quizbot_answers ORDER BY answered_at"
        ).fetchall()
    assert [f"a:{quiz}:{qid}:{option}" for _, quiz, qid, option in rows] == given
    assert {user_id for user_id, *_ in rows} == {user.id}


@pytest.mark.redis
async def test_with_redis_the_quiz_state_lives_in_redis(tmp_path: Path, redis_url: str) -> None:
    import redis

    prefix = f"quiztest-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    try:
        async with quizbot(tmp_path, REDIS_URL=redis_url, REDIS_PREFIX=prefix) as running:
            user = running.sim.user("Rita")
            await user.ask("/start")
            assert await press(user, 0) in VERDICTS
            keys = client.keys(f"{{{prefix}:*")
            assert keys, "no quiz state or rate-limit keys in Redis"
            assert running.quiz.kit.guard.state is not None
            state = running.quiz.kit.guard.state.get(user.id)
            assert state["pos"] == 1
    finally:
        keys = client.keys(f"{{{prefix}:*")
        if keys:
            client.delete(*keys)
        client.close()


class _Proxy:
    """A TCP proxy to PostgreSQL that can be cut (the server "goes down") and restored."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._links):
            writer.close()
        self._links.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_going_down_makes_answers_wait_and_loses_none(postgres_dsn: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    import asyncpg

    parts = urlsplit(postgres_dsn)
    proxy = _Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
    via_proxy = urlunsplit(parts._replace(netloc=netloc))
    prefix = f"quiztest_{uuid.uuid4().hex[:8]}_"
    config = QuizConfig.from_env({"BOTSCALE_BATCH_DELAY": "0.05", "DATABASE_URL": via_proxy})
    db = await PostgresDatabase.connect(via_proxy, prefix=prefix)
    storage = Storage(db, config, PerformanceMonitor())
    try:
        rows = [(200 + i, 7, "pg", i, 0, i % 2 == 0, float(i)) for i in range(6)]
        for row in rows[:2]:
            await storage.record_answer(row)
        await storage.answers.flush(timeout=10)
        assert await storage.health()

        await proxy.cut()  # PostgreSQL is gone
        for row in rows[2:]:
            await storage.record_answer(row)  # accepted at once: the writer holds them
        await until(lambda: storage.writer_stats()["answers"].retries > 0)
        with pytest.raises(ConnectionError, match=r"answers writes failing.*4 rows waiting"):
            await storage.health()

        await proxy.start()  # back on the same port
        await storage.answers.flush(timeout=30)
        assert await storage.health()
        stats = storage.writer_stats()["answers"]
        assert (stats.written, stats.dead_lettered, stats.pending) == (6, 0, 0)
        assert await storage.user_stats(7) == UserStats(answered=6, correct=3, quizzes=1)
    finally:
        await storage.close()
        await proxy.cut()
        conn = await asyncpg.connect(postgres_dsn)
        try:
            stored = await conn.fetch(f'SELECT update_id FROM "{prefix}answers" ORDER BY 1')
            await conn.execute(f'DROP TABLE IF EXISTS "{prefix}answers", "{prefix}starts"')
        finally:
            await conn.close()
    assert [r[0] for r in stored] == [row[0] for row in rows]


def test_the_example_readme_documents_every_variable() -> None:
    from examples.quizbot.config import VARIABLES

    readme = (ROOT / "examples" / "quizbot" / "README.md").read_text(encoding="utf-8")
    missing = [v.name for v in VARIABLES if f"`{v.name}`" not in readme]
    assert not missing, missing

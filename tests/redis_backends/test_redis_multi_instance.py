"""Three processes of the example quiz bot behind a round-robin webhook pool, sharing Redis.

The simulator plays a load balancer (``webhook_pool=True``): each process
registers its own webhook on its own 127.0.0.1 port and the updates go round
robin.  With ``REDIS_URL`` the processes share the quiz state, the per-user
limits and the outgoing flood budget; the answers go to one SQLite file (WAL).

* 300 users ``/start`` at once (three processes reply at once through one
  budget) and the admin ``/broadcast``s to all of them: every user gets the
  broadcast exactly once, no 429 in the whole run, and the broadcast runs at
  no less than 90% of Telegram's 30 messages/s.
* A quiz started through one process is answered through the other two: the
  answers are accepted as answers of the running quiz (and the state in Redis
  moves on).  The negative control runs the same steps with the state in each
  process's memory: there the answer is refused as an expired quiz, so the
  first test cannot pass without the shared state.

Which process handled which update is read from each process's own log
(aiogram's ``Update id=N is handled``, tagged with the process's name).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from examples.quizbot.flow import CORRECT, WRONG

from botscale.backends.redis import RedisStateStore
from botscale.testing import Exchange, TelegramSimulator, VirtualUser

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = Path(__file__).with_name("quizbot_instance.py")
USERS = 300
INSTANCES = 3
TELEGRAM_RATE = 30.0
"""The simulator's and the bot's overall limit (both defaults): messages per second."""
BROADCAST_TEXT = "📣 Three processes, one budget: new questions are in!"
EXPIRED = "⌛ That quiz has expired."
STARTUP_TIMEOUT = 40.0
REPLY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
_ISOLATE = frozenset({"REDIS_URL", "REDIS_PREFIX", "DATABASE_URL", "ADMIN_IDS"})
_HANDLED = re.compile(r"^(?P<name>\S+) .* aiogram\.event: Update id=(?P<id>\d+) is handled")
_ERROR = re.compile(r"^\S+ \S+ \S+ (ERROR|CRITICAL) |^Traceback|^Fatal", re.MULTILINE)
_READY = re.compile(r"^ready (?P<url>\S+)$", re.MULTILINE)


@dataclass
class Instance:
    """One bot process: its name, its webhook URL and its output files."""

    name: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    url: str | None = None

    def log(self) -> str:
        return self.err.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        text = self.out.read_text(errors="replace") + self.log()
        return f"--- {self.name} (exit {self.process.poll()}):\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def child_env(
    db_path: Path, admin_id: int, redis_url: str | None, prefix: str | None
) -> dict[str, str]:
    """The environment of a bot process: nothing inherited that could point elsewhere."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BOTSCALE_") and k not in _ISOLATE
    }
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        DATABASE_URL=f"sqlite:///{db_path}",
        ADMIN_IDS=str(admin_id),
        BOTSCALE_BATCH_DELAY="0.2",  # the broadcast list is read from the database
        EXPLAIN_LATENCY="0",
    )
    if redis_url is not None:
        assert prefix is not None
        env.update(REDIS_URL=redis_url, REDIS_PREFIX=prefix)
    return env


async def poll(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Wait (bounded) until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


async def stop(instances: list[Instance]) -> None:
    """SIGTERM each process by pid, wait (bounded), SIGKILL what is left."""
    for inst in instances:
        if inst.process.poll() is None:
            inst.process.send_signal(signal.SIGTERM)
    for _ in range(int(STOP_TIMEOUT / 0.1)):
        if all(i.process.poll() is not None for i in instances):
            break
        await asyncio.sleep(0.1)
    for inst in instances:
        if inst.process.poll() is None:
            inst.process.kill()
            inst.process.wait(5)
        if inst.process.stdin is not None:
            inst.process.stdin.close()


@contextlib.asynccontextmanager
async def quiz_instances(
    sim: TelegramSimulator, count: int, env: dict[str, str], workdir: Path
) -> AsyncIterator[list[Instance]]:
    """Start ``count`` quiz bot processes against ``sim``; each joins its webhook pool."""
    instances: list[Instance] = []
    try:
        for n in range(count):
            name = f"bot{n}"
            out, err = workdir / f"{name}.out", workdir / f"{name}.log"
            with out.open("wb") as stdout, err.open("wb") as stderr:
                # Popen returns once the child is forked: nothing here blocks the loop.
                process = subprocess.Popen(  # noqa: ASYNC220
                    [sys.executable, str(INSTANCE), name, sim.base_url, sim.token],
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                    env=env,
                    cwd=ROOT,
                )
            instances.append(Instance(name, process, out, err))

        def ready() -> bool:
            for inst in instances:
                if inst.process.poll() is not None:
                    tails = "\n".join(i.tail() for i in instances)
                    raise AssertionError(f"{inst.name} exited before it was ready\n{tails}")
                found = _READY.search(inst.out.read_text(errors="replace"))
                inst.url = found["url"] if found else None
            urls = {i.url for i in instances}
            return None not in urls and urls <= set(sim.webhook_urls)

        try:
            await poll("every bot process to set its webhook", ready, STARTUP_TIMEOUT)
        except AssertionError as exc:
            tails = "\n".join(i.tail() for i in instances)
            raise AssertionError(f"{exc}\n{tails}") from None
        assert sorted(sim.webhook_urls) == sorted(str(i.url) for i in instances)
        yield instances
    finally:
        await stop(instances)


def handled_by(instances: list[Instance]) -> dict[int, list[str]]:
    """Update id -> the processes that logged it as handled."""
    owners: dict[int, list[str]] = collections.defaultdict(list)
    for inst in instances:
        for line in inst.log().splitlines():
            found = _HANDLED.match(line)
            if found and found["name"] == inst.name:
                owners[int(found["id"])].append(inst.name)
    return owners


async def owners_of(instances: list[Instance], exchanges: list[Exchange]) -> list[str]:
    """The one process that handled each exchange's update (waits for the log lines)."""
    await poll(
        "the processes' 'is handled' log lines",
        lambda: all(e.update_id in handled_by(instances) for e in exchanges),
        REPLY_TIMEOUT,
    )
    owners = handled_by(instances)
    for e in exchanges:
        assert len(owners[e.update_id]) == 1, (e.update_id, owners[e.update_id])
    return [owners[e.update_id][0] for e in exchanges]


def text_of(user: VirtualUser) -> str:
    message = user.last_message()
    return str(message.get("text", "")) if message else ""


async def start_then_answer(user: VirtualUser) -> tuple[Exchange, Exchange, str, str]:
    """The player ``/start``s a quiz, then presses the first answer of question 1.

    Returns the two exchanges, the quiz id of the keyboard and the press's toast.
    """
    start = user.command("start")
    await start.wait(REPLY_TIMEOUT)
    quiz_id = str(user.buttons()[0]["callback_data"]).split(":")[1]
    press = user.press(0)
    answer = await press.wait(REPLY_TIMEOUT)
    return start, press, quiz_id, str(answer.get("text", ""))


async def test_three_quiz_bot_processes_share_state_and_the_flood_budget(
    redis_url: str, prefix: str, tmp_path: Path
) -> None:
    db_path = tmp_path / "quiz.db"
    async with TelegramSimulator(webhook_pool=True) as sim:
        admin = sim.user("Admin")
        players = [sim.user() for _ in range(USERS)]
        env = child_env(db_path, admin.id, redis_url, prefix)
        began = time.monotonic()
        async with quiz_instances(sim, INSTANCES, env, tmp_path) as instances:
            ready_at = time.monotonic()

            # -- state: started through one process, answered through the two others
            player = players[0]
            start, press1, quiz_id, toast1 = await start_then_answer(player)
            assert toast1 in (CORRECT, WRONG), toast1
            await poll("question 2", lambda: "Question 2/" in text_of(player), REPLY_TIMEOUT)
            press2 = player.press(0)
            toast2 = str((await press2.wait(REPLY_TIMEOUT)).get("text", ""))
            assert toast2 in (CORRECT, WRONG), toast2
            await poll("question 3", lambda: "Question 3/" in text_of(player), REPLY_TIMEOUT)
            who = await owners_of(instances, [start, press1, press2])
            assert len(set(who)) == 3, f"start, answer 1, answer 2 handled by {who}"
            with redis.Redis.from_url(redis_url) as client:
                state = RedisStateStore(client, prefix=prefix).get(player.id)
            assert isinstance(state, dict), state
            assert state["quiz"] == quiz_id, state
            assert state["pos"] == 2, state

            # -- 299 more users /start at once: three processes reply through one budget
            starts_began = time.monotonic()
            starts = [p.command("start") for p in players[1:]]
            await asyncio.wait_for(
                asyncio.gather(*(e.wait(None) for e in starts)), 3 * USERS / TELEGRAM_RATE
            )
            starts_done = time.monotonic()
            per_instance = collections.Counter(await owners_of(instances, starts))
            assert len(per_instance) == INSTANCES, per_instance
            assert min(per_instance.values()) >= USERS // (2 * INSTANCES), per_instance

            def known() -> bool:
                with contextlib.closing(sqlite3.connect(db_path, timeout=5.0)) as db:
                    row = db.execute("SELECT COUNT(DISTINCT user_id) FROM quizbot_starts")
                    return int(row.fetchone()[0]) == USERS

            await poll("300 users in the database", known, REPLY_TIMEOUT)

            # -- the admin's broadcast
            order = admin.command("broadcast", BROADCAST_TEXT)
            await order.wait(REPLY_TIMEOUT)
            await poll(
                "the broadcast's summary",
                lambda: text_of(admin).startswith("📣 Broadcast done"),
                3 * USERS / TELEGRAM_RATE,
            )
            summary = text_of(admin)
            broadcaster = (await owners_of(instances, [order]))[0]
            stats = sim.stats
            calls = sim.calls
            received = [
                sum(m.get("text") == BROADCAST_TEXT for m in sim.sent_messages(p.id))
                for p in players
            ]
        ended = time.monotonic()

    sent = [
        c
        for c in calls
        if c.method.lower() == "sendmessage"
        and c.status == 200
        and c.params.get("text") == BROADCAST_TEXT
    ]
    per_chat = collections.Counter(int(c.params["chat_id"]) for c in sent)
    assert per_chat == {p.id: 1 for p in players}
    assert received == [1] * USERS
    assert f"{USERS}/{USERS} delivered" in summary, summary
    assert stats.rate_limited == 0, dict(stats.rate_limited_by_method)
    assert stats.dropped_updates == 0
    span = sent[-1].at - sent[0].at
    rate = (len(sent) - 1) / span
    start_replies = len(starts) / (starts_done - starts_began)
    for inst in instances:  # a clean shutdown: SIGTERM drained the writers, nothing logged an error
        assert inst.process.returncode == 0, inst.tail()
        assert "stopped" in inst.out.read_text(), inst.tail()
        assert not _ERROR.search(inst.log()), inst.tail()
    print(
        f"\nbroadcast by {broadcaster}: {len(sent)} messages in {span:.2f} s = {rate:.1f}/s "
        f"({rate / TELEGRAM_RATE:.0%} of {TELEGRAM_RATE:.0f}/s); 429s: {stats.rate_limited}; "
        f"/start replies by {dict(per_instance)} at {start_replies:.1f}/s; "
        f"startup {ready_at - began:.1f} s, whole run {ended - began:.1f} s; {summary}"
    )
    assert rate >= 0.9 * TELEGRAM_RATE, f"{rate:.1f} messages/s over {span:.2f} s"


async def test_without_shared_state_the_answer_reaches_a_process_that_never_saw_the_quiz(
    tmp_path: Path,
) -> None:
    """The negative control: the same steps with each process's state in memory."""
    async with TelegramSimulator(webhook_pool=True) as sim:
        admin = sim.user("Admin")
        player = sim.user()
        env = child_env(tmp_path / "quiz.db", admin.id, None, None)
        async with quiz_instances(sim, 2, env, tmp_path) as instances:
            start, press, _, toast = await start_then_answer(player)
            who = await owners_of(instances, [start, press])
    assert who[0] != who[1], who
    assert [i.process.returncode for i in instances] == [0, 0], [i.tail() for i in instances]
    assert toast == EXPIRED, toast

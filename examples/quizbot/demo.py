"""The one-command demo: the quiz bot, hundreds of virtual users, one admin broadcast.

``python -m examples.quizbot.demo`` (what ``nox -s demo`` runs):

1. starts botscale's Telegram Bot API simulator (Telegram's flood limits on:
   30 messages/s, 1/s per chat);
2. starts the quiz bot exactly as in production, ``python -m examples.quizbot``,
   in its own process, pointed at the simulator (SQLite, state in memory:
   nothing to install);
3. ramps up virtual users answering quizzes (and asking the slow "explain" AI),
   while one impatient user hammers a button;
4. has the admin ``/broadcast`` to every user;
5. stops the bot (it drains its writers) and prints the capacity report, what
   the broadcast and the rate limit did, a check of the database against the
   answers the users gave, and the bot's own monitor summary; the latency plot
   goes to ``demo-latency.png``.

It finishes in about a minute and a half on two cores and exits non-zero when
a check fails.  ``--users 60 --duration 15`` makes a quick run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botscale.testing import (
    Exchange,
    LoadProfile,
    LoadReport,
    LoadResult,
    Progress,
    Scenario,
    TelegramSimulator,
    VirtualUser,
    build_report,
    plot_report,
    run_load,
)

from .flow import CORRECT, SLOW_DOWN, WRONG

__all__ = ["DemoResult", "format_result", "main", "run_demo"]

REPO: Final = Path(__file__).resolve().parents[2]
BROADCAST_TEXT: Final = "📣 New questions about roundabouts are in: /start a quiz!"
_NOTICE_START: Final = SLOW_DOWN.split("{", 1)[0][:12]
_LOG_LINE: Final = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_ISOLATE: Final = (
    "REDIS_URL",
    "BOTSCALE_REDIS_URL",
    "DATABASE_URL",
    "BOTSCALE_DATABASE_URL",
    "BOTSCALE_POSTGRES_DSN",
)


@dataclass
class SpamCheck:
    """The impatient user: presses per round and the "slow down" notices they got."""

    presses: int = 0
    rounds: list[list[Exchange]] = field(default_factory=list)
    notices: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    def count(self, toasts: dict[str, str]) -> None:
        """Read each round's toasts: notices, and presses answered at all."""
        self.notices = []
        self.answered = []
        for exchanges in self.rounds:
            texts = [toasts.get(e.callback_query_id or "") for e in exchanges]
            self.notices.append(sum(1 for t in texts if t and t.startswith(_NOTICE_START)))
            self.answered.append(sum(1 for t in texts if t is not None))

    @property
    def ok(self) -> bool:
        """Exactly one notice per window in which the user was limited."""
        return bool(self.rounds) and self.notices == [1] * len(self.rounds)


@dataclass
class StatsCheck:
    """Users who play one whole quiz and ask ``/stats`` before and after their answers are written.

    ``/stats`` is cached for minutes; the first answer is asked about before
    its batch is written, so only the invalidation on write makes the later
    ``/stats`` right.
    """

    users: int = 0
    right: int = 0
    replies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every player's final ``/stats`` (asked twice) matched their answers."""
        return self.users > 0 and self.right == self.users


@dataclass
class BroadcastCheck:
    """Did ``/broadcast`` reach everybody, how fast, with how many 429s."""

    recipients: int = 0
    reached: int = 0
    seconds: float = 0.0
    rate_limited: int = 0
    bot_summary: str = ""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.reached / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """Everybody reached, no 429."""
        return self.reached == self.recipients > 0 and self.rate_limited == 0


@dataclass
class DatabaseCheck:
    """The answers table against the answers the bot accepted (by update id)."""

    stored: int = 0
    accepted: int = 0
    missing: int = 0
    extra: int = 0
    duplicates: int = 0
    wrong_verdicts: int = 0

    @property
    def ok(self) -> bool:
        """Exactly the accepted answers, each once, with the verdict the user saw."""
        return (
            self.stored == self.accepted
            and not self.missing
            and not self.extra
            and not self.duplicates
            and not self.wrong_verdicts
        )


@dataclass
class DemoResult:
    """Everything the demo measured and checked."""

    report: LoadReport
    load: LoadResult
    spam: SpamCheck
    stats: StatsCheck
    broadcast: BroadcastCheck
    database: DatabaseCheck
    health_status: int
    health: dict[str, Any]
    bot_summary: str
    bot_exit_code: int | None
    rate_limited_total: int
    api_errors: dict[str, int]
    plot: str | None
    plot_error: str | None
    database_path: str
    elapsed: float

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return (
            self.spam.ok
            and self.stats.ok
            and self.broadcast.ok
            and self.database.ok
            and self.rate_limited_total == 0
            and self.bot_exit_code == 0
        )


class _Toasts:
    """Collects the bot's ``answerCallbackQuery`` texts by query id from the call log.

    The simulator keeps the last 10 000 calls; reading them twice a second
    keeps every toast of a run.  What the bot decided counts, even when the
    simulator refused the answer.
    """

    def __init__(self, sim: TelegramSimulator) -> None:
        self.sim = sim
        self.by_query: dict[str, str] = {}
        self._last: object = None

    def poll(self) -> None:
        calls = self.sim.calls
        start = 0
        if self._last is not None:
            for index in range(len(calls) - 1, -1, -1):
                if calls[index] is self._last:
                    start = index + 1
                    break
        for call in calls[start:]:
            if call.method.lower() == "answercallbackquery":
                query = str(call.params.get("callback_query_id", ""))
                self.by_query.setdefault(query, str(call.params.get("text", "")))
        if calls:
            self._last = calls[-1]

    async def run(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read() or b"{}")


async def _spam(user: VirtualUser, presses: int) -> list[Exchange]:
    """Press the first button ``presses`` times at once (answers are read later).

    The presses the rate limit drops are never answered: wait for them 3 s.
    """
    exchanges = [user.press(0) for _ in range(presses)]
    await asyncio.gather(*(_settle(e, 3.0) for e in exchanges))
    return exchanges


async def _play_quiz(
    user: VirtualUser, batch_wait: float, presses: list[Exchange]
) -> tuple[str, str]:
    """``/start``, answer every question, ``/stats`` before and after the answers are written.

    Returns the two final ``/stats`` replies.  Replies are read from the chat,
    not from the exchanges: under load the simulator may pair a late edit
    with a later update of the same chat.
    """
    await user.ask("/start", timeout=30.0)
    asked_early = False
    while True:
        buttons = [b for b in user.buttons() if str(b["callback_data"]).startswith("a:")]
        if not buttons:
            break
        before = str(buttons[0]["callback_data"])
        exchange = user.press(str(buttons[0]["text"]))
        presses.append(exchange)
        await _settle(exchange, 30.0)
        if not asked_early:
            asked_early = True
            await _score(user)  # cached now, before the answer is written
        for _ in range(300):  # the next question (or the end) replaces this one
            now = [b for b in user.buttons() if str(b["callback_data"]).startswith("a:")]
            if not now or str(now[0]["callback_data"]) != before:
                break
            await asyncio.sleep(0.1)
    await asyncio.sleep(batch_wait)
    return await _score(user), await _score(user)


async def _score(user: VirtualUser) -> str:
    """Send ``/stats`` and return the score message it brings."""

    def scores() -> list[str]:
        texts = [str(m.get("text", "")) for m in user.messages()]
        return [t for t in texts if t.startswith("📊")]

    seen = len(scores())
    user.send("/stats")
    for _ in range(300):
        found = scores()
        if len(found) > seen:
            return found[seen]
        await asyncio.sleep(0.1)
    return ""


async def _settle(exchange: Exchange, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await exchange.wait(timeout)


def _check_database(path: str, exchanges: list[Exchange], toasts: dict[str, str]) -> DatabaseCheck:
    verdicts = {CORRECT: True, WRONG: False}
    expected: dict[int, tuple[int, bool]] = {}
    for exchange in exchanges:
        text = toasts.get(exchange.callback_query_id or "")
        if text in verdicts:
            expected[exchange.update_id] = (exchange.user_id, verdicts[text])
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT update_id, user_id, correct FROM quizbot_answers").fetchall()
    counts = collections.Counter(int(r[0]) for r in rows)
    check = DatabaseCheck(stored=len(rows), accepted=len(expected))
    check.duplicates = sum(n - 1 for n in counts.values() if n > 1)
    check.missing = sum(1 for update_id in expected if update_id not in counts)
    for update_id, user_id, correct in rows:
        want = expected.get(int(update_id))
        if want is None or want[0] != int(user_id):
            check.extra += 1
        elif want[1] != bool(correct):
            check.wrong_verdicts += 1
    return check


def _bot_summary(output: list[str]) -> str:
    """The bot's shutdown log record: its monitor summary and botscale's counters."""
    for index, line in enumerate(output):
        if line.endswith("quiz bot stopped"):
            lines = []
            for follow in output[index + 1 :]:
                if _LOG_LINE.match(follow):
                    break
                lines.append(follow)
            return "\n".join(lines)
    return ""


async def _start_bot(
    sim: TelegramSimulator, env: dict[str, str], output: list[str]
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "examples.quizbot",
        cwd=str(REPO),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )

    async def read_output() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            output.append(raw.decode("utf-8", "replace").rstrip())

    reader = asyncio.create_task(read_output())
    deadline = time.monotonic() + 60.0
    while not sim.connected:
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("the quiz bot did not start:\n" + "\n".join(output[-30:]))
        await asyncio.sleep(0.05)
    return proc, reader


async def _quiet(sim: TelegramSimulator, limit: float = 30.0) -> None:
    """Wait (at most ``limit`` s) until the bot sent nothing for a second (its backlog is out)."""
    deadline = time.monotonic() + limit
    sent, since = sim.stats.messages_sent, time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 1.0:
        await asyncio.sleep(0.1)
        now_sent = sim.stats.messages_sent
        if now_sent != sent:
            sent, since = now_sent, time.monotonic()


async def _broadcast(
    sim: TelegramSimulator, admin: VirtualUser, recipients: set[int]
) -> BroadcastCheck:
    """The admin's ``/broadcast``; wait until every recipient has it."""
    limited_before = sim.stats.rate_limited
    t0 = time.monotonic()
    admin.send(f"/broadcast {BROADCAST_TEXT}")
    reached: set[int] = set()
    wait_until = t0 + 30.0 + len(recipients) / 10.0
    while len(reached) < len(recipients) and time.monotonic() < wait_until:
        for chat in recipients - reached:
            if any(m.get("text") == BROADCAST_TEXT for m in sim.sent_messages(chat)[-5:]):
                reached.add(chat)
        await asyncio.sleep(0.05)
    check = BroadcastCheck(
        recipients=len(recipients),
        reached=len(reached),
        seconds=time.monotonic() - t0,
        rate_limited=sim.stats.rate_limited - limited_before,
    )
    summary_deadline = time.monotonic() + 10.0
    while time.monotonic() < summary_deadline:
        last = admin.last_message()
        if last is not None and str(last.get("text", "")).startswith("📣 Broadcast done"):
            check.bot_summary = str(last["text"])
            break
        await asyncio.sleep(0.05)
    return check


async def run_demo(
    *,
    users: int = 300,
    duration: float = 60.0,
    ramp_steps: int = 3,
    think: tuple[float, float] = (6.0, 14.0),
    spam_presses: int = 45,
    spam_rounds: int = 1,
    spam_interval: float = 60.0,
    stats_users: int = 5,
    explain_latency: float = 1.0,
    p95_target: float = 1.0,
    bot_env: dict[str, str] | None = None,
    workdir: str | None = None,
    plot: str | None = "demo-latency.png",
    seed: int = 7,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo scenario and return what it measured (see the module docstring).

    Args:
        users: virtual users at full load.
        duration: seconds of load.
        ramp_steps: load levels (the plot needs 2 or more).
        think: seconds each user thinks before answering (a uniform range).
        spam_presses: presses of the impatient user per round (more than the
            per-user burst: ``BOTSCALE_USER_BURST``, or the rate's limit).
        spam_rounds: rounds of presses, ``spam_interval`` seconds apart.
        spam_interval: seconds between rounds: the rate limit's window
            (60 s for the default ``30/minute``).
        stats_users: players who check ``/stats`` against their answers.
        explain_latency: seconds the fake AI takes (``EXPLAIN_LATENCY``).
        p95_target: the latency target of the capacity report.
        bot_env: more environment for the bot (e.g. ``BOTSCALE_USER_RATE``).
        workdir: where the SQLite database goes (default: a temporary directory).
        plot: the latency plot file (``None``: no plot).
        seed: the virtual users' random seed.
        say: where progress lines go.
    """
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="quizbot-demo-"))
        db_path = os.path.join(workdir, "quizbot-demo.db")
        sim = await stack.enter_async_context(TelegramSimulator())
        admin, speedy = sim.user("Admin"), sim.user("Speedy")
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in _ISOLATE}
        env.update(
            {
                "TELEGRAM_BOT_TOKEN": sim.token,
                "TELEGRAM_API_URL": sim.base_url,
                "DATABASE_URL": f"sqlite:///{db_path}",
                "ADMIN_IDS": str(admin.id),
                "EXPLAIN_LATENCY": str(explain_latency),
                "BOTSCALE_MONITOR_PORT": str(port),
                "BOTSCALE_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
                **(bot_env or {}),
            }
        )
        say(
            "starting the quiz bot: python -m examples.quizbot, in its own process, "
            f"pointed at {sim.base_url}"
        )
        output: list[str] = []
        proc, reader = await _start_bot(sim, env, output)

        async def kill() -> None:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        stack.push_async_callback(kill)
        toasts = _Toasts(sim)
        watcher = asyncio.create_task(toasts.run())
        stack.callback(watcher.cancel)
        await admin.ask("/start", timeout=10.0)
        await speedy.ask("/start", timeout=10.0)

        say(
            f"{users} virtual users answer quizzes for {duration:g} s, ramping up in "
            f"{ramp_steps} steps (each thinks {think[0]:g}-{think[1]:g} s per question); "
            "Speedy hammers a button"
        )
        said = [-10.0]

        def progress(p: Progress) -> None:
            if p.elapsed - said[0] >= 10.0:
                said[0] = p.elapsed
                p95 = "-" if p.recent_p95 is None else f"{p.recent_p95:.3f} s"
                say(
                    f"  {p.elapsed:5.1f} s  {p.active_users:4d} users  {p.sent:6d} updates  "
                    f"{p.answered:6d} answered  recent p95 {p95}  429s {p.rate_limited}"
                )

        spam = SpamCheck(presses=spam_presses)

        async def impatient() -> None:
            await asyncio.sleep(min(5.0, duration / 4))
            for round_ in range(spam_rounds):
                if round_:
                    await asyncio.sleep(spam_interval)
                spam.rounds.append(await _spam(speedy, spam_presses))

        stats = StatsCheck(users=stats_users)
        player_users = [sim.user(f"Player {i + 1}") for i in range(stats_users)]
        player_presses: list[Exchange] = []
        batch_wait = float(env.get("BOTSCALE_BATCH_DELAY", "2")) + 1.0

        async def players() -> None:
            presses: list[list[Exchange]] = [[] for _ in player_users]
            outcomes = await asyncio.gather(
                *(_play_quiz(u, batch_wait, p) for u, p in zip(player_users, presses, strict=True))
            )
            await asyncio.sleep(0.5)
            toasts.poll()
            for mine, (first, again) in zip(presses, outcomes, strict=True):
                player_presses.extend(mine)
                verdicts = [toasts.by_query.get(e.callback_query_id or "") for e in mine]
                right, wrong = verdicts.count(CORRECT), verdicts.count(WRONG)
                wanted = f"{right}/{right + wrong} correct"
                stats.right += int(wanted in first and first == again)
                stats.replies.append(f"{first} (expected {wanted})")

        spammer = asyncio.create_task(impatient())
        checkers = asyncio.create_task(players())
        profile = LoadProfile(
            users=users, duration=duration, ramp_steps=ramp_steps, reply_timeout=10.0, seed=seed
        )
        result = await run_load(sim, profile, Scenario.quiz(think), on_progress=progress)
        await spammer
        await checkers
        report = build_report(
            result,
            p95_target=p95_target,
            target="examples.quizbot",
            framework="aiogram",
            mode="polling",
            peak_rss_bytes=_peak_rss(proc.pid),
        )

        await _quiet(sim)
        recipients = {e.user_id for e in result.exchanges} | {admin.id, speedy.id}
        recipients |= {u.id for u in player_users}
        say(f"the admin sends /broadcast to every user ({len(recipients)} users)")
        broadcast = await _broadcast(sim, admin, recipients)

        health_status, health = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/health")
        say("stopping the bot (SIGTERM: it finishes its updates and writes every answer)")
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 30.0)
        with contextlib.suppress(asyncio.TimeoutError):  # the last lines of its output
            await asyncio.wait_for(reader, 5.0)
        toasts.poll()
        spam.count(toasts.by_query)
        spam_exchanges = [e for exchanges in spam.rounds for e in exchanges]
        database = _check_database(
            db_path, [*result.exchanges, *spam_exchanges, *player_presses], toasts.by_query
        )
        plot_error = None
        if plot is not None:
            try:
                plot_report(report, plot)
            except (ImportError, ValueError) as exc:
                plot_error, plot = str(exc), None
        return DemoResult(
            report=report,
            load=result,
            spam=spam,
            stats=stats,
            broadcast=broadcast,
            database=database,
            health_status=health_status,
            health=health,
            bot_summary=_bot_summary(output),
            bot_exit_code=proc.returncode,
            rate_limited_total=sim.stats.rate_limited,
            api_errors=dict(sim.stats.errors_by_description),
            plot=plot,
            plot_error=plot_error,
            database_path=db_path,
            elapsed=time.monotonic() - started,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def format_result(result: DemoResult) -> str:
    """The demo's printout after the run."""
    spam, cast, db = result.spam, result.broadcast, result.database

    def mark(ok: bool) -> str:
        return "ok" if ok else "FAILED"

    checks = result.health.get("checks", {})
    lines = [
        "",
        "=" * 78,
        "Capacity report (botscale.testing: the quiz bot against the simulated Bot API)",
        "=" * 78,
        result.report.format(),
        "",
        f"Broadcast: {cast.reached}/{cast.recipients} users reached in {cast.seconds:.1f} s "
        f"({cast.rate:.1f} msg/s; Telegram allows about 30), {cast.rate_limited} answers 429"
        f"  [{mark(cast.ok)}]",
        f"  the bot told the admin: {cast.bot_summary or '(nothing yet)'}",
        f"Rate limit: Speedy pressed a button {spam.presses} times at once, "
        f"{len(spam.rounds)} time(s): {spam.answered} presses answered, slow-down notices "
        f"{spam.notices} (one per window)  [{mark(spam.ok)}]",
        f"/stats: {result.stats.right}/{result.stats.users} players who finished a quiz saw "
        f"exactly their answers (asked before and after the write; cached for 5 min)  "
        f"[{mark(result.stats.ok)}]",
        *(f"  {reply}" for reply in ([] if result.stats.ok else result.stats.replies)),
        f"Database: {db.stored} answers stored, {db.accepted} accepted by the bot "
        f"({db.missing} missing, {db.extra} extra, {db.duplicates} duplicates, "
        f"{db.wrong_verdicts} wrong verdicts)  [{mark(db.ok)}]",
        f"429 answers over the whole run: {result.rate_limited_total}  "
        f"[{mark(result.rate_limited_total == 0)}]",
        *(f"Bot API error {n}x: {text}" for text, n in result.api_errors.items()),
        "",
        "=" * 78,
        "The bot's own monitor (GET /health during the run, its summary at shutdown)",
        "=" * 78,
        f"/health: {result.health_status} {result.health.get('status', '?')}, checks "
        + ", ".join(f"{name}: {value}" for name, value in checks.items()),
        result.bot_summary or "(the bot printed no summary)",
        "",
    ]
    if result.plot:
        lines.append(f"Latency plot written to {result.plot}")
    elif result.plot_error:
        lines.append(f"No plot: {result.plot_error}")
    verdict = "all checks passed" if result.ok else "SOME CHECKS FAILED"
    lines.append(f"Demo finished in {result.elapsed:.0f} s: {verdict}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m examples.quizbot.demo``: run, print, exit 0 when every check passed."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.quizbot.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--users", type=int, default=300, help="virtual users at full load")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--ramp", type=int, default=3, help="load levels")
    parser.add_argument("--plot", default="demo-latency.png", help="the latency plot file")
    parser.add_argument("--keep", metavar="DIR", help="keep the SQLite database in DIR")
    args = parser.parse_args(argv)
    print("botscale demo: the example quiz bot under load, offline", flush=True)
    result = asyncio.run(
        run_demo(
            users=args.users,
            duration=args.duration,
            ramp_steps=args.ramp,
            plot=args.plot,
            workdir=args.keep,
            say=lambda line: print(line, flush=True),
        )
    )
    print(format_result(result), flush=True)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The load test: report maths, the in-process driver, and `botscale loadtest` end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

import pytest

from botscale import ConfigurationError
from botscale.testing import (
    Burst,
    Exchange,
    FloodLimits,
    LoadProfile,
    LoadResult,
    LoadTestError,
    PressButton,
    Scenario,
    SendText,
    TelegramSimulator,
    Think,
    build_report,
    run_load,
    run_loadtest_async,
    serve_bot,
)

ROOT = Path(__file__).resolve().parent.parent


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def restore_telebot_urls() -> Iterator[None]:
    from telebot import apihelper, asyncio_helper

    saved = apihelper.API_URL, asyncio_helper.API_URL
    yield
    apihelper.API_URL, asyncio_helper.API_URL = saved


# -- the report's maths (synthetic results, no bot) ----------------------------


def _result(
    stages: Sequence[tuple[int, Sequence[float | None]]], stage_length: float = 10.0
) -> LoadResult:
    profile = LoadProfile(
        users=stages[-1][0], duration=stage_length * len(stages), ramp_steps=len(stages)
    )
    result = LoadResult(
        profile, Scenario.chat(), stage_users=[u for u, _ in stages], stage_length=stage_length
    )
    update_id = 0
    for index, (_, latencies) in enumerate(stages):
        for latency in latencies:
            update_id += 1
            exchange = Exchange(update_id, "message", 1, 1, sent_at=100.0)
            exchange.tag = index
            if latency is not None:
                exchange._resolve(100.0 + latency, "sendMessage", {})
            result.exchanges.append(exchange)
    result.stage_rate_limited = [0] * len(stages)
    result.stage_errors = [0] * len(stages)
    result.elapsed = profile.duration
    return result


def test_capacity_is_the_last_stage_under_target_and_70_percent_is_recommended() -> None:
    fast = [0.1] * 100
    slowish = [0.1] * 96 + [2.0] * 4  # 96 % within 1 s: passes
    slow = [0.1] * 90 + [2.0] * 10  # 90 % within 1 s: fails
    report = build_report(_result([(10, fast), (20, slowish), (30, slow), (40, fast)]))
    assert [s.passed for s in report.stages] == [True, True, False, True]
    assert report.capacity_users == 20  # stages are read up to the first failure
    assert report.recommended_users == 14
    assert report.requests_per_minute_at_capacity == pytest.approx(600.0)  # 100 answers / 10 s
    assert report.requests_per_minute_at_recommended == pytest.approx(420.0)
    assert report.stages[1].p95 == pytest.approx(0.1)  # nearest rank: the 95th of 100
    assert report.stages[1].p99 == pytest.approx(2.0)
    assert report.stages[1].p50 == pytest.approx(0.1)
    assert report.replies == 400
    assert report.updates_sent == 400


def test_unanswered_updates_count_as_infinitely_late() -> None:
    answered_but_lossy = [0.1] * 90 + [None] * 10
    report = build_report(_result([(5, [0.1] * 10), (10, answered_but_lossy)]))
    assert report.stages[1].p95 == pytest.approx(0.1)  # over answered updates only...
    assert not report.stages[1].passed  # ...but 10 % never answered: the stage fails
    assert report.capacity_users == 5
    assert report.unanswered == 10


def test_a_ramp_whose_first_stage_fails_has_zero_capacity_and_says_why() -> None:
    report = build_report(_result([(50, [3.0] * 10), (100, [5.0] * 10)]))
    assert report.capacity_users == 0
    assert report.recommended_users == 0
    assert any("first stage" in note for note in report.notes)


def test_report_serialises_to_json_and_text() -> None:
    report = build_report(_result([(10, [0.2] * 20), (20, [0.3] * 20)]), target="bot:build")
    data = json.loads(report.to_json())
    assert data["capacity_users"] == 20
    assert data["stages"][0]["users"] == 10
    assert set(data) >= {
        "replies",
        "unanswered",
        "errors",
        "rate_limited",
        "p50",
        "p95",
        "p99",
        "max",
        "replies_per_second",
        "peak_rss_bytes",
        "recommended_users",
        "requests_per_minute_at_capacity",
        "requests_per_minute_at_recommended",
    }
    text = report.format()
    assert "capacity          20 users" in text
    assert "recommended       14 users" in text


def test_profiles_and_scenarios_reject_bad_input() -> None:
    with pytest.raises(ConfigurationError, match="users"):
        LoadProfile(users=0, duration=1.0)
    with pytest.raises(ConfigurationError, match="ramp_steps"):
        LoadProfile(users=3, duration=1.0, ramp_steps=5)
    with pytest.raises(ConfigurationError, match="steps"):
        Scenario(())
    with pytest.raises(ConfigurationError, match="only Think"):
        Scenario((Think(1.0),))
    with pytest.raises(TypeError, match="step"):
        Scenario(("hello",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="scenario must be one of"):
        Scenario.named("party")
    with pytest.raises(ConfigurationError, match="high"):
        Think(2.0, 1.0)


# -- the driver, in process ----------------------------------------------------


async def test_quiz_scenario_presses_the_bots_buttons() -> None:
    build = load_example("quiz_aiogram").build
    # Quick players would meet the 1 message/s per chat limit: switched off here.
    async with TelegramSimulator(flood_limits=FloodLimits.off()) as sim:
        async with serve_bot(build(sim.base_url, sim.token), sim, poll_timeout=5):
            await sim.wait_connected(10)
            result = await run_load(
                sim,
                LoadProfile(users=4, duration=2.5, reply_timeout=3.0, seed=1),
                Scenario.quiz(think=(0.1, 0.2)),
            )
    report = build_report(result)
    kinds = {e.kind for e in result.exchanges}
    assert kinds == {"command", "callback_query"}
    callbacks = [e for e in result.exchanges if e.kind == "callback_query"]
    assert len(callbacks) >= 4
    assert all(e.answer_method == "answerCallbackQuery" for e in callbacks if e.answered)
    assert report.unanswered == 0
    assert report.skipped_steps == 0
    # The quiz edits its message into each next question, then into the score.
    assert sim.stats.calls["editMessageText"] >= len(callbacks) - 4


async def test_bursts_meet_the_per_chat_flood_limit_and_the_report_counts_it() -> None:
    build = load_example("echo_telebot_async").build
    async with TelegramSimulator() as sim:
        async with serve_bot(build(sim.base_url, sim.token), sim, poll_timeout=5):
            await sim.wait_connected(10)
            scenario = Scenario((Burst(5), Think(1.0)), think=(0.0, 0.0), name="bursts")
            result = await run_load(
                sim, LoadProfile(users=2, duration=1.5, reply_timeout=2.0), scenario
            )
        stats = sim.stats
    report = build_report(result)
    # One burst of five per user; each private chat takes a burst of three, then 429s.
    assert report.updates_sent == 10
    assert report.replies == stats.messages_sent == 6
    assert report.rate_limited == stats.rate_limited == 4
    assert dict(stats.rate_limited_by_chat) == {e.chat_id: 2 for e in result.exchanges}
    assert report.unanswered == 4  # telebot does not retry after a 429
    assert any("429" in note for note in report.notes)


async def test_group_chats_and_texts_are_all_answered() -> None:
    build = load_example("echo_telebot_async").build
    async with TelegramSimulator(flood_limits=FloodLimits.off()) as sim:
        async with serve_bot(build(sim.base_url, sim.token), sim, poll_timeout=5):
            await sim.wait_connected(10)
            scenario = Scenario((SendText("hi {n} from {user}"),), think=(0.05, 0.1))
            result = await run_load(sim, LoadProfile(users=6, duration=1.0, group_size=3), scenario)
    assert {e.chat_id for e in result.exchanges} == {g for g in sim.api.chats if g < 0}
    assert len({e.chat_id for e in result.exchanges}) == 2
    assert all(e.answered for e in result.exchanges)


async def test_a_silent_bot_aborts_the_run_early() -> None:
    async with TelegramSimulator() as sim:
        user = sim.user()
        started = time.monotonic()
        result = await run_load(
            sim,
            LoadProfile(users=2, duration=60.0, reply_timeout=0.5),
            Scenario((PressButton(fallback="hello"),), think=(0.0, 0.1)),
        )
        assert user.id not in {e.user_id for e in result.exchanges}
    assert result.aborted is not None
    assert "answered none" in result.aborted
    assert time.monotonic() - started < 10.0


# -- `botscale loadtest` end to end (the bot in its own process) ----------------

SILENT = '''
import aiohttp

async def run(base_url, token, stop):
    """Polls (so it connects) but never answers anything."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.post(f"{base_url}/bot{token}/getUpdates", json={"timeout": 1}) as r:
                await r.read()
'''

ABSENT = '''
async def run(base_url, token, stop):
    """Never talks to the Bot API at all."""
    await stop.wait()
'''

BROKEN = """
def build(base_url, token):
    raise RuntimeError("BOT_TOKEN is not configured")
"""

SLOW_PTB = """
import asyncio
from telegram.ext import ApplicationBuilder, MessageHandler, filters

async def slow_echo(update, context):
    await asyncio.sleep(0.2)  # a known, artificial handler delay
    await update.effective_message.reply_text(update.effective_message.text)

def build(base_url, token):
    builder = ApplicationBuilder().token(token).base_url(base_url + "/bot")
    app = builder.concurrent_updates(True).build()
    app.add_handler(MessageHandler(filters.TEXT, slow_echo))
    return app
"""


def _cli(*args: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "botscale", "loadtest", *args, "--quiet"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def test_cli_unimportable_target_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    started = time.monotonic()
    out = _cli("no_such_module:build", "--duration", "30", cwd=tmp_path)
    assert out.returncode == 1
    assert "the target could not be imported" in out.stderr
    assert "No module named 'no_such_module'" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.monotonic() - started < 20.0


def test_cli_target_that_fails_to_build_is_reported(tmp_path: Path) -> None:
    (tmp_path / "broken_bot.py").write_text(BROKEN)
    out = _cli("broken_bot:build", cwd=tmp_path)
    assert out.returncode == 1
    assert "failed to build the bot" in out.stderr
    assert "BOT_TOKEN is not configured" in out.stderr


def test_cli_silent_bot_exits_non_zero_quickly(tmp_path: Path) -> None:
    (tmp_path / "silent_bot.py").write_text(SILENT)
    started = time.monotonic()
    out = _cli("silent_bot:run", "--duration", "60", "--reply-timeout", "1", "--json", cwd=tmp_path)
    assert out.returncode == 1
    assert "answered none of the" in out.stderr
    payload = json.loads(out.stdout)
    assert payload["report"]["replies"] == 0
    assert payload["report"]["updates_sent"] > 0
    assert time.monotonic() - started < 30.0


async def test_bot_that_never_connects_times_out(tmp_path: Path) -> None:
    (tmp_path / "absent_bot.py").write_text(ABSENT)
    with pytest.raises(LoadTestError, match=r"did not connect within 1\.5 s"):
        await run_loadtest_async("absent_bot:run", app_dir=str(tmp_path), startup_timeout=1.5)


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    out = _cli("x:y", "--plot", "p.png", cwd=tmp_path)
    assert (out.returncode, out.stderr.strip()) == (
        2,
        "botscale loadtest: error: --plot needs --ramp",
    )
    out = _cli("x:y", "--workers", "2", cwd=tmp_path)
    assert out.returncode == 2
    assert "workers > 1 needs mode='webhook'" in out.stderr


@pytest.mark.slow
async def test_latency_matches_a_known_200ms_handler_delay(tmp_path: Path) -> None:
    (tmp_path / "slow_ptb.py").write_text(SLOW_PTB)
    report = await run_loadtest_async(
        "slow_ptb:build",
        app_dir=str(tmp_path),
        users=8,
        duration=4.0,
        think=(0.2, 0.5),
        flood_limits=FloodLimits.off(),
        seed=3,
    )
    assert report.framework == "ptb"
    assert report.unanswered == 0
    assert report.replies >= 30
    assert report.p50 is not None
    assert report.p95 is not None
    # Never faster than the handler; only loopback and scheduling on top of it.
    assert 0.2 <= report.p50 <= 0.4
    assert report.p95 < 1.0
    assert report.peak_rss_bytes is not None
    assert report.peak_rss_bytes > 10 * 2**20


@pytest.mark.slow
def test_cli_ramp_webhook_two_workers_json_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "ramp.svg"
    out = _cli(
        "examples.echo_telebot:build",
        "--app-dir",
        str(ROOT),
        "--mode",
        "webhook",
        "--workers",
        "2",
        "--users",
        "12",
        "--duration",
        "3",
        "--ramp",
        "--ramp-steps",
        "3",
        "--think",
        "0.2-0.5",
        "--no-flood-limits",
        "--json",
        "--plot",
        str(plot),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["framework"] == "telebot"
    assert report["workers"] == 2
    assert report["mode"] == "webhook"
    assert [s["users"] for s in report["stages"]] == [4, 8, 12]
    assert report["replies"] == report["updates_sent"] > 0
    assert report["capacity_users"] == 12
    assert report["recommended_users"] == 8
    assert plot.read_text().lstrip().startswith("<?xml")


def test_python_dash_m_botscale_shows_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "botscale", "loadtest", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0
    assert "--p95-target" in out.stdout
    # The command line imports no heavy optional dependency just to parse arguments.
    heavy = ("aiohttp", "rich", "matplotlib")
    code = f"import sys, botscale.cli; print(any(m in sys.modules for m in {heavy!r}))"
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "False"
    assert asyncio.iscoroutinefunction(run_loadtest_async)


async def test_cli_simulator_plays_users_against_a_bot_started_by_hand() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = "4242:by-hand"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "botscale", "simulator",
        "--port", str(port), "--token", token,
        "--users", "4", "--duration", "2", "--think", "0.2-0.4", "--no-flood-limits", "--json",
        "--startup-timeout", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        banner = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert banner.strip() == f"Bot API simulator on http://127.0.0.1:{port}"
        base_url = f"http://127.0.0.1:{port}"
        bot = load_example("echo_telebot_async").build(base_url, token)
        async with serve_bot(bot, base_url, token=token, poll_timeout=1):
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout)
    assert report["users"] == 4
    assert report["replies"] == report["updates_sent"] > 0
    summary = stderr.decode().splitlines()[-1]
    assert summary.startswith(f"botscale simulator: {report['updates_sent']} updates, ")

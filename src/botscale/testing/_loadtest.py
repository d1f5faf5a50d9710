"""``botscale loadtest``: a real bot, in its own process, against simulated Telegram.

The simulator and the virtual users run in this process; the bot runs in a
child process (``python -m botscale.testing._runner TARGET …``) so it has an
interpreter of its own, its memory is measured alone, and a bot that hangs
can always be stopped.  Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import Final, Literal

from .._errors import BotscaleError, ConfigurationError
from .._validation import check_positive, check_positive_int, check_type
from ._flood import FloodLimits
from ._load import LoadProfile, Progress, Scenario, run_load
from ._report import LoadReport, build_report
from ._runner import EXIT_BUILD, EXIT_IMPORT, FRAMEWORKS
from ._simulator import TelegramSimulator

__all__ = ["LoadTestError", "run_loadtest", "run_loadtest_async"]

_TAIL: Final = 30


class LoadTestError(BotscaleError):
    """The load test could not measure the bot (it did not start, died or never answered).

    Attributes:
        report: what was measured before the failure, if anything.
        output: the last lines the bot process printed.
    """

    def __init__(self, message: str, *, report: LoadReport | None = None, output: str = "") -> None:
        super().__init__(message)
        self.report = report
        self.output = output


class _BotProcess:
    """One bot worker process, with its output tail and memory high-water mark."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL)
        self.peak_rss = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        # Read chunks, not lines: a huge line must not stop the reader (and then
        # block the bot on a full pipe).
        assert self.proc.stdout is not None
        pending = b""
        while True:
            chunk = await self.proc.stdout.read(65536)
            if not chunk:
                if pending:
                    self._keep(pending)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._keep(line)
            if len(pending) > 65536:
                self._keep(pending)
                pending = b""

    def _keep(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip()
        self.tail.append(text if len(text) <= 2000 else text[:2000] + " …")

    def sample_rss(self) -> None:
        rss = _peak_rss(self.proc.pid)
        if rss is not None:
            self.peak_rss = max(self.peak_rss, rss)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def output(self) -> str:
        return "\n".join(self.tail)

    async def stop(self, timeout: float) -> None:
        """Close stdin (the runner's stop signal), then terminate, then kill."""
        self.sample_rss()
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for action in (None, self.proc.terminate, self.proc.kill):
            if action is not None and self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout if action is None else 3.0)
                break
            except asyncio.TimeoutError:
                continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.reader, 2.0)


def _peak_rss(pid: int) -> int | None:
    """The process's peak resident set size in bytes (Linux VmHWM, else psutil's RSS)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


def _cpu_seconds(bots: list[_BotProcess]) -> float | None:
    """User + system CPU seconds of the bot processes so far (Linux /proc, else psutil)."""
    total = 0.0
    for bot in bots:
        seconds = _process_cpu(bot.proc.pid)
        if seconds is None:
            return None
        total += seconds
    return total


def _process_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _exit_reason(code: int | None) -> str:
    if code == EXIT_IMPORT:
        return "the target could not be imported"
    if code == EXIT_BUILD:
        return "the target function failed to build the bot"
    return f"the bot process exited with code {code}"


async def run_loadtest_async(
    target: str,
    *,
    users: int = 10,
    duration: float = 10.0,
    ramp_steps: int = 1,
    mode: Literal["polling", "webhook"] = "polling",
    framework: str = "auto",
    workers: int = 1,
    scenario: Scenario | str = "chat",
    think: tuple[float, float] | None = None,
    group_size: int = 0,
    p95_target: float = 1.0,
    reply_timeout: float = 10.0,
    startup_timeout: float = 30.0,
    flood_limits: FloodLimits | None = None,
    app_dir: str | None = None,
    poll_timeout: int = 10,
    seed: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> LoadReport:
    """Load-test the bot built by ``target`` and return its capacity report.

    ``target`` is ``"package.module:function"``.  The function is called in
    a child process as ``function(base_url, token)`` and returns the bot:
    ``(aiogram.Dispatcher, aiogram.Bot)``, a python-telegram-bot
    ``Application``, a ``telebot.TeleBot`` / ``AsyncTeleBot`` — or the
    function itself is ``async def function(base_url, token, stop_event)``
    and runs any bot until ``stop_event`` is set.  ``base_url`` is the
    simulator's root (``http://127.0.0.1:PORT``): see docs/simulator.md for
    how each framework takes it.

    Args:
        target: ``"module:function"``, importable from ``app_dir``.
        users: virtual users at full load.
        duration: seconds of load.
        ramp_steps: ``1``, or ``k >= 2`` stages of growing load (capacity search).
        mode: ``"polling"`` or ``"webhook"``.
        framework: ``"auto"`` or one of ``aiogram``, ``ptb``, ``telebot``,
            ``telebot-async``, ``callable``.
        workers: bot processes; more than one needs webhook mode (the
            simulator then round-robins updates over them like a load balancer).
        scenario: a :class:`Scenario` or a built-in name (``chat``,
            ``commands``, ``quiz``, ``bursts``).
        think: ``(low, high)`` think-time seconds, overriding the scenario's.
        group_size: ``0`` for private chats, ``k`` for group chats of ``k`` users.
        p95_target: the latency target (seconds) that defines capacity.
        reply_timeout: seconds a user waits for an answer; also how long a
            bot may stay silent before the run is aborted.
        startup_timeout: seconds the bot may take to poll or set its webhook.
        flood_limits: Telegram's flood limits (default on; ``FloodLimits.off()``).
        app_dir: directory put first on the child's ``sys.path`` (default: cwd).
        poll_timeout: the long-poll timeout the bot uses.
        seed: random seed of the users.
        on_progress: called about twice a second with a :class:`Progress`.
        on_status: called with one-line status messages (starting, stopping…).

    Raises:
        LoadTestError: the bot could not be imported, built or started, died,
            or answered nothing (``.report`` holds what was measured).
        ConfigurationError: bad arguments.
    """
    check_type("target", target, str, "a 'module:function' string")
    if ":" not in target:
        raise ConfigurationError(f"target must look like 'package.module:function', got {target!r}")
    if mode not in ("polling", "webhook"):
        raise ConfigurationError(f"mode must be 'polling' or 'webhook', got {mode!r}")
    if framework != "auto" and framework not in FRAMEWORKS:
        raise ConfigurationError(
            f"framework must be 'auto' or one of {FRAMEWORKS}, got {framework!r}"
        )
    check_positive_int("workers", workers)
    if workers > 1 and mode != "webhook":
        raise ConfigurationError("workers > 1 needs mode='webhook' (pollers would conflict)")
    check_positive("p95_target", p95_target)
    check_positive("startup_timeout", startup_timeout)
    check_positive_int("poll_timeout", poll_timeout)
    if isinstance(scenario, str):
        scenario = Scenario.named(scenario, think)
    elif think is not None:
        scenario = scenario.with_think(*think)
    profile = LoadProfile(
        users=users,
        duration=duration,
        ramp_steps=ramp_steps,
        group_size=group_size,
        reply_timeout=reply_timeout,
        seed=seed,
    )
    status = on_status or (lambda message: None)

    async with TelegramSimulator(flood_limits=flood_limits, webhook_pool=workers > 1) as sim:
        command = _runner_command(target, sim, mode, framework, poll_timeout, app_dir)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        bots: list[_BotProcess] = []
        status(f"starting {workers} bot process(es): {target} ({mode})")
        try:
            for _ in range(workers):
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                )
                bots.append(_BotProcess(proc))
            await _wait_ready(sim, bots, mode, workers, startup_timeout)
            framework_seen = await _framework_from_output(bots) or framework
            status(f"bot connected ({framework_seen}); playing {users} users for {duration:g} s")

            def died() -> str | None:
                for bot in bots:
                    if bot.exited:
                        return f"{_exit_reason(bot.proc.returncode)} during the run"
                return None

            async def sample_memory() -> None:
                while True:
                    for bot in bots:
                        bot.sample_rss()
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(sample_memory())
            wall0, cpu0 = time.monotonic(), time.process_time()
            bot_cpu0 = _cpu_seconds(bots)
            try:
                result = await run_load(
                    sim,
                    profile,
                    scenario,
                    on_progress=on_progress,
                    should_abort=died,
                )
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            wall = max(1e-9, time.monotonic() - wall0)
            sim_cpu = 100.0 * (time.process_time() - cpu0) / wall
            bot_cpu1 = _cpu_seconds(bots)
            bot_cpu = None
            if bot_cpu0 is not None and bot_cpu1 is not None:
                bot_cpu = 100.0 * (bot_cpu1 - bot_cpu0) / wall
        finally:
            status("stopping the bot")
            sim.release_pollers()
            await asyncio.gather(*(bot.stop(10.0) for bot in bots))
        peaks = [b.peak_rss for b in bots if b.peak_rss]
        report = build_report(
            result,
            p95_target=p95_target,
            target=target,
            framework=framework_seen,
            mode=mode,
            workers=workers,
            peak_rss_bytes=sum(peaks) if peaks else None,
            bot_cpu_percent=bot_cpu,
            simulator_cpu_percent=sim_cpu,
        )
    output = "\n".join(b.output() for b in bots)
    if report.aborted is not None:
        raise LoadTestError(f"load test aborted: {report.aborted}", report=report, output=output)
    if report.updates_sent and report.replies == 0:
        raise LoadTestError(
            f"the bot answered none of the {report.updates_sent} updates it was sent",
            report=report,
            output=output,
        )
    return report


def _runner_command(
    target: str,
    sim: TelegramSimulator,
    mode: str,
    framework: str,
    poll_timeout: int,
    app_dir: str | None,
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "botscale.testing._runner",
        target,
        "--base-url",
        sim.base_url,
        "--token",
        sim.token,
        "--mode",
        mode,
        "--framework",
        framework,
        "--poll-timeout",
        str(poll_timeout),
        "--app-dir",
        os.path.abspath(app_dir or os.getcwd()),
    ]


async def _wait_ready(
    sim: TelegramSimulator,
    bots: list[_BotProcess],
    mode: str,
    workers: int,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if mode == "webhook" and workers > 1:
            ready = len(sim.webhook_urls) >= workers
        else:
            ready = sim.connected
        if ready:
            return
        for bot in bots:
            if bot.exited:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(bot.reader, 2.0)
                output = bot.output()
                raise LoadTestError(
                    f"{_exit_reason(bot.proc.returncode)} before it connected:\n{output}",
                    output=output,
                )
        if time.monotonic() > deadline:
            output = "\n".join(b.output() for b in bots)
            raise LoadTestError(
                f"the bot did not connect within {timeout:g} s: it neither called getUpdates "
                f"nor setWebhook on {sim.base_url}. Does the target point the bot at the "
                f"base URL and token it is given?\n{output}",
                output=output,
            )
        await asyncio.sleep(0.05)


async def _framework_from_output(bots: list[_BotProcess]) -> str | None:
    """The framework the runner announced (its banner may trail the first poll a little)."""
    for _ in range(40):
        for line in bots[0].tail:
            if line.startswith("botscale-runner: ") and " bot running " in line:
                return line.split()[1]
        await asyncio.sleep(0.05)
    return None


def run_loadtest(
    target: str,
    *,
    users: int = 10,
    duration: float = 10.0,
    ramp_steps: int = 1,
    mode: Literal["polling", "webhook"] = "polling",
    framework: str = "auto",
    workers: int = 1,
    scenario: Scenario | str = "chat",
    think: tuple[float, float] | None = None,
    group_size: int = 0,
    p95_target: float = 1.0,
    reply_timeout: float = 10.0,
    startup_timeout: float = 30.0,
    flood_limits: FloodLimits | None = None,
    app_dir: str | None = None,
    poll_timeout: int = 10,
    seed: int | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> LoadReport:
    """Blocking :func:`run_loadtest_async` (same arguments); runs its own event loop.

    Raises:
        LoadTestError: see :func:`run_loadtest_async`.
    """
    return asyncio.run(
        run_loadtest_async(
            target,
            users=users,
            duration=duration,
            ramp_steps=ramp_steps,
            mode=mode,
            framework=framework,
            workers=workers,
            scenario=scenario,
            think=think,
            group_size=group_size,
            p95_target=p95_target,
            reply_timeout=reply_timeout,
            startup_timeout=startup_timeout,
            flood_limits=flood_limits,
            app_dir=app_dir,
            poll_timeout=poll_timeout,
            seed=seed,
            on_progress=on_progress,
            on_status=on_status,
        )
    )

"""The ``botscale`` command line (also ``python -m botscale``).

``botscale loadtest TARGET`` measures a bot's capacity against the Bot API
simulator; ``botscale simulator`` serves the simulator for a bot started by
hand; see docs/simulator.md.  Optional dependencies — rich for the live
progress bar, matplotlib for ``--plot`` (extra ``cli``), aiohttp for the
simulator (extra ``testing``) — are imported only when used.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import BotscaleError, ConfigurationError

if TYPE_CHECKING:
    from .testing._load import Progress

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _think(text: str) -> tuple[float, float]:
    try:
        low, _, high = text.partition("-")
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"think must be SECONDS or LOW-HIGH seconds, e.g. 1-3, got {text!r}"
        ) from None
    if pair[0] < 0 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"think must be 0 <= LOW <= HIGH, got {text!r}")
    return pair


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``botscale`` command."""
    parser = argparse.ArgumentParser(
        prog="botscale", description="Scaling tools for Python Telegram bots."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lt = commands.add_parser(
        "loadtest",
        help="measure a bot's capacity against a simulated Telegram Bot API",
        description=(
            "Start the Bot API simulator, start the bot built by TARGET in its own process, "
            "play virtual users against it and print a capacity report."
        ),
    )
    lt.add_argument(
        "target",
        metavar="TARGET",
        help="module:function; function(base_url, token) returns the bot (see docs/simulator.md)",
    )
    lt.add_argument("--users", type=int, default=10, help="virtual users at full load (10)")
    lt.add_argument("--duration", type=float, default=10.0, help="seconds of load (10)")
    lt.add_argument(
        "--ramp",
        action="store_true",
        help="start users in stages and find the largest count whose p95 meets --p95-target",
    )
    lt.add_argument("--ramp-steps", type=int, default=5, help="stages of the ramp (5)")
    lt.add_argument(
        "--framework",
        default="auto",
        choices=("auto", "aiogram", "ptb", "telebot", "telebot-async", "callable"),
        help="what TARGET returns (auto-detected)",
    )
    lt.add_argument("--mode", default="polling", choices=("polling", "webhook"))
    lt.add_argument(
        "--workers", type=int, default=1, help="bot processes behind one webhook (webhook mode)"
    )
    lt.add_argument(
        "--scenario",
        default="chat",
        choices=("chat", "commands", "quiz", "bursts"),
        help="what each user does (chat)",
    )
    lt.add_argument(
        "--think", type=_think, default=None, help="think time LOW-HIGH seconds (scenario's)"
    )
    lt.add_argument("--group-size", type=int, default=0, help="users per group chat (0: private)")
    lt.add_argument("--p95-target", type=float, default=1.0, help="latency target in seconds (1.0)")
    lt.add_argument(
        "--reply-timeout", type=float, default=10.0, help="seconds a user waits for a reply (10)"
    )
    lt.add_argument(
        "--startup-timeout", type=float, default=30.0, help="seconds the bot may take to start"
    )
    lt.add_argument(
        "--no-flood-limits", action="store_true", help="do not enforce Telegram's flood limits"
    )
    lt.add_argument("--app-dir", default=None, help="directory to import TARGET from (cwd)")
    lt.add_argument("--seed", type=int, default=None, help="random seed of the users")
    lt.add_argument("--json", action="store_true", help="print the report as JSON")
    lt.add_argument(
        "--plot",
        metavar="FILE",
        default=None,
        help="draw latency vs users (.png/.svg, needs --ramp)",
    )
    lt.add_argument("--quiet", action="store_true", help="no progress display")
    lt.set_defaults(func=_loadtest)

    sm = commands.add_parser(
        "simulator",
        help="serve the Bot API simulator for a bot you start yourself",
        description=(
            "Serve the Bot API simulator on HOST:PORT for --duration seconds (or until Ctrl-C). "
            "Point your bot at the printed base URL and token. With --users, virtual users play "
            "against the first bot that connects and a capacity report is printed."
        ),
    )
    sm.add_argument("--host", default="127.0.0.1", help="interface (127.0.0.1)")
    sm.add_argument("--port", type=int, default=8081, help="TCP port (8081; 0 picks a free one)")
    sm.add_argument("--token", default=None, help="bot token to accept (random by default)")
    sm.add_argument(
        "--duration", type=float, default=600.0, help="seconds to serve or to play users (600)"
    )
    sm.add_argument("--users", type=int, default=0, help="virtual users to play (0: only serve)")
    sm.add_argument("--scenario", default="chat", choices=("chat", "commands", "quiz", "bursts"))
    sm.add_argument("--think", type=_think, default=None, help="think time LOW-HIGH seconds")
    sm.add_argument("--ramp", action="store_true", help="start users in stages")
    sm.add_argument("--ramp-steps", type=int, default=5, help="stages of the ramp (5)")
    sm.add_argument("--p95-target", type=float, default=1.0, help="latency target in seconds")
    sm.add_argument("--reply-timeout", type=float, default=10.0, help="seconds a user waits")
    sm.add_argument(
        "--startup-timeout", type=float, default=120.0, help="seconds to wait for the bot (120)"
    )
    sm.add_argument("--no-flood-limits", action="store_true", help="no Telegram flood limits")
    sm.add_argument("--json", action="store_true", help="print the report as JSON")
    sm.set_defaults(func=_simulator)
    return parser


def _simulator(args: argparse.Namespace) -> int:
    import asyncio

    try:
        from .testing._flood import FloodLimits
        from .testing._load import LoadProfile, Scenario, run_load
        from .testing._report import build_report
        from .testing._simulator import TelegramSimulator
    except ImportError as exc:
        print(f"botscale simulator: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        sim = TelegramSimulator(
            token=args.token,
            host=args.host,
            port=args.port,
            flood_limits=FloodLimits.off() if args.no_flood_limits else None,
        )
        profile = None
        if args.users:
            profile = LoadProfile(
                users=args.users,
                duration=args.duration,
                ramp_steps=args.ramp_steps if args.ramp else 1,
                reply_timeout=args.reply_timeout,
            )
        scenario = Scenario.named(args.scenario, args.think)
    except (ConfigurationError, TypeError, ValueError) as exc:
        print(f"botscale simulator: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def serve() -> int:
        async with sim:
            print(
                f"Bot API simulator on {sim.base_url}\n"
                f"  token              {sim.token}\n"
                f"  aiogram            TelegramAPIServer.from_base({sim.base_url!r})\n"
                f"  python-telegram-bot  base_url={sim.base_url + '/bot'!r}\n"
                f"  telebot            apihelper.API_URL = {sim.base_url + '/bot{0}/{1}'!r}",
                file=sys.stderr,
                flush=True,
            )
            if profile is None:
                await asyncio.sleep(args.duration)
                return EXIT_OK
            try:
                await sim.wait_connected(args.startup_timeout)
            except TimeoutError as exc:
                print(f"botscale simulator: error: {exc}", file=sys.stderr)
                return EXIT_FAILED
            print("botscale: bot connected; playing users", file=sys.stderr, flush=True)
            result = await run_load(sim, profile, scenario, on_progress=_PlainProgress())
            report = build_report(
                result, p95_target=args.p95_target, target="external bot", mode="external"
            )
            print(report.to_json() if args.json else report.format())
            return EXIT_FAILED if report.aborted or not report.replies else EXIT_OK

    try:
        code = asyncio.run(serve())
    except KeyboardInterrupt:
        code = EXIT_OK
    stats = sim.stats
    print(
        f"botscale simulator: {stats.updates} updates, {stats.replies} replies, "
        f"{stats.rate_limited} x 429, {stats.errors} errors; calls {dict(stats.calls)}",
        file=sys.stderr,
    )
    return code


class _PlainProgress:
    """One line every few seconds on stderr, for logs and dumb terminals."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self.last = 0.0
        self.finished = False

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.elapsed >= p.duration
        if self.finished or (now - self.last < self.every and not done):
            return
        self.last = now
        self.finished = done
        p95 = "-" if p.recent_p95 is None else f"{p.recent_p95:.3f} s"
        print(
            f"[{p.elapsed:6.1f}/{p.duration:g} s] users {p.active_users}  sent {p.sent}  "
            f"answered {p.answered}  p95 {p95}  429s {p.rate_limited}  errors {p.errors}",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        pass


class _RichProgress:
    """A live progress bar on stderr (rich, extra ``cli``)."""

    def __init__(self, duration: float) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]loadtest"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            transient=True,
        )
        self.task = self.progress.add_task("load", total=duration, info="starting")
        self.progress.start()

    def __call__(self, p: Progress) -> None:
        p95 = "-" if p.recent_p95 is None else f"{p.recent_p95:.3f}s"
        info = (
            f"users {p.active_users}  sent {p.sent}  answered {p.answered}  "
            f"p95 {p95}  429s {p.rate_limited}"
        )
        self.progress.update(self.task, completed=p.elapsed, info=info)

    def close(self) -> None:
        self.progress.stop()


def _progress_display(args: argparse.Namespace) -> Any:
    if args.quiet:
        return None
    if sys.stderr.isatty():
        try:
            return _RichProgress(args.duration)
        except ImportError:
            pass
    return _PlainProgress()


def _loadtest(args: argparse.Namespace) -> int:
    if args.plot and not args.ramp:
        print("botscale loadtest: error: --plot needs --ramp", file=sys.stderr)
        return EXIT_USAGE
    try:
        from .testing._flood import FloodLimits
        from .testing._loadtest import LoadTestError, run_loadtest
        from .testing._report import plot_report
    except ImportError as exc:
        print(f"botscale loadtest: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    display = _progress_display(args)

    def status(message: str) -> None:
        if not args.quiet:
            print(f"botscale: {message}", file=sys.stderr, flush=True)

    on_progress: Callable[[Progress], None] | None = display
    try:
        report = run_loadtest(
            args.target,
            users=args.users,
            duration=args.duration,
            ramp_steps=args.ramp_steps if args.ramp else 1,
            mode=args.mode,
            framework=args.framework,
            workers=args.workers,
            scenario=args.scenario,
            think=args.think,
            group_size=args.group_size,
            p95_target=args.p95_target,
            reply_timeout=args.reply_timeout,
            startup_timeout=args.startup_timeout,
            flood_limits=FloodLimits.off() if args.no_flood_limits else None,
            app_dir=args.app_dir,
            seed=args.seed,
            on_progress=on_progress,
            on_status=status,
        )
    except (ConfigurationError, TypeError) as exc:
        _close(display)
        print(f"botscale loadtest: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LoadTestError as exc:
        _close(display)
        print(f"botscale loadtest: error: {exc}", file=sys.stderr)
        if args.json:
            import json

            payload = {"error": str(exc), "report": exc.report.to_dict() if exc.report else None}
            print(json.dumps(payload, indent=2))
        elif exc.report is not None:
            print(exc.report.format())
        return EXIT_FAILED
    except KeyboardInterrupt:
        _close(display)
        print("botscale loadtest: interrupted", file=sys.stderr)
        return 130
    _close(display)
    print(report.to_json() if args.json else report.format())
    if args.plot:
        try:
            plot_report(report, args.plot)
        except (ImportError, ValueError, OSError) as exc:
            print(f"botscale loadtest: error: cannot plot: {exc}", file=sys.stderr)
            return EXIT_FAILED
        status(f"plot written to {args.plot}")
    return EXIT_OK


def _close(display: Any) -> None:
    if display is not None:
        display.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``botscale`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        code: int = args.func(args)
    except BotscaleError as exc:
        print(f"botscale: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    sys.exit(main())

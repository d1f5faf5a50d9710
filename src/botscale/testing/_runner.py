"""Run an unmodified aiogram, python-telegram-bot or telebot bot against the simulator.

:func:`serve_bot` starts a bot object the way its framework runs in
production — long polling, or a webhook server on 127.0.0.1 plus
``setWebhook`` — and stops it cleanly.  ``botscale loadtest`` runs the same
code in a child process (``python -m botscale.testing._runner``), so the bot
gets its own interpreter and its peak memory is its own.

Bot objects understood (``framework="auto"`` tells them apart):

* ``(aiogram.Dispatcher, aiogram.Bot)`` — a tuple;
* ``telegram.ext.Application`` (python-telegram-bot);
* ``telebot.TeleBot`` and ``telebot.async_telebot.AsyncTeleBot``;
* an async callable ``run(stop: asyncio.Event) -> None`` that runs any bot
  its own way until ``stop`` is set (the universal form).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib
import inspect
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from .._compat import require

if TYPE_CHECKING:
    from aiohttp import web

    from ._simulator import TelegramSimulator

__all__ = ["FRAMEWORKS", "BotHandle", "detect_framework", "load_target", "serve_bot"]

logger = logging.getLogger("botscale.testing")

Mode = Literal["polling", "webhook"]
FRAMEWORKS: Final = ("aiogram", "ptb", "telebot", "telebot-async", "callable")
EXIT_IMPORT: Final = 3
EXIT_BUILD: Final = 4
EXIT_RUN: Final = 5


def _is_instance(obj: object, module: str, cls: str) -> bool:
    mod = sys.modules.get(module)
    kind = getattr(mod, cls, None) if mod is not None else None
    return isinstance(kind, type) and isinstance(obj, kind)


def detect_framework(bot: object) -> str:
    """Name the framework of a bot object: one of :data:`FRAMEWORKS`.

    Raises:
        TypeError: the object is none of the understood forms.
    """
    if (
        isinstance(bot, tuple)
        and len(bot) == 2
        and _is_instance(bot[0], "aiogram", "Dispatcher")
        and _is_instance(bot[1], "aiogram", "Bot")
    ):
        return "aiogram"
    if _is_instance(bot, "telegram.ext", "Application"):
        return "ptb"
    if _is_instance(bot, "telebot.async_telebot", "AsyncTeleBot"):
        return "telebot-async"
    if _is_instance(bot, "telebot", "TeleBot"):
        return "telebot"
    if callable(bot):
        return "callable"
    raise TypeError(
        "expected (aiogram.Dispatcher, aiogram.Bot), telegram.ext.Application, "
        "telebot.TeleBot, telebot.async_telebot.AsyncTeleBot or an async callable "
        f"run(stop_event), got {type(bot).__name__}"
    )


def load_target(spec: str, *, app_dir: str | None = None) -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function.

    ``app_dir`` (default: the current directory) is put first on ``sys.path``.

    Raises:
        ValueError: ``spec`` is not of the form ``module:function``.
        ImportError: the module cannot be imported or has no such function.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function', got {spec!r}")
    path = os.path.abspath(app_dir or os.getcwd())
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ImportError(f"{spec!r} is a {type(obj).__name__}, not a function")
    return obj  # type: ignore[no-any-return]


@dataclass
class BotHandle:
    """A bot started by :func:`serve_bot`.

    Attributes:
        framework: the detected framework (one of :data:`FRAMEWORKS`).
        mode: ``"polling"`` or ``"webhook"``.
        webhook_url: the bot's webhook URL in webhook mode, else ``None``.
    """

    framework: str
    mode: str
    webhook_url: str | None = None
    _task: asyncio.Future[Any] | None = None

    def failure(self) -> BaseException | None:
        """The exception the bot's polling loop died of, if it died."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def running(self) -> bool:
        """Whether the bot's main loop is still running (always true for webhooks)."""
        return self._task is None or not self._task.done()


class _WebhookServer:
    """A small aiohttp server on loopback that hands webhook updates to a bot."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.path = f"/webhook/{secrets.token_hex(8)}"
        self.secret = secrets.token_urlsafe(24)
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application) -> str:
        web_mod = require("aiohttp.web", "testing")
        runner = web_mod.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        await web_mod.TCPSite(runner, self.host, self.port).start()
        self._runner = runner
        port = int(runner.addresses[0][1])
        return f"http://{self.host}:{port}{self.path}"

    def app_with(self, handle: Callable[[str], Awaitable[None]]) -> web.Application:
        """An app whose webhook route checks the secret and calls ``handle(body)``."""
        web_mod = require("aiohttp.web", "testing")

        async def route(request: web.Request) -> web.Response:
            got = request.headers.get("X-Telegram-Bot-Api-Secret-Token")
            response: web.Response
            if got != self.secret:
                response = web_mod.Response(status=401, text="wrong secret token")
            else:
                await handle(await request.text())
                response = web_mod.Response(text="ok")
            return response

        app: web.Application = web_mod.Application()
        app.router.add_post(self.path, route)
        return app

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


async def _await_bounded(task: asyncio.Future[Any], timeout: float) -> None:
    """Wait for a task to finish, cancel it after ``timeout``; never raise."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
    except BaseException:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


class _Runner:
    framework = "?"

    def __init__(self, bot: Any, base_url: str, token: str, host: str, port: int) -> None:
        self.bot = bot
        self.base_url = base_url
        self.token = token
        self.server = _WebhookServer(host, port)
        self.task: asyncio.Future[Any] | None = None
        self.background: set[asyncio.Task[Any]] = set()

    async def start(self, mode: Mode, poll_timeout: int) -> str | None:
        if mode == "polling":
            await self.start_polling(poll_timeout)
            return None
        return await self.start_webhook()

    async def start_polling(self, poll_timeout: int) -> None:
        raise NotImplementedError

    async def start_webhook(self) -> str:
        raise NotImplementedError

    async def stop(self, timeout: float) -> None:
        await self.server.stop()
        for task in list(self.background):
            await _await_bounded(task, timeout)

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class _Aiogram(_Runner):
    framework = "aiogram"

    async def start_polling(self, poll_timeout: int) -> None:
        dp, bot = self.bot
        self.task = asyncio.ensure_future(
            dp.start_polling(bot, handle_signals=False, polling_timeout=poll_timeout)
        )

    async def start_webhook(self) -> str:
        webhook = importlib.import_module("aiogram.webhook.aiohttp_server")
        web_mod = require("aiohttp.web", "testing")
        dp, bot = self.bot
        app = web_mod.Application()
        webhook.SimpleRequestHandler(
            dispatcher=dp, bot=bot, secret_token=self.server.secret
        ).register(app, path=self.server.path)
        webhook.setup_application(app, dp, bot=bot)
        url = await self.server.start(app)
        await bot.set_webhook(
            url,
            secret_token=self.server.secret,
            allowed_updates=dp.resolve_used_update_types(),
        )
        return url

    async def stop(self, timeout: float) -> None:
        dp, bot = self.bot
        if self.task is not None and not self.task.done():
            with contextlib.suppress(RuntimeError):
                await asyncio.wait_for(dp.stop_polling(), timeout)
            await _await_bounded(self.task, timeout)
        await super().stop(timeout)
        await bot.session.close()


class _Ptb(_Runner):
    framework = "ptb"

    async def start_polling(self, poll_timeout: int) -> None:
        app = self.bot
        if app.updater is None:
            raise RuntimeError("this Application was built without an Updater: it cannot poll")
        await app.initialize()
        await app.updater.start_polling(timeout=poll_timeout, poll_interval=0.0)
        await app.start()

    async def start_webhook(self) -> str:
        telegram = importlib.import_module("telegram")
        app = self.bot

        async def handle(body: str) -> None:
            import json

            await app.update_queue.put(telegram.Update.de_json(json.loads(body), app.bot))

        url = await self.server.start(self.server.app_with(handle))
        await app.initialize()
        await app.start()
        await app.bot.set_webhook(url, secret_token=self.server.secret)
        return url

    async def stop(self, timeout: float) -> None:
        app = self.bot
        await self.server.stop()
        with contextlib.suppress(Exception):
            if app.updater is not None and app.updater.running:
                await asyncio.wait_for(app.updater.stop(), timeout)
            if app.running:
                await asyncio.wait_for(app.stop(), timeout)
            await asyncio.wait_for(app.shutdown(), timeout)
        await super().stop(timeout)


class _Telebot(_Runner):
    framework = "telebot"

    async def start_polling(self, poll_timeout: int) -> None:
        bot = self.bot
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()

        def poll() -> None:
            error: BaseException | None = None
            try:
                bot.infinity_polling(
                    timeout=poll_timeout + 10,
                    long_polling_timeout=poll_timeout,
                    logger_level=logging.ERROR,
                )
            except BaseException as exc:
                error = exc
            finally:
                loop.call_soon_threadsafe(_settle, done, error)

        threading.Thread(target=poll, name="botscale-telebot-polling", daemon=True).start()
        self.task = done

    async def start_webhook(self) -> str:
        types = importlib.import_module("telebot.types")
        bot = self.bot

        async def handle(body: str) -> None:
            update = types.Update.de_json(body)
            await asyncio.to_thread(bot.process_new_updates, [update])

        url = await self.server.start(self.server.app_with(handle))
        await asyncio.to_thread(bot.set_webhook, url=url, secret_token=self.server.secret)
        return url

    async def stop(self, timeout: float) -> None:
        self.bot.stop_polling()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
        await super().stop(timeout)


class _AsyncTelebot(_Runner):
    framework = "telebot-async"

    async def start_polling(self, poll_timeout: int) -> None:
        self.task = asyncio.ensure_future(
            self.bot.infinity_polling(
                timeout=poll_timeout,
                request_timeout=poll_timeout + 10,
                logger_level=logging.ERROR,
            )
        )

    async def start_webhook(self) -> str:
        types = importlib.import_module("telebot.types")
        bot = self.bot

        async def handle(body: str) -> None:
            self.spawn(bot.process_new_updates([types.Update.de_json(body)]))

        url = await self.server.start(self.server.app_with(handle))
        await bot.set_webhook(url=url, secret_token=self.server.secret)
        return url

    async def stop(self, timeout: float) -> None:
        self.bot._polling = False
        if self.task is not None:
            await _await_bounded(self.task, min(timeout, 1.0))
        await super().stop(timeout)
        with contextlib.suppress(Exception):
            await self.bot.close_session()


class _Callable(_Runner):
    framework = "callable"
    stop_event: asyncio.Event

    async def start(self, mode: Mode, poll_timeout: int) -> str | None:
        self.stop_event = asyncio.Event()
        self.task = asyncio.ensure_future(self.bot(self.stop_event))
        return None

    async def stop(self, timeout: float) -> None:
        self.stop_event.set()
        if self.task is not None:
            await _await_bounded(self.task, timeout)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


_RUNNERS: Final[dict[str, type[_Runner]]] = {
    "aiogram": _Aiogram,
    "ptb": _Ptb,
    "telebot": _Telebot,
    "telebot-async": _AsyncTelebot,
    "callable": _Callable,
}


@contextlib.asynccontextmanager
async def serve_bot(
    bot: object,
    sim: TelegramSimulator | str,
    *,
    token: str | None = None,
    mode: Mode = "polling",
    framework: str = "auto",
    poll_timeout: int = 10,
    webhook_host: str = "127.0.0.1",
    webhook_port: int = 0,
    stop_timeout: float = 10.0,
) -> AsyncIterator[BotHandle]:
    """Run a bot against the simulator for the duration of the ``async with`` block.

    The bot object is started the way its framework runs in production: long
    polling (``mode="polling"``), or an aiohttp webhook server on
    ``webhook_host`` plus ``setWebhook`` with a secret token
    (``mode="webhook"``).  The bot must already point at the simulator (it
    was built with the simulator's base URL and token).

    Args:
        bot: ``(Dispatcher, Bot)``, a PTB ``Application``, a ``TeleBot`` /
            ``AsyncTeleBot``, or an async callable ``run(stop_event)``.
        sim: the running simulator, or its base URL (then pass ``token``).
        token: the bot token when ``sim`` is a URL.
        mode: ``"polling"`` or ``"webhook"`` (ignored by the callable form).
        framework: ``"auto"`` or one of :data:`FRAMEWORKS`.
        poll_timeout: the ``getUpdates`` long-poll timeout the bot uses.
        webhook_host: interface of the bot's webhook server.
        webhook_port: its port (``0``: a free one).
        stop_timeout: seconds each shutdown step may take before it is cancelled.

    Yields:
        a :class:`BotHandle` (framework, mode, webhook URL, failure of the bot's loop).

    Raises:
        TypeError: ``bot`` is not an understood bot object.
        ValueError: ``mode`` or ``framework`` is unknown.
    """
    if mode not in ("polling", "webhook"):
        raise ValueError(f"mode must be 'polling' or 'webhook', got {mode!r}")
    name = detect_framework(bot) if framework == "auto" else framework
    if name not in _RUNNERS:
        raise ValueError(f"framework must be 'auto' or one of {FRAMEWORKS}, got {framework!r}")
    if isinstance(sim, str):
        base_url, bot_token = sim, token or ""
    else:
        base_url, bot_token = sim.base_url, sim.token
    runner = _RUNNERS[name](bot, base_url, bot_token, webhook_host, webhook_port)
    handle = BotHandle(name, "callable" if name == "callable" else mode)
    try:
        handle.webhook_url = await runner.start(mode, poll_timeout)
        handle._task = runner.task
        yield handle
    finally:
        if not isinstance(sim, str):
            sim.release_pollers()
        try:
            await runner.stop(stop_timeout)
        finally:
            if not isinstance(sim, str):
                sim.resume_polling()


# -- child process entry point (used by botscale loadtest) -------------------


def _build(target: Callable[..., Any], base_url: str, token: str) -> object:
    if inspect.iscoroutinefunction(target):
        return functools.partial(target, base_url, token)
    return target(base_url, token)


async def _serve_until_stopped(bot: object, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

    def watch_stdin() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(1024):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="botscale-stdin", daemon=True).start()
    async with serve_bot(
        bot,
        args.base_url,
        token=args.token,
        mode=args.mode,
        framework=args.framework,
        poll_timeout=args.poll_timeout,
    ) as handle:
        print(
            f"botscale-runner: {handle.framework} bot running ({handle.mode}"
            f"{' ' + handle.webhook_url if handle.webhook_url else ''})",
            flush=True,
        )
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            error = handle.failure()
            if error is not None:
                print(f"botscale-runner: the bot stopped: {error!r}", file=sys.stderr, flush=True)
                return EXIT_RUN
            if not handle.running:
                print("botscale-runner: the bot stopped by itself", file=sys.stderr, flush=True)
                return EXIT_RUN
    return 0


def main(argv: list[str] | None = None) -> int:
    """Child process: import the target, build the bot, serve it until stdin closes."""
    parser = argparse.ArgumentParser(prog="python -m botscale.testing._runner")
    parser.add_argument("target")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", choices=("polling", "webhook"), default="polling")
    parser.add_argument("--framework", default="auto")
    parser.add_argument("--poll-timeout", type=int, default=10)
    parser.add_argument("--app-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        target = load_target(args.target, app_dir=args.app_dir)
    except Exception as exc:
        print(
            f"cannot import target {args.target!r}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_IMPORT
    try:
        bot = _build(target, args.base_url, args.token)
        if args.framework == "auto":
            args.framework = detect_framework(bot)
    except Exception as exc:
        print(
            f"target {args.target!r} failed to build the bot: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_BUILD
    try:
        return asyncio.run(_serve_until_stopped(bot, args))
    except Exception as exc:
        print(f"the bot failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_RUN


if __name__ == "__main__":
    sys.exit(main())

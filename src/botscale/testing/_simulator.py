"""A loopback Telegram Bot API server for tests and load tests.

Real, unmodified aiogram, python-telegram-bot and telebot bots talk to it over
HTTP on 127.0.0.1; virtual users inject updates and the simulator matches the
bot's replies to them.  Needs the ``testing`` extra (aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from .._clock import Clock
from .._compat import require
from .._errors import ConfigurationError
from .._validation import check_positive, check_positive_int, check_type
from ._api import (
    ApiError,
    BotApi,
    CallRecord,
    Fault,
    JsonObject,
    Params,
    SimulatorStats,
    error_body,
)
from ._flood import FloodLimits
from ._users import VirtualChat, VirtualUser

if TYPE_CHECKING:
    from types import TracebackType

    from aiohttp import ClientSession, web
    from typing_extensions import Self

__all__ = ["TelegramSimulator"]

logger = logging.getLogger("botscale.testing")

_PATH: Final = re.compile(r"^/bot(?P<token>[^/]*)/(?P<method>[A-Za-z0-9_]*)/?$")
_TOKEN: Final = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$")
_SECRET: Final = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_CONFLICT_WEBHOOK: Final = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
_CONFLICT_POLLER: Final = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
_POST: Final = frozenset({"POST", "PUT", "PATCH"})
_TRANSPORT_METHODS: Final = frozenset(
    {"getupdates", "setwebhook", "deletewebhook", "getwebhookinfo"}
)


def _method_name(method: str | None) -> str | None:
    if method is None:
        return None
    check_type("method", method, str, "a Bot API method name or None")
    if not method:
        raise ConfigurationError("method must not be empty")
    return method.lower()


def _json_response(web_mod: Any, body: JsonObject, status: int) -> web.Response:
    response: web.Response = web_mod.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=status,
        content_type="application/json",
    )
    return response


class TelegramSimulator:
    """A Telegram Bot API server on 127.0.0.1 for one bot token.

    Use it as an async context manager; point the bot at :attr:`base_url`
    with :attr:`token`, create virtual users with :meth:`user` and
    :meth:`group`, and read :attr:`stats` and the sent messages afterwards::

        async with TelegramSimulator() as sim:
            bot = aiogram.Bot(sim.token, session=AiohttpSession(
                api=TelegramAPIServer.from_base(sim.base_url)))
            ...
            reply = await sim.user().ask("hello")

    Args:
        token: the bot token; a random ``"<id>:<secret>"`` by default.
        host: interface to listen on (loopback by default).
        port: TCP port; ``0`` picks a free one (see :attr:`port`).
        flood_limits: Telegram's flood limits to enforce
            (:meth:`FloodLimits.off` to disable).
        clock: monotonic seconds for latencies and flood limits.
        bot_username: the bot's ``username`` in ``getMe``.
        webhook_pool: emulate a load balancer: every ``setWebhook`` call adds
            its URL to a round-robin pool instead of replacing the webhook,
            as several bot processes behind one public URL would.
        record_limit: messages kept per chat (for assertions, edits, replies).
        max_poll_timeout: upper bound on a ``getUpdates`` long-poll wait.
        webhook_timeout: seconds a webhook POST may take before it counts as failed.
        webhook_attempts: deliveries tried per update before it is dropped (counted).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        flood_limits: FloodLimits | None = None,
        clock: Clock = time.monotonic,
        bot_username: str = "botscale_test_bot",
        webhook_pool: bool = False,
        record_limit: int = 1000,
        max_poll_timeout: float = 50.0,
        webhook_timeout: float = 10.0,
        webhook_attempts: int = 5,
    ) -> None:
        if token is None:
            token = f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)}"
        check_type("token", token, str, "a str like '123456:ABC-def_ghi'")
        if not _TOKEN.match(token):
            raise ConfigurationError(f"token must look like '123456:ABC-def_ghi', got {token!r}")
        check_type("port", port, int, "an int in 0..65535")
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be an int in 0..65535, got {port!r}")
        check_positive_int("record_limit", record_limit)
        check_positive("max_poll_timeout", max_poll_timeout)
        check_positive("webhook_timeout", webhook_timeout)
        check_positive_int("webhook_attempts", webhook_attempts)
        self._token = token
        self._host = host
        self._port = port
        self._bound_port = 0
        self.webhook_pool = webhook_pool
        self.max_poll_timeout = max_poll_timeout
        self.webhook_timeout = webhook_timeout
        self.webhook_attempts = webhook_attempts
        bot_id = int(token.split(":", 1)[0])
        self.bot_user: JsonObject = {
            "id": bot_id,
            "is_bot": True,
            "first_name": "botscale test bot",
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.api = BotApi(
            token,
            bot_user=self.bot_user,
            flood_limits=flood_limits,
            clock=clock,
            record_limit=record_limit,
            on_update=self._on_update,
        )
        self._next_user_id = 10_000_000
        self._next_group_id = 0
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._poller: asyncio.Future[str] | None = None
        self._released = False
        self._connected: asyncio.Event | None = None
        self._webhooks: list[tuple[str, str | None]] = []
        self._webhook_next = 0
        self._webhook_max_connections = 40
        self._webhook_allowed: list[str] | None = None
        self._webhook_last_error: tuple[int, str] | None = None
        self._webhook_wakeup: asyncio.Event | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_slots: asyncio.Semaphore | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._closing = False

    # -- addresses ----------------------------------------------------------

    @property
    def token(self) -> str:
        """The bot token the simulator accepts."""
        return self._token

    @property
    def bot_id(self) -> int:
        """The bot's user id (the token's number)."""
        return int(self.bot_user["id"])

    @property
    def port(self) -> int:
        """The TCP port the simulator listens on (after start)."""
        if not self._bound_port:
            raise RuntimeError("the simulator is not running: use `async with TelegramSimulator()`")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:38211``.

        aiogram: ``TelegramAPIServer.from_base(sim.base_url)``; python-telegram-bot:
        ``base_url=sim.base_url + "/bot"``; telebot:
        ``apihelper.API_URL = sim.base_url + "/bot{0}/{1}"``.
        """
        return f"http://{self._host}:{self.port}"

    def api_url(self, method: str) -> str:
        """The full URL of one method, e.g. ``…/bot<token>/getMe``."""
        return f"{self.base_url}/bot{self._token}/{method}"

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Start serving (idempotent)."""
        if self._runner is not None:
            return
        aiohttp = require("aiohttp", "testing", feature="botscale.testing.TelegramSimulator")
        web_mod = require("aiohttp.web", "testing")
        self._closing = False
        self._released = False
        self._connected = asyncio.Event()
        self._webhook_wakeup = asyncio.Event()
        app = web_mod.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web_mod.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web_mod.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._bound_port = int(runner.addresses[0][1])
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=self.webhook_timeout),
        )
        self._webhook_task = asyncio.create_task(self._webhook_loop(), name="botscale-webhooks")
        logger.info("simulator: Bot API on %s", self.base_url)

    async def stop(self) -> None:
        """Stop serving: answer waiting pollers, cancel deliveries, close the port."""
        if self._runner is None:
            return
        self._closing = True
        self.release_pollers()
        tasks = [t for t in (self._webhook_task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._webhook_task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        runner, self._runner = self._runner, None
        await runner.cleanup()
        self._bound_port = 0

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def release_pollers(self) -> None:
        """Answer the waiting ``getUpdates`` at once and stop long polling.

        Further ``getUpdates`` calls return immediately, so a bot being shut
        down is not held by a long poll.  :meth:`resume_polling` undoes it.
        """
        self._released = True
        if self._poller is not None and not self._poller.done():
            self._poller.set_result("released")

    def resume_polling(self) -> None:
        """Let ``getUpdates`` long-poll again after :meth:`release_pollers`."""
        self._released = False

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the bot polls (``getUpdates``) or sets a webhook.

        Raises:
            TimeoutError: the bot did neither within ``timeout`` seconds.
        """
        if self._connected is None:
            raise RuntimeError("the simulator is not running")
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"the bot neither called getUpdates nor setWebhook within {timeout} s"
            ) from None

    @property
    def connected(self) -> bool:
        """Whether the bot has polled or set a webhook yet."""
        return self._connected is not None and self._connected.is_set()

    # -- users, chats and records -------------------------------------------

    def user(
        self,
        first_name: str | None = None,
        *,
        username: str | None = None,
        language_code: str = "en",
    ) -> VirtualUser:
        """Create a virtual user with a private chat with the bot."""
        self._next_user_id += 1
        uid = self._next_user_id
        n = uid - 10_000_000
        info: JsonObject = {
            "id": uid,
            "is_bot": False,
            "first_name": first_name or f"User {n}",
            "username": username or f"user{n}",
            "language_code": language_code,
        }
        chat_info: JsonObject = {
            "id": uid,
            "type": "private",
            "first_name": info["first_name"],
            "username": info["username"],
        }
        state = self.api.add_chat(uid, "private", chat_info)
        return VirtualUser(self.api, info, state)

    def group(
        self, title: str | None = None, *, username: str | None = None, supergroup: bool = True
    ) -> VirtualChat:
        """Create a group chat (a supergroup by default) the bot is a member of."""
        self._next_group_id += 1
        n = self._next_group_id
        chat_id = -(1_000_000_000_000 + n) if supergroup else -(4_000_000_000 + n)
        chat_type = "supergroup" if supergroup else "group"
        info: JsonObject = {"id": chat_id, "type": chat_type, "title": title or f"Group {n}"}
        if username:
            info["username"] = username
        return VirtualChat(self.api, self.api.add_chat(chat_id, chat_type, info))

    # -- fault injection ----------------------------------------------------

    def inject_429(
        self, chat_id: int, retry_after: int, *, count: int = 1, method: str | None = None
    ) -> None:
        """Refuse the next ``count`` sending calls to ``chat_id`` with ``429``.

        The answer is Telegram's ``Too Many Requests: retry after N`` with
        ``parameters.retry_after``; it is counted like a 429 of the flood
        limits (``stats.rate_limited``, per chat and method), and a refused
        reply claims its update like one.  Only calls the bot makes after this
        call are refused.

        Args:
            chat_id: the chat whose calls are refused.
            retry_after: the whole seconds to ask for (>= 1).
            count: how many calls to refuse (>= 1).
            method: only this method (any case); default every sending method.

        Raises:
            ConfigurationError, TypeError: a bad argument, named.
        """
        check_type("chat_id", chat_id, int, "an int chat id")
        check_positive_int("retry_after", retry_after)
        self.api.inject(
            Fault(
                429,
                f"Too Many Requests: retry after {retry_after}",
                chat_id,
                _method_name(method),
                check_positive_int("count", count),
                retry_after,
            )
        )

    def inject_error(
        self,
        status: int = 500,
        *,
        chat_id: int | None = None,
        method: str | None = None,
        count: int = 1,
        description: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching calls with an error ``status`` (5xx, 4xx).

        For a bot's handling of Telegram's failures: ``inject_error(502,
        method="sendMessage")`` makes the next ``sendMessage`` fail with
        ``502 Bad Gateway``; ``inject_error(500)`` fails the very next call of
        any kind (``getUpdates`` included).  Counted in ``stats.errors``.
        Use :meth:`inject_429` for flood answers.

        Args:
            status: the HTTP status and ``error_code``, 400..599 but not 429.
            chat_id: only calls to this chat (default: any call).
            method: only this method, any case (default: any method).
            count: how many calls to fail (>= 1).
            description: Telegram's ``description`` (default: the status's
                reason phrase, e.g. ``"Bad Gateway"``).

        Raises:
            ConfigurationError, TypeError: a bad argument, named.
        """
        check_type("status", status, int, "an int HTTP status in 400..599 (not 429)")
        if not 400 <= status <= 599 or status == 429:
            raise ConfigurationError(
                f"status must be an HTTP error status in 400..599 other than 429 "
                f"(use inject_429), got {status!r}"
            )
        if chat_id is not None:
            check_type("chat_id", chat_id, int, "an int chat id or None")
        if description is None:
            try:
                description = HTTPStatus(status).phrase
            except ValueError:
                description = f"Error {status}"
        check_type("description", description, str, "a str")
        self.api.inject(
            Fault(
                status,
                description,
                chat_id,
                _method_name(method),
                check_positive_int("count", count),
            )
        )

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the simulator's counters."""
        return copy.deepcopy(self.api.stats)

    @property
    def calls(self) -> list[CallRecord]:
        """The logged calls, oldest first (the last ``call_log_limit``)."""
        return list(self.api.calls)

    def sent_messages(self, chat_id: int) -> list[JsonObject]:
        """The bot's messages in a chat, oldest first (the last ``record_limit``)."""
        chat = self.api.chats.get(chat_id)
        return [] if chat is None else list(chat.bot_messages)

    def sent_count(self, chat_id: int) -> int:
        """How many messages the bot sent to a chat (exact, not bounded)."""
        chat = self.api.chats.get(chat_id)
        return 0 if chat is None else chat.sent_count

    @property
    def pending_updates(self) -> int:
        """Updates created but not yet confirmed by the bot."""
        return len(self.api.updates) + self._in_flight

    # -- HTTP ---------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        web_mod = require("aiohttp.web", "testing")
        match = _PATH.match(request.path)
        if match is None or not _TOKEN.match(match["token"]) or not match["method"]:
            self.api.record(request.path, {}, 404, "Not Found")
            return _json_response(web_mod, error_body(404, "Not Found"), 404)
        method = match["method"]
        if match["token"] != self._token:
            self.api.record(method, {}, 401, "Unauthorized")
            return _json_response(web_mod, error_body(401, "Unauthorized"), 401)
        try:
            raw = await self._read_params(request)
        except ApiError as exc:
            self.api.record(method, {}, exc.status, exc.description)
            return _json_response(web_mod, exc.body(), exc.status)
        try:
            result = await self.dispatch(method, raw)
            status, body = 200, {"ok": True, "result": result}
        except ApiError as exc:  # recorded by dispatch
            status, body = exc.status, exc.body()
        except Exception:
            logger.exception("simulator: %s failed", method)
            status, body = 500, error_body(500, "Internal Server Error")
            self.api.record(method, raw, status, body["description"])
        return _json_response(web_mod, body, status)

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for key in request.query:
            params.setdefault(key, request.query[key])
        if not request.body_exists:
            return params
        ctype = request.content_type
        if ctype == "application/json":
            try:
                data = json.loads(await request.text() or "{}")
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object") from None
            if not isinstance(data, dict):
                raise ApiError(400, "Bad Request: JSON body must be an object")
            params.update(data)
        elif ctype == "application/x-www-form-urlencoded" and request.method not in _POST:
            # aiohttp only parses bodies of POST-like requests; AsyncTeleBot GETs with a body.
            text = (await request.read()).decode("utf-8", "replace")
            for key, value in parse_qsl(text, keep_blank_values=True):
                params.setdefault(key, value)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for key in form:
                if key in params and ctype != "multipart/form-data":
                    continue
                field = form[key]
                if isinstance(field, str):
                    params[key] = field
                elif isinstance(field, (bytes, bytearray)):
                    params[key] = bytes(field).decode("utf-8", "replace")
                else:
                    params[key] = f"<file {field.filename}>"
        else:
            await request.read()
        return params

    async def dispatch(self, method: str, raw: Mapping[str, Any]) -> Any:
        """Run one Bot API method as if called over HTTP, and log and count it.

        Args:
            method: the method name (any case), e.g. ``"sendMessage"``.
            raw: its parameters, typed (as from JSON) or as strings (as from a form).

        Returns:
            the answer's ``result``.

        Raises:
            ApiError: the error answer Telegram would give.
        """
        try:
            self.api.check_faults(method, raw)
            result = await self._run(method, raw)
        except ApiError as exc:
            self.api.record(method, raw, exc.status, exc.description)
            raise
        self.api.record(method, raw, 200, None)
        return result

    async def _run(self, method: str, raw: Mapping[str, Any]) -> Any:
        name = method.lower()
        if name in _TRANSPORT_METHODS:
            params = Params(raw)
            if name == "getupdates":
                return await self._get_updates(params)
            if name == "setwebhook":
                return self._set_webhook(params)
            if name == "deletewebhook":
                return self._delete_webhook(params)
            return self.webhook_info()
        return self.api.call(method, raw)

    # -- long polling -------------------------------------------------------

    def _on_update(self) -> None:
        if self._poller is not None and not self._poller.done():
            self._poller.set_result("updates")
        if self._webhooks and self._webhook_wakeup is not None:
            self._webhook_wakeup.set()

    async def _get_updates(self, params: Params) -> list[JsonObject]:
        if self._webhooks:
            self.api.stats.conflicts += 1
            raise ApiError(409, _CONFLICT_WEBHOOK)
        offset = params.get_int("offset")
        limit = params.get_int("limit")
        limit = 100 if limit is None else min(100, max(1, limit))
        timeout = min(self.max_poll_timeout, max(0, params.get_int("timeout") or 0))
        self.api.set_allowed_updates(params.get_json("allowed_updates", "allowed updates"))
        if offset is not None:
            self.api.confirm(offset)
        if self._connected is not None:
            self._connected.set()
        if self._poller is not None and not self._poller.done():
            self._poller.set_result("conflict")
        updates = self.api.peek(limit)
        if updates or timeout <= 0 or self._released or self._closing:
            return updates
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._poller = waiter
        try:
            outcome = await asyncio.wait_for(waiter, timeout)
        except asyncio.TimeoutError:
            outcome = "timeout"
        finally:
            if self._poller is waiter:
                self._poller = None
        if outcome == "conflict":
            self.api.stats.conflicts += 1
            raise ApiError(409, _CONFLICT_POLLER)
        if self._webhooks:
            return []
        return self.api.peek(limit)

    # -- webhooks -----------------------------------------------------------

    async def set_webhook(
        self,
        url: str,
        *,
        secret_token: str | None = None,
        max_connections: int = 40,
        drop_pending_updates: bool = False,
    ) -> None:
        """Set (or, with ``webhook_pool``, add) a webhook as ``setWebhook`` would."""
        raw: JsonObject = {
            "url": url,
            "max_connections": max_connections,
            "drop_pending_updates": drop_pending_updates,
        }
        if secret_token is not None:
            raw["secret_token"] = secret_token
        self._set_webhook(Params(raw))

    @property
    def webhook_urls(self) -> list[str]:
        """The webhook URLs updates are POSTed to, round-robin."""
        return [url for url, _ in self._webhooks]

    def _set_webhook(self, params: Params) -> bool:
        url = params.get_str("url") or ""
        if not url:
            return self._delete_webhook(params)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ApiError(400, "Bad Request: bad webhook: invalid webhook URL specified")
        secret = params.get_str("secret_token")
        if secret is not None and not _SECRET.match(secret):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        max_connections = params.get_int("max_connections") or 40
        self.api.set_allowed_updates(params.get_json("allowed_updates", "allowed updates"))
        if params.get_bool("drop_pending_updates"):
            self.api.drop_pending()
        max_connections = min(100, max(1, max_connections))
        if max_connections != self._webhook_max_connections or self._webhook_slots is None:
            # Deliveries in flight release the semaphore they took; new ones use this one.
            self._webhook_max_connections = max_connections
            self._webhook_slots = asyncio.Semaphore(max_connections)
        entry = (url, secret)
        if self.webhook_pool:
            self._webhooks = [w for w in self._webhooks if w[0] != url] + [entry]
        else:
            self._webhooks = [entry]
        if self._connected is not None:
            self._connected.set()
        if self._webhook_wakeup is not None:
            self._webhook_wakeup.set()
        logger.info("simulator: webhook %s (%d in pool)", url, len(self._webhooks))
        return True

    def _delete_webhook(self, params: Params) -> bool:
        self._webhooks = []
        self._webhook_last_error = None
        if params.get_bool("drop_pending_updates"):
            self.api.drop_pending()
        return True

    def webhook_info(self) -> JsonObject:
        """The ``getWebhookInfo`` result."""
        info: JsonObject = {
            "url": self._webhooks[0][0] if self._webhooks else "",
            "has_custom_certificate": False,
            "pending_update_count": self.pending_updates,
        }
        if self._webhooks:
            info["max_connections"] = self._webhook_max_connections
            info["ip_address"] = "127.0.0.1"
        if self._webhook_last_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_last_error
        if self.api.allowed_updates is not None:
            info["allowed_updates"] = sorted(self.api.allowed_updates)
        return info

    async def _webhook_loop(self) -> None:
        assert self._webhook_wakeup is not None
        wakeup = self._webhook_wakeup
        while not self._closing:
            if not self._webhooks or not self.api.updates:
                await wakeup.wait()
                wakeup.clear()
                continue
            slots = self._webhook_slots
            if slots is None:
                slots = self._webhook_slots = asyncio.Semaphore(self._webhook_max_connections)
            await slots.acquire()
            if not self._webhooks or not self.api.updates:
                slots.release()
                continue
            update_id, update = self.api.updates.popleft()
            self.api.mark_delivered(update_id)
            self._in_flight += 1
            task = asyncio.create_task(self._deliver(update_id, update, slots))
            self._deliveries.add(task)
            task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, update_id: int, update: JsonObject, slots: asyncio.Semaphore) -> None:
        try:
            for attempt in range(self.webhook_attempts):
                if not self._webhooks:
                    self.api.updates.appendleft((update_id, update))
                    return
                url, secret = self._webhooks[self._webhook_next % len(self._webhooks)]
                self._webhook_next += 1
                error = await self._post_update(url, secret, update)
                if error is None:
                    self.api.stats.webhook_deliveries += 1
                    return
                self.api.stats.webhook_failures += 1
                self._webhook_last_error = (int(time.time()), error)
                logger.warning("simulator: webhook %s failed: %s", url, error)
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            self.api.stats.dropped_updates += 1
            logger.error(
                "simulator: update %d dropped after %d failed webhook deliveries",
                update_id,
                self.webhook_attempts,
            )
        finally:
            self._in_flight -= 1
            slots.release()

    async def _post_update(self, url: str, secret: str | None, update: JsonObject) -> str | None:
        aiohttp = require("aiohttp", "testing")
        assert self._session is not None
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
        try:
            async with self._session.post(url, json=update, headers=headers) as resp:
                if not 200 <= resp.status < 300:
                    return f"Wrong response from the webhook: {resp.status} {resp.reason}"
                await self._webhook_reply(resp, aiohttp)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return f"Connection failed: {type(exc).__name__}: {exc}"
        return None

    async def _webhook_reply(self, resp: Any, aiohttp: Any) -> None:
        """Run a method the bot returned in the webhook answer, as Telegram does."""
        params: dict[str, Any] = {}
        if resp.content_type == "application/json":
            try:
                data = json.loads(await resp.text() or "null")
            except ValueError:
                return
            if isinstance(data, dict):
                params = data
        elif resp.content_type == "multipart/form-data":
            reader = aiohttp.MultipartReader.from_response(resp)
            async for part in reader:
                if part.name:
                    params[part.name] = await part.text()
        method = params.pop("method", None)
        if not isinstance(method, str) or not method:
            return
        with contextlib.suppress(ApiError):  # logged and counted by dispatch
            await self.dispatch(method, params)

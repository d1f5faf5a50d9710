"""botscale for aiogram 3: middlewares that translate, the core decides.

Two lines for the common case::

    from botscale.adapters.aiogram import install

    kit = install(dp, bot)                                   # guard + flood control + runner
    await dp.start_polling(bot, **kit.polling_kwargs(dp))

What :func:`install` registers:

* :class:`IncomingMiddleware`, an outer middleware on ``dp.update`` (with a
  runner): de-duplication and the per-chat ordered runner;
* :class:`HandlerMiddleware`, an inner middleware on every event observer:
  de-duplication (without a runner), ``user_state`` / ``update_info`` for
  handlers, the per-user limit with its "slow down" notice, once the handler is known,
  so that its ``rate_limit`` flag applies
  (``@router.message(..., flags={"rate_limit": "3/minute"})``; ``False``
  exempts a handler from the update-level limit), and ``handler.<name>`` timing;
* :class:`FloodMiddleware`, a ``BaseRequestMiddleware`` on ``bot.session``:
  every outgoing call through :class:`~botscale.AsyncFloodControl`.

:class:`BoundedStorage` is an FSM storage on a bounded
:class:`~botscale.MemoryStateStore` (``Dispatcher(storage=BoundedStorage())``).
"""

from __future__ import annotations

from .._compat import require

require("aiogram", "aiogram", feature="botscale.adapters.aiogram")

import contextvars  # noqa: E402
import logging  # noqa: E402
from collections.abc import Awaitable, Callable, Mapping  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Final  # noqa: E402

from aiogram import BaseMiddleware, Bot, Dispatcher  # noqa: E402
from aiogram.client.session.middlewares.base import (  # noqa: E402
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.dispatcher.event.bases import UNHANDLED  # noqa: E402
from aiogram.dispatcher.event.handler import HandlerObject  # noqa: E402
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware  # noqa: E402
from aiogram.exceptions import (  # noqa: E402
    TelegramAPIError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.fsm.state import State  # noqa: E402
from aiogram.fsm.storage.base import BaseStorage, StateType, StorageKey  # noqa: E402
from aiogram.methods import TelegramMethod  # noqa: E402
from aiogram.methods.base import Response, TelegramType  # noqa: E402
from aiogram.types import TelegramObject, Update  # noqa: E402

from .._flood import AsyncFloodControl, OutgoingRequest, _reply_chat_var  # noqa: E402
from .._incoming import HandlerLimit, IncomingGuard, UpdateInfo, Verdict, _new_info  # noqa: E402
from .._state import MemoryStateStore  # noqa: E402
from .._telegram import ApiFailure, FailureKind  # noqa: E402
from .._updates import POLLING_TIMEOUT, UpdateRunner  # noqa: E402

__all__ = [
    "BoundedStorage",
    "FloodMiddleware",
    "HandlerMiddleware",
    "IncomingMiddleware",
    "Installed",
    "classify",
    "install",
    "update_info",
]

_log: Final = logging.getLogger("botscale.adapters.aiogram")

_Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]

_admitted: contextvars.ContextVar[tuple[Update, UpdateInfo] | None] = contextvars.ContextVar(
    "botscale_aiogram_admitted", default=None
)


def classify(exc: BaseException) -> ApiFailure | None:
    """aiogram's exceptions as :class:`~botscale.ApiFailure` (``None``: not a Bot API failure)."""
    if not isinstance(exc, TelegramAPIError):
        return None
    description = exc.message
    if isinstance(exc, TelegramRetryAfter):
        return ApiFailure(FailureKind.FLOOD, float(exc.retry_after), 429, description)
    if isinstance(exc, TelegramServerError):
        return ApiFailure(FailureKind.SERVER, None, 500, description)
    if isinstance(exc, TelegramEntityTooLarge):
        return ApiFailure(FailureKind.CLIENT, None, 413, description)
    if isinstance(exc, TelegramNetworkError):
        return ApiFailure(FailureKind.NETWORK, None, None, description)
    if isinstance(exc, TelegramForbiddenError):
        return ApiFailure(FailureKind.FORBIDDEN, None, 403, description)
    return ApiFailure(FailureKind.CLIENT, None, None, description)


def update_info(update: Update, data: Mapping[str, Any] | None = None) -> UpdateInfo:
    """Describe an aiogram ``Update`` (using aiogram's resolved event context if given)."""
    context = data.get("event_context") if data is not None else None
    if context is None:
        context = UserContextMiddleware.resolve_event_context(update)
    chat = context.chat
    user = context.user
    if update.message is not None:
        kind = "message"
    else:
        try:
            kind = update.event_type
        except Exception:  # an update type newer than this aiogram
            kind = "unknown"
    user_id = user.id if user is not None else None
    if chat is None:
        return _new_info((kind, update.update_id, user_id, None, None))
    return _new_info((kind, update.update_id, user_id, chat.id, chat.type))


def _admit(guard: IncomingGuard, update: Update, data: dict[str, Any]) -> UpdateInfo | None:
    """Describe and de-duplicate ``update`` once; ``None`` for a duplicate.

    Puts ``update_info`` into the handler data.  A guard
    with an async dedup store goes through :func:`_aadmit` instead.
    """
    admitted = _admitted.get()
    if admitted is not None and admitted[0] is update:
        info = admitted[1]  # SkipHandler sent it on to another router: already admitted
    else:
        info = update_info(update, data)
        if guard.seen_update(info[1]):
            return None
        _admitted.set((update, info))
    data["update_info"] = info
    return info


async def _aadmit(guard: IncomingGuard, update: Update, data: dict[str, Any]) -> UpdateInfo | None:
    """:func:`_admit` for a guard whose pieces are awaited."""
    admitted = _admitted.get()
    if admitted is not None and admitted[0] is update:
        info = admitted[1]
    else:
        info = update_info(update, data)
        if await guard.aseen_update(info[1]):
            return None
        _admitted.set((update, info))
    data["update_info"] = info
    return info


async def _deliver_notice(bot: Bot | None, update: Update, info: UpdateInfo, text: str) -> None:
    """Tell a limited user to slow down (a callback answer, or a message to the chat)."""
    if bot is None:
        return
    try:
        if update.callback_query is not None:
            await bot.answer_callback_query(update.callback_query.id, text=text)
        elif info.chat_id is not None:
            await bot.send_message(info.chat_id, text)
    except Exception:
        _log.warning("could not send the rate-limit notice to chat %s", info.chat_id, exc_info=True)


_ARRIVAL: Final = "botscale_arrival_verdict"
"""The handler data key of an update's arrival verdict (the update-level limit)."""


def _has_exempt_handler(dispatcher: object) -> bool:
    """Whether a handler of ``dispatcher`` (or its routers) has ``rate_limit=False``.

    Asked for denied updates only; ``True`` when unknown (the update then
    goes on to be dropped at handling unless its handler is exempt).
    """
    if not isinstance(dispatcher, Dispatcher):
        return True
    for router in dispatcher.chain_tail:
        for observer in router.observers.values():
            for handler in observer.handlers:
                if handler.flags.get("rate_limit") is False:
                    return True
    return False


class IncomingMiddleware(BaseMiddleware):
    """Outer ``dp.update`` middleware: de-duplication and the per-chat ordered runner.

    Needed only with a runner (:func:`install` adds it then): ordering must
    happen before aiogram evaluates filters, FSM state filters included.
    Without one, :class:`HandlerMiddleware` de-duplicates by itself.

    Args:
        guard: the decisions (an :class:`~botscale.IncomingGuard`).
        runner: the per-chat ordered, capped runner.
    """

    def __init__(self, guard: IncomingGuard, runner: UpdateRunner | None = None) -> None:
        self.guard = guard
        self.runner = runner

    async def __call__(self, handler: _Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        guard = self.guard
        info = (
            await _aadmit(guard, event, data) if guard.asynchronous else _admit(guard, event, data)
        )
        if info is None:
            return UNHANDLED
        if self.runner is None:
            return await handler(event, data)
        # The update-level limit is decided now, on arrival: in the runner a
        # chat's updates wait for each other, at the pace of their replies.
        verdict = await guard.acheck_limit(info) if guard.asynchronous else guard.check_limit(info)
        if not verdict.proceed and not _has_exempt_handler(data.get("dispatcher")):
            if verdict.notice is not None:
                await _deliver_notice(data.get("bot"), event, info, verdict.notice)
            return UNHANDLED
        data[_ARRIVAL] = verdict  # a denial reaches only an exempt handler (rate_limit=False)
        return await self.runner.run(info, lambda: handler(event, data))


_HandlerFacts = tuple[HandlerObject, "HandlerLimit | bool | None", str, Any, bool]
"""A handler, its ``rate_limit`` flag, timing name, stopwatch, whether it takes ``user_state``."""


class HandlerMiddleware(BaseMiddleware):
    """Inner middleware on every event observer: the rate limits and handler timing.

    Runs once the handler that will take the update is known, so its
    ``rate_limit`` flag applies: a :class:`~botscale.HandlerLimit`, a
    :class:`~botscale.Rate`, its text or a dict of ``HandlerLimit`` fields add
    a limit of the handler's own; ``False`` exempts the handler from the
    guard's update-level limit (``/help`` should always answer).  The handler
    is timed as ``handler.<qualified function name>``.
    """

    def __init__(self, guard: IncomingGuard) -> None:
        self.guard = guard
        self._timer = guard.timer
        self._flags: dict[int, _HandlerFacts] = {}

    def _facts(self, handler: HandlerObject) -> _HandlerFacts:
        """What the middleware needs to know about a handler, worked out once."""
        facts = self._flags.get(id(handler))
        if facts is not None and facts[0] is handler:
            return facts
        name = "handler." + (getattr(handler.callback, "__qualname__", None) or repr(handler))
        facts = (
            handler,
            HandlerLimit.coerce(handler.flags.get("rate_limit")),
            name,
            self.guard.recorder(name),
            self.guard.state is not None and (handler.varkw or "user_state" in handler.params),
        )
        self._flags[id(handler)] = facts
        return facts

    async def __call__(self, handler: _Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        guard = self.guard
        info: UpdateInfo | None = data.get("update_info")
        if info is None:  # no IncomingMiddleware: describe and de-duplicate here
            update = data.get("event_update")
            if not isinstance(update, Update):
                return await handler(event, data)
            if guard.asynchronous:
                info = await _aadmit(guard, update, data)
            else:
                info = _admit(guard, update, data)
            if info is None:
                return None
        handler_object = data.get("handler")
        if isinstance(handler_object, HandlerObject):
            _, flag, name, stop, wants_state = self._facts(handler_object)
        else:
            flag, name, stop = None, "handler.unknown", guard.recorder("handler.unknown")
            wants_state = guard.state is not None
        arrival: Verdict | None = data.get(_ARRIVAL)  # decided by IncomingMiddleware
        if flag is False:
            if arrival is None:
                guard.count_passed()
            else:
                guard.admit_exempt(arrival)
        else:
            if arrival is not None:
                verdict = arrival
                if verdict.proceed and isinstance(flag, HandlerLimit):
                    if guard.asynchronous:
                        verdict = await guard.acheck_handler(info, flag, name)
                    else:
                        verdict = guard.check_handler(info, flag, name)
            elif guard.asynchronous:
                verdict = await guard.acheck_limit(info)
                if verdict.proceed and isinstance(flag, HandlerLimit):
                    verdict = await guard.acheck_handler(info, flag, name)
            else:
                verdict = guard.check_limit(info)
                if verdict.proceed and isinstance(flag, HandlerLimit):
                    verdict = guard.check_handler(info, flag, name)
            if not verdict.proceed:
                if verdict.notice is not None:
                    update = data.get("event_update")
                    if isinstance(update, Update):
                        await _deliver_notice(data.get("bot"), update, info, verdict.notice)
                return None
        if wants_state and "user_state" not in data:  # built for handlers that take it
            data["user_state"] = guard.handler_state(info)
        token = _reply_chat_var.set(info[3])
        if stop is None:
            try:
                return await handler(event, data)
            finally:
                _reply_chat_var.reset(token)
        started = self._timer()
        try:
            result = await handler(event, data)
        except BaseException as exc:
            stop(started, isinstance(exc, Exception), info)
            raise
        finally:
            _reply_chat_var.reset(token)
        stop(started, False, info)
        return result


class FloodMiddleware(BaseRequestMiddleware):
    """Every Bot API call of one bot through :class:`~botscale.AsyncFloodControl`.

    ``bot.session.middleware(FloodMiddleware(flood))``; :func:`install` does it.
    """

    def __init__(self, flood: AsyncFloodControl) -> None:
        self.flood = flood

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        name = method.__api_method__
        chat_id = getattr(method, "chat_id", None)
        if isinstance(chat_id, bool) or not isinstance(chat_id, (int, str)):
            chat_id = None
        cost = 1
        for field in ("media", "message_ids"):
            items = getattr(method, field, None)
            if isinstance(items, list) and items:
                cost = len(items)
        request = OutgoingRequest(
            name, chat_id, cost, getattr(method, "allow_paid_broadcast", None) is True
        )
        return await self.flood.call(request, lambda: make_request(bot, method), classify=classify)


@dataclass
class Installed:
    """What :func:`install` set up; keep it to read stats or tune polling.

    Attributes:
        guard: the incoming guard.
        flood: the flood controller of ``bot`` (``None`` if not installed).
        runner: the per-chat ordered runner (``None`` if not installed).
    """

    guard: IncomingGuard
    flood: AsyncFloodControl | None
    runner: UpdateRunner | None

    def polling_kwargs(self, dp: Dispatcher) -> dict[str, Any]:
        """``dp.start_polling(bot, **kit.polling_kwargs(dp))``: the polling preset.

        Long polling with a 30 s timeout, ``allowed_updates`` from the
        handlers registered now (call it after adding them), and a bounded
        number of update tasks (the runner's ``max_pending``).  Telegram's
        default batch is 100 updates, the maximum.
        """
        kwargs: dict[str, Any] = {
            "polling_timeout": POLLING_TIMEOUT,
            "allowed_updates": dp.resolve_used_update_types(),
            "handle_as_tasks": True,
        }
        if self.runner is not None:
            kwargs["tasks_concurrency_limit"] = self.runner.max_pending
        return kwargs


_DEFAULT: Final[Any] = object()


def install(
    dp: Dispatcher,
    bot: Bot | None = None,
    *,
    guard: IncomingGuard | None = _DEFAULT,
    flood: AsyncFloodControl | None = _DEFAULT,
    runner: UpdateRunner | None = _DEFAULT,
) -> Installed:
    """Put botscale into an aiogram bot: incoming guard, handler limits, flood control.

    Args:
        dp: the dispatcher (its update observer gets :class:`IncomingMiddleware`,
            every event observer :class:`HandlerMiddleware`).
        bot: the bot whose outgoing calls go through flood control (``None``:
            no outgoing flood control; call :func:`install` per bot or add
            :class:`FloodMiddleware` yourself for several bots).
        guard: the incoming decisions (default ``IncomingGuard()``: 30 updates
            per user per minute with one notice, de-duplication).
        flood: the flood controller (default ``AsyncFloodControl()``), or ``None``.
        runner: per-chat order, a global cap and bounded intake (default
            ``UpdateRunner()``), or ``None`` for aiogram's own scheduling.

    Returns:
        :class:`Installed`, with :meth:`Installed.polling_kwargs`.
    """
    if guard is _DEFAULT:
        guard = IncomingGuard()
    if guard is None:
        guard = IncomingGuard(None, dedup=False)
    if flood is _DEFAULT:
        flood = AsyncFloodControl() if bot is not None else None
    if runner is _DEFAULT:
        runner = UpdateRunner()
    if runner is not None:
        dp.update.outer_middleware(IncomingMiddleware(guard, runner))
    inner = HandlerMiddleware(guard)
    for name, observer in dp.observers.items():
        if name not in ("update", "error"):
            observer.middleware(inner)
    if bot is not None and flood is not None:
        bot.session.middleware(FloodMiddleware(flood))
    return Installed(guard, flood, runner)


class BoundedStorage(BaseStorage):
    """aiogram FSM storage on a bounded, expiring :class:`~botscale.MemoryStateStore`.

    aiogram's ``MemoryStorage`` keeps every user's state forever; this one
    holds at most ``maxsize`` (state, data) entries, least recently used
    evicted first (counted in ``store.stats()``), each expiring ``ttl``
    seconds after its last write.

    Args:
        maxsize: the most users (keys) kept.
        ttl: seconds an entry lives after its last write (``None``: no expiry).
        store: use this store instead of making one.
    """

    def __init__(
        self,
        maxsize: int = 10_000,
        ttl: float | None = 24 * 3600.0,
        *,
        store: MemoryStateStore | None = None,
    ) -> None:
        self.store = store if store is not None else MemoryStateStore(maxsize, ttl)

    @staticmethod
    def _key(key: StorageKey) -> str:
        return (
            f"{key.bot_id}:{key.chat_id}:{key.user_id}:{key.thread_id}:"
            f"{key.business_connection_id}:{key.destiny}"
        )

    async def set_state(self, key: StorageKey, state: StateType = None) -> None:
        """Set the FSM state of ``key``."""
        value = state.state if isinstance(state, State) else state
        self.store.update(
            self._key(key), lambda old: {"state": value, "data": (old or {}).get("data", {})}
        )

    async def get_state(self, key: StorageKey) -> str | None:
        """The FSM state of ``key``."""
        entry = self.store.get(self._key(key))
        return None if entry is None else entry.get("state")

    async def set_data(self, key: StorageKey, data: Mapping[str, Any]) -> None:
        """Replace the FSM data of ``key``."""
        copied = dict(data)
        self.store.update(
            self._key(key), lambda old: {"state": (old or {}).get("state"), "data": copied}
        )

    async def get_data(self, key: StorageKey) -> dict[str, Any]:
        """A copy of the FSM data of ``key``."""
        entry = self.store.get(self._key(key))
        return {} if entry is None else dict(entry.get("data", {}))

    async def close(self) -> None:
        """Nothing to release."""

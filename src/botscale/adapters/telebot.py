"""botscale for pyTelegramBotAPI 4 (``TeleBot`` with threads, and ``AsyncTeleBot``).

Two lines for the common case::

    from botscale.adapters.telebot import install, polling_kwargs

    bot = telebot.TeleBot(TOKEN, use_class_middlewares=True)
    install(bot)
    bot.infinity_polling(**polling_kwargs(bot))

What :func:`install` wires (translation only; the core decides):

* a class-based middleware (``use_class_middlewares=True`` is required) that
  cancels limited updates with ``CancelUpdate`` (one notice per window), times
  every update in the monitor with its user and chat, marks replies to the
  current chat as interactive, and puts ``user_state`` into the handler ``data``;
* de-duplication of updates by ``update_id`` (telebot hands middlewares the
  inner objects, which carry no update id, so ``process_new_updates`` is wrapped);
* concurrency: for the threaded ``TeleBot``, its worker pool is replaced by a
  :class:`~botscale.ThreadedUpdateRunner` (each chat in order, ``num_threads``
  workers, bounded intake: the polling thread waits instead of queueing without
  end); for ``AsyncTeleBot``, each update runs through an
  :class:`~botscale.UpdateRunner` (each chat in order, a global cap, the time
  budget and ``cancel_slow``), and ``get_updates`` waits while too many
  updates are unfinished;
* outgoing flood control through telebot's request hooks, which are
  process-wide: ``apihelper.CUSTOM_REQUEST_SENDER`` (sync) and
  ``asyncio_helper._process_request`` (async; telebot has no public hook there).
  :func:`uninstall_flood_control` puts them back.
"""

from __future__ import annotations

from .._compat import require

require("telebot", "telebot", feature="botscale.adapters.telebot")

import asyncio  # noqa: E402
import contextvars  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import operator  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Final  # noqa: E402

import requests  # noqa: E402
import telebot  # noqa: E402
from telebot import apihelper, asyncio_handler_backends, asyncio_helper, handler_backends  # noqa: E402
from telebot.async_telebot import AsyncTeleBot  # noqa: E402

from .._flood import (  # noqa: E402
    AsyncFloodControl,
    FloodControl,
    OutgoingRequest,
    _reply_chat_var,
)
from .._incoming import PROCEED, IncomingGuard, UpdateInfo, _new_info  # noqa: E402
from .._telegram import (  # noqa: E402
    ApiFailure,
    FailureKind,
    classify_api_answer,
    failure_for_status,
)
from .._updates import (  # noqa: E402
    POLLING_TIMEOUT,
    ThreadedUpdateRunner,
    UpdateRunner,
    allowed_updates,
)

__all__ = [
    "AsyncGuardMiddleware",
    "GuardMiddleware",
    "Installed",
    "classify",
    "install",
    "install_flood_control",
    "polling_kwargs",
    "uninstall_flood_control",
    "update_info",
]

_log: Final = logging.getLogger("botscale.adapters.telebot")
_Message: Final = telebot.types.Message
UPDATE_TYPES: Final[list[str]] = list(telebot.util.update_types)


def update_info(obj: Any, update_type: str, update_id: int | None = None) -> UpdateInfo:
    """Describe the object telebot hands a handler (a Message, CallbackQuery, ...)."""
    if type(obj) is _Message:  # the common case, without the probing below
        where = obj.chat
        sender = obj.from_user
        user_id = sender.id if sender is not None else None
        return _new_info((update_type, update_id, user_id, where.id, where.type))
    user = getattr(obj, "from_user", None) or getattr(obj, "user", None)
    chat = getattr(obj, "chat", None)
    if chat is None:
        message = getattr(obj, "message", None)
        chat = getattr(message, "chat", None)
    user_id = getattr(user, "id", None)
    chat_id = getattr(chat, "id", None)
    return UpdateInfo(
        update_type,
        update_id,
        user_id if isinstance(user_id, int) else None,
        chat_id if isinstance(chat_id, int) else None,
        getattr(chat, "type", None),
    )


def _update_kind(update: Any) -> tuple[str, Any]:
    for kind in UPDATE_TYPES:
        body = getattr(update, kind, None)
        if body is not None:
            return kind, body
    return "unknown", None


# --------------------------------------------------------------------------- failures


class _ErrorAnswer(Exception):
    """A non-2xx answer of the sync sender, carried through the flood controller."""

    def __init__(self, response: requests.Response, failure: ApiFailure) -> None:
        super().__init__(failure.description)
        self.response = response
        self.failure = failure


def classify(exc: BaseException) -> ApiFailure | None:
    """telebot's (sync and async) exceptions as :class:`~botscale.ApiFailure`."""
    if isinstance(exc, _ErrorAnswer):
        return exc.failure
    if isinstance(exc, (apihelper.ApiTelegramException, asyncio_helper.ApiTelegramException)):
        return classify_api_answer(exc.error_code, exc.result_json) or ApiFailure(
            FailureKind.CLIENT, None, exc.error_code, exc.description
        )
    if isinstance(exc, (apihelper.ApiHTTPException, asyncio_helper.ApiHTTPException)):
        status = getattr(exc.result, "status_code", None) or getattr(exc.result, "status", 0)
        return failure_for_status(int(status or 0), str(exc), None)
    if isinstance(
        exc,
        (
            asyncio_helper.RequestTimeout,
            requests.ConnectionError,
            requests.Timeout,
            asyncio.TimeoutError,
        ),
    ):
        return ApiFailure(FailureKind.NETWORK, None, None, str(exc))
    return None


def _method_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- outgoing


_saved: dict[str, Any] = {}
_hook_lock = threading.Lock()


def install_flood_control(flood: FloodControl | AsyncFloodControl) -> None:
    """Send telebot's Bot API calls through ``flood`` (process-wide).

    A :class:`~botscale.FloodControl` hooks the sync ``TeleBot``
    (``apihelper.CUSTOM_REQUEST_SENDER``), an :class:`~botscale.AsyncFloodControl`
    the ``AsyncTeleBot`` (``asyncio_helper._process_request``).  When a call
    is finally refused, telebot raises its own ``ApiTelegramException``.
    """
    with _hook_lock:
        if isinstance(flood, FloodControl):
            _saved.setdefault("sender", apihelper.CUSTOM_REQUEST_SENDER)
            apihelper.CUSTOM_REQUEST_SENDER = _sync_sender(flood)  # type: ignore[assignment]
        elif isinstance(flood, AsyncFloodControl):
            _saved.setdefault("process_request", asyncio_helper._process_request)
            asyncio_helper._process_request = _async_process_request(
                flood, _saved["process_request"]
            )
        else:
            raise TypeError(f"flood must be FloodControl or AsyncFloodControl, got {type(flood)}")


def uninstall_flood_control() -> None:
    """Put telebot's request hooks back as they were before :func:`install_flood_control`."""
    with _hook_lock:
        if "sender" in _saved:
            apihelper.CUSTOM_REQUEST_SENDER = _saved.pop("sender")
        if "process_request" in _saved:
            asyncio_helper._process_request = _saved.pop("process_request")


def _sync_sender(flood: FloodControl) -> Callable[..., requests.Response]:
    def send(
        method: str,
        url: str,
        params: dict[str, Any] | None = None,
        files: Any = None,
        timeout: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        request = OutgoingRequest.from_params(_method_of(url), params)

        def attempt() -> requests.Response:
            session = apihelper._get_req_session()  # type: ignore[no-untyped-call]
            response = session.request(
                method, url, params=params, files=files, timeout=timeout, proxies=proxies
            )
            if 200 <= response.status_code < 300:
                return response  # type: ignore[no-any-return]
            try:
                payload = response.json()
            except ValueError:
                payload = None
            failure = classify_api_answer(response.status_code, payload)
            if failure is None:
                return response  # type: ignore[no-any-return]
            raise _ErrorAnswer(response, failure)

        try:
            return flood.call(request, attempt, classify=classify)
        except _ErrorAnswer as answer:
            return answer.response  # telebot turns it into its own ApiTelegramException

    return send


def _async_process_request(
    flood: AsyncFloodControl, original: Callable[..., Any]
) -> Callable[..., Any]:
    async def process_request(
        token: str, url: str, method: str = "get", params: Any = None, files: Any = None, **kw: Any
    ) -> Any:
        request = OutgoingRequest.from_params(url, params)

        async def attempt() -> Any:
            # telebot pops "timeout" from params: give every attempt its own copy
            return await original(
                token, url, method, dict(params) if params else params, files, **kw
            )

        return await flood.call(request, attempt, classify=classify)

    return process_request


# --------------------------------------------------------------------------- incoming


@dataclass(slots=True)
class _Current:
    """An update between a middleware's pre- and post-processing."""

    info: UpdateInfo
    token: contextvars.Token[int | str | None]
    started: float
    hold: Any = None
    own: contextvars.Token[_Current | None] | None = None


# pre- and post-processing of one update run in one thread (one task): a
# context variable carries the update between them, out of the handlers' data.
_in_progress: contextvars.ContextVar[_Current | None] = contextvars.ContextVar(
    "botscale_telebot_update", default=None
)


def _begin(current: _Current) -> None:
    current.own = _in_progress.set(current)


def _end() -> _Current | None:
    current = _in_progress.get()
    if current is None or current.own is None:
        return None
    _in_progress.reset(current.own)
    _reply_chat_var.reset(current.token)
    return current


_update_id: Final = operator.attrgetter("update_id")
_KIND_OF: Final[dict[str, str]] = {"chosen_inline_query": "chosen_inline_result"}
"""telebot's update types where they differ from the Bot API's field names."""
_MIDDLEWARE_TYPES: Final[list[str]] = [*UPDATE_TYPES, *_KIND_OF]


def _kind(update_type: str) -> str:
    return _KIND_OF.get(update_type, update_type)


class _UpdateSensitive:
    """``pre_process_<type>`` / ``post_process_<type>`` for every telebot update type.

    Update-sensitive middlewares are told the update type (telebot's handler
    list name) instead of guessing it from the object.
    """

    _pre: Callable[..., Any]
    _post: Callable[..., Any]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("pre_process_"):
            return functools.partial(self._pre, _kind(name[len("pre_process_") :]))
        if name.startswith("post_process_"):
            return functools.partial(self._post, _kind(name[len("post_process_") :]))
        raise AttributeError(name)


class GuardMiddleware(_UpdateSensitive, handler_backends.BaseMiddleware):
    """The incoming guard as a class-based middleware of the threaded ``TeleBot``.

    Update-sensitive: telebot tells it each update's type.  :func:`install`
    also gives the bot a faster path that does the same work without
    telebot's generic middleware loop while this is the bot's only middleware.
    """

    def __init__(self, bot: telebot.TeleBot, guard: IncomingGuard) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.update_sensitive = True
        self.update_types = _MIDDLEWARE_TYPES
        self.bot = bot
        self.guard = guard

    def _pre(self, kind: str, message: Any, data: dict[str, Any]) -> Any:
        """Limit, notice, state, timing start."""
        info = update_info(message, kind)
        guard = self.guard
        verdict = PROCEED if _arrived.get() is message else guard.check_limit(info)
        if not verdict.proceed:
            if verdict.notice is not None:
                _notify_sync(self.bot, message, info, verdict.notice)
            return handler_backends.CancelUpdate()
        if guard.state is not None:
            data["user_state"] = guard.handler_state(info)
        _begin(_Current(info, _reply_chat_var.set(info.chat_id), guard.timer()))
        return None

    def _post(self, kind: str, message: Any, data: dict[str, Any], exception: Any) -> None:
        """Timing end."""
        current = _end()
        if current is not None:
            self.guard.record_update(current.info, current.started, exception is not None)


class AsyncGuardMiddleware(_UpdateSensitive, asyncio_handler_backends.BaseMiddleware):
    """The incoming guard as a class-based middleware of ``AsyncTeleBot``.

    Used alone, it also holds the chat's turn and a global slot of
    ``runner`` around the handlers, so one chat's updates run in order
    (register it last); a slow update is then logged but cannot be cancelled.
    :func:`install` runs each update through :meth:`UpdateRunner.run
    <botscale.UpdateRunner.run>` instead (so ``cancel_slow`` applies) and
    gives this middleware no runner.
    """

    def __init__(
        self, bot: AsyncTeleBot, guard: IncomingGuard, runner: UpdateRunner | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.update_sensitive = True
        self.update_types = _MIDDLEWARE_TYPES
        self.bot = bot
        self.guard = guard
        self.runner = runner

    async def _pre(self, kind: str, message: Any, data: dict[str, Any]) -> Any:
        """Limit, notice, state, turn, timing start."""
        info = update_info(message, kind)
        guard = self.guard
        arrived = _arrived.get() is message  # decided on arrival, running in its turn
        if arrived:
            verdict = PROCEED
        elif guard.asynchronous:
            verdict = await guard.acheck_limit(info)
        else:
            verdict = guard.check_limit(info)
        if not verdict.proceed:
            if verdict.notice is not None:
                await _notify_async(self.bot, message, info, verdict.notice)
            return asyncio_handler_backends.CancelUpdate()
        if guard.state is not None:
            data["user_state"] = guard.handler_state(info)
        runner = self.runner
        hold = None if runner is None or arrived else await runner.hold(info)
        _begin(_Current(info, _reply_chat_var.set(info.chat_id), guard.timer(), hold))
        return None

    async def _post(self, kind: str, message: Any, data: dict[str, Any], exception: Any) -> None:
        """Turn release, timing end."""
        current = _end()
        if current is None:
            return
        if current.hold is not None:
            current.hold.release()
        self.guard.record_update(current.info, current.started, exception is not None)


_MAX_SIGNATURES: Final = 1024


def _not_timed(started: float, error: bool, info: Any) -> None:
    """The stopwatch of a guard without a monitor."""


def _fast_path(bot: telebot.TeleBot, middleware: GuardMiddleware) -> None:
    """Run the guard without telebot's generic middleware loop while it is the only middleware.

    With class middlewares on, telebot runs every update through a loop that
    calls ``inspect.signature`` on each handler and reaches middleware hooks
    through ``hasattr``/``getattr``: more than its bare dispatch costs.  This
    replaces the bot's ``_notify_command_handlers`` with the same steps for
    the common case (the guard's middleware alone): the guard's decision,
    then telebot's handler calling convention (``data`` or its keys by
    parameter name, ``pass_bot``, ``ContinueHandling``, errors to the bot's
    exception handler), each handler's parameters read once, ``data`` built
    only for a handler that takes more than the update.  With any other
    middleware, telebot's own methods run, unchanged.
    """
    original = bot._notify_command_handlers
    guard = middleware.guard
    timer = guard.timer
    stops: dict[str, Callable[[float, bool, Any], None]] = {}  # update type -> its stopwatch
    test = bot._test_message_handler
    logger = telebot.logger
    continuing = handler_backends.ContinueHandling
    signatures: dict[int, tuple[Any, tuple[str, ...]]] = {}

    def parameters(function: Any) -> tuple[str, ...]:
        known = signatures.get(id(function))
        if known is not None and known[0] is function:
            return known[1]
        names = tuple(inspect.signature(function).parameters)
        if len(signatures) >= _MAX_SIGNATURES:
            signatures.clear()
        signatures[id(function)] = (function, names)
        return names

    def notify(handlers: Any, new_messages: Any, update_type: str) -> None:
        middlewares = bot.middlewares
        if not middlewares or len(middlewares) != 1 or middlewares[0] is not middleware:
            original(handlers, new_messages, update_type)  # type: ignore[no-untyped-call]
            return
        if bot.threaded:
            for message in new_messages:
                bot.worker_pool.put(  # type: ignore[no-untyped-call]
                    run, message, handlers=handlers, update_type=update_type
                )
            return
        for message in new_messages:  # telebot's _exec_task, unthreaded
            try:
                run(message, handlers, update_type)
            except Exception as exc:
                if not bot._handle_exception(exc):
                    raise

    def stopwatch(kind: str) -> Callable[[float, bool, Any], None]:
        stop = guard.recorder(f"update.{kind}") or _not_timed
        return stops.setdefault(kind, stop)

    def run(message: Any, handlers: Any, update_type: str) -> None:
        kind = _KIND_OF.get(update_type, update_type)
        if type(message) is _Message:  # update_info's common case, one call less
            where = message.chat
            sender = message.from_user
            user_id = sender.id if sender is not None else None
            info = _new_info((kind, None, user_id, where.id, where.type))
        else:
            info = update_info(message, kind)
        verdict = PROCEED if _arrived.get() is message else guard.check_limit(info)
        if not verdict.proceed:
            if verdict.notice is not None:
                _notify_sync(bot, message, info, verdict.notice)
            return
        token = _reply_chat_var.set(info[3])
        started = timer()
        data: dict[str, Any] | None = None
        error: Exception | None = None
        try:
            for handler in handlers:
                if not test(handler, message):  # type: ignore[no-untyped-call]
                    continue
                function = handler["function"]
                known = signatures.get(id(function))  # parameters(), inline when known
                if known is not None and known[0] is function:
                    params = known[1]
                else:
                    params = parameters(function)
                if len(params) == 1:
                    result = function(message)
                else:
                    if data is None:
                        state = guard.handler_state(info)
                        data = {} if state is None else {"user_state": state}
                    if "data" in params:
                        if len(params) == 2:
                            result = function(message, data)
                        elif len(params) == 3:
                            result = function(message, data=data, bot=bot)
                        else:
                            logger.error(
                                "It is not allowed to pass data and values inside data to the "
                                f"handler. Check your handler: {function}"
                            )
                            return
                    else:
                        given = {key: value for key, value in data.items() if key in params}
                        if handler.get("pass_bot"):
                            given["bot"] = bot
                        if len(given) > len(params) - 1:
                            logger.error(
                                "You are passing more parameters than the handler needs. "
                                f"Check your handler: {function}"
                            )
                            return
                        result = function(message, **given)
                if not isinstance(result, continuing):
                    break
        except Exception as exc:
            error = exc
            if not bot._handle_exception(exc):
                logger.error(str(exc))
                logger.debug("Exception traceback:\n%s", traceback.format_exc())
        finally:
            _reply_chat_var.reset(token)
        (stops.get(kind) or stopwatch(kind))(started, error is not None, info)

    bot._notify_command_handlers = notify  # type: ignore[method-assign]


def kind_of(obj: Any) -> str:
    """The update kind (Bot API field name) of the object telebot hands a middleware."""
    name = type(obj).__name__
    if name != "Message":
        return _KIND_BY_TYPE.get(name, "unknown")
    edited = obj.edit_date is not None
    if getattr(obj, "business_connection_id", None) is not None:
        return "edited_business_message" if edited else "business_message"
    if obj.chat.type == "channel":
        return "edited_channel_post" if edited else "channel_post"
    return "edited_message" if edited else "message"


_KIND_BY_TYPE: Final[dict[str, str]] = {
    "CallbackQuery": "callback_query",
    "InlineQuery": "inline_query",
    "ChosenInlineResult": "chosen_inline_result",
    "ShippingQuery": "shipping_query",
    "PreCheckoutQuery": "pre_checkout_query",
    "Poll": "poll",
    "PollAnswer": "poll_answer",
    "ChatMemberUpdated": "chat_member",
    "ChatJoinRequest": "chat_join_request",
    "MessageReactionUpdated": "message_reaction",
    "MessageReactionCountUpdated": "message_reaction_count",
    "ChatBoostUpdated": "chat_boost",
    "ChatBoostRemoved": "removed_chat_boost",
    "BusinessConnection": "business_connection",
    "BusinessMessagesDeleted": "deleted_business_messages",
    "PaidMediaPurchased": "purchased_paid_media",
}


def _notify_sync(bot: telebot.TeleBot, obj: Any, info: UpdateInfo, text: str) -> None:
    try:
        if type(obj).__name__ == "CallbackQuery":
            bot.answer_callback_query(obj.id, text)
        elif info.chat_id is not None:
            bot.send_message(info.chat_id, text)
    except Exception:
        _log.warning("could not send the rate-limit notice to chat %s", info.chat_id, exc_info=True)


async def _notify_async(bot: AsyncTeleBot, obj: Any, info: UpdateInfo, text: str) -> None:
    try:
        if type(obj).__name__ == "CallbackQuery":
            await bot.answer_callback_query(obj.id, text)
        elif info.chat_id is not None:
            await bot.send_message(info.chat_id, text)
    except Exception:
        _log.warning("could not send the rate-limit notice to chat %s", info.chat_id, exc_info=True)


_arrived: contextvars.ContextVar[object] = contextvars.ContextVar(
    "botscale_telebot_arrived", default=None
)
"""The update being handled, when its update-level limit was decided on arrival."""


def _allowed_on_arrival(
    message: object, func: Callable[..., Any], args: Any, kwargs: dict[str, Any]
) -> None:
    token = _arrived.set(message)
    try:
        func(*args, **kwargs)
    finally:
        _arrived.reset(token)


class _RunnerPool:
    """TeleBot's worker-pool interface on a :class:`~botscale.ThreadedUpdateRunner`."""

    def __init__(
        self,
        bot: telebot.TeleBot,
        runner: ThreadedUpdateRunner,
        guard: IncomingGuard | None = None,
    ) -> None:
        self.telebot = bot
        self.runner = runner
        self.guard = guard
        self.exception_event = threading.Event()
        self.exception_info: BaseException | None = None
        self.num_threads = runner.concurrency
        runner._on_error = self._on_error

    def put(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        # _run_middlewares_and_handler(message, handlers=..., middlewares=..., update_type=...)
        update_type = kwargs.get("update_type", args[3] if len(args) >= 4 else None)
        if args and isinstance(update_type, str):
            info = update_info(args[0], _kind(update_type))
            guard = self.guard
            if guard is not None and guard.limiter is not None and not guard.asynchronous:
                # The update-level limit, decided on arrival: in the runner a
                # chat's updates wait for each other, at the pace of its replies.
                verdict = guard.check_limit(info)
                if not verdict.proceed:
                    if verdict.notice is not None:  # sent in the chat's turn, like a reply
                        notice = functools.partial(
                            _notify_sync, self.telebot, args[0], info, verdict.notice
                        )
                        self.runner.submit(info, notice)
                    return
                job = functools.partial(_allowed_on_arrival, args[0], func, args, kwargs)
                self.runner.submit(info, job)
                return
        else:
            info = UpdateInfo("unknown")  # a next-step or reply handler: no order key
        self.runner.submit(info, functools.partial(func, *args, **kwargs))

    def _on_error(self, exc: BaseException) -> None:
        handler = self.telebot.exception_handler
        if handler is not None and handler.handle(exc):  # type: ignore[no-untyped-call]
            return
        self.exception_info = exc
        self.exception_event.set()

    def raise_exceptions(self) -> None:
        if self.exception_event.is_set() and self.exception_info is not None:
            raise self.exception_info

    def clear_exceptions(self) -> None:
        self.exception_event.clear()

    def close(self) -> None:
        self.runner.close()


def _dedup_sync(bot: telebot.TeleBot, guard: IncomingGuard) -> None:
    if guard.dedup is None:
        return
    original = bot.process_new_updates
    drop_duplicates = guard.drop_duplicates
    seen_update = guard.seen_update

    def process_new_updates(updates: list[Any]) -> None:
        if len(updates) == 1:  # a webhook's update: one question, no list to build
            if not seen_update(updates[0].update_id):
                original(updates)
                return
            fresh = []
        else:
            fresh = drop_duplicates(updates, _update_id)
        if fresh:
            original(fresh)
        elif updates:
            bot.last_update_id = max(bot.last_update_id, max(u.update_id for u in updates))

    bot.process_new_updates = process_new_updates  # type: ignore[method-assign]


def _dedup_async(bot: AsyncTeleBot, guard: IncomingGuard, runner: UpdateRunner | None) -> None:
    original = bot.process_new_updates
    original_get = bot.get_updates
    waiting: asyncio.Condition | None = None
    pending = 0

    async def process_new_updates(updates: list[Any]) -> None:
        nonlocal pending
        if guard.asynchronous:
            fresh = await guard.adrop_duplicates(updates, _update_id)
        else:
            fresh = guard.drop_duplicates(updates, _update_id)
        pending += len(fresh)
        try:
            if fresh:
                await original(fresh)
        finally:
            pending -= len(fresh)
            if waiting is not None:
                async with waiting:
                    waiting.notify_all()

    async def get_updates(*args: Any, **kwargs: Any) -> Any:
        nonlocal waiting
        if runner is not None and pending >= runner.max_pending:
            if waiting is None:
                waiting = asyncio.Condition()
            async with waiting:
                await waiting.wait_for(lambda: pending < runner.max_pending)
        return await original_get(*args, **kwargs)

    bot.process_new_updates = process_new_updates  # type: ignore[method-assign]
    bot.get_updates = get_updates  # type: ignore[method-assign]


def _run_in_turn(bot: AsyncTeleBot, guard: IncomingGuard, runner: UpdateRunner) -> None:
    """Run each AsyncTeleBot update (its middlewares and handlers) through ``runner.run``.

    The update-level limit is decided when the update arrives, before it
    waits for its chat's turn (a limited one never takes a turn, but for its
    notice); the rest runs in the turn, inside the runner, so its time budget
    applies and ``cancel_slow`` can cancel it.  A cancelled update never
    reaches the middleware's post-processing: it is timed where it is
    cancelled (as on the other frameworks, not as an error).
    """
    original = bot._run_middlewares_and_handlers

    async def run_middlewares_and_handlers(
        message: Any, handlers: Any, middlewares: Any, update_type: str
    ) -> None:
        info = update_info(message, _kind(update_type))
        verdict = await guard.acheck_limit(info)  # for any guard, sync pieces or async
        if not verdict.proceed:
            if verdict.notice is not None:  # sent in the chat's turn, like a reply
                notice = verdict.notice
                await runner.run(info, lambda: _notify_async(bot, message, info, notice))
            return

        async def work() -> None:
            started = guard.timer()
            token = _arrived.set(message)
            try:
                await original(message, handlers, middlewares, update_type)  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:  # post_process will not run: time it here
                guard.record_update(info, started)
                raise
            finally:
                _arrived.reset(token)

        await runner.run(info, work)

    bot._run_middlewares_and_handlers = run_middlewares_and_handlers  # type: ignore[method-assign]


# --------------------------------------------------------------------------- install


@dataclass
class Installed:
    """What :func:`install` set up.

    Attributes:
        guard: the incoming guard.
        flood: the flood controller (``None`` if not installed).
        runner: the update runner (``None`` if not installed).
    """

    guard: IncomingGuard
    flood: FloodControl | AsyncFloodControl | None
    runner: ThreadedUpdateRunner | UpdateRunner | None


_DEFAULT: Final[Any] = object()


def install(
    bot: telebot.TeleBot | AsyncTeleBot,
    *,
    guard: IncomingGuard | None = _DEFAULT,
    flood: FloodControl | AsyncFloodControl | None = _DEFAULT,
    runner: ThreadedUpdateRunner | UpdateRunner | None = _DEFAULT,
) -> Installed:
    """Put botscale into a telebot bot (sync ``TeleBot`` or ``AsyncTeleBot``).

    Args:
        bot: the bot; a sync ``TeleBot`` must be built with ``use_class_middlewares=True``.
        guard: the incoming decisions (default ``IncomingGuard()``), or ``None``.
        flood: the flood controller (default: a ``FloodControl`` for ``TeleBot``,
            an ``AsyncFloodControl`` for ``AsyncTeleBot``), or ``None``.
            Process-wide: telebot's request hooks are module globals.
        runner: ``ThreadedUpdateRunner(num_threads)`` for a threaded ``TeleBot``,
            ``UpdateRunner()`` for ``AsyncTeleBot`` (default), or ``None``.

    Raises:
        ValueError: a sync ``TeleBot`` without ``use_class_middlewares=True``.
    """
    if guard is _DEFAULT:
        guard = IncomingGuard()
    if guard is None:
        guard = IncomingGuard(None, dedup=False)
    if isinstance(bot, AsyncTeleBot):
        if flood is _DEFAULT:
            flood = AsyncFloodControl()
        if runner is _DEFAULT:
            runner = UpdateRunner()
        if runner is not None and not isinstance(runner, UpdateRunner):
            raise TypeError("AsyncTeleBot needs an UpdateRunner")
        _dedup_async(bot, guard, runner)
        if runner is not None:
            _run_in_turn(bot, guard, runner)
        bot.setup_middleware(AsyncGuardMiddleware(bot, guard))
    elif isinstance(bot, telebot.TeleBot):
        if not bot.use_class_middlewares:
            raise ValueError(
                "build the TeleBot with use_class_middlewares=True to install botscale"
            )
        if flood is _DEFAULT:
            flood = FloodControl()
        if runner is _DEFAULT:
            runner = ThreadedUpdateRunner(bot.worker_pool.num_threads) if bot.threaded else None
        if runner is not None:
            if not isinstance(runner, ThreadedUpdateRunner):
                raise TypeError("a threaded TeleBot needs a ThreadedUpdateRunner")
            if bot.threaded:
                bot.worker_pool.close()  # type: ignore[no-untyped-call]
                bot.worker_pool = _RunnerPool(bot, runner, guard)  # type: ignore[assignment]
        if guard.asynchronous:
            raise TypeError(
                "a sync TeleBot needs a guard with sync pieces (RedisDeduplicator, "
                "RedisBackend, RedisStateStore), not their async twins"
            )
        _dedup_sync(bot, guard)
        middleware = GuardMiddleware(bot, guard)
        bot.setup_middleware(middleware)
        _fast_path(bot, middleware)
    else:
        raise TypeError(f"install needs a TeleBot or AsyncTeleBot, got {type(bot).__name__}")
    if flood is not None:
        install_flood_control(flood)
    return Installed(guard, flood, runner)


_HANDLER_LISTS: Final[dict[str, str]] = {
    "message_handlers": "message",
    "edited_message_handlers": "edited_message",
    "channel_post_handlers": "channel_post",
    "edited_channel_post_handlers": "edited_channel_post",
    "message_reaction_handlers": "message_reaction",
    "message_reaction_count_handlers": "message_reaction_count",
    "inline_handlers": "inline_query",
    "chosen_inline_handlers": "chosen_inline_result",
    "callback_query_handlers": "callback_query",
    "shipping_query_handlers": "shipping_query",
    "pre_checkout_query_handlers": "pre_checkout_query",
    "poll_handlers": "poll",
    "poll_answer_handlers": "poll_answer",
    "my_chat_member_handlers": "my_chat_member",
    "chat_member_handlers": "chat_member",
    "chat_join_request_handlers": "chat_join_request",
    "chat_boost_handlers": "chat_boost",
    "removed_chat_boost_handlers": "removed_chat_boost",
    "business_connection_handlers": "business_connection",
    "business_message_handlers": "business_message",
    "edited_business_message_handlers": "edited_business_message",
    "deleted_business_messages_handlers": "deleted_business_messages",
    "purchased_paid_media_handlers": "purchased_paid_media",
}


_HANDLER_LIST_OF: Final[dict[str, str]] = {kind: attr for attr, kind in _HANDLER_LISTS.items()}


def polling_kwargs(bot: telebot.TeleBot | AsyncTeleBot) -> dict[str, Any]:
    """``bot.infinity_polling(**polling_kwargs(bot))``: the polling preset.

    Long polling with a 30 s timeout and ``allowed_updates`` limited to the
    kinds the registered handlers receive (Telegram sends 100 per batch).
    """
    kinds = {kind for attr, kind in _HANDLER_LISTS.items() if getattr(bot, attr, None)}
    wanted = allowed_updates(kinds)
    if isinstance(bot, AsyncTeleBot):
        return {
            "timeout": POLLING_TIMEOUT,
            "request_timeout": POLLING_TIMEOUT + 10,
            "allowed_updates": wanted,
        }
    return {
        "timeout": POLLING_TIMEOUT + 10,
        "long_polling_timeout": POLLING_TIMEOUT,
        "allowed_updates": wanted,
    }

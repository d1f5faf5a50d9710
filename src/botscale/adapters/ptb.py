"""botscale for python-telegram-bot 22: translation only, the core decides.

One line for the common case::

    from botscale.adapters.ptb import install, polling_kwargs

    app = install(ApplicationBuilder().token(TOKEN))     # builds the Application
    app.add_handler(...)                                  # or before, on the builder's app
    app.run_polling(**polling_kwargs(app))

What :func:`install` wires:

* :class:`FloodRateLimiter`, a ``BaseRateLimiter`` (``ApplicationBuilder().rate_limiter``):
  every Bot API call through :class:`~botscale.AsyncFloodControl`; pass a
  :class:`~botscale.Priority` as ``rate_limit_args`` to rank a call by hand;
* :class:`OrderedUpdateProcessor`, a ``BaseUpdateProcessor``
  (``ApplicationBuilder().concurrent_updates``): updates run concurrently with
  each chat's order kept, a global cap and bounded intake (the fetch loop waits
  instead of creating a task per update);
* the incoming guard as a handler in group -1 (:class:`GuardHandler`): duplicates and limited
  updates stop there with ``ApplicationHandlerStop`` (a limited user gets one
  notice per window); the current update's :class:`~botscale.UserState` is
  :func:`user_state`, and every handler callback is timed by the monitor.
"""

from __future__ import annotations

from .._compat import require

require("telegram.ext", "ptb", feature="botscale.adapters.ptb")

import contextvars  # noqa: E402
import functools  # noqa: E402
import logging  # noqa: E402
import weakref  # noqa: E402
from collections.abc import Awaitable, Callable, Coroutine  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Final  # noqa: E402

from telegram import Update  # noqa: E402
from telegram.error import (  # noqa: E402
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import (  # noqa: E402
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    BaseHandler,
    BaseRateLimiter,
    BaseUpdateProcessor,
    CallbackContext,
    ConversationHandler,
)

from .._flood import AsyncFloodControl, OutgoingRequest, Priority, _reply_chat_var  # noqa: E402
from .._incoming import (  # noqa: E402
    AsyncUserState,
    IncomingGuard,
    UpdateInfo,
    UserState,
    Verdict,
    _new_info,
)
from .._telegram import ApiFailure, FailureKind  # noqa: E402
from .._updates import POLLING_TIMEOUT, UpdateRunner, allowed_updates  # noqa: E402

__all__ = [
    "FloodRateLimiter",
    "GuardHandler",
    "Installed",
    "OrderedUpdateProcessor",
    "async_user_state",
    "classify",
    "guard_handler",
    "install",
    "installed",
    "polling_kwargs",
    "update_info",
    "user_state",
]

_log: Final = logging.getLogger("botscale.adapters.ptb")

GUARD_GROUP: Final = -1
"""The handler group of the incoming guard (before every default group)."""

_current: contextvars.ContextVar[tuple[UpdateInfo, IncomingGuard] | None] = contextvars.ContextVar(
    "botscale_ptb_update", default=None
)


def classify(exc: BaseException) -> ApiFailure | None:
    """PTB's exceptions as :class:`~botscale.ApiFailure` (``None``: not a Bot API failure).

    PTB folds 5xx answers into ``NetworkError`` (``BadRequest`` is a subclass
    too, tested first): those are retried with backoff like network errors.
    """
    if not isinstance(exc, TelegramError):
        return None
    message = exc.message
    if isinstance(exc, RetryAfter):
        seconds = exc._retry_after.total_seconds()  # the property warns about its future type
        return ApiFailure(FailureKind.FLOOD, seconds, 429, message)
    if isinstance(exc, Forbidden):
        return ApiFailure(FailureKind.FORBIDDEN, None, 403, message)
    if isinstance(exc, BadRequest):
        return ApiFailure(FailureKind.CLIENT, None, 400, message)
    if isinstance(exc, TimedOut):
        return ApiFailure(FailureKind.NETWORK, None, None, message)
    if isinstance(exc, (InvalidToken, Conflict, ChatMigrated, EndPointNotFound)):
        return ApiFailure(FailureKind.CLIENT, None, None, message)
    if isinstance(exc, NetworkError):
        return ApiFailure(FailureKind.SERVER, None, None, message)
    return ApiFailure(FailureKind.CLIENT, None, None, message)


def update_info(update: object) -> UpdateInfo:
    """Describe a PTB ``Update`` (anything else becomes kind ``"unknown"``)."""
    if type(update) is not Update and not isinstance(update, Update):
        return UpdateInfo("unknown")
    message = update.message
    if message is not None:  # the common case, without the probing below
        user = message.from_user
        chat = message.chat
        return _new_info(
            ("message", update.update_id, user.id if user else None, chat.id, chat.type)
        )
    kind = "unknown"
    for name in _KINDS:
        if getattr(update, name, None) is not None:
            kind = name
            break
    someone = update.effective_user
    where = update.effective_chat
    return UpdateInfo(
        kind,
        update.update_id,
        someone.id if someone is not None else None,
        where.id if where is not None else None,
        where.type if where is not None else None,
    )


_KINDS: Final = tuple(Update.ALL_TYPES)


def user_state() -> UserState | None:
    """The current update's user state (set by the guard; ``None`` without a store).

    Raises:
        TypeError: the guard's store is an :class:`~botscale.AsyncStateStore`
            (use :func:`async_user_state`).
    """
    current = _current.get()
    return None if current is None else current[1].user_state(current[0])


def async_user_state() -> AsyncUserState | None:
    """:func:`user_state` when the guard's store is an :class:`~botscale.AsyncStateStore`.

    Raises:
        TypeError: the guard's store is a sync :class:`~botscale.StateStore`.
    """
    current = _current.get()
    return None if current is None else current[1].async_user_state(current[0])


class FloodRateLimiter(BaseRateLimiter[Priority]):
    """PTB's rate-limiter seam, filled with :class:`~botscale.AsyncFloodControl`.

    ``ApplicationBuilder().rate_limiter(FloodRateLimiter())``.  A call's
    ``rate_limit_args`` may be a :class:`~botscale.Priority`
    (``await bot.send_message(..., rate_limit_args=Priority.BULK)``).
    """

    def __init__(self, flood: AsyncFloodControl | None = None) -> None:
        self.flood = flood if flood is not None else AsyncFloodControl()

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Nothing to release."""

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: Priority | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Send the call in its turn, retrying as the flood controller decides."""
        priority = rate_limit_args if isinstance(rate_limit_args, Priority) else None
        request = OutgoingRequest.from_params(endpoint, data, priority=priority)
        return await self.flood.call(request, lambda: callback(*args, **kwargs), classify=classify)


class OrderedUpdateProcessor(BaseUpdateProcessor):
    """Concurrent updates with each chat's order kept, a global cap and bounded intake.

    ``ApplicationBuilder().concurrent_updates(OrderedUpdateProcessor())``.
    PTB's own processors start a task per fetched update (an unbounded pile
    when a backlog arrives); this one reports one "concurrent update" to
    PTB, so the fetch loop hands updates over one by one, and the
    :class:`~botscale.UpdateRunner` accepts each only when fewer than its
    ``max_pending`` are unfinished, then runs it behind its chat's earlier
    updates, at most ``concurrency`` at once.

    Args:
        runner: the runner (default ``UpdateRunner()``).
        guard: decides each update on arrival (de-duplication and the
            update-level limit, before the update waits for its chat's turn;
            a denied update never enters the runner but for its notice) and
            times every update in its monitor (``update.<kind>``).
    """

    def __init__(
        self, runner: UpdateRunner | None = None, guard: IncomingGuard | None = None
    ) -> None:
        super().__init__(max_concurrent_updates=1)
        self.runner = runner if runner is not None else UpdateRunner()
        self.guard = guard

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Hand the update to the runner (returns once it is accepted, not finished)."""
        info = update_info(update)
        guard = self.guard
        if guard is not None and isinstance(update, Update):
            # Decided on arrival, before the update waits for its chat's turn
            # (at the pace of the chat's replies): a burst is seen as one.
            verdict = await guard.acheck(info) if guard.asynchronous else guard.check(info)
            if not verdict.proceed:
                _close(coroutine)
                if verdict.notice is not None:  # sent in the chat's turn, like a reply
                    notice = functools.partial(_send_notice, update, info, verdict.notice)
                    await self.runner.submit(info, notice)
                return
            _decided[id(update)] = update
            job = functools.partial(_decided_update, guard, update, info, coroutine)
            await self.runner.submit(info, job)
        elif guard is None or guard.monitor is None:
            await self.runner.submit(info, functools.partial(_awaited, coroutine))
        else:
            await self.runner.submit(info, functools.partial(_timed_update, guard, info, coroutine))

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Wait for the accepted updates to finish."""
        await self.runner.join()


_decided: dict[int, Update] = {}
"""Updates the processor let through on arrival (by ``id``): the guard handler lets them on."""


def _close(coroutine: Awaitable[Any]) -> None:
    close = getattr(coroutine, "close", None)
    if close is not None:
        close()  # never run: no "never awaited" warning


async def _send_notice(update: Update, info: UpdateInfo, text: str) -> None:
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text)
        elif info.chat_id is not None:
            await update.get_bot().send_message(info.chat_id, text)
    except Exception:
        _log.warning("could not send the rate-limit notice to chat %s", info.chat_id, exc_info=True)


async def _decided_update(
    guard: IncomingGuard, update: Update, info: UpdateInfo, coroutine: Awaitable[Any]
) -> None:
    try:
        if guard.monitor is None:
            await coroutine
        else:
            await _timed_update(guard, info, coroutine)
    finally:
        _decided.pop(id(update), None)


async def _awaited(coroutine: Awaitable[Any]) -> None:
    await coroutine


async def _timed_update(guard: IncomingGuard, info: UpdateInfo, coroutine: Awaitable[Any]) -> None:
    started = guard.timer()
    try:
        await coroutine
    except BaseException as exc:
        guard.record_update(info, started, isinstance(exc, Exception))
        raise
    guard.record_update(info, started)


class GuardHandler(BaseHandler[Update, Any, Any]):
    """The incoming guard as the handler of group -1 (:func:`install` adds it).

    Duplicates and limited updates stop there with ``ApplicationHandlerStop``
    (a limited user gets the guard's notice, at most once per window); other
    updates go on to the bot's handlers with :func:`user_state` and the reply
    chat set.  The decision is made in ``check_update``, so an update that
    goes ahead costs no callback at all (an async guard, or a notice to send,
    is awaited in ``handle_update``).  Always blocking, also under
    ``Defaults(block=False)``: the stop must come before the other groups run.
    With a monitor and the application known, handlers added at any time are
    timed from their first update on.

    Args:
        guard: the decisions.
        application: the application whose handlers are timed (``install`` passes it).
    """

    __slots__ = ("_application", "_known", "guard")

    def __init__(
        self,
        guard: IncomingGuard,
        application: Application[Any, Any, Any, Any, Any, Any] | None = None,
    ) -> None:
        super().__init__(self._callback, block=True)
        self.guard = guard
        self._application = application
        self._known = -1  # handlers seen by the last timing pass

    def check_update(self, update: object) -> bool | Verdict:
        """Decide a sync guard's update here: ``False`` to go on, a stop, or the notice to send."""
        if type(update) is not Update and not isinstance(update, Update):
            return False
        guard = self.guard
        app = self._application
        if app is not None and guard.monitor is not None:
            count = sum(map(len, app.handlers.values()))
            if count != self._known:  # handlers were added since: time them too
                self._known = count
                monitor_handlers(app, guard)
        if _decided.get(id(update)) is update:  # decided on arrival by OrderedUpdateProcessor
            info = update_info(update)
            _current.set((info, guard))
            _reply_chat_var.set(info[3])
            return False
        if guard.asynchronous:
            return True  # decided in handle_update, where it can be awaited
        info = update_info(update)
        verdict = guard.check(info)
        if verdict.proceed:
            # Context variables set here stay set for the handlers of this
            # update (the same task; non-blocking handlers copy the context).
            _current.set((info, guard))
            _reply_chat_var.set(info[3])
            return False  # nothing to run in this group: on to the bot's handlers
        if verdict.notice is None:
            raise ApplicationHandlerStop
        return verdict  # handle_update sends the notice, then stops

    async def _callback(self, update: Update, context: CallbackContext[Any, Any, Any, Any]) -> None:
        await self.handle_update(update, context.application, True, context)

    async def handle_update(
        self,
        update: Update,
        application: Application[Any, Any, Any, Any, Any, Any],
        check_result: object,
        context: CallbackContext[Any, Any, Any, Any],
    ) -> None:
        """Send a limited user's notice, or decide an update with an async guard."""
        info = update_info(update)
        if isinstance(check_result, Verdict):
            verdict = check_result
        else:
            guard = self.guard
            verdict = await guard.acheck(info) if guard.asynchronous else guard.check(info)
            if verdict.proceed:
                _current.set((info, guard))
                _reply_chat_var.set(info[3])
                return
        if verdict.notice is not None:
            await _deliver_notice(update, context, info, verdict.notice)
        raise ApplicationHandlerStop


def guard_handler(
    guard: IncomingGuard, application: Application[Any, Any, Any, Any, Any, Any] | None = None
) -> GuardHandler:
    """The incoming guard as the handler of group -1 (``install`` adds it)."""
    return GuardHandler(guard, application)


async def _deliver_notice(
    update: Update, context: CallbackContext[Any, Any, Any, Any], info: UpdateInfo, text: str
) -> None:
    try:
        if update.callback_query is not None:
            await update.callback_query.answer(text)
        elif info.chat_id is not None:
            await context.bot.send_message(info.chat_id, text)
    except Exception:
        _log.warning("could not send the rate-limit notice to chat %s", info.chat_id, exc_info=True)


def _timed(guard: IncomingGuard, callback: Callable[..., Any], name: str) -> Callable[..., Any]:
    if getattr(callback, "__botscale_timed__", False):
        return callback
    record = guard.recorder(name, _context_of)
    timer = guard.timer
    if record is None:
        return callback

    @functools.wraps(callback)
    async def timed(update: object, context: Any) -> Any:
        started = timer()
        try:
            result = await callback(update, context)
        except BaseException as exc:
            record(started, isinstance(exc, Exception), update)
            raise
        record(started, False, update)
        return result

    timed.__botscale_timed__ = True  # type: ignore[attr-defined]
    return timed


def _context_of(update: object) -> dict[str, object]:
    """A slow handler's context: the guard's description of its update (read only then)."""
    current = _current.get()
    info = current[0] if current is not None else update_info(update)
    return {"update": info.kind, "user_id": info.user_id, "chat_id": info.chat_id}


def _handlers(items: Any) -> list[BaseHandler[Any, Any, Any]]:
    found: list[BaseHandler[Any, Any, Any]] = []
    for handler in items:
        if isinstance(handler, ConversationHandler):
            found += _handlers(handler.entry_points)
            for state_handlers in handler.states.values():
                found += _handlers(state_handlers)
            found += _handlers(handler.fallbacks)
        else:
            found.append(handler)
    return found


def monitor_handlers(app: Application[Any, Any, Any, Any, Any, Any], guard: IncomingGuard) -> int:
    """Time every handler callback registered now as ``handler.<name>``; return how many.

    Handlers added later are not timed: call it again (it skips timed ones).
    """
    if guard.monitor is None:
        return 0
    count = 0
    for group, handlers in app.handlers.items():
        if group == GUARD_GROUP:
            continue
        for handler in _handlers(handlers):
            callback = handler.callback
            label = getattr(callback, "__qualname__", None) or repr(callback)
            name = f"handler.{label}"
            handler.callback = _timed(guard, callback, name)
            count += 1
    return count


@dataclass
class Installed:
    """What :func:`install` set up (``installed(app)`` finds it again).

    Attributes:
        guard: the incoming guard.
        flood: the flood controller (``None`` if not installed).
        runner: the update runner (``None`` if not installed).
    """

    guard: IncomingGuard
    flood: AsyncFloodControl | None
    runner: UpdateRunner | None


_installed: weakref.WeakKeyDictionary[Any, Installed] = weakref.WeakKeyDictionary()
_DEFAULT: Final[Any] = object()


def installed(app: Application[Any, Any, Any, Any, Any, Any]) -> Installed | None:
    """What :func:`install` set up on ``app``."""
    return _installed.get(app)


def install(
    target: ApplicationBuilder[Any, Any, Any, Any, Any, Any]
    | Application[Any, Any, Any, Any, Any, Any],
    *,
    guard: IncomingGuard | None = _DEFAULT,
    flood: AsyncFloodControl | None = _DEFAULT,
    runner: UpdateRunner | None = _DEFAULT,
) -> Application[Any, Any, Any, Any, Any, Any]:
    """Put botscale into a PTB bot; returns the Application.

    Given an ``ApplicationBuilder``, sets its rate limiter and update
    processor, builds it, then adds the guard.  Given a built
    ``Application``, only the guard and the handler timing can be added
    (PTB fixes the rate limiter and processor at build time).

    Args:
        target: the builder (full install) or a built application.
        guard: the incoming decisions (default ``IncomingGuard()``), or ``None``.
        flood: the flood controller (default ``AsyncFloodControl()``), or ``None``.
        runner: the update runner (default ``UpdateRunner()``), or ``None``.
    """
    if guard is _DEFAULT:
        guard = IncomingGuard()
    if isinstance(target, ApplicationBuilder):
        if flood is _DEFAULT:
            flood = AsyncFloodControl()
        if runner is _DEFAULT:
            runner = UpdateRunner()
        if flood is not None:
            target = target.rate_limiter(FloodRateLimiter(flood))
        if runner is not None:
            target = target.concurrent_updates(OrderedUpdateProcessor(runner, guard))
        app = target.build()
    elif isinstance(target, Application):
        app = target
        flood = runner = None
    else:
        raise TypeError(f"install needs an ApplicationBuilder or Application, got {type(target)}")
    if guard is not None:
        app.add_handler(guard_handler(guard, app), group=GUARD_GROUP)
        monitor_handlers(app, guard)
    parts = Installed(guard or IncomingGuard(None, dedup=False), flood, runner)
    _installed[app] = parts
    return app


# Update kinds each handler class can receive (None: any kind).
_HANDLER_KINDS: Final[dict[str, tuple[str, ...] | None]] = {
    "CommandHandler": ("message", "edited_message"),
    "PrefixHandler": ("message", "edited_message"),
    "MessageHandler": ("message", "edited_message", "channel_post", "edited_channel_post"),
    "CallbackQueryHandler": ("callback_query",),
    "InlineQueryHandler": ("inline_query",),
    "ChosenInlineResultHandler": ("chosen_inline_result",),
    "PollHandler": ("poll",),
    "PollAnswerHandler": ("poll_answer",),
    "ChatMemberHandler": ("my_chat_member", "chat_member"),
    "ChatJoinRequestHandler": ("chat_join_request",),
    "PreCheckoutQueryHandler": ("pre_checkout_query",),
    "ShippingQueryHandler": ("shipping_query",),
    "MessageReactionHandler": ("message_reaction", "message_reaction_count"),
    "ChatBoostHandler": ("chat_boost", "removed_chat_boost"),
    "BusinessConnectionHandler": ("business_connection",),
    "BusinessMessagesDeletedHandler": ("deleted_business_messages",),
    "PaidMediaPurchasedHandler": ("purchased_paid_media",),
}


def polling_kwargs(app: Application[Any, Any, Any, Any, Any, Any]) -> dict[str, Any]:
    """``app.run_polling(**polling_kwargs(app))``: the polling preset.

    Long polling with a 30 s timeout and ``allowed_updates`` limited to the
    kinds the registered handlers receive (all kinds if a handler of another
    type could take any update).  PTB fetches 100 updates per call already.
    """
    kinds: set[str] = set()
    for group, handlers in app.handlers.items():
        if group == GUARD_GROUP:
            continue
        for handler in _handlers(handlers):
            handled = _HANDLER_KINDS.get(type(handler).__name__, None)
            if handled is None:
                return {"timeout": POLLING_TIMEOUT, "allowed_updates": Update.ALL_TYPES}
            kinds.update(handled)
    return {"timeout": POLLING_TIMEOUT, "allowed_updates": allowed_updates(kinds)}

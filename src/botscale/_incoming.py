"""The incoming side: what to do with each update before a handler sees it.

Adapters translate their framework's update into an :class:`UpdateInfo` and
ask an :class:`IncomingGuard`; every decision is made here, once, for all three
frameworks:

* de-duplication (a webhook retry, two instances racing for one update);
* per-user rate limiting (or per chat, or any key), with exempt users (admins)
  and per-handler overrides;
* what a limited user hears: nothing, or one "slow down, try again in N s"
  notice per window, never one per spam message;
* the per-user state store handlers reach through :class:`UserState`;
* the :class:`~botscale.PerformanceMonitor` names and context of each update.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias, TypeVar, cast

from ._clock import Clock
from ._dedup import AsyncDeduplicator, Deduplicator
from ._errors import ConfigurationError
from ._gcra import Decision, Rate
from ._limiter import AsyncRateLimiter, RateLimiter
from ._monitor import PerformanceMonitor, Stopwatch
from ._protocols import (
    AsyncDedupStore,
    AsyncRateLimitBackend,
    AsyncStateStore,
    DedupStore,
    RateLimitBackend,
    StateStore,
)
from ._validation import check_positive, check_positive_int

__all__ = [
    "AsyncUserState",
    "HandlerLimit",
    "IncomingGuard",
    "IncomingStats",
    "UpdateInfo",
    "UserState",
    "Verdict",
]

T = TypeVar("T")

Key: TypeAlias = "str | int"
KeyFunc: TypeAlias = "Callable[[UpdateInfo], str | int | None]"
KeyMode: TypeAlias = "Literal['user', 'chat'] | KeyFunc"
LimitedAction: TypeAlias = "Literal['ignore', 'notify']"

_USER: Final = "user"
DEFAULT_NOTICE: Final = "Too many requests: please wait {retry_after} s and try again."

# Update kinds Telegram sends, in the Bot API's field names.
UPDATE_KINDS: Final[tuple[str, ...]] = (
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
)


class UpdateInfo(NamedTuple):
    """A framework-free description of one incoming update.

    Adapters fill it from their framework's objects; :meth:`from_dict` reads a
    raw Bot API update.  Every field but ``kind`` may be ``None``: a channel
    post has no user, an inline query no chat, a poll neither.  An immutable
    named tuple: one is made per update, so it must be cheap.

    Attributes:
        kind: the update's type in Bot API terms (``"message"``, ``"callback_query"``, ...).
        update_id: Telegram's id of the update.
        user_id: who caused it (``from.id``), if anyone.
        chat_id: where it happened, if in a chat.
        chat_type: ``"private"``, ``"group"``, ``"supergroup"`` or ``"channel"``.
    """

    kind: str
    update_id: int | None = None
    user_id: int | None = None
    chat_id: int | None = None
    chat_type: str | None = None

    @classmethod
    def from_dict(cls, update: Mapping[str, Any]) -> UpdateInfo:
        """Describe a raw Bot API update (the JSON of ``getUpdates`` or a webhook)."""
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            update_id = None
        for kind in update:
            if kind == "update_id":
                continue
            body = update[kind]
            if not isinstance(body, Mapping):
                return cls(kind, update_id)
            user = body.get("from") or body.get("user")
            chat = body.get("chat")
            if chat is None and isinstance(body.get("message"), Mapping):
                chat = body["message"].get("chat")  # a callback query's message
            if kind == "poll_answer" and user is None:
                user = body.get("user")
            user_id = user.get("id") if isinstance(user, Mapping) else None
            chat_id = chat.get("id") if isinstance(chat, Mapping) else None
            chat_type = chat.get("type") if isinstance(chat, Mapping) else None
            return cls(
                kind,
                update_id,
                user_id if isinstance(user_id, int) else None,
                chat_id if isinstance(chat_id, int) else None,
                chat_type if isinstance(chat_type, str) else None,
            )
        return cls("unknown", update_id)


_new_info: Final = cast(
    "Callable[[tuple[str, int | None, int | None, int | None, str | None]], UpdateInfo]",
    functools.partial(tuple.__new__, UpdateInfo),
)
"""``UpdateInfo`` from a tuple of all five fields, without the named tuple's Python-level
``__new__`` (the adapters' per-update path)."""


@dataclass(frozen=True, slots=True)
class HandlerLimit:
    """A rate limit for one handler, on top of the guard's update-level limit.

    aiogram: ``@router.message(Command("report"), flags={"rate_limit": "3/minute"})``
    (a ``HandlerLimit``, a :class:`~botscale.Rate`, its text, or ``False`` to
    exempt the handler from the update-level limit is also accepted there).

    Attributes:
        rate: how often one key may reach the handler.
        burst: bucket capacity (default ``rate.limit``).
        key: ``"user"``, ``"chat"`` or a function of the update (default: the guard's).
    """

    rate: Rate
    burst: int | None = None
    key: KeyMode | None = None

    def __post_init__(self) -> None:
        rate: object = self.rate
        if isinstance(rate, str):
            object.__setattr__(self, "rate", Rate.parse(rate))
        elif not isinstance(rate, Rate):
            raise TypeError(f"rate must be a Rate or its text, got {type(rate).__name__}")
        if self.burst is not None:
            check_positive_int("burst", self.burst)
        _check_key_mode(self.key, allow_none=True)

    @classmethod
    def coerce(cls, value: object) -> HandlerLimit | Literal[False] | None:
        """Read a handler's ``rate_limit`` flag: ``None`` (no flag), ``False`` (exempt) or a limit.

        Raises:
            TypeError: a flag of another type.
        """
        if value is None or value is True:
            return None
        if value is False:
            return False
        if isinstance(value, HandlerLimit):
            return value
        if isinstance(value, (Rate, str)):
            return cls(value if isinstance(value, Rate) else Rate.parse(value))
        if isinstance(value, Mapping):
            return cls(**value)
        raise TypeError(
            "a rate_limit flag must be a HandlerLimit, a Rate, its text ('3/minute'), "
            f"a dict of HandlerLimit fields or False, got {type(value).__name__}"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer for one update.

    ``bool(verdict)`` is whether the handlers should run.

    Attributes:
        proceed: run the handlers.
        reason: why not: ``"duplicate"`` or ``"limited"`` (``None`` when proceeding).
        retry_after: for ``"limited"``, seconds until the key is allowed again.
        notice: text the adapter sends to the update's chat (or as the callback
            query's answer); set at most once per window per key.
        key: the limited key, if any.
    """

    proceed: bool
    reason: Literal["duplicate", "limited"] | None = None
    retry_after: float = 0.0
    notice: str | None = None
    key: Key | None = None

    def __bool__(self) -> bool:
        return self.proceed


PROCEED: Final = Verdict(True)
DUPLICATE: Final = Verdict(False, "duplicate")


@dataclass(frozen=True, slots=True)
class IncomingStats:
    """Counters of an :class:`IncomingGuard`.

    Attributes:
        passed: updates handed to the handlers.
        duplicates: updates dropped as already seen.
        limited: updates dropped by a rate limit (update-level and per-handler).
        notices: "slow down" notices asked for (at most one per key per window).
        exempt: updates of exempt users (never limited).
        unkeyed: updates with neither user nor chat (never limited).
    """

    passed: int = 0
    duplicates: int = 0
    limited: int = 0
    notices: int = 0
    exempt: int = 0
    unkeyed: int = 0


class UserState:
    """One user's entry in the guard's state store, as a handler sees it.

    ``get``/``set``/``update``/``delete`` act on the user's key; ``session()``
    opens a load-change-write-back session (``MemoryStateStore.session``).
    """

    __slots__ = ("key", "store")

    def __init__(self, store: StateStore, key: Key) -> None:
        self.store = store
        self.key = key

    def get(self, default: Any = None) -> Any:
        """The stored value, or ``default``."""
        return self.store.get(self.key, default)

    def set(self, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` (JSON-compatible if the store is Redis)."""
        self.store.set(self.key, value, ttl=ttl)

    def update(self, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        return self.store.update(self.key, fn, default=default)

    def delete(self) -> bool:
        """Forget the user's state; ``True`` if there was some."""
        return self.store.delete(self.key)

    def session(self, **kwargs: Any) -> Any:
        """``with state.session() as s: s.value["step"] = 2`` (stores with sessions only)."""
        return _open_session(self.store, self.key, kwargs)

    def __repr__(self) -> str:
        return f"UserState(key={self.key!r})"


class AsyncUserState:
    """:class:`UserState` over an :class:`~botscale.AsyncStateStore` (``AsyncRedisStateStore``).

    The same methods, awaited: ``await user_state.update(fn, default=0)``;
    ``async with user_state.session() as s:``.
    """

    __slots__ = ("key", "store")

    def __init__(self, store: AsyncStateStore, key: Key) -> None:
        self.store = store
        self.key = key

    async def get(self, default: Any = None) -> Any:
        """The stored value, or ``default``."""
        return await self.store.get(self.key, default)

    async def set(self, value: Any, *, ttl: float | None = None) -> None:
        """Store ``value`` (JSON-compatible if the store is Redis)."""
        await self.store.set(self.key, value, ttl=ttl)

    async def update(self, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Atomically replace the value with ``fn(current or default)``; return it."""
        return await self.store.update(self.key, fn, default=default)

    async def delete(self) -> bool:
        """Forget the user's state; ``True`` if there was some."""
        return await self.store.delete(self.key)

    def session(self, **kwargs: Any) -> Any:
        """``async with state.session() as s: s.value["step"] = 2`` (stores with sessions only)."""
        return _open_session(self.store, self.key, kwargs)

    def __repr__(self) -> str:
        return f"AsyncUserState(key={self.key!r})"


def _open_session(store: object, key: Key, kwargs: dict[str, Any]) -> Any:
    opener = getattr(store, "session", None)
    if opener is None:
        raise TypeError(f"{type(store).__name__} has no session()")
    return opener(key, **kwargs)


def _check_key_mode(key: object, *, allow_none: bool = False) -> None:
    if key is None and allow_none:
        return
    if key in ("user", "chat") or (callable(key) and not isinstance(key, str)):
        return
    raise TypeError(f"key must be 'user', 'chat' or a function of UpdateInfo, got {key!r}")


def _key_of(info: UpdateInfo, mode: KeyMode) -> Key | None:
    if mode is _USER or mode == "user":
        return info.user_id if info.user_id is not None else info.chat_id
    if mode == "chat":
        return info.chat_id if info.chat_id is not None else info.user_id
    return mode(info)


def _awaits(obj: object, method: str) -> bool:
    """Whether ``obj.method`` is a coroutine function (an async store or backend)."""
    return inspect.iscoroutinefunction(getattr(obj, method, None))


def _zero() -> float:
    return 0.0


def _update_context(info: UpdateInfo) -> dict[str, object]:
    """What the monitor reports with a slow update or handler."""
    return {"update": info[0], "user_id": info[2], "chat_id": info[3]}


class IncomingGuard:
    """Decides, per update, whether the handlers run; shared by every adapter.

    >>> guard = IncomingGuard("5/10s", exempt={1})
    >>> guard.check(UpdateInfo("message", 1, user_id=42, chat_id=42)).proceed
    True

    Every piece may be shared by several bot processes through Redis:
    ``dedup=RedisDeduplicator(...)``, ``backend=RedisBackend(...)``,
    ``state=RedisStateStore(...)``.  The awaitable twins
    (``AsyncRedisDeduplicator``, ``AsyncRedisBackend``, ``AsyncRedisStateStore``)
    make the guard :attr:`asynchronous`: the asyncio adapters then await its
    ``a``-methods (:meth:`acheck`, :meth:`acheck_limit`...), and handlers get an
    :class:`AsyncUserState`.

    Args:
        rate: how many updates one key may send (``"30/minute"``, the seeds'
            default), or ``None`` for no update-level limit.
        burst: bucket capacity (default ``rate.limit``).
        key: ``"user"`` (default; updates without a user are keyed by their
            chat), ``"chat"``, or a function ``UpdateInfo -> key | None``
            (``None``: not limited).
        on_limited: ``"notify"`` (default) sends one ``notice`` per key per
            ``notice_interval``; ``"ignore"`` drops silently.
        notice: the text; ``{retry_after}`` becomes whole seconds.
        notice_interval: seconds between two notices to one key (default
            ``rate.period``).
        exempt: user ids never limited (admins).
        dedup: a :class:`~botscale.DedupStore` (a :class:`~botscale.Deduplicator`,
            ``RedisDeduplicator``) or an :class:`~botscale.AsyncDedupStore`
            (``AsyncRedisDeduplicator``), ``True`` for a default
            ``Deduplicator`` (10 minutes, 100 000 ids), or ``False``.
        monitor: a :class:`~botscale.PerformanceMonitor` the adapters time
            every update and handler with (``None``: no timing).
        state: the per-user :class:`~botscale.StateStore` or
            :class:`~botscale.AsyncStateStore` handlers reach as ``user_state``
            (``None``: none).
        backend: the rate-limit backend, a :class:`~botscale.RateLimitBackend`
            or an :class:`~botscale.AsyncRateLimitBackend` (default in memory;
            Redis for several processes).
        clock: monotonic seconds.

    Raises:
        ConfigurationError, TypeError: a bad argument, named.
    """

    def __init__(
        self,
        rate: Rate | str | None = "30/minute",
        *,
        burst: int | None = None,
        key: KeyMode = "user",
        on_limited: LimitedAction = "notify",
        notice: str = DEFAULT_NOTICE,
        notice_interval: float | None = None,
        exempt: Collection[int] = (),
        dedup: DedupStore | AsyncDedupStore | bool = True,
        monitor: PerformanceMonitor | None = None,
        state: StateStore | AsyncStateStore | None = None,
        backend: RateLimitBackend | AsyncRateLimitBackend | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        _check_key_mode(key)
        if on_limited not in ("ignore", "notify"):
            raise ConfigurationError(f"on_limited must be 'ignore' or 'notify', got {on_limited!r}")
        if not isinstance(notice, str):
            raise TypeError(f"notice must be a str, got {type(notice).__name__}")
        users: Collection[object] = exempt
        if isinstance(users, (str, bytes)) or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in users
        ):
            raise TypeError("exempt must be a collection of user ids (int)")
        if monitor is not None and not isinstance(monitor, PerformanceMonitor):
            raise TypeError(f"monitor must be a PerformanceMonitor, got {type(monitor).__name__}")
        if state is not None and not isinstance(state, (StateStore, AsyncStateStore)):
            raise TypeError(
                f"state must implement StateStore or AsyncStateStore, got {type(state).__name__}"
            )
        if dedup is True:
            dedup = Deduplicator(clock=clock)
        elif dedup is not False and not isinstance(dedup, (DedupStore, AsyncDedupStore)):
            raise TypeError(
                "dedup must be a DedupStore (Deduplicator, RedisDeduplicator), an "
                f"AsyncDedupStore (AsyncRedisDeduplicator) or a bool, got {type(dedup).__name__}"
            )
        self._clock = clock
        self._backend = backend
        self._async_backend = backend is not None and _awaits(backend, "acquire")
        self.key = key
        self.limiter: RateLimiter | AsyncRateLimiter | None = None
        if rate is not None:
            self.limiter = self._new_limiter(rate, burst)
        period = self.limiter.rate.period if self.limiter is not None else 60.0
        self.on_limited: LimitedAction = on_limited
        self.notice = notice
        interval = period if notice_interval is None else notice_interval
        interval = check_positive("notice_interval", interval)
        self._notices = RateLimiter(Rate(1, interval), 1, clock=clock)
        self.exempt: frozenset[int] = frozenset(exempt)
        self.dedup: DedupStore | AsyncDedupStore | None = None if dedup is False else dedup
        self.monitor = monitor
        self.state = state
        self._handler_limiters: dict[tuple[Rate, int | None], RateLimiter | AsyncRateLimiter] = {}
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._passed = 0  # passes the update-level limiter did not count (see stats)
        self._duplicates = 0
        self._limited = 0
        self._notices_sent = 0
        self._exempt = 0
        self._unkeyed = 0

        # The per-update path reads these once-decided names instead of
        # re-examining the configuration for every update.
        self._key_mode = 0 if key == "user" else 1 if key == "chat" else 2
        self._seen: Callable[[Key], bool] | None = None  # sync de-duplication
        self._aseen: Callable[[Key], Awaitable[bool]] | None = None  # async de-duplication
        if isinstance(dedup, AsyncDeduplicator):
            self._seen = dedup.sync.seen  # in memory: its awaitable face never waits
        elif dedup is not False and _awaits(dedup, "seen"):
            self._aseen = cast(AsyncDedupStore, dedup).seen
            self._seen = self._needs_await
        elif dedup is not False:
            self._seen = cast(DedupStore, dedup).seen
        self._try: Callable[[Key], Decision] | None = None  # the update-level decision
        self._atry: Callable[[Key], Awaitable[Decision]] | None = None
        if isinstance(self.limiter, AsyncRateLimiter):
            self._atry = self.limiter.try_acquire
            self._try = self._needs_await
        elif self.limiter is not None:
            self._try = self.limiter.try_acquire
        self._async_state = state is not None and _awaits(state, "get")
        self.asynchronous: bool = (
            self._aseen is not None or self._atry is not None or self._async_state
        )
        """Whether a piece must be awaited: use :meth:`acheck` and the other ``a``-methods."""
        self._recorders: dict[str, Stopwatch] = {}
        self._kind_recorders: dict[str, Stopwatch] = {}

    def _new_limiter(self, rate: Rate | str, burst: int | None) -> RateLimiter | AsyncRateLimiter:
        if self._async_backend:
            return AsyncRateLimiter(
                rate,
                burst,
                clock=self._clock,
                backend=cast(AsyncRateLimitBackend, self._backend),
            )
        return RateLimiter(
            rate, burst, clock=self._clock, backend=cast(RateLimitBackend | None, self._backend)
        )

    def _needs_await(self, key: Key) -> Any:
        raise TypeError(
            "this guard has an awaitable piece (an async dedup store, rate-limit backend or "
            "state store): use the awaitable methods (acheck, acheck_limit, ...)"
        )

    # ------------------------------------------------------------------ decisions

    def check(self, info: UpdateInfo) -> Verdict:
        """Decide one update: duplicate, limited, or go ahead.  Thread-safe, O(1).

        The same as :meth:`check_duplicate` followed by :meth:`check_limit`.

        Raises:
            TypeError: the guard is :attr:`asynchronous` (use :meth:`acheck`).
        """
        seen = self._seen  # check_duplicate inlined: one call less per update
        if seen is not None and info[1] is not None and seen(info[1]):
            self._count("_duplicates")
            return DUPLICATE
        return self.check_limit(info)

    async def acheck(self, info: UpdateInfo) -> Verdict:
        """:meth:`check` for any guard, awaiting the pieces that need it."""
        if await self.aseen_update(info[1]):
            return DUPLICATE
        return await self.acheck_limit(info)

    def check_duplicate(self, info: UpdateInfo) -> Verdict:
        """Only the de-duplication part of :meth:`check`."""
        return DUPLICATE if self.seen_update(info[1]) else PROCEED

    async def acheck_duplicate(self, info: UpdateInfo) -> Verdict:
        """:meth:`check_duplicate` for any guard."""
        return DUPLICATE if await self.aseen_update(info[1]) else PROCEED

    def seen_update(self, update_id: int | None) -> bool:
        """Whether ``update_id`` was already accepted (a duplicate to drop); counted.

        The de-duplication of :meth:`check_duplicate`, for adapters that see
        update ids before they see updates (telebot).
        """
        seen = self._seen
        if seen is None or update_id is None or not seen(update_id):
            return False
        self._count("_duplicates")
        return True

    def drop_duplicates(self, updates: list[T], update_id: Callable[[T], int | None]) -> list[T]:
        """The updates of a batch not seen before (``updates`` itself when all are new).

        :meth:`seen_update` for a whole batch, for adapters that receive
        batches (telebot's ``process_new_updates``).

        Args:
            updates: the batch.
            update_id: reads an update's id (``operator.attrgetter("update_id")``).
        """
        seen = self._seen
        if seen is None:
            return updates
        if len(updates) == 1:  # a webhook's delivery, or a quiet moment's poll
            uid = update_id(updates[0])
            if uid is None or not seen(uid):
                return updates
            self._count("_duplicates")
            return []
        fresh: list[T] | None = None
        for index, update in enumerate(updates):
            uid = update_id(update)
            if uid is not None and seen(uid):
                self._count("_duplicates")
                if fresh is None:
                    fresh = updates[:index]
            elif fresh is not None:
                fresh.append(update)
        return updates if fresh is None else fresh

    async def adrop_duplicates(
        self, updates: list[T], update_id: Callable[[T], int | None]
    ) -> list[T]:
        """:meth:`drop_duplicates` for any guard."""
        if self._aseen is None:
            return self.drop_duplicates(updates, update_id)
        return [u for u in updates if not await self.aseen_update(update_id(u))]

    async def aseen_update(self, update_id: int | None) -> bool:
        """:meth:`seen_update` for any guard."""
        aseen = self._aseen
        if aseen is None:
            return self.seen_update(update_id)
        if update_id is None or not await aseen(update_id):
            return False
        self._count("_duplicates")
        return True

    def check_limit(self, info: UpdateInfo) -> Verdict:
        """Only the update-level rate limit part of :meth:`check`."""
        try_acquire = self._try
        if try_acquire is not None:
            key: Key | None = info[2]  # the common case: keyed by a user who is not exempt
            if self._key_mode or key is None or key in self.exempt:
                key = self._limit_key(info)
            if key is not None:
                decision = try_acquire(key)
                if not decision[0]:
                    return self._limited_verdict(key, decision[2], info)
                return PROCEED  # counted as passed by the limiter itself (see stats)
        with self._counter_lock:
            self._passed += 1
        return PROCEED

    async def acheck_limit(self, info: UpdateInfo) -> Verdict:
        """:meth:`check_limit` for any guard."""
        atry = self._atry
        if atry is None:
            return self.check_limit(info)
        key = self._limit_key(info)
        if key is not None:
            decision = await atry(key)
            if not decision[0]:
                return self._limited_verdict(key, decision[2], info)
            return PROCEED  # counted by the limiter (see stats)
        with self._counter_lock:
            self._passed += 1
        return PROCEED

    def _limit_key(self, info: UpdateInfo) -> Key | None:
        """The update-level bucket of ``info``; ``None`` (counted) for exempt and unkeyed."""
        user_id = info[2]
        if user_id is not None and user_id in self.exempt:
            self._count("_exempt")
            return None
        mode = self._key_mode
        key: Key | None
        if mode == 0:
            key = user_id if user_id is not None else info[3]
        elif mode == 1:
            key = info[3] if info[3] is not None else user_id
        else:
            key = cast(KeyFunc, self.key)(info)
        if key is None:
            self._count("_unkeyed")
        return key

    def admit_exempt(self, verdict: Verdict) -> None:
        """Count an update an exempt handler (``rate_limit=False``) runs despite its arrival.

        Adapters with an ordered runner decide the update-level limit when an
        update arrives (:meth:`check_limit` before it is queued), so that a
        burst is seen as a burst and not at the pace of the chat's replies;
        the handler is known only when the update's turn comes.  The arrival
        still counted against the user's budget; a denial is recounted here
        as a pass (an allowed arrival was counted then).
        """
        if verdict.reason == "limited":
            with self._counter_lock:
                self._limited -= 1
                self._passed += 1

    def count_passed(self) -> None:
        """Count an update handed to its handler without a limit check (an exempt handler)."""
        with self._counter_lock:
            self._passed += 1

    def check_handler(self, info: UpdateInfo, limit: HandlerLimit, handler: str) -> Verdict:
        """Decide one update against a handler's own limit (its keys are the handler's).

        Args:
            info: the update.
            limit: the handler's limit.
            handler: the handler's name (separates its buckets from other handlers').

        Raises:
            TypeError: the guard's rate-limit backend is async (use :meth:`acheck_handler`).
        """
        key = self._handler_key(info, limit)
        if key is None:
            return PROCEED
        limiter = self._handler_limiter(limit)
        if isinstance(limiter, AsyncRateLimiter):
            self._needs_await(key)
        decision = cast(RateLimiter, limiter).try_acquire(f"{handler}:{key}")
        return self._handler_verdict(key, decision, info)

    async def acheck_handler(self, info: UpdateInfo, limit: HandlerLimit, handler: str) -> Verdict:
        """:meth:`check_handler` for any guard."""
        key = self._handler_key(info, limit)
        if key is None:
            return PROCEED
        limiter = self._handler_limiter(limit)
        if isinstance(limiter, AsyncRateLimiter):
            decision = await limiter.try_acquire(f"{handler}:{key}")
        else:
            decision = limiter.try_acquire(f"{handler}:{key}")
        return self._handler_verdict(key, decision, info)

    def _handler_key(self, info: UpdateInfo, limit: HandlerLimit) -> Key | None:
        if info.user_id is not None and info.user_id in self.exempt:
            return None
        return _key_of(info, limit.key or self.key)

    def _handler_verdict(self, key: Key, decision: Decision, info: UpdateInfo) -> Verdict:
        if decision.allowed:
            return PROCEED
        # the update passed the update-level check: undo that count
        self._count("_passed", -1)
        return self._limited_verdict(key, decision.retry_after, info)

    def _handler_limiter(self, limit: HandlerLimit) -> RateLimiter | AsyncRateLimiter:
        index = (limit.rate, limit.burst)
        limiter = self._handler_limiters.get(index)
        if limiter is None:
            with self._lock:
                limiter = self._handler_limiters.get(index)
                if limiter is None:
                    limiter = self._new_limiter(limit.rate, limit.burst)
                    self._handler_limiters[index] = limiter
        return limiter

    def _limited_verdict(self, key: Key, retry_after: float, info: UpdateInfo) -> Verdict:
        self._count("_limited")
        notice = None
        if (
            self.on_limited == "notify"
            and (info.chat_id is not None or info.kind == "callback_query")
            and self._notices.try_acquire(key).allowed
        ):
            self._count("_notices_sent")
            notice = self.notice.format(retry_after=max(1, math.ceil(retry_after)))
        return Verdict(False, "limited", retry_after, notice, key)

    def _count(self, name: str, amount: int = 1) -> None:
        with self._counter_lock:
            setattr(self, name, getattr(self, name) + amount)

    def forget(self, info: UpdateInfo) -> None:
        """Let a retry of ``info`` through de-duplication (its handler failed).

        Raises:
            TypeError: the dedup store is async (use :meth:`aforget`).
        """
        if self.dedup is not None and info.update_id is not None:
            if self._aseen is not None:
                self._needs_await(info.update_id)
            cast(DedupStore, self.dedup).forget(info.update_id)

    async def aforget(self, info: UpdateInfo) -> None:
        """:meth:`forget` for any guard."""
        if self.dedup is None or info.update_id is None:
            return
        if self._aseen is not None:
            await cast(AsyncDedupStore, self.dedup).forget(info.update_id)
        elif isinstance(self.dedup, AsyncDeduplicator):
            self.dedup.sync.forget(info.update_id)
        else:
            cast(DedupStore, self.dedup).forget(info.update_id)

    # ------------------------------------------------------------------ handler support

    def user_state(self, info: UpdateInfo) -> UserState | None:
        """The update's user's state (keyed like the limit), or ``None`` without a store/key.

        Raises:
            TypeError: the store is an :class:`~botscale.AsyncStateStore` (use
                :meth:`async_user_state`).
        """
        state = self.handler_state(info)
        if isinstance(state, AsyncUserState):
            raise TypeError("this guard's state store is async: use async_user_state()")
        return state

    def async_user_state(self, info: UpdateInfo) -> AsyncUserState | None:
        """:meth:`user_state` of a guard whose store is an :class:`~botscale.AsyncStateStore`.

        Raises:
            TypeError: the store is a sync :class:`~botscale.StateStore` (use :meth:`user_state`).
        """
        state = self.handler_state(info)
        if isinstance(state, UserState):
            raise TypeError("this guard's state store is not async: use user_state()")
        return state

    def handler_state(self, info: UpdateInfo) -> UserState | AsyncUserState | None:
        """What the adapters hand to handlers as ``user_state``: the one matching the store."""
        state = self.state
        if state is None:
            return None
        key = info[2] if info[2] is not None else info[3]
        if key is None:
            return None
        if self._async_state:
            return AsyncUserState(cast(AsyncStateStore, state), key)
        return UserState(cast(StateStore, state), key)

    def track(self, info: UpdateInfo, name: str | None = None) -> AbstractContextManager[Any]:
        """Time the block in the monitor as ``name`` (default ``"update.<kind>"``).

        The monitor logs a slow block with the update's kind, user and chat.
        Without a monitor it is a no-op context manager.
        """
        if self.monitor is None:
            return contextlib.nullcontext()
        return self.monitor.track(
            name or f"update.{info.kind}",
            update=info.kind,
            user_id=info.user_id,
            chat_id=info.chat_id,
        )

    # The adapters' timing: cheaper than track() on the per-update path (no
    # context manager object, the context dict built only for a slow sample).

    @property
    def timer(self) -> Clock:
        """The monitor's clock (a clock reading 0.0 without a monitor): ``started = timer()``."""
        monitor = self.monitor
        return _zero if monitor is None else monitor._clock

    def recorder(
        self, name: str, context_of: Callable[[Any], dict[str, object]] | None = None
    ) -> Callable[[float, bool, Any], None] | None:
        """``record(started, error, source)``: count the time since ``started`` as ``name``.

        ``started`` is a :attr:`timer` reading.  A slow sample is reported with
        ``context_of(source)``, by default the kind, user and chat of
        ``source``, an :class:`UpdateInfo` (like :meth:`track`); the context
        is built only then.  ``None`` without a monitor.
        """
        monitor = self.monitor
        if monitor is None:
            return None
        if context_of is not None:
            return monitor._stopwatch(name, context_of)
        stop = self._recorders.get(name)
        if stop is None:
            stop = self._recorders.setdefault(name, monitor._stopwatch(name, _update_context))
        return stop

    def record_update(self, info: UpdateInfo, started: float, error: bool = False) -> None:
        """Count the time since ``started`` (a :attr:`timer` reading) as ``update.<kind>``."""
        stop = self._kind_recorders.get(info[0])
        if stop is None:
            monitor = self.monitor
            if monitor is None:
                return
            stop = monitor._stopwatch(f"update.{info[0]}", _update_context)
            stop = self._kind_recorders.setdefault(info[0], stop)
        stop(started, error, info)

    def stats(self) -> IncomingStats:
        """A snapshot of the counters."""
        # An update the update-level limiter let through is counted once, by
        # the limiter (the guard's own): no second lock on the common path.
        limiter = self.limiter
        granted = 0 if limiter is None else limiter._allowed_count()
        return IncomingStats(
            passed=self._passed + granted,
            duplicates=self._duplicates,
            limited=self._limited,
            notices=self._notices_sent,
            exempt=self._exempt,
            unkeyed=self._unkeyed,
        )

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
import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias

from ._clock import Clock
from ._dedup import Deduplicator
from ._errors import ConfigurationError
from ._gcra import Rate
from ._limiter import RateLimiter
from ._monitor import PerformanceMonitor
from ._protocols import RateLimitBackend, StateStore
from ._validation import check_positive, check_positive_int

__all__ = [
    "HandlerLimit",
    "IncomingGuard",
    "IncomingStats",
    "UpdateInfo",
    "UserState",
    "Verdict",
]

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
        opener = getattr(self.store, "session", None)
        if opener is None:
            raise TypeError(f"{type(self.store).__name__} has no session()")
        return opener(self.key, **kwargs)

    def __repr__(self) -> str:
        return f"UserState(key={self.key!r})"


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


class IncomingGuard:
    """Decides, per update, whether the handlers run; shared by every adapter.

    >>> guard = IncomingGuard("5/10s", exempt={1})
    >>> guard.check(UpdateInfo("message", 1, user_id=42, chat_id=42)).proceed
    True

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
        dedup: a :class:`~botscale.Deduplicator`, ``True`` for a default one
            (10 minutes, 100 000 ids), or ``False``.
        monitor: a :class:`~botscale.PerformanceMonitor` the adapters time
            every update and handler with (``None``: no timing).
        state: the per-user :class:`~botscale.StateStore` handlers reach as
            ``user_state`` (``None``: none).
        backend: the rate-limit backend (default in memory; Redis for several
            processes).
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
        dedup: Deduplicator | bool = True,
        monitor: PerformanceMonitor | None = None,
        state: StateStore | None = None,
        backend: RateLimitBackend | None = None,
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
        if state is not None and not isinstance(state, StateStore):
            raise TypeError(f"state must implement StateStore, got {type(state).__name__}")
        self._clock = clock
        self._backend = backend
        self.key = key
        self.limiter: RateLimiter | None = None
        if rate is not None:
            self.limiter = RateLimiter(rate, burst, clock=clock, backend=backend)
        period = self.limiter.rate.period if self.limiter is not None else 60.0
        self.on_limited: LimitedAction = on_limited
        self.notice = notice
        interval = period if notice_interval is None else notice_interval
        interval = check_positive("notice_interval", interval)
        self._notices = RateLimiter(Rate(1, interval), 1, clock=clock)
        self.exempt: frozenset[int] = frozenset(exempt)
        if dedup is True:
            dedup = Deduplicator(clock=clock)
        elif dedup is not False and not isinstance(dedup, Deduplicator):
            raise TypeError(f"dedup must be a Deduplicator or a bool, got {type(dedup).__name__}")
        self.dedup: Deduplicator | None = None if dedup is False else dedup
        self.monitor = monitor
        self.state = state
        self._handler_limiters: dict[tuple[Rate, int | None], RateLimiter] = {}
        self._lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._passed = 0
        self._duplicates = 0
        self._limited = 0
        self._notices_sent = 0
        self._exempt = 0
        self._unkeyed = 0

    # ------------------------------------------------------------------ decisions

    def check(self, info: UpdateInfo) -> Verdict:
        """Decide one update: duplicate, limited, or go ahead.  Thread-safe, O(1).

        The same as :meth:`check_duplicate` followed by :meth:`check_limit`.
        """
        dedup = self.dedup
        if dedup is not None and info.update_id is not None and dedup.seen(info.update_id):
            self._count("_duplicates")
            return DUPLICATE
        return self.check_limit(info)

    def check_duplicate(self, info: UpdateInfo) -> Verdict:
        """Only the de-duplication part of :meth:`check`."""
        dedup = self.dedup
        if dedup is not None and info.update_id is not None and dedup.seen(info.update_id):
            self._count("_duplicates")
            return DUPLICATE
        return PROCEED

    def seen_update(self, update_id: int | None) -> bool:
        """Whether ``update_id`` was already accepted (a duplicate to drop); counted.

        The de-duplication of :meth:`check_duplicate`, for adapters that see
        update ids before they see updates (telebot).
        """
        dedup = self.dedup
        if dedup is None or update_id is None or not dedup.seen(update_id):
            return False
        self._count("_duplicates")
        return True

    def check_limit(self, info: UpdateInfo) -> Verdict:
        """Only the update-level rate limit part of :meth:`check`."""
        limiter = self.limiter
        if limiter is not None:
            if info.user_id is not None and info.user_id in self.exempt:
                self._count("_exempt")
            else:
                key = _key_of(info, self.key)
                if key is None:
                    self._count("_unkeyed")
                else:
                    decision = limiter.try_acquire(key)
                    if not decision.allowed:
                        return self._limited_verdict(key, decision.retry_after, info)
        with self._counter_lock:
            self._passed += 1
        return PROCEED

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
        """
        if info.user_id is not None and info.user_id in self.exempt:
            return PROCEED
        key = _key_of(info, limit.key or self.key)
        if key is None:
            return PROCEED
        limiter = self._handler_limiter(limit)
        decision = limiter.try_acquire(f"{handler}:{key}")
        if decision.allowed:
            return PROCEED
        # the update passed the update-level check: undo that count
        self._count("_passed", -1)
        return self._limited_verdict(key, decision.retry_after, info)

    def _handler_limiter(self, limit: HandlerLimit) -> RateLimiter:
        index = (limit.rate, limit.burst)
        limiter = self._handler_limiters.get(index)
        if limiter is None:
            with self._lock:
                limiter = self._handler_limiters.get(index)
                if limiter is None:
                    limiter = RateLimiter(
                        limit.rate, limit.burst, clock=self._clock, backend=self._backend
                    )
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
        """Let a retry of ``info`` through de-duplication (its handler failed)."""
        if self.dedup is not None and info.update_id is not None:
            self.dedup.forget(info.update_id)

    # ------------------------------------------------------------------ handler support

    def user_state(self, info: UpdateInfo) -> UserState | None:
        """The update's user's state (keyed like the limit), or ``None`` without a store/key."""
        if self.state is None:
            return None
        key = _key_of(info, "user")
        return None if key is None else UserState(self.state, key)

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

    def stats(self) -> IncomingStats:
        """A snapshot of the counters."""
        return IncomingStats(
            passed=self._passed,
            duplicates=self._duplicates,
            limited=self._limited,
            notices=self._notices_sent,
            exempt=self._exempt,
            unkeyed=self._unkeyed,
        )

"""What botscale knows about Telegram's Bot API: limits, methods, chats, errors.

Framework-free knowledge shared by the flood controller, the incoming guard and
the three adapters.  Nothing here does I/O.

Telegram documents its flood limits only loosely (Bots FAQ, "My bot is hitting
limits"): about 30 messages per second overall, no more than one message per
second to one chat (short bursts tolerated), 20 messages per minute to one
group, and up to 1000 messages per second for paid broadcasts
(``allow_paid_broadcast``).  It does not publish which methods count; the
method tables below are botscale's explicit, conservative reading of it:

* **message methods** (``sendMessage``, ``sendPhoto``, ``copyMessage``, ...)
  put a new message into a chat: they count against the overall budget and the
  target chat's budget;
* **edit methods** (``editMessageText``, ``stopPoll``, ...) change a message in a
  chat; Telegram answers floods of edits with 429 too, so by default they count
  like messages (``count_edits=False`` exempts them);
* **interactive methods** (``answerCallbackQuery``, ``answerInlineQuery``, ...)
  answer a user who is waiting without putting a message into a chat.
  Telegram's 30/s is a limit on *messages*, so by default they are not
  throttled at all (a quiz bot would otherwise spend two tokens per button
  press and halve its capacity); ``count_interactive=True`` counts them against
  the overall budget, where they go ahead of other sends when it is short;
* everything else (``getUpdates``, ``getMe``, ``sendChatAction``,
  ``deleteMessage``, ``setWebhook``, ...) is not throttled; a 429 answer to it
  is still honoured.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ._gcra import Rate
from ._validation import check_positive_int

__all__ = [
    "EDIT_METHODS",
    "INTERACTIVE_METHODS",
    "MESSAGE_METHODS",
    "ApiFailure",
    "ChatKind",
    "FailureKind",
    "MethodKind",
    "TelegramLimitWarning",
    "TelegramLimits",
    "chat_kind",
    "classify_api_answer",
]

MESSAGE_METHODS: Final[frozenset[str]] = frozenset(
    {
        "sendMessage",
        "forwardMessage",
        "forwardMessages",
        "copyMessage",
        "copyMessages",
        "sendPhoto",
        "sendAudio",
        "sendDocument",
        "sendVideo",
        "sendAnimation",
        "sendVoice",
        "sendVideoNote",
        "sendPaidMedia",
        "sendMediaGroup",
        "sendLocation",
        "sendVenue",
        "sendContact",
        "sendPoll",
        "sendChecklist",
        "sendDice",
        "sendSticker",
        "sendInvoice",
        "sendGame",
    }
)
"""Methods that put a new message into a chat (overall + per-chat budgets)."""

EDIT_METHODS: Final[frozenset[str]] = frozenset(
    {
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageLiveLocation",
        "stopMessageLiveLocation",
        "editMessageReplyMarkup",
        "editMessageChecklist",
        "stopPoll",
    }
)
"""Methods that change a message in a chat (counted like messages by default)."""

INTERACTIVE_METHODS: Final[frozenset[str]] = frozenset(
    {
        "answerCallbackQuery",
        "answerInlineQuery",
        "answerWebAppQuery",
        "answerPreCheckoutQuery",
        "answerShippingQuery",
    }
)
"""Answers to a user who is waiting (overall budget only, served first)."""


class MethodKind(enum.Enum):
    """How the flood controller treats a Bot API method."""

    MESSAGE = "message"
    """Counts against the overall budget and the target chat's budget."""
    INTERACTIVE = "interactive"
    """Counts against the overall budget only, ahead of other sends
    (interactive methods, only with ``count_interactive=True``)."""
    FREE = "free"
    """Not throttled (``getUpdates``, ``getMe``, ``sendChatAction``, ...)."""


class ChatKind(enum.Enum):
    """The per-chat budget a chat id falls under."""

    PRIVATE = "private"
    """A user's private chat: ids > 0."""
    GROUP = "group"
    """Groups, supergroups and channels: ids < 0 and ``"@username"`` strings."""


def chat_kind(chat_id: int | str) -> ChatKind:
    """The budget ``chat_id`` falls under: private chats have positive ids.

    Groups, supergroups and channels have negative ids; a ``"@channelusername"``
    (or any other string) can only name a public channel or supergroup.
    """
    if isinstance(chat_id, int) and not isinstance(chat_id, bool):
        return ChatKind.PRIVATE if chat_id > 0 else ChatKind.GROUP
    if isinstance(chat_id, str):
        text = chat_id.strip()
        if text.lstrip("-").isdigit():
            return ChatKind.PRIVATE if int(text) > 0 else ChatKind.GROUP
        return ChatKind.GROUP
    raise TypeError(f"chat_id must be int or str, got {type(chat_id).__name__}")


class TelegramLimitWarning(UserWarning):
    """A configured limit is above the ceiling Telegram documents."""


# Telegram's documented ceilings, as messages per second.
_CEILINGS: Final[dict[str, float]] = {
    "overall": 30.0,
    "private": 1.0,
    "group": 20.0 / 60.0,
    "paid": 1000.0,
}
_warned: set[tuple[str, float]] = set()


def _as_rate(name: str, value: Any) -> Rate:
    if isinstance(value, Rate):
        return value
    if isinstance(value, str):
        return Rate.parse(value)
    raise TypeError(f"{name} must be a Rate or a text like '30/s', got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class TelegramLimits:
    """The outgoing budgets the flood controller keeps a bot within.

    Every rate is a :class:`~botscale.Rate` (``Rate.parse("30/s")``); each
    budget is a token bucket of capacity ``*_burst`` refilled at that rate.  The
    defaults run at Telegram's documented rates with small bursts: a bucket
    that holds little keeps a margin below the server's own bucket, so network
    jitter between two sends does not turn into a 429 even when a broadcast
    runs at the full rate for minutes, while a reply of two messages to a user
    (three to a group) still goes out at once.
    Setting a rate above Telegram's documented ceiling warns once per process
    (:class:`TelegramLimitWarning`) unless ``check_ceilings=False`` (a test
    server with other limits).

    Attributes:
        overall: every counted call of the bot (Telegram: about 30/s).
        overall_burst: calls the overall budget allows at once.
        private: one private chat (Telegram: 1/s, short bursts tolerated).
        private_burst: messages one private chat may receive at once.
        group: one group, supergroup or channel (Telegram: 20/minute).
        group_burst: messages one group may receive at once.
        paid: the paid-broadcast lane (``allow_paid_broadcast``; 1000/s).
        paid_burst: paid messages allowed at once.
        count_edits: count edit methods like messages (default ``True``).
        count_interactive: count interactive methods (``answerCallbackQuery``,
            ...) against the overall budget (default ``False``: they put no
            message into a chat, and Telegram's 30/s limits messages).
        message_methods / edit_methods / interactive_methods: the method tables.
        check_ceilings: warn when a rate exceeds Telegram's documented ceiling.
    """

    overall: Rate = field(default_factory=lambda: Rate(30, 1.0))
    overall_burst: int = 1
    private: Rate = field(default_factory=lambda: Rate(1, 1.0))
    private_burst: int = 2
    group: Rate = field(default_factory=lambda: Rate(20, 60.0))
    group_burst: int = 3
    paid: Rate = field(default_factory=lambda: Rate(1000, 1.0))
    paid_burst: int = 1
    count_edits: bool = True
    count_interactive: bool = False
    message_methods: frozenset[str] = MESSAGE_METHODS
    edit_methods: frozenset[str] = EDIT_METHODS
    interactive_methods: frozenset[str] = INTERACTIVE_METHODS
    check_ceilings: bool = True
    _table: dict[str, MethodKind] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        for name in ("overall", "private", "group", "paid"):
            object.__setattr__(self, name, _as_rate(name, getattr(self, name)))
            check_positive_int(f"{name}_burst", getattr(self, f"{name}_burst"))
        for name in ("message_methods", "edit_methods", "interactive_methods"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(m, str) for m in value):
                raise TypeError(f"{name} must be a collection of method names (str)")
            object.__setattr__(self, name, frozenset(value))
        for name in ("count_edits", "count_interactive", "check_ceilings"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {type(getattr(self, name)).__name__}")
        counted = self.message_methods | (self.edit_methods if self.count_edits else frozenset())
        table = self._table
        for method in self.interactive_methods if self.count_interactive else ():
            table[method] = table[method.lower()] = MethodKind.INTERACTIVE
        for method in counted:
            table[method] = table[method.lower()] = MethodKind.MESSAGE
        if self.check_ceilings:
            self._warn_above_ceilings()

    def _warn_above_ceilings(self) -> None:
        for name, ceiling in _CEILINGS.items():
            rate: Rate = getattr(self, name)
            per_second = rate.per_second
            if per_second > ceiling * (1 + 1e-9) and (name, per_second) not in _warned:
                _warned.add((name, per_second))
                warnings.warn(
                    f"TelegramLimits.{name}={rate} is above Telegram's documented ceiling "
                    f"of {ceiling:g} messages/s: expect 429 answers (pass "
                    f"check_ceilings=False for a server with other limits)",
                    TelegramLimitWarning,
                    stacklevel=4,
                )

    def method_kind(self, method: str) -> MethodKind:
        """How ``method`` (a Bot API method name; case-insensitive) is treated."""
        kind = self._table.get(method)
        if kind is None:
            kind = self._table.get(method.lower(), MethodKind.FREE)
        return kind

    def chat_rate(self, kind: ChatKind) -> tuple[Rate, int]:
        """``(rate, burst)`` of the per-chat budget for ``kind``."""
        if kind is ChatKind.PRIVATE:
            return self.private, self.private_burst
        return self.group, self.group_burst


class FailureKind(enum.Enum):
    """What a failed Bot API call means for retrying it."""

    FLOOD = "flood"
    """429 Too Many Requests (``retry_after`` given): wait, then retry."""
    SERVER = "server"
    """5xx: Telegram had a problem; retried with backoff."""
    NETWORK = "network"
    """No answer (connection error, timeout); retried with backoff."""
    FORBIDDEN = "forbidden"
    """403: the bot was blocked, kicked or may not write there; never retried."""
    CLIENT = "client"
    """400 and other 4xx: the request is wrong; never retried."""


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """A framework's error for a Bot API call, translated for the flood controller.

    Each adapter supplies a function ``exception -> ApiFailure | None`` (``None``
    for exceptions that are not Bot API failures, which pass through untouched).

    Attributes:
        kind: what the failure means for retrying.
        retry_after: seconds Telegram asked to wait (``FLOOD`` only).
        status: the HTTP status, when there was an answer.
        description: Telegram's description, e.g. ``"Forbidden: bot was blocked by the user"``.
    """

    kind: FailureKind
    retry_after: float | None = None
    status: int | None = None
    description: str = ""

    @property
    def blocked(self) -> bool:
        """Whether the user blocked the bot (a 403 saying so)."""
        return self.kind is FailureKind.FORBIDDEN and "blocked" in self.description.lower()


def classify_api_answer(status: int, payload: Mapping[str, Any] | None) -> ApiFailure | None:
    """Translate a raw Bot API HTTP answer; ``None`` when it is a success.

    Args:
        status: the HTTP status code.
        payload: the decoded JSON body, or ``None`` when it was not JSON.
    """
    ok = bool(payload.get("ok")) if isinstance(payload, Mapping) else False
    if 200 <= status < 300 and (payload is None or ok):
        return None
    description = ""
    retry_after: float | None = None
    if isinstance(payload, Mapping):
        description = str(payload.get("description") or "")
        parameters = payload.get("parameters")
        if isinstance(parameters, Mapping):
            value = parameters.get("retry_after")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                retry_after = float(value)
        code = payload.get("error_code")
        if 200 <= status < 300 and isinstance(code, int) and not isinstance(code, bool):
            status = code  # "ok": false inside a 200 answer: the body's code is the truth
    return failure_for_status(status, description, retry_after)


def failure_for_status(status: int, description: str, retry_after: float | None) -> ApiFailure:
    """The :class:`ApiFailure` for an error answer with ``status``."""
    if retry_after is not None and math.isfinite(retry_after):
        return ApiFailure(FailureKind.FLOOD, max(0.0, retry_after), status, description)
    if status == 429:
        return ApiFailure(FailureKind.FLOOD, 1.0, status, description)
    if status == 403:
        return ApiFailure(FailureKind.FORBIDDEN, None, status, description)
    if status >= 500:
        return ApiFailure(FailureKind.SERVER, None, status, description)
    return ApiFailure(FailureKind.CLIENT, None, status, description)

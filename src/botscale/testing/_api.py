"""The Bot API's state and methods, without HTTP.

:class:`BotApi` holds what Telegram holds for one bot: its chats, their
messages, the queue of updates not yet confirmed, and the exchanges (an
update sent by a virtual user, waiting for the bot's reply).  Its methods take
the request's parameters as decoded from JSON, form or query string and
return the ``result`` of the Bot API answer, or raise :class:`ApiError` with
Telegram's own status and description.  The HTTP layer, long polling and
webhooks live in :mod:`._simulator`; this module imports no aiohttp.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from .._clock import Clock
from ._flood import FloodEnforcer, FloodLimits, is_limited_method

__all__ = [
    "ApiError",
    "BotApi",
    "ChatState",
    "Exchange",
    "Fault",
    "JsonObject",
    "SimulatorStats",
    "error_body",
]

JsonObject: TypeAlias = dict[str, Any]
"""A decoded JSON object (a Bot API request or answer)."""

logger = logging.getLogger("botscale.testing")

MAX_TEXT: Final = 4096
UPDATE_TYPES_DEFAULT_OFF: Final = frozenset(
    {"chat_member", "message_reaction", "message_reaction_count"}
)
CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_QUERY_TOO_OLD: Final = (
    "Bad Request: query is too old and response timeout expired or query ID is invalid"
)
_MISSING: Final = {"text": "Bad Request: message text is empty"}


class ApiError(Exception):
    """A Bot API error answer: HTTP ``status`` with Telegram's ``description``."""

    def __init__(self, status: int, description: str, parameters: JsonObject | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def body(self) -> JsonObject:
        """The JSON answer Telegram sends for this error."""
        return error_body(self.status, self.description, self.parameters)


def error_body(status: int, description: str, parameters: JsonObject | None = None) -> JsonObject:
    """``{"ok": false, "error_code": status, "description": ...}`` (+ ``parameters``)."""
    body: JsonObject = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass(slots=True)
class Fault:
    """An error answer injected into the simulator (:meth:`TelegramSimulator.inject_error`).

    Attributes:
        status: the HTTP status and ``error_code`` (429, 500, 502...).
        description: Telegram's ``description`` of the answer.
        chat_id: only calls to this chat (``None``: any call).
        method: only calls of this method, any case (``None``: any method; a
            429 without a method matches the sending methods only).
        remaining: calls still to be answered with it.
        retry_after: a 429's ``parameters.retry_after``.
    """

    status: int
    description: str
    chat_id: int | None
    method: str | None
    remaining: int
    retry_after: int | None = None

    def matches(self, method: str, chat_id: int | None) -> bool:
        """Whether a call of ``method`` (lower case) to ``chat_id`` gets this answer."""
        if self.chat_id is not None and chat_id != self.chat_id:
            return False
        if self.method is not None:
            return method == self.method
        return self.status != 429 or is_limited_method(method)


class Exchange:
    """One update a virtual user sent, and the bot's answer to it.

    The simulator matches the bot's first sending call to the update's chat
    (``sendMessage``, ``editMessageText``, any ``send*``…), or an
    ``answerCallbackQuery`` for a callback query, to the oldest unanswered
    update of that chat: ``latency`` is the time between the two.  A reply
    that quotes a message (``reply_to_message``) answers that message's
    update.  A sending call refused with ``429`` *claims* the oldest update:
    only a later call with the same method and text (the bot's retry) answers
    it, so a dropped reply leaves its update unanswered instead of skewing the
    latency of the next one.

    A callback query's latency ends at the bot's first reaction: its
    ``answerCallbackQuery`` or a sending call that answers it as above,
    whichever comes first.  The query itself stays answerable exactly once,
    as in Telegram: a message or edit in the chat does not use it up, and a
    second ``answerCallbackQuery`` (or one for a query the simulator no
    longer keeps) gets ``400`` "query is too old…".

    Attributes:
        update_id: the update's id.
        kind: ``"message"``, ``"command"`` or ``"callback_query"``.
        chat_id: the chat the update came from.
        user_id: the virtual user who sent it.
        sent_at: clock time the update was injected.
        answered_at: clock time of the bot's answer, ``None`` until answered.
        answer_method: the Bot API method that answered (e.g. ``"sendMessage"``).
        answer: the answer's result (the sent ``Message``) or, for
            ``answerCallbackQuery``, its parameters (``run_load`` drops it once
            the user has seen it, to keep long runs small).
        filtered: the bot's ``allowed_updates`` exclude this update's type, so
            it was never created for the bot (it will not be answered).
        tag: free for the caller (the load test stores its ramp stage there).
    """

    __slots__ = (
        "_waiter",
        "answer",
        "answer_method",
        "answered_at",
        "callback_query_id",
        "chat_id",
        "claim",
        "filtered",
        "kind",
        "message_id",
        "sent_at",
        "tag",
        "update_id",
        "user_id",
    )

    def __init__(
        self,
        update_id: int,
        kind: str,
        chat_id: int,
        user_id: int,
        sent_at: float,
        callback_query_id: str | None = None,
    ) -> None:
        self.update_id = update_id
        self.kind = kind
        self.chat_id = chat_id
        self.user_id = user_id
        self.sent_at = sent_at
        self.callback_query_id = callback_query_id
        self.answered_at: float | None = None
        self.answer_method: str | None = None
        self.answer: JsonObject | None = None
        self.filtered = False
        self.tag = 0
        self.message_id: int | None = None
        self.claim: str | None = None
        self._waiter: asyncio.Future[JsonObject] | None = None

    @property
    def answered(self) -> bool:
        """Whether the bot has answered this update."""
        return self.answered_at is not None

    @property
    def latency(self) -> float | None:
        """Seconds from the update to the bot's answer, ``None`` while unanswered."""
        return None if self.answered_at is None else self.answered_at - self.sent_at

    def _resolve(self, now: float, method: str, answer: JsonObject) -> None:
        self.answered_at = now
        self.answer_method = method
        self.answer = answer
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(answer)

    async def wait(self, timeout: float | None = 10.0) -> JsonObject:
        """Wait for the bot's answer and return it (see :attr:`answer`).

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            RuntimeError: the update was filtered by the bot's ``allowed_updates``.
        """
        if self.answered_at is not None:
            return self.answer if self.answer is not None else {}
        if self.filtered:
            raise RuntimeError(
                f"update {self.update_id} ({self.kind}) was never delivered: "
                "the bot's allowed_updates exclude it"
            )
        if self._waiter is None or self._waiter.cancelled():
            self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(self._waiter), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"the bot did not answer update {self.update_id} ({self.kind} in chat "
                f"{self.chat_id}) within {timeout} s"
            ) from None

    def __repr__(self) -> str:
        state = f"latency={self.latency:.3f}s" if self.latency is not None else "unanswered"
        return f"<Exchange update_id={self.update_id} {self.kind} chat={self.chat_id} {state}>"


@dataclass(eq=False)
class ChatState:
    """What the simulator knows about one chat."""

    id: int
    type: str
    info: JsonObject
    record_limit: int
    next_message_id: int = 1
    messages: OrderedDict[int, JsonObject] = field(default_factory=OrderedDict)
    bot_messages: deque[JsonObject] = field(init=False)
    pending: deque[Exchange] = field(default_factory=deque)
    keyboard_message: JsonObject | None = None
    sent_count: int = 0

    def __post_init__(self) -> None:
        self.bot_messages = deque(maxlen=self.record_limit)

    def store(self, message: JsonObject) -> None:
        self.messages[message["message_id"]] = message
        while len(self.messages) > self.record_limit:
            self.messages.popitem(last=False)


@dataclass
class SimulatorStats:
    """Counters of everything the simulator saw (a snapshot; exact, never sampled).

    Attributes:
        updates: updates injected by virtual users (including filtered ones).
        filtered_updates: updates not created because of the bot's ``allowed_updates``.
        dropped_updates: pending updates dropped by ``drop_pending_updates`` or
            by webhook deliveries that failed every attempt.
        delivered: updates handed to the bot (first delivery only).
        replies: updates answered by the bot.
        messages_sent: successful sending calls (``sendMessage``, edits, …).
        rate_limited: ``429`` answers.
        rate_limited_by_chat: ``429`` answers per chat id.
        rate_limited_by_method: ``429`` answers per method.
        errors: other error answers (400, 401, 404, 409, 500).
        errors_by_description: those errors by description.
        conflicts: ``409`` answers to ``getUpdates``.
        calls: every call per method name (as the bot spelled it).
        generic_calls: calls to methods the simulator answers generically with ``true``.
        webhook_deliveries: successful webhook POSTs.
        webhook_failures: webhook POSTs that failed (and were retried or dropped).
    """

    updates: int = 0
    filtered_updates: int = 0
    dropped_updates: int = 0
    delivered: int = 0
    replies: int = 0
    messages_sent: int = 0
    rate_limited: int = 0
    rate_limited_by_chat: Counter[int] = field(default_factory=Counter)
    rate_limited_by_method: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    errors_by_description: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    generic_calls: Counter[str] = field(default_factory=Counter)
    webhook_deliveries: int = 0
    webhook_failures: int = 0


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One logged Bot API call."""

    at: float
    method: str
    params: JsonObject
    status: int
    description: str | None


class Params:
    """A request's parameters, coerced the way Telegram does.

    Form and query values are strings: ``"123"`` is an int, ``"true"`` /
    ``"True"`` a bool, and objects such as ``reply_markup`` arrive as JSON text.
    JSON bodies give typed values directly.
    """

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def has(self, name: str) -> bool:
        value = self.raw.get(name)
        return value is not None and value != ""

    def get_int(self, name: str, *, required: bool = False) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise _bad(f"{name} is empty")
            return None
        if isinstance(value, bool):
            raise _bad(f"invalid {name} specified")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _bad(f"invalid {name} specified")

    def get_str(self, name: str, *, required: bool = False) -> str | None:
        value = self.raw.get(name)
        if value is None or value == "":
            if required:
                raise ApiError(400, _MISSING.get(name, f"Bad Request: {name} is empty"))
            return None
        if isinstance(value, (dict, list)):
            raise _bad(f"invalid {name} specified")
        return str(value)

    def get_bool(self, name: str) -> bool:
        value = self.raw.get(name)
        if value is None or value == "":
            return False
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise _bad(f"invalid {name} specified")

    def get_json(self, name: str, what: str) -> Any:
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad(f"can't parse {what} JSON object") from None
        return value


class BotApi:
    """The Bot API of one bot token, without transport.

    Args:
        token: the bot token (``"<bot id>:<secret>"``).
        bot_user: the bot's ``User`` object, returned by ``getMe``.
        flood_limits: the flood limits to enforce.
        clock: monotonic seconds, for latencies and flood limits.
        record_limit: messages kept per chat for assertions, edits and replies.
        call_log_limit: calls kept in :attr:`calls`.
        on_update: called after an update is queued (wakes pollers / webhooks).
    """

    def __init__(
        self,
        token: str,
        *,
        bot_user: JsonObject,
        flood_limits: FloodLimits | None = None,
        clock: Clock = time.monotonic,
        record_limit: int = 1000,
        call_log_limit: int = 10_000,
        on_update: Callable[[], None] | None = None,
    ) -> None:
        self.token = token
        self.bot_user = bot_user
        self.clock = clock
        self.flood = FloodEnforcer(flood_limits, clock=clock)
        self.record_limit = record_limit
        self.chats: dict[int, ChatState] = {}
        self.usernames: dict[str, int] = {}
        self.updates: deque[tuple[int, JsonObject]] = deque()
        self.allowed_updates: frozenset[str] | None = None
        self.calls: deque[CallRecord] = deque(maxlen=call_log_limit)
        self.stats = SimulatorStats(
            rate_limited_by_chat=self.flood.rate_limited_by_chat,
            rate_limited_by_method=self.flood.rate_limited_by_method,
        )
        self.on_update = on_update
        self._next_update_id = 100_000
        self._next_callback_id = 1
        self._callbacks: OrderedDict[str, Exchange] = OrderedDict()
        self._callback_limit = 100_000
        self._delivered_up_to = 0
        self.faults: list[Fault] = []
        self._faults_lock = threading.Lock()

    # -- chats and updates --------------------------------------------------

    def add_chat(self, chat_id: int, chat_type: str, info: JsonObject) -> ChatState:
        """Register a chat so the bot may send to it."""
        chat = ChatState(chat_id, chat_type, info, self.record_limit)
        self.chats[chat_id] = chat
        username = info.get("username")
        if username:
            self.usernames[str(username).lower()] = chat_id
        return chat

    def _enqueue(self, kind: str, build: Callable[[int], JsonObject], exchange: Exchange) -> None:
        self.stats.updates += 1
        update_type = "callback_query" if kind == "callback_query" else "message"
        allowed = self.allowed_updates
        if (allowed is not None and update_type not in allowed) or (
            allowed is None and update_type in UPDATE_TYPES_DEFAULT_OFF
        ):
            exchange.filtered = True
            self.stats.filtered_updates += 1
            return
        self.updates.append((exchange.update_id, build(exchange.update_id)))
        self.chats[exchange.chat_id].pending.append(exchange)
        if self.on_update is not None:
            self.on_update()

    def new_update_id(self) -> int:
        self._next_update_id += 1
        return self._next_update_id

    def inject_message(
        self,
        user: JsonObject,
        chat: ChatState,
        text: str,
        *,
        entities: list[JsonObject] | None = None,
        kind: str = "message",
    ) -> Exchange:
        """Queue a text message from ``user`` in ``chat`` and return its exchange."""
        message: JsonObject = {
            "message_id": chat.next_message_id,
            "from": user,
            "chat": chat.info,
            "date": int(time.time()),
            "text": text,
        }
        chat.next_message_id += 1
        if entities:
            message["entities"] = entities
        chat.store(message)
        exchange = Exchange(self.new_update_id(), kind, chat.id, user["id"], self.clock())
        exchange.message_id = message["message_id"]
        self._enqueue(kind, lambda uid: {"update_id": uid, "message": message}, exchange)
        return exchange

    def inject_callback(
        self, user: JsonObject, chat: ChatState, message: JsonObject, data: str
    ) -> Exchange:
        """Queue a callback query (a pressed inline button) and return its exchange."""
        query_id = f"{self.bot_user['id']}{self._next_callback_id:012d}"
        self._next_callback_id += 1
        query: JsonObject = {
            "id": query_id,
            "from": user,
            "message": message,
            "chat_instance": str(chat.id),
            "data": data,
        }
        exchange = Exchange(
            self.new_update_id(),
            "callback_query",
            chat.id,
            user["id"],
            self.clock(),
            callback_query_id=query_id,
        )
        self._enqueue(
            "callback_query", lambda uid: {"update_id": uid, "callback_query": query}, exchange
        )
        if not exchange.filtered:
            self._callbacks[query_id] = exchange
            while len(self._callbacks) > self._callback_limit:
                self._callbacks.popitem(last=False)
        return exchange

    def confirm(self, offset: int) -> None:
        """Forget updates below ``offset`` (``getUpdates`` semantics, negative too)."""
        if offset < 0:
            while len(self.updates) > -offset:
                self.updates.popleft()
            return
        while self.updates and self.updates[0][0] < offset:
            self.updates.popleft()

    def peek(self, limit: int) -> list[JsonObject]:
        """The first ``limit`` pending updates (not confirmed by this call)."""
        out = [u for _, u in itertools.islice(self.updates, limit)]
        for update in out:
            self.mark_delivered(update["update_id"])
        return out

    def mark_delivered(self, update_id: int) -> None:
        """Count an update's first delivery to the bot."""
        if update_id > self._delivered_up_to:
            self._delivered_up_to = update_id
            self.stats.delivered += 1

    def drop_pending(self) -> int:
        """Drop every pending update; return how many."""
        dropped = len(self.updates)
        self.updates.clear()
        self.stats.dropped_updates += dropped
        return dropped

    def set_allowed_updates(self, value: Any) -> None:
        """Apply ``allowed_updates`` (``None`` keeps the previous setting)."""
        if value is None:
            return
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad("can't parse allowed updates JSON object")
        self.allowed_updates = frozenset(value) if value else None

    # -- the bot's answers --------------------------------------------------

    @staticmethod
    def _claim_key(method: str, params: Params) -> str:
        text = params.raw.get("text", params.raw.get("caption", ""))
        return f"{method.lower()}\x00{text}"

    def _answer_chat(
        self, chat: ChatState, method: str, answer: JsonObject, key: str | None = None
    ) -> None:
        pending = chat.pending
        target: Exchange | None = None
        quoted = answer.get("reply_to_message")
        if isinstance(quoted, dict):
            target = next(
                (
                    e
                    for e in pending
                    if e.answered_at is None and e.message_id == quoted.get("message_id")
                ),
                None,
            )
        if target is None and key is not None:
            target = next((e for e in pending if e.answered_at is None and e.claim == key), None)
        if target is None:
            target = next((e for e in pending if e.answered_at is None and e.claim is None), None)
        if target is not None:
            # A callback query stays answerable (answerCallbackQuery) after this.
            target._resolve(self.clock(), method, answer)
            self.stats.replies += 1
        while pending and pending[0].answered_at is not None:
            pending.popleft()

    def _flood_check(self, chat: ChatState, method: str, params: Params) -> None:
        retry_after = self.flood.check(chat.id, chat.type, method)
        if retry_after is not None:
            raise self._too_many_requests(chat, method, params, retry_after)

    def _too_many_requests(
        self, chat: ChatState | None, method: str, params: Params, retry_after: int
    ) -> ApiError:
        """The 429 answer; a refused reply claims the oldest unanswered update of its chat."""
        if chat is not None:
            key = self._claim_key(method, params)
            unanswered = [e for e in chat.pending if e.answered_at is None]
            if not any(e.claim == key for e in unanswered):
                victim = next((e for e in unanswered if e.claim is None), None)
                if victim is not None:
                    victim.claim = key
        return ApiError(
            429,
            f"Too Many Requests: retry after {retry_after}",
            {"retry_after": retry_after},
        )

    # -- injected faults ----------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Answer the next matching calls with ``fault`` (checked before anything else)."""
        with self._faults_lock:
            self.faults.append(fault)

    def check_faults(self, method: str, raw: Mapping[str, Any]) -> None:
        """Raise the injected answer for this call, if one matches (and use it up).

        Raises:
            ApiError: the injected answer.
        """
        if not self.faults:
            return
        name = method.lower()
        chat_id = self._chat_id_of(raw.get("chat_id"))
        with self._faults_lock:
            fault = next((f for f in self.faults if f.matches(name, chat_id)), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
        if fault.status == 429:
            assert fault.retry_after is not None
            self.flood.count_refusal(chat_id, method)
            chat = self.chats.get(chat_id) if chat_id is not None else None
            raise self._too_many_requests(chat, method, Params(raw), fault.retry_after)
        raise ApiError(fault.status, fault.description)

    def _chat_id_of(self, raw: object) -> int | None:
        """The chat a call addresses (a number, its text, or ``@username``), if any."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("@"):
                return self.usernames.get(text[1:].lower())
            try:
                return int(text)
            except ValueError:
                return None
        return None

    def _chat(self, params: Params, name: str = "chat_id") -> ChatState:
        raw = params.raw.get(name)
        if raw is None or raw == "":
            raise _bad(f"{name} is empty")
        chat_id: int | None = None
        if isinstance(raw, int) and not isinstance(raw, bool):
            chat_id = raw
        elif isinstance(raw, str):
            text = raw.strip()
            if text.startswith("@"):
                chat_id = self.usernames.get(text[1:].lower())
            else:
                try:
                    chat_id = int(text)
                except ValueError:
                    chat_id = None
        chat = self.chats.get(chat_id) if chat_id is not None else None
        if chat is None:
            raise _bad("chat not found")
        return chat

    def _markup(self, params: Params) -> JsonObject | None:
        markup = params.get_json("reply_markup", "reply keyboard markup")
        if markup is None:
            return None
        if not isinstance(markup, dict):
            raise _bad("can't parse reply keyboard markup JSON object")
        if "inline_keyboard" in markup:
            rows = markup["inline_keyboard"]
            if not isinstance(rows, list) or not all(
                isinstance(row, list)
                and all(isinstance(b, dict) and isinstance(b.get("text"), str) for b in row)
                for row in rows
            ):
                raise _bad(
                    "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
                )
        return markup

    def _bot_message(self, chat: ChatState, params: Params, **content: Any) -> JsonObject:
        message: JsonObject = {
            "message_id": chat.next_message_id,
            "from": self.bot_user,
            "chat": chat.info,
            "date": int(time.time()),
        }
        chat.next_message_id += 1
        message.update({k: v for k, v in content.items() if v is not None})
        reply = params.get_json("reply_parameters", "reply parameters")
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        if reply_to is None:
            reply_to = params.get_int("reply_to_message_id")
        if reply_to is not None:
            original = chat.messages.get(int(reply_to))
            if original is not None:
                message["reply_to_message"] = {
                    k: v for k, v in original.items() if k != "reply_to_message"
                }
        markup = self._markup(params)
        if markup is not None and "inline_keyboard" in markup:
            message["reply_markup"] = markup
            chat.keyboard_message = message
        return message

    def _sent(
        self, chat: ChatState, method: str, message: JsonObject, params: Params
    ) -> JsonObject:
        chat.store(message)
        chat.bot_messages.append(message)
        chat.sent_count += 1
        self.stats.messages_sent += 1
        self._answer_chat(chat, method, message, self._claim_key(method, params))
        return message

    # -- dispatch -----------------------------------------------------------

    def call(self, method: str, raw: Mapping[str, Any]) -> Any:
        """Run one Bot API method and return its ``result``.

        ``getUpdates`` and the webhook methods are not handled here (they
        need the transport); everything else is, including a generic
        ``true`` for methods the simulator does not model.

        Raises:
            ApiError: the error answer, with Telegram's status and description.
        """
        name = method.lower()
        params = Params(raw)
        handler = _HANDLERS.get(name)
        if handler is not None:
            return handler(self, method, params)
        if name.startswith(("send", "forward")):
            return self._send_generic(method, params)
        if name.startswith("copymessage"):
            chat = self._chat(params)
            self._flood_check(chat, method, params)
            message = self._bot_message(chat, params, caption=params.get_str("caption"))
            self._sent(chat, method, message, params)
            return {"message_id": message["message_id"]}
        self.stats.generic_calls[method] += 1
        if self.stats.generic_calls[method] == 1:
            logger.info("simulator: %s answered generically with true", method)
        return True

    def record(
        self, method: str, raw: Mapping[str, Any], status: int, description: str | None
    ) -> None:
        """Log one call and count its outcome."""
        self.stats.calls[method] += 1
        if status == 429:
            self.stats.rate_limited += 1
        elif status != 200:
            self.stats.errors += 1
            self.stats.errors_by_description[description or str(status)] += 1
        params = {
            k: (v if isinstance(v, (str, int, float, bool, list, dict)) else repr(v))
            for k, v in raw.items()
        }
        self.calls.append(CallRecord(self.clock(), method, params, status, description))
        logger.debug("simulator: %s %s -> %s %s", method, params, status, description or "")

    def _get_me(self, method: str, params: Params) -> Any:
        return self.bot_user

    def _true(self, method: str, params: Params) -> Any:
        return True

    def _send_message(self, method: str, params: Params) -> Any:
        chat = self._chat(params)
        text = params.get_str("text", required=True)
        assert text is not None
        if not text.strip():
            raise ApiError(400, _MISSING["text"])
        if len(text) > MAX_TEXT:
            raise _bad("message is too long")
        entities = params.get_json("entities", "entities")
        self._markup(params)
        self._flood_check(chat, method, params)
        message = self._bot_message(
            chat, params, text=text, entities=entities if isinstance(entities, list) else None
        )
        return self._sent(chat, method, message, params)

    def _send_generic(self, method: str, params: Params) -> Any:
        chat = self._chat(params)
        self._markup(params)
        self._flood_check(chat, method, params)
        message = self._bot_message(chat, params, caption=params.get_str("caption"))
        return self._sent(chat, method, message, params)

    def _find_bot_message(self, params: Params, missing: str) -> tuple[ChatState, JsonObject]:
        chat = self._chat(params)
        message_id = params.get_int("message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        message = chat.messages.get(message_id)
        if message is None:
            raise _bad(missing)
        return chat, message

    def _edit(self, method: str, params: Params, *, text: str | None) -> Any:
        if params.has("inline_message_id"):
            self._markup(params)
            return True
        chat, message = self._find_bot_message(params, "message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _bad("message can't be edited")
        markup = self._markup(params)
        # No markup, or an inline keyboard without buttons, removes the keyboard.
        has_buttons = markup is not None and any(markup.get("inline_keyboard") or ())
        inline = markup if has_buttons else None
        new_text = message.get("text") if text is None else text
        if new_text == message.get("text") and inline == message.get("reply_markup"):
            raise ApiError(400, _NOT_MODIFIED)
        self._flood_check(chat, method, params)
        edited = dict(message)
        edited["edit_date"] = int(time.time())
        if new_text is not None:
            edited["text"] = new_text
        if inline is None:
            edited.pop("reply_markup", None)
            if chat.keyboard_message is not None and (
                chat.keyboard_message["message_id"] == edited["message_id"]
            ):
                chat.keyboard_message = None
        else:
            edited["reply_markup"] = inline
            chat.keyboard_message = edited
        return self._sent(chat, method, edited, params)

    def _edit_text(self, method: str, params: Params) -> Any:
        text = params.get_str("text", required=True)
        assert text is not None
        if len(text) > MAX_TEXT:
            raise _bad("MESSAGE_TOO_LONG")
        return self._edit(method, params, text=text)

    def _edit_markup(self, method: str, params: Params) -> Any:
        return self._edit(method, params, text=None)

    def _delete_message(self, method: str, params: Params) -> Any:
        chat, message = self._find_bot_message(params, "message to delete not found")
        del chat.messages[message["message_id"]]
        if chat.keyboard_message is not None and (
            chat.keyboard_message["message_id"] == message["message_id"]
        ):
            chat.keyboard_message = None
        return True

    def _send_chat_action(self, method: str, params: Params) -> Any:
        self._chat(params)
        action = params.get_str("action", required=True)
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def _answer_callback_query(self, method: str, params: Params) -> Any:
        query_id = params.get_str("callback_query_id", required=True)
        assert query_id is not None
        exchange = self._callbacks.pop(query_id, None)
        if exchange is None:
            raise ApiError(400, _QUERY_TOO_OLD)
        if exchange.answered_at is None:
            answer = {k: v for k, v in params.raw.items() if isinstance(v, (str, int, bool))}
            exchange._resolve(self.clock(), method, answer)
            self.stats.replies += 1
            chat = self.chats[exchange.chat_id]
            while chat.pending and chat.pending[0].answered_at is not None:
                chat.pending.popleft()
        return True

    def _get_chat(self, method: str, params: Params) -> Any:
        chat = self._chat(params)
        return {
            **chat.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
            },
        }

    def _get_chat_member(self, method: str, params: Params) -> Any:
        self._chat(params)
        user_id = params.get_int("user_id", required=True)
        if user_id == self.bot_user["id"]:
            return {"status": "member", "user": self.bot_user}
        chat = self.chats.get(user_id if user_id is not None else 0)
        if chat is None or chat.type != "private":
            raise _bad("user not found")
        user = {k: v for k, v in chat.info.items() if k not in ("type",)}
        return {"status": "member", "user": {**user, "is_bot": False}}


_Handler: TypeAlias = Callable[[BotApi, str, Params], Any]
_HANDLERS: Final[dict[str, _Handler]] = {
    "getme": BotApi._get_me,
    "logout": BotApi._true,
    "close": BotApi._true,
    "sendmessage": BotApi._send_message,
    "editmessagetext": BotApi._edit_text,
    "editmessagereplymarkup": BotApi._edit_markup,
    "deletemessage": BotApi._delete_message,
    "sendchataction": BotApi._send_chat_action,
    "answercallbackquery": BotApi._answer_callback_query,
    "getchat": BotApi._get_chat,
    "getchatmember": BotApi._get_chat_member,
}

"""Virtual users and group chats that talk to the bot through the simulator."""

from __future__ import annotations

import random
import re
from typing import Final

from ._api import BotApi, ChatState, Exchange, JsonObject

__all__ = ["VirtualChat", "VirtualUser"]

_COMMAND: Final = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{1,64})?")


class VirtualChat:
    """A group (or supergroup) chat that virtual users write in.

    Create one with :meth:`TelegramSimulator.group`; pass it as ``chat=`` to
    :class:`VirtualUser` methods.
    """

    def __init__(self, api: BotApi, state: ChatState) -> None:
        self._api = api
        self._state = state

    @property
    def id(self) -> int:
        """The chat id (negative for groups)."""
        return self._state.id

    @property
    def type(self) -> str:
        """``"group"`` or ``"supergroup"``."""
        return self._state.type

    @property
    def info(self) -> JsonObject:
        """The chat's Bot API ``Chat`` object."""
        return self._state.info

    def messages(self) -> list[JsonObject]:
        """The bot's messages in this chat, oldest first (the last ``record_limit``)."""
        return list(self._state.bot_messages)

    def __repr__(self) -> str:
        return f"<VirtualChat {self.id} {self.info.get('title')!r}>"


class VirtualUser:
    """A Telegram user with a private chat with the bot.

    Every method that sends returns an :class:`Exchange` at once; await
    :meth:`Exchange.wait` (or use :meth:`ask`) for the bot's answer.  Pass a
    :class:`VirtualChat` as ``chat=`` to write in a group instead of the
    private chat.  Methods must be called on the simulator's event loop.
    """

    def __init__(self, api: BotApi, info: JsonObject, private: ChatState) -> None:
        self._api = api
        self._info = info
        self._private = private

    @property
    def id(self) -> int:
        """The user id (also the id of the private chat)."""
        return int(self._info["id"])

    @property
    def info(self) -> JsonObject:
        """The user's Bot API ``User`` object."""
        return self._info

    @property
    def chat_id(self) -> int:
        """The id of the private chat with the bot."""
        return self._private.id

    def _chat(self, chat: VirtualChat | None) -> ChatState:
        if chat is None:
            return self._private
        if not isinstance(chat, VirtualChat):
            raise TypeError(f"chat must be a VirtualChat or None, got {type(chat).__name__}")
        return chat._state

    def send(self, text: str, *, chat: VirtualChat | None = None) -> Exchange:
        """Send a text message; a leading ``/command`` gets its ``bot_command`` entity.

        Raises:
            ValueError: ``text`` is empty.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty")
        match = _COMMAND.match(text)
        if match:
            entities = [{"type": "bot_command", "offset": 0, "length": match.end()}]
            return self._api.inject_message(
                self._info, self._chat(chat), text, entities=entities, kind="command"
            )
        return self._api.inject_message(self._info, self._chat(chat), text)

    def command(self, name: str, args: str = "", *, chat: VirtualChat | None = None) -> Exchange:
        """Send ``/name args`` (``name`` without the slash, e.g. ``"start"``)."""
        name = name.lstrip("/")
        if not _COMMAND.match("/" + name):
            raise ValueError(f"name must be a bot command like 'start', got {name!r}")
        return self.send(f"/{name} {args}".rstrip(), chat=chat)

    def buttons(self, *, chat: VirtualChat | None = None) -> list[JsonObject]:
        """The callback buttons of the bot's last inline keyboard in the chat."""
        message = self._chat(chat).keyboard_message
        if message is None:
            return []
        rows = message.get("reply_markup", {}).get("inline_keyboard", [])
        return [b for row in rows for b in row if "callback_data" in b]

    def press(
        self,
        button: str | int | None = None,
        *,
        chat: VirtualChat | None = None,
        rng: random.Random | None = None,
    ) -> Exchange:
        """Press a button of the bot's last inline keyboard (a callback query).

        Args:
            button: the button's text, its index among the callback buttons,
                or ``None`` for a random one.
            chat: the chat, default the private chat.
            rng: the random source for ``button=None``.

        Raises:
            LookupError: there is no inline keyboard, or no such button.
        """
        state = self._chat(chat)
        buttons = self.buttons(chat=chat)
        if state.keyboard_message is None or not buttons:
            raise LookupError(
                f"the bot has sent no inline keyboard with callback buttons to chat {state.id}"
            )
        if button is None:
            chosen = (rng or random).choice(buttons)
        elif isinstance(button, int) and not isinstance(button, bool):
            if not 0 <= button < len(buttons):
                raise LookupError(f"button index {button} out of range 0..{len(buttons) - 1}")
            chosen = buttons[button]
        else:
            found = [b for b in buttons if b["text"] == button]
            if not found:
                texts = [b["text"] for b in buttons]
                raise LookupError(f"no button {button!r} in the last inline keyboard {texts!r}")
            chosen = found[0]
        return self._api.inject_callback(
            self._info, state, state.keyboard_message, str(chosen["callback_data"])
        )

    async def ask(
        self, text: str, *, chat: VirtualChat | None = None, timeout: float = 10.0
    ) -> JsonObject:
        """Send ``text`` and return the bot's answer (the ``Message`` it sent).

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
        """
        return await self.send(text, chat=chat).wait(timeout)

    def messages(self, *, chat: VirtualChat | None = None) -> list[JsonObject]:
        """The bot's messages in the chat, oldest first (the last ``record_limit``)."""
        return list(self._chat(chat).bot_messages)

    def last_message(self, *, chat: VirtualChat | None = None) -> JsonObject | None:
        """The bot's last message in the chat, or ``None``."""
        messages = self._chat(chat).bot_messages
        return messages[-1] if messages else None

    def __repr__(self) -> str:
        return f"<VirtualUser {self.id} {self._info.get('first_name')!r}>"

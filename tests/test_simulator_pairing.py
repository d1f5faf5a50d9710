"""The simulator pairs the bot's reactions with callback queries and keyboards as Telegram does.

Over real HTTP: a callback query stays answerable once after a message or an
edit in its chat, its latency is recorded once (at the first reaction), and a
keyboard removed by an edit or deleteMessage can no longer be pressed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from botscale.testing import FakeClock, FloodLimits, TelegramSimulator, VirtualUser

TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
KEYBOARD = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[TelegramSimulator]:
    # Flood limits off: these tests are about pairing, not 429s.
    async with TelegramSimulator(clock=clock, flood_limits=FloodLimits.off()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def call(
    sim: TelegramSimulator, http: aiohttp.ClientSession, method: str, **params: Any
) -> tuple[int, dict[str, Any]]:
    async with http.post(sim.api_url(method), json=params) as response:
        return response.status, await response.json()


async def ok(
    sim: TelegramSimulator, http: aiohttp.ClientSession, method: str, **params: Any
) -> Any:
    status, body = await call(sim, http, method, **params)
    assert (status, body["ok"]) == (200, True), body
    return body["result"]


async def keyboard(sim: TelegramSimulator, http: aiohttp.ClientSession, user: VirtualUser) -> int:
    message = await ok(sim, http, "sendMessage", chat_id=user.id, text="Q?", reply_markup=KEYBOARD)
    return int(message["message_id"])


async def query_ids(sim: TelegramSimulator, http: aiohttp.ClientSession) -> list[str]:
    """The pending callback queries' ids, as the bot reads them (and confirms them)."""
    updates = await ok(sim, http, "getUpdates")
    if updates:
        await ok(sim, http, "getUpdates", offset=updates[-1]["update_id"] + 1)
    return [u["callback_query"]["id"] for u in updates if "callback_query" in u]


@pytest.mark.parametrize("reaction", ["sendMessage", "editMessageText"])
async def test_a_callback_query_stays_answerable_once_after_a_message_in_its_chat(
    sim: TelegramSimulator, http: aiohttp.ClientSession, clock: FakeClock, reaction: str
) -> None:
    user = sim.user()
    keyboard_id = await keyboard(sim, http, user)
    replies0 = sim.stats.replies
    exchange = user.press("A")
    [query_id] = await query_ids(sim, http)
    clock.advance(0.2)
    if reaction == "sendMessage":
        await ok(sim, http, "sendMessage", chat_id=user.id, text="Right!")
    else:
        await ok(sim, http, "editMessageText", chat_id=user.id, message_id=keyboard_id, text="Q: A")
    assert exchange.latency == pytest.approx(0.2)
    assert exchange.answer_method == reaction
    clock.advance(0.3)
    assert await ok(sim, http, "answerCallbackQuery", callback_query_id=query_id, text="ok")
    # The first reaction set the latency; the query's own answer does not count again.
    assert exchange.latency == pytest.approx(0.2)
    assert exchange.answer_method == reaction
    assert sim.stats.replies == replies0 + 1
    assert await call(sim, http, "answerCallbackQuery", callback_query_id=query_id) == (
        400,
        {"ok": False, "error_code": 400, "description": TOO_OLD},
    )
    assert sim.stats.errors_by_description == {TOO_OLD: 1}
    assert sim.stats.replies == replies0 + 1


async def test_answering_first_sets_the_latency_and_a_later_edit_does_not(
    sim: TelegramSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    user = sim.user()
    keyboard_id = await keyboard(sim, http, user)
    exchange = user.press("A")
    [query_id] = await query_ids(sim, http)
    clock.advance(0.1)
    assert await ok(sim, http, "answerCallbackQuery", callback_query_id=query_id, text="ok")
    assert exchange.latency == pytest.approx(0.1)
    assert exchange.answer == {"callback_query_id": query_id, "text": "ok"}
    replies = sim.stats.replies
    clock.advance(0.4)
    await ok(sim, http, "editMessageText", chat_id=user.id, message_id=keyboard_id, text="Q: A")
    assert exchange.latency == pytest.approx(0.1)
    assert exchange.answer_method == "answerCallbackQuery"
    assert sim.stats.replies == replies
    status, body = await call(sim, http, "answerCallbackQuery", callback_query_id=query_id)
    assert (status, body["description"]) == (400, TOO_OLD)


async def test_every_query_of_a_burst_of_presses_is_answerable_once(
    sim: TelegramSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    """The quiz demo's spam: each press gets a message, then its answer; none is refused."""
    user = sim.user()
    await keyboard(sim, http, user)
    exchanges = [user.press("A") for _ in range(3)]
    ids = await query_ids(sim, http)
    assert len(ids) == 3
    for n, query_id in enumerate(ids):
        clock.advance(0.1)
        await ok(sim, http, "sendMessage", chat_id=user.id, text=f"press {n}")
        assert await ok(sim, http, "answerCallbackQuery", callback_query_id=query_id)
    assert [e.latency for e in exchanges] == pytest.approx([0.1, 0.2, 0.3])
    assert [e.answer_method for e in exchanges] == ["sendMessage"] * 3
    assert sim.stats.errors == 0
    for query_id in ids:
        status, _ = await call(sim, http, "answerCallbackQuery", callback_query_id=query_id)
        assert status == 400


async def test_a_message_answers_the_older_message_and_the_query_its_own_press(
    sim: TelegramSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    user = sim.user()
    await keyboard(sim, http, user)
    text = user.send("hello")
    press = user.press("A")
    [query_id] = await query_ids(sim, http)
    clock.advance(0.1)
    assert await ok(sim, http, "answerCallbackQuery", callback_query_id=query_id)
    clock.advance(0.1)
    await ok(sim, http, "sendMessage", chat_id=user.id, text="hi")
    assert press.latency == pytest.approx(0.1)
    assert press.answer_method == "answerCallbackQuery"
    assert text.latency == pytest.approx(0.2)
    assert text.answer_method == "sendMessage"


async def test_queries_beyond_the_bounded_store_are_too_old(
    sim: TelegramSimulator, http: aiohttp.ClientSession
) -> None:
    sim.api._callback_limit = 2
    user = sim.user()
    await keyboard(sim, http, user)
    for _ in range(3):
        user.press("A")
    first, *rest = await query_ids(sim, http)
    status, body = await call(sim, http, "answerCallbackQuery", callback_query_id=first)
    assert (status, body["description"]) == (400, TOO_OLD)
    for query_id in rest:
        assert await ok(sim, http, "answerCallbackQuery", callback_query_id=query_id)


# -- keyboards ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("editMessageText", {"text": "Q: answered"}),
        ("editMessageReplyMarkup", {}),
        ("editMessageReplyMarkup", {"reply_markup": {"inline_keyboard": []}}),
        ("editMessageText", {"text": "Q: closed", "reply_markup": {"inline_keyboard": [[]]}}),
        ("deleteMessage", {}),
    ],
)
async def test_removing_the_keyboard_stops_users_pressing_it(
    sim: TelegramSimulator, http: aiohttp.ClientSession, method: str, params: dict[str, Any]
) -> None:
    user = sim.user()
    keyboard_id = await keyboard(sim, http, user)
    assert [b["text"] for b in user.buttons()] == ["A"]
    assert await ok(sim, http, method, chat_id=user.id, message_id=keyboard_id, **params)
    assert user.buttons() == []
    with pytest.raises(LookupError, match="no inline keyboard"):
        user.press()
    if method != "deleteMessage":
        edited = sim.api.chats[user.id].messages[keyboard_id]
        assert "reply_markup" not in edited


async def test_editing_another_message_keeps_the_keyboard_and_a_new_keyboard_replaces_it(
    sim: TelegramSimulator, http: aiohttp.ClientSession
) -> None:
    user = sim.user()
    plain = await ok(sim, http, "sendMessage", chat_id=user.id, text="plain")
    keyboard_id = await keyboard(sim, http, user)
    plain_id = plain["message_id"]
    await ok(sim, http, "editMessageText", chat_id=user.id, message_id=plain_id, text="x")
    await ok(sim, http, "deleteMessage", chat_id=user.id, message_id=plain_id)
    assert [b["text"] for b in user.buttons()] == ["A"]
    other = {"inline_keyboard": [[{"text": "B", "callback_data": "b"}]]}
    await ok(
        sim,
        http,
        "editMessageReplyMarkup",
        chat_id=user.id,
        message_id=keyboard_id,
        reply_markup=other,
    )
    assert [b["text"] for b in user.buttons()] == ["B"]
    exchange = user.press("B")
    update = sim.api.updates[-1][1]["callback_query"]
    assert update["message"]["reply_markup"] == other
    assert not exchange.filtered

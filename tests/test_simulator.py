"""The Bot API simulator: flood rules (FakeClock), API semantics, HTTP wiring."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from botscale import ConfigurationError, Rate
from botscale.testing import FakeClock, FloodEnforcer, FloodLimits, TelegramSimulator
from botscale.testing._api import ApiError
from botscale.testing._flood import is_limited_method

# -- flood limits (pure, driven by FakeClock) ----------------------------------


def test_private_chat_allows_a_short_burst_then_one_per_second(clock: FakeClock) -> None:
    flood = FloodEnforcer(clock=clock)
    assert [flood.check(1, "private", "sendMessage") for _ in range(4)] == [None, None, None, 1]
    clock.advance(0.5)
    assert flood.check(1, "private", "sendMessage") == 1
    clock.advance(0.5)
    assert flood.check(1, "private", "sendMessage") is None
    assert flood.check(2, "private", "sendMessage") is None  # another chat has its own bucket
    assert flood.rate_limited == 2
    assert flood.rate_limited_by_chat == {1: 2}
    assert flood.rate_limited_by_method == {"sendMessage": 2}


def test_group_allows_twenty_per_minute(clock: FakeClock) -> None:
    flood = FloodEnforcer(clock=clock)
    assert all(flood.check(-5, "supergroup", "sendMessage") is None for _ in range(20))
    assert flood.check(-5, "supergroup", "sendPhoto") == 3  # one token per 3 s
    clock.advance(3.0)
    assert flood.check(-5, "group", "sendMessage") is None
    assert flood.rate_limited_by_method == {"sendPhoto": 1}


def test_bot_wide_limit_of_thirty_per_second_spans_chats(clock: FakeClock) -> None:
    flood = FloodEnforcer(clock=clock)
    results = [flood.check(chat, "private", "sendMessage") for chat in range(40)]
    assert results.count(None) == 30
    assert results[30:] == [1] * 10
    clock.advance(1.0)
    # A refused call took no token from its chat: chat 35 still has its full burst.
    assert flood.check(35, "private", "sendMessage") is None


def test_flood_limits_can_be_switched_off(clock: FakeClock) -> None:
    flood = FloodEnforcer(FloodLimits.off(), clock=clock)
    assert all(flood.check(1, "private", "sendMessage") is None for _ in range(1000))


def test_flood_limits_reject_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="per_bot_burst"):
        FloodLimits(per_bot_burst=0)
    with pytest.raises(TypeError, match="per_group"):
        FloodLimits(per_group="20/minute")  # type: ignore[arg-type]


def test_sending_methods_are_the_limited_ones() -> None:
    assert is_limited_method("sendMessage")
    assert is_limited_method("SENDPHOTO")
    assert is_limited_method("editMessageText")
    assert is_limited_method("copyMessage")
    assert not is_limited_method("sendChatAction")
    assert not is_limited_method("answerCallbackQuery")
    assert not is_limited_method("getMe")


@settings(max_examples=60, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=1.5), min_size=1, max_size=80),
    per_second=st.sampled_from([1, 2, 5]),
    burst=st.integers(min_value=1, max_value=5),
)
def test_no_window_ever_exceeds_burst_plus_rate(
    gaps: list[float], per_second: int, burst: int
) -> None:
    clock = FakeClock()
    limits = FloodLimits(
        per_bot=None, per_private_chat=Rate(per_second, 1.0), per_private_chat_burst=burst
    )
    flood = FloodEnforcer(limits, clock=clock)
    allowed: list[float] = []
    for gap in gaps:
        clock.advance(gap)
        retry_after = flood.check(7, "private", "sendMessage")
        if retry_after is None:
            allowed.append(clock())
        else:
            assert retry_after >= 1
    for i, start in enumerate(allowed):
        for j in range(i, len(allowed)):
            window = allowed[j] - start
            assert j - i + 1 <= burst + window * per_second + 1e-6


# -- Bot API semantics (no HTTP: the simulator's API object) --------------------


def test_send_message_answers_in_the_bot_api_shape(clock: FakeClock) -> None:
    sim = TelegramSimulator(clock=clock)
    user = sim.user("Ann")
    keyboard = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    message = sim.api.call(
        "sendMessage",
        {"chat_id": str(user.chat_id), "text": "hi", "reply_markup": json.dumps(keyboard)},
    )
    assert message["message_id"] == 1
    assert message["from"] == sim.bot_user
    assert message["from"]["is_bot"] is True
    assert message["chat"] == {
        "id": user.id,
        "type": "private",
        "first_name": "Ann",
        "username": "user1",
    }
    assert isinstance(message["date"], int)
    assert message["text"] == "hi"
    assert message["reply_markup"] == keyboard
    reply_keyboard = {"keyboard": [[{"text": "x"}]]}
    plain = sim.api.call(
        "sendMessage", {"chat_id": user.id, "text": "yo", "reply_markup": reply_keyboard}
    )
    assert "reply_markup" not in plain  # Telegram echoes inline keyboards only
    assert plain["message_id"] == 2
    assert sim.sent_count(user.chat_id) == 2


def test_replies_are_matched_to_updates_in_order_with_latency(clock: FakeClock) -> None:
    sim = TelegramSimulator(clock=clock)
    user = sim.user()
    first = user.send("one")
    clock.advance(0.1)
    second = user.send("two")
    clock.advance(0.15)
    sim.api.call("sendMessage", {"chat_id": user.id, "text": "re: one"})
    assert first.latency == pytest.approx(0.25)
    assert second.answered is False
    clock.advance(0.05)
    sim.api.call("sendChatAction", {"chat_id": user.id, "action": "typing"})  # not an answer
    assert second.answered is False
    sim.api.call("editMessageText", {"chat_id": user.id, "message_id": 3, "text": "re: two"})
    assert second.latency == pytest.approx(0.2)
    assert second.answer_method == "editMessageText"
    sim.api.call("sendMessage", {"chat_id": user.id, "text": "extra"})  # nothing left to match
    assert sim.stats.replies == 2
    assert sim.stats.messages_sent == 3


def test_a_reply_refused_with_429_does_not_skew_the_next_ones_latency(clock: FakeClock) -> None:
    limits = FloodLimits(per_private_chat_burst=1)
    sim = TelegramSimulator(clock=clock, flood_limits=limits)
    user = sim.user()
    a = user.send("a")
    sim.api.call("sendMessage", {"chat_id": user.id, "text": "re a"})
    b = user.send("b")
    with pytest.raises(ApiError, match="retry after 1"):
        sim.api.call("sendMessage", {"chat_id": user.id, "text": "re b"})  # claims b
    clock.advance(5.0)
    c = user.send("c")
    clock.advance(0.5)
    sim.api.call("sendMessage", {"chat_id": user.id, "text": "re c"})
    assert a.answered
    assert c.latency == pytest.approx(0.5)  # not 5.5: b's dropped reply is not c's
    assert not b.answered
    clock.advance(1.0)
    sim.api.call("sendMessage", {"chat_id": user.id, "text": "re b"})  # the retry answers b
    assert b.latency == pytest.approx(6.5)
    assert b.answer is not None
    assert b.answer["text"] == "re b"


def test_a_quoting_reply_answers_the_quoted_update(clock: FakeClock) -> None:
    sim = TelegramSimulator(clock=clock)
    user = sim.user()
    first, second = user.send("one"), user.send("two")
    clock.advance(0.2)
    sim.api.call(
        "sendMessage",
        {
            "chat_id": user.id,
            "text": "re two",
            "reply_parameters": {"message_id": second.message_id},
        },
    )
    assert second.latency == pytest.approx(0.2)
    assert not first.answered


def test_commands_carry_a_bot_command_entity() -> None:
    sim = TelegramSimulator()
    user = sim.user()
    exchange = user.command("start", "deep-link")
    update = sim.api.updates[-1][1]
    assert exchange.kind == "command"
    assert update["message"]["text"] == "/start deep-link"
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]


def test_a_quiz_is_played_through_the_bots_inline_buttons(clock: FakeClock) -> None:
    sim = TelegramSimulator(clock=clock)
    user = sim.user()
    with pytest.raises(LookupError, match="no inline keyboard"):
        user.press()
    keyboard = {
        "inline_keyboard": [
            [
                {"text": "Paris", "callback_data": "q1:paris"},
                {"text": "Rome", "callback_data": "q1:rome"},
            ],
            [{"text": "Help", "url": "https://example.org"}],
        ]
    }
    question = sim.api.call(
        "sendMessage", {"chat_id": user.id, "text": "Capital?", "reply_markup": keyboard}
    )
    assert [b["text"] for b in user.buttons()] == ["Paris", "Rome"]  # url buttons cannot be pressed
    with pytest.raises(LookupError, match="Berlin"):
        user.press("Berlin")
    exchange = user.press("Rome")
    query = sim.api.updates[-1][1]["callback_query"]
    assert query["data"] == "q1:rome"
    assert query["message"]["message_id"] == question["message_id"]
    assert query["from"]["id"] == user.id
    clock.advance(0.3)
    assert (
        sim.api.call("answerCallbackQuery", {"callback_query_id": query["id"], "text": "No"})
        is True
    )
    assert exchange.latency == pytest.approx(0.3)
    assert exchange.answer == {"callback_query_id": query["id"], "text": "No"}
    with pytest.raises(ApiError, match="query is too old"):
        sim.api.call("answerCallbackQuery", {"callback_query_id": "nope"})


@pytest.mark.parametrize(
    ("method", "params", "description"),
    [
        ("sendMessage", {"text": "hi"}, "Bad Request: chat_id is empty"),
        ("sendMessage", {"chat_id": 999, "text": "hi"}, "Bad Request: chat not found"),
        ("sendMessage", {"chat_id": "@nobody", "text": "hi"}, "Bad Request: chat not found"),
        ("sendMessage", {"chat_id": "abc", "text": "hi"}, "Bad Request: chat not found"),
        ("sendMessage", {"chat_id": "USER"}, "Bad Request: message text is empty"),
        ("sendMessage", {"chat_id": "USER", "text": "   "}, "Bad Request: message text is empty"),
        (
            "sendMessage",
            {"chat_id": "USER", "text": "x" * 4097},
            "Bad Request: message is too long",
        ),
        (
            "sendMessage",
            {"chat_id": "USER", "text": "hi", "reply_markup": "{not json"},
            "Bad Request: can't parse reply keyboard markup JSON object",
        ),
        (
            "editMessageText",
            {"chat_id": "USER", "message_id": 77, "text": "x"},
            "Bad Request: message to edit not found",
        ),
        (
            "deleteMessage",
            {"chat_id": "USER", "message_id": 77},
            "Bad Request: message to delete not found",
        ),
        (
            "sendChatAction",
            {"chat_id": "USER", "action": "dancing"},
            "Bad Request: wrong parameter action in request",
        ),
        ("getUpdates", {"offset": "soon"}, "Bad Request: invalid offset specified"),
    ],
)
async def test_bad_requests_get_telegrams_400_answers(
    method: str, params: dict[str, Any], description: str
) -> None:
    sim = TelegramSimulator()
    user = sim.user()
    params = {k: (user.id if v == "USER" else v) for k, v in params.items()}
    with pytest.raises(ApiError) as info:
        await sim.dispatch(method, params)
    assert info.value.status == 400
    assert info.value.description == description
    assert info.value.body() == {"ok": False, "error_code": 400, "description": description}


def test_editing_to_the_same_content_is_not_modified() -> None:
    sim = TelegramSimulator()
    user = sim.user()
    sent = sim.api.call("sendMessage", {"chat_id": user.id, "text": "same"})
    with pytest.raises(ApiError, match="message is not modified"):
        sim.api.call(
            "editMessageText",
            {"chat_id": user.id, "message_id": sent["message_id"], "text": "same"},
        )
    assert (
        sim.api.call("deleteMessage", {"chat_id": user.id, "message_id": sent["message_id"]})
        is True
    )


def test_unknown_methods_get_a_logged_generic_true() -> None:
    sim = TelegramSimulator()
    assert sim.api.call("setMyCommands", {"commands": "[]"}) is True
    assert sim.stats.generic_calls == {"setMyCommands": 1}


async def test_updates_excluded_by_allowed_updates_are_never_created() -> None:
    sim = TelegramSimulator()
    user = sim.user()
    sim.api.call(
        "sendMessage",
        {
            "chat_id": user.id,
            "text": "q",
            "reply_markup": {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]},
        },
    )
    await sim.dispatch("getUpdates", {"allowed_updates": '["message"]'})
    exchange = user.press("A")
    assert exchange.filtered
    with pytest.raises(RuntimeError, match="allowed_updates"):
        await exchange.wait(1)
    assert sim.stats.filtered_updates == 1
    assert sim.pending_updates == 0


async def test_injected_429_refuses_only_that_chats_sends_and_counts_like_a_real_one(
    clock: FakeClock,
) -> None:
    sim = TelegramSimulator(clock=clock)
    victim, other = sim.user(), sim.user()
    update = victim.send("hello")
    sim.inject_429(victim.chat_id, retry_after=7, count=2)
    await sim.dispatch("getChat", {"chat_id": victim.chat_id})  # not a sending call: untouched
    await sim.dispatch("sendMessage", {"chat_id": other.chat_id, "text": "news"})
    for _ in range(2):
        with pytest.raises(ApiError) as refused:
            await sim.dispatch("sendMessage", {"chat_id": str(victim.chat_id), "text": "re"})
        assert (refused.value.status, refused.value.parameters) == (429, {"retry_after": 7})
        assert refused.value.description == "Too Many Requests: retry after 7"
    answered = [update.answered]  # the refused reply claimed the update...
    await sim.dispatch("sendMessage", {"chat_id": victim.chat_id, "text": "re"})
    answered.append(update.answered)  # ...and its retry answered it
    assert answered == [False, True]
    stats = sim.stats
    assert stats.rate_limited == 2
    assert stats.rate_limited_by_chat == {victim.chat_id: 2}
    assert stats.rate_limited_by_method == {"sendMessage": 2}
    assert [c.status for c in sim.calls if c.method == "sendMessage"] == [200, 429, 429, 200]


async def test_injected_errors_match_method_and_chat(clock: FakeClock) -> None:
    sim = TelegramSimulator(clock=clock)
    user = sim.user()
    sim.inject_error(502, method="sendmessage")
    sim.inject_429(user.chat_id, retry_after=1, method="sendPhoto")
    await sim.dispatch("getMe", {})  # another method: untouched
    with pytest.raises(ApiError) as bad_gateway:
        await sim.dispatch("sendMessage", {"chat_id": user.chat_id, "text": "x"})
    assert (bad_gateway.value.status, bad_gateway.value.description) == (502, "Bad Gateway")
    await sim.dispatch("sendMessage", {"chat_id": user.chat_id, "text": "x"})  # used up
    with pytest.raises(ApiError, match="retry after 1"):
        await sim.dispatch("sendPhoto", {"chat_id": user.chat_id, "photo": "p"})
    sim.inject_error(500, description="Internal Server Error: restart")
    with pytest.raises(ApiError, match="restart"):
        await sim.dispatch("getUpdates", {"timeout": 0})  # any call, polling included
    sim.inject_error(
        403, chat_id=user.chat_id, description="Forbidden: bot was blocked by the user"
    )
    await sim.dispatch("getMe", {})  # no chat: not this fault's call
    with pytest.raises(ApiError, match="blocked"):
        await sim.dispatch("sendMessage", {"chat_id": user.chat_id, "text": "x"})
    assert sim.stats.errors == 3
    assert sim.stats.rate_limited == 1
    assert sim.api.faults == []


def test_fault_injection_rejects_bad_arguments() -> None:
    sim = TelegramSimulator()
    with pytest.raises(ValueError, match="retry_after"):
        sim.inject_429(1, retry_after=0)
    with pytest.raises(ValueError, match="count"):
        sim.inject_429(1, retry_after=1, count=0)
    with pytest.raises(TypeError, match="chat_id"):
        sim.inject_429("1", retry_after=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inject_429"):
        sim.inject_error(429)
    with pytest.raises(ValueError, match=r"400\.\.599"):
        sim.inject_error(200)
    with pytest.raises(ValueError, match="method"):
        sim.inject_error(500, method="")


def test_simulator_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="token"):
        TelegramSimulator(token="not a token")
    with pytest.raises(ConfigurationError, match="port"):
        TelegramSimulator(port=70000)
    with pytest.raises(ConfigurationError, match="record_limit"):
        TelegramSimulator(record_limit=0)


# -- over real HTTP -----------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[TelegramSimulator]:
    async with TelegramSimulator() as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, url: str, verb: str = "POST", **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    async with http.request(verb, url, **kwargs) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


async def test_get_me_and_token_checks(sim: TelegramSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, sim.api_url("getMe"), "GET")
    assert status == 200
    assert body == {"ok": True, "result": sim.bot_user}
    wrong = f"{sim.bot_id}:wrong-secret"
    assert await call(http, f"{sim.base_url}/bot{wrong}/getMe") == (
        401,
        {"ok": False, "error_code": 401, "description": "Unauthorized"},
    )
    not_found = {"ok": False, "error_code": 404, "description": "Not Found"}
    assert await call(http, f"{sim.base_url}/botnonsense/getMe") == (404, not_found)
    assert await call(http, f"{sim.base_url}/index.html", "GET") == (404, not_found)
    assert sim.stats.errors == 3


async def test_json_form_multipart_and_query_bodies(http: aiohttp.ClientSession) -> None:
    markup = {"inline_keyboard": [[{"text": "ok", "callback_data": "ok"}]]}
    async with TelegramSimulator(flood_limits=FloodLimits.off()) as sim:
        chat = str(sim.user().chat_id)
        url = sim.api_url("sendMessage")
        _, by_json = await call(
            http, url, json={"chat_id": int(chat), "text": "json", "reply_markup": markup}
        )
        _, by_form = await call(
            http, url, data={"chat_id": chat, "text": "form", "reply_markup": json.dumps(markup)}
        )
        form = aiohttp.FormData()
        form.add_field("chat_id", chat)
        form.add_field("text", "multipart")
        _, by_multipart = await call(http, url, data=form)
        _, by_query = await call(http, url, "GET", params={"chat_id": chat, "text": "query"})
        photo = aiohttp.FormData()
        photo.add_field("chat_id", chat)
        photo.add_field("caption", "a cat")
        photo.add_field("photo", b"\x89PNG...", filename="cat.png", content_type="image/png")
        _, by_upload = await call(http, sim.api_url("sendPhoto"), data=photo)
    assert [b["result"].get("text") for b in (by_json, by_form, by_multipart, by_query)] == [
        "json",
        "form",
        "multipart",
        "query",
    ]
    assert by_json["result"]["reply_markup"] == markup
    assert by_form["result"]["reply_markup"] == markup
    assert by_upload["result"]["caption"] == "a cat"
    assert sim.sent_count(int(chat)) == 5


async def test_malformed_bodies_get_400_never_a_stack_trace(
    sim: TelegramSimulator, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sim.api_url("sendMessage")
    headers = {"Content-Type": "application/json"}
    assert (await call(http, url, data="{oops", headers=headers))[0] == 400
    status, body = await call(http, url, data="[1, 2]", headers=headers)
    assert (status, body["description"]) == (400, "Bad Request: JSON body must be an object")

    def explode(method: str, raw: Any) -> Any:
        raise KeyError("internal")

    monkeypatch.setattr(sim.api, "call", explode)
    assert await call(http, url, json={"chat_id": 1, "text": "x"}) == (
        500,
        {"ok": False, "error_code": 500, "description": "Internal Server Error"},
    )


async def test_get_updates_offset_limit_and_negative_offset(
    sim: TelegramSimulator, http: aiohttp.ClientSession
) -> None:
    user = sim.user()
    ids = [user.send(f"m{i}").update_id for i in range(5)]
    url = sim.api_url("getUpdates")
    _, body = await call(http, url, json={"limit": 2})
    assert [u["update_id"] for u in body["result"]] == ids[:2]
    _, body = await call(http, url, json={"limit": 0})  # clamped to 1..100
    assert [u["update_id"] for u in body["result"]] == ids[:1]
    _, body = await call(http, url, json={"offset": ids[2]})  # confirms the first two
    assert [u["update_id"] for u in body["result"]] == ids[2:]
    _, body = await call(http, url, data={"offset": "-1"})
    assert [u["update_id"] for u in body["result"]] == ids[-1:]
    _, body = await call(http, url, json={"offset": ids[-1] + 1, "timeout": 0})
    assert body["result"] == []
    assert sim.pending_updates == 0
    assert sim.stats.delivered == 5


async def test_long_poll_returns_as_soon_as_an_update_arrives(
    sim: TelegramSimulator, http: aiohttp.ClientSession
) -> None:
    user = sim.user()
    poll = asyncio.create_task(call(http, sim.api_url("getUpdates"), json={"timeout": 15}))
    await sim.wait_connected(5)
    await asyncio.sleep(0.05)
    started = time.monotonic()
    user.send("wake up")
    _, body = await poll
    assert time.monotonic() - started < 5.0  # far below the 15 s poll timeout
    assert body["result"][0]["message"]["text"] == "wake up"
    started = time.monotonic()
    _, body = await call(
        http,
        sim.api_url("getUpdates"),
        json={"timeout": 1, "offset": body["result"][0]["update_id"] + 1},
    )
    assert body["result"] == []
    assert time.monotonic() - started >= 0.9


async def test_two_pollers_conflict(sim: TelegramSimulator, http: aiohttp.ClientSession) -> None:
    first = asyncio.create_task(call(http, sim.api_url("getUpdates"), json={"timeout": 10}))
    await sim.wait_connected(5)
    await asyncio.sleep(0.05)
    second = asyncio.create_task(call(http, sim.api_url("getUpdates"), json={"timeout": 10}))
    status, body = await asyncio.wait_for(first, 5)
    assert status == 409
    assert body["description"].startswith("Conflict: terminated by other getUpdates request")
    sim.release_pollers()
    assert (await second)[0] == 200
    assert sim.stats.conflicts == 1


async def test_webhook_blocks_get_updates_and_delete_drops_pending(
    sim: TelegramSimulator, http: aiohttp.ClientSession
) -> None:
    user = sim.user()
    status, body = await call(http, sim.api_url("setWebhook"), json={"url": "ftp://nowhere"})
    assert (status, body["description"]) == (
        400,
        "Bad Request: bad webhook: invalid webhook URL specified",
    )
    # A webhook that is set but never reachable: updates stay pending meanwhile.
    await call(
        http,
        sim.api_url("setWebhook"),
        data={"url": "http://127.0.0.1:9/hook", "secret_token": "s3cret"},
    )
    status, body = await call(http, sim.api_url("getUpdates"))
    assert status == 409
    assert body["description"].startswith(
        "Conflict: can't use getUpdates method while webhook is active"
    )
    _, info = await call(http, sim.api_url("getWebhookInfo"))
    assert info["result"]["url"] == "http://127.0.0.1:9/hook"
    sim.release_pollers()
    await call(http, sim.api_url("deleteWebhook"), json={"drop_pending_updates": True})
    user.send("after")
    _, body = await call(http, sim.api_url("getUpdates"))
    assert [u["message"]["text"] for u in body["result"]] == ["after"]


async def _receiver(
    replies: list[dict[str, Any]], seen: list[tuple[str, str | None]], name: str, fail: bool = False
) -> tuple[web.AppRunner, str]:
    async def hook(request: web.Request) -> web.Response:
        update = await request.json()
        seen.append((name, request.headers.get("X-Telegram-Bot-Api-Secret-Token")))
        if fail:
            return web.Response(status=500)
        chat_id = update["message"]["chat"]["id"]
        replies.append(update)
        # Answer inside the webhook response, as Telegram allows.
        return web.json_response({"method": "sendMessage", "chat_id": chat_id, "text": "ok"})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def test_webhook_pool_round_robin_with_secret_and_reply_in_response() -> None:
    replies: list[dict[str, Any]] = []
    seen: list[tuple[str, str | None]] = []
    runner_a, url_a = await _receiver(replies, seen, "a")
    runner_b, url_b = await _receiver(replies, seen, "b")
    try:
        async with TelegramSimulator(webhook_pool=True) as sim:
            await sim.set_webhook(url_a, secret_token="tok-A")
            await sim.set_webhook(url_b, secret_token="tok-B")
            assert sim.webhook_urls == [url_a, url_b]
            users = [sim.user() for _ in range(10)]
            exchanges = [u.send("hi") for u in users]
            await asyncio.gather(*(e.wait(10) for e in exchanges))
            stats = sim.stats
    finally:
        await runner_a.cleanup()
        await runner_b.cleanup()
    assert sorted(seen) == sorted([("a", "tok-A")] * 5 + [("b", "tok-B")] * 5)
    assert all(e.answer_method == "sendMessage" for e in exchanges)
    assert stats.webhook_deliveries == 10
    assert stats.replies == 10


async def test_failing_webhook_is_retried_then_the_update_dropped_and_counted() -> None:
    seen: list[tuple[str, str | None]] = []
    runner, url = await _receiver([], seen, "x", fail=True)
    try:
        async with TelegramSimulator(webhook_attempts=3) as sim:
            await sim.set_webhook(url)
            exchange = sim.user().send("hi")
            for _ in range(200):
                if sim.stats.dropped_updates:
                    break
                await asyncio.sleep(0.05)
            info = sim.webhook_info()
    finally:
        await runner.cleanup()
    assert len(seen) == 3
    assert sim.stats.webhook_failures == 3
    assert sim.stats.dropped_updates == 1
    assert not exchange.answered
    assert (
        info["last_error_message"] == "Wrong response from the webhook: 500 Internal Server Error"
    )


async def test_burst_of_100_messages_to_one_chat_gets_429s_that_the_counts_match(
    clock: FakeClock,
) -> None:
    from aiogram import Bot
    from aiogram.client.session.aiohttp import AiohttpSession
    from aiogram.client.telegram import TelegramAPIServer
    from aiogram.exceptions import TelegramRetryAfter

    async with TelegramSimulator(clock=clock) as sim:
        user = sim.user()
        bot = Bot(sim.token, session=AiohttpSession(api=TelegramAPIServer.from_base(sim.base_url)))
        try:
            results = await asyncio.gather(
                *(bot.send_message(user.chat_id, f"spam {i}") for i in range(100)),
                return_exceptions=True,
            )
            refused = [r for r in results if isinstance(r, TelegramRetryAfter)]
            delivered = [r for r in results if not isinstance(r, BaseException)]
            assert len(delivered) == 3  # the private-chat burst; the clock never moved
            assert len(refused) == 97
            assert {r.retry_after for r in refused} == {1}
            assert "Too Many Requests: retry after 1" in str(refused[0])
            clock.advance(1.0)
            await bot.send_message(user.chat_id, "after waiting")
        finally:
            await bot.session.close()
        stats = sim.stats
    assert stats.rate_limited == 97
    assert stats.rate_limited_by_chat == {user.chat_id: 97}
    assert stats.rate_limited_by_method == {"sendMessage": 97}
    assert sim.sent_count(user.chat_id) == 4
    assert stats.calls["sendMessage"] == 101

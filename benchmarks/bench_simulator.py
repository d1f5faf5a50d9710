"""The Bot API simulator as an instrument: its own cost must stay far below the bot's.

Section 1: one Bot API call over loopback HTTP (client and server in one
process, keep-alive), against a bare aiohttp handler answering fixed JSON (the
floor of HTTP itself).  Target: a simulated ``sendMessage`` round trip costs at
most 1 ms, i.e. the simulator serves over 1000 calls per second per core.

Section 2: the full update round trip a load test measures — a virtual user's
update, the bot's long poll, its handler, its ``sendMessage`` back — for real
echo bots of each framework, one update at a time.  Target: the instrument's
latency floor with aiogram stays under 5 % of the default 1 s p95 target.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
from aiohttp import web

from _harness import Row, Section, Target
from botscale.testing import FloodLimits, TelegramSimulator, serve_bot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _calls(number: int, rounds: int) -> dict[str, float]:
    async def fixed(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_post("/fixed", fixed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    bare = f"http://127.0.0.1:{runner.addresses[0][1]}/fixed"
    best: dict[str, float] = {}
    try:
        async with (
            TelegramSimulator(flood_limits=FloodLimits.off()) as sim,
            aiohttp.ClientSession() as http,
        ):
            chat = sim.user().chat_id
            cases: dict[str, tuple[str, dict[str, Any]]] = {
                "bare aiohttp handler": (bare, {"json": {"x": 1}}),
                "simulator getMe": (sim.api_url("getMe"), {}),
                "simulator sendMessage (JSON)": (
                    sim.api_url("sendMessage"),
                    {"json": {"chat_id": chat, "text": "hi"}},
                ),
                "simulator sendMessage (form, as aiogram/PTB)": (
                    sim.api_url("sendMessage"),
                    {"data": {"chat_id": str(chat), "text": "hi"}},
                ),
            }
            best = dict.fromkeys(cases, float("inf"))
            for _ in range(rounds):
                for name, (url, kwargs) in cases.items():
                    start = time.perf_counter()
                    for _ in range(number):
                        async with http.post(url, **kwargs) as response:
                            await response.read()
                    best[name] = min(best[name], (time.perf_counter() - start) / number)
    finally:
        await runner.cleanup()
    return best


async def _round_trip(example: str, number: int) -> float:
    build = _example(example).build
    async with (
        TelegramSimulator(flood_limits=FloodLimits.off()) as sim,
        serve_bot(build(sim.base_url, sim.token), sim, poll_timeout=5),
    ):
        await sim.wait_connected(30)
        user = sim.user()
        await user.ask("warm up", timeout=10)
        latencies = []
        for i in range(number):
            exchange = user.send(f"m{i}")
            await exchange.wait(10)
            assert exchange.latency is not None
            latencies.append(exchange.latency)
    latencies.sort()
    return latencies[len(latencies) // 2]


def run(quick: bool) -> list[Section]:
    number, rounds = (100, 2) if quick else (500, 5)
    best = asyncio.run(_calls(number, rounds))
    send = best["simulator sendMessage (form, as aiogram/PTB)"]
    calls = Section(
        "Simulator: one Bot API call over loopback HTTP (client + server, one core)",
        [Row(name, seconds) for name, seconds in best.items()],
        baseline="bare aiohttp handler",
        targets=[
            Target(
                "simulated sendMessage round trip <= 1 ms (> 1000 calls/s per core)",
                send <= 1e-3,
                f"{send * 1e3:.2f} ms ({1 / send:.0f} calls/s)",
            )
        ],
        unit="call",
    )
    updates = 20 if quick else 100
    frameworks = {
        "aiogram echo (long polling)": "echo_aiogram",
        "python-telegram-bot echo (long polling)": "echo_ptb",
        "AsyncTeleBot echo (long polling)": "echo_telebot_async",
    }
    medians = {name: asyncio.run(_round_trip(mod, updates)) for name, mod in frameworks.items()}
    aiogram = medians["aiogram echo (long polling)"]
    round_trips = Section(
        "Simulator: update -> bot -> reply round trip, median of one user at a time",
        [Row(name, seconds) for name, seconds in medians.items()],
        baseline="aiogram echo (long polling)",
        targets=[
            Target(
                "instrument latency floor with aiogram < 5 % of the 1 s p95 target",
                aiogram < 0.05,
                f"{aiogram * 1e3:.1f} ms",
            )
        ],
        unit="update",
    )
    return [calls, round_trips]

"""A child process of the multi-instance test: one process of the example quiz bot, webhook mode.

python quizbot_instance.py NAME BASE_URL TOKEN

Builds the quiz bot exactly as ``botscale loadtest`` does
(``examples.quizbot.bot:build(base_url, token)``, everything else from the
environment: ``REDIS_URL``, ``REDIS_PREFIX``, ``DATABASE_URL``, ``ADMIN_IDS``,
``BOTSCALE_*``), serves it with botscale's webhook runner on a free
127.0.0.1 port (``serve_bot(mode="webhook")``: aiogram's own webhook handler
plus ``setWebhook``), prints ``ready <webhook url>`` and runs until SIGTERM,
SIGINT, stdin closing or ``MAX_LIFETIME`` seconds, whichever comes first.

Its log (stderr) tags every line with NAME; aiogram's ``Update id=N is
handled`` lines tell the test which process handled which update.  The bot
itself is not changed in any way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LIFETIME = 300.0
"""Seconds after which an instance stops by itself (an orphan never outlives a run)."""


async def serve(base_url: str, token: str) -> int:
    from examples.quizbot.bot import build

    from botscale.testing import serve_bot

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    stdin = sys.stdin.fileno()

    def read_stdin() -> None:  # the parent closed our stdin (or died): stop
        if not os.read(stdin, 1024):
            loop.remove_reader(stdin)
            stop.set()

    loop.add_reader(stdin, read_stdin)
    pair = build(base_url, token)
    async with serve_bot(pair, base_url, token=token, mode="webhook", stop_timeout=10.0) as handle:
        print(f"ready {handle.webhook_url}", flush=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), MAX_LIFETIME)
    print("stopped", flush=True)
    return 0


def main(name: str, base_url: str, token: str) -> int:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    logging.basicConfig(
        level=logging.WARNING,
        format=f"{name} %(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for logger in ("quizbot", "aiogram.event"):
        logging.getLogger(logger).setLevel(logging.INFO)
    return asyncio.run(serve(base_url, token))


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))

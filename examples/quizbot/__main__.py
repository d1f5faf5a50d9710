"""Run the quiz bot: ``python -m examples.quizbot`` (Telegram) or ``--simulate`` (no Telegram).

* ``TELEGRAM_BOT_TOKEN=123:ABC python -m examples.quizbot`` polls Telegram
  (``TELEGRAM_API_URL`` points it at another Bot API server instead);
* ``python -m examples.quizbot --simulate`` starts botscale's Bot API
  simulator, runs the same bot against it and lets you chat with it in the
  terminal as an admin user: type ``/start``, then a button's number.

Stop it with Ctrl-C: the bot finishes its updates, writes every answer still
waiting and logs what botscale did.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from botscale import ConfigurationError

from .bot import QuizBot
from .config import VARIABLES, QuizConfig
from .runtime import setup_logging


async def run(config: QuizConfig) -> None:
    """Long-poll the Bot API until SIGINT/SIGTERM, then shut down cleanly."""
    quiz = QuizBot(config)
    dp, bot = quiz.pair
    await dp.start_polling(bot, **quiz.kit.polling_kwargs(dp))


async def simulate(config: QuizConfig) -> None:
    """The bot against a local simulator, with you as a user in the terminal."""
    from botscale.testing import TelegramSimulator, serve_bot

    async with TelegramSimulator() as sim:
        you = sim.user("You")
        config = dataclasses.replace(
            config,
            token=sim.token,
            api_url=sim.base_url,
            admin_ids=config.admin_ids | {you.id},
        )
        quiz = QuizBot(config)
        async with serve_bot(quiz.pair, sim, poll_timeout=2):
            print(
                "Chatting with the quiz bot on a local simulator. Type a message (/start, "
                "/stats, /top, /broadcast hi), a button's number to press it, or q to quit.",
                flush=True,
            )
            shown = 0
            while True:
                line = (await asyncio.to_thread(_read_line)).strip()
                if line in ("q", "quit", "exit", ""):
                    if line:
                        break
                    continue
                buttons = you.buttons()
                if line.isdigit() and buttons:
                    index = int(line) - 1
                    if not 0 <= index < len(buttons):
                        print(f"(buttons are numbered 1..{len(buttons)})")
                        continue
                    exchange = you.press(index)
                else:
                    exchange = you.send(line)
                try:
                    answer = await exchange.wait(10.0)
                except TimeoutError:
                    print("(no answer within 10 s)")
                    continue
                if exchange.kind == "callback_query" and answer.get("text"):
                    print(f"  [{answer['text']}]")
                await asyncio.sleep(0.3)  # let an edit or a second message arrive
                messages = you.messages()
                for message in messages[shown:]:
                    _show(message)
                shown = len(messages)


def _read_line() -> str:
    try:
        return input("> ")
    except EOFError:
        return "q"


def _show(message: dict[str, Any]) -> None:
    edited = " (edited)" if "edit_date" in message else ""
    print(f"bot{edited}: {message.get('text', '')}")
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    buttons = [b for row in rows for b in row]
    for number, button in enumerate(buttons, 1):
        print(f"   [{number}] {button['text']}")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, read the environment and run."""
    epilog = "environment (besides BOTSCALE_*, see docs/settings.md):\n" + "\n".join(
        f"  {v.name:<22} {v.doc} (default: {v.default})" for v in VARIABLES
    )
    parser = argparse.ArgumentParser(
        prog="python -m examples.quizbot",
        description="The botscale example quiz bot (aiogram 3).",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="run against a local Bot API simulator and chat with the bot in the terminal",
    )
    args = parser.parse_args(argv)
    try:
        config = QuizConfig.from_env()
        setup_logging(config.settings.log_level)
        if args.simulate:
            asyncio.run(simulate(config))
        else:
            config.require_token()
            asyncio.run(run(config))
    except ConfigurationError as exc:
        print(f"quizbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

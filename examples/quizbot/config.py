"""The quiz bot's configuration: botscale's ``BOTSCALE_*`` settings plus the bot's own variables.

Everything has a safe default, so ``python -m examples.quizbot --simulate``
runs with no environment at all; a real run needs only ``TELEGRAM_BOT_TOKEN``.
Bad values fail at start-up with a message naming the variable, like
:meth:`botscale.Settings.from_env` does for its own.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import urlsplit

from botscale import ConfigurationError, Settings

__all__ = ["VARIABLES", "QuizConfig", "Variable"]

T = TypeVar("T")

_TOKEN: Final = re.compile(r"^\d+:[A-Za-z0-9_-]+$")
_SQLITE_PREFIX: Final = "sqlite:///"


@dataclass(frozen=True)
class Variable:
    """One of the bot's own environment variables (for ``--help`` and the README)."""

    name: str
    default: str
    doc: str


VARIABLES: Final = (
    Variable(
        "TELEGRAM_BOT_TOKEN", "unset", "The bot's token from @BotFather; needed for a real run."
    ),
    Variable(
        "TELEGRAM_API_URL",
        "api.telegram.org",
        "Root URL of another Bot API server (a local telegram-bot-api, the simulator).",
    ),
    Variable(
        "DATABASE_URL",
        "sqlite:///quizbot.db",
        "postgresql://... for PostgreSQL, or sqlite:///path for a SQLite file.",
    ),
    Variable(
        "REDIS_URL",
        "unset",
        "Redis for quiz state, rate limits and the outgoing budget (several processes).",
    ),
    Variable("REDIS_PREFIX", "quizbot", "Namespace of the bot's keys in Redis."),
    Variable("ADMIN_IDS", "none", "Telegram user ids allowed to /broadcast, comma-separated."),
    Variable("EXPLAIN_LATENCY", "1.5", "Seconds the fake 'explain' AI call takes (the slow API)."),
    Variable("QUIZ_LENGTH", "5", "Questions per quiz (1..18)."),
    Variable(
        "WRITE_RETRY_TIMEOUT",
        "600",
        "Seconds a batch of answers keeps retrying while the database is down "
        "(then it goes to the dead-letter file).",
    ),
    Variable(
        "MAX_PENDING_ANSWERS",
        "10000",
        "Answers held in memory while the database is slow or down (then answers are refused).",
    ),
    Variable("SQLITE_BUSY_TIMEOUT", "5", "Seconds SQLite waits for another connection's lock."),
)


def _parse(
    environ: Mapping[str, str],
    name: str,
    default: T,
    parse: Callable[[str], T],
    ok: Callable[[T], bool],
    accepts: str,
) -> T:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise ConfigurationError(f"{name}={raw!r} is not accepted: expected {accepts}")
    return value


def _admin_ids(text: str) -> frozenset[int]:
    parts = [p for p in re.split(r"[,\s]+", text) if p]
    return frozenset(int(p) for p in parts)


@dataclass(frozen=True)
class QuizConfig:
    """What the quiz bot needs to run; see :data:`VARIABLES` for the environment.

    Attributes:
        settings: botscale's knobs (``BOTSCALE_*``; ``REDIS_URL`` and a
            PostgreSQL ``DATABASE_URL`` land here too).
        token: the bot token, ``None`` when unset.
        api_url: another Bot API server's root, ``None`` for Telegram's.
        sqlite_path: the SQLite file used unless ``settings.postgres_dsn`` is set.
        admin_ids: users allowed to ``/broadcast``.
        explain_latency: seconds of the fake AI call.
        quiz_length: questions per quiz.
        write_retry_timeout: seconds a failing batch of answers keeps retrying.
        max_pending_answers: answers buffered before ``put`` refuses more.
        sqlite_busy_timeout: SQLite's lock wait in seconds.
        redis_prefix: namespace of the bot's Redis keys.
    """

    settings: Settings = field(default_factory=Settings)
    token: str | None = None
    api_url: str | None = None
    sqlite_path: str = "quizbot.db"
    admin_ids: frozenset[int] = frozenset()
    explain_latency: float = 1.5
    quiz_length: int = 5
    write_retry_timeout: float = 600.0
    max_pending_answers: int = 10_000
    sqlite_busy_timeout: float = 5.0
    redis_prefix: str = "quizbot"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QuizConfig:
        """Read ``BOTSCALE_*`` and the bot's variables (default: ``os.environ``).

        Raises:
            ConfigurationError: a value is not accepted (the message names it).
        """
        env = dict(os.environ if environ is None else environ)
        sqlite_path = "quizbot.db"
        database_url = env.get("DATABASE_URL", "").strip()
        if database_url.startswith("sqlite:"):
            if not database_url.startswith(_SQLITE_PREFIX) or len(database_url) == len(
                _SQLITE_PREFIX
            ):
                raise ConfigurationError(
                    f"DATABASE_URL={database_url!r} is not accepted: expected "
                    "sqlite:///relative/path.db, sqlite:////absolute/path.db or a postgresql:// DSN"
                )
            sqlite_path = database_url[len(_SQLITE_PREFIX) :]
            del env["DATABASE_URL"]  # botscale's Settings reads only PostgreSQL DSNs there
        settings = Settings.from_env(env)

        def finite(low: float) -> Callable[[float], bool]:
            return lambda v: math.isfinite(v) and v >= low

        token = env.get("TELEGRAM_BOT_TOKEN", "").strip() or None
        if token is not None and not _TOKEN.match(token):
            raise ConfigurationError(
                "TELEGRAM_BOT_TOKEN is not accepted: expected a token like "
                "'123456789:AAE...' as @BotFather gives it"
            )
        api_url = env.get("TELEGRAM_API_URL", "").strip().rstrip("/") or None
        if api_url is not None and not api_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"TELEGRAM_API_URL={api_url!r} is not accepted: expected an http(s):// URL"
            )
        return cls(
            settings=settings,
            token=token,
            api_url=api_url,
            sqlite_path=sqlite_path,
            admin_ids=_parse(
                env,
                "ADMIN_IDS",
                frozenset(),
                _admin_ids,
                lambda ids: all(i > 0 for i in ids),
                "comma-separated Telegram user ids (positive integers)",
            ),
            explain_latency=_parse(env, "EXPLAIN_LATENCY", 1.5, float, finite(0.0), "seconds >= 0"),
            quiz_length=_parse(
                env, "QUIZ_LENGTH", 5, int, lambda n: 1 <= n <= 18, "an int in 1..18"
            ),
            write_retry_timeout=_parse(
                env, "WRITE_RETRY_TIMEOUT", 600.0, float, finite(1.0), "seconds >= 1"
            ),
            max_pending_answers=_parse(
                env,
                "MAX_PENDING_ANSWERS",
                10_000,
                int,
                lambda n: n >= settings.batch_size,
                f"an int >= BOTSCALE_BATCH_SIZE ({settings.batch_size})",
            ),
            sqlite_busy_timeout=_parse(
                env, "SQLITE_BUSY_TIMEOUT", 5.0, float, finite(0.0), "seconds >= 0"
            ),
            redis_prefix=_parse(
                env,
                "REDIS_PREFIX",
                "quizbot",
                str,
                lambda p: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", p) is not None,
                "1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit",
            ),
        )

    @property
    def database(self) -> str:
        """Where answers go, fit to print (a PostgreSQL password is masked)."""
        dsn = self.settings.postgres_dsn
        if dsn is None:
            return f"SQLite {self.sqlite_path}"
        parts = urlsplit(dsn)
        return f"PostgreSQL {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    def require_token(self) -> str:
        """The token for a real run.

        Raises:
            ConfigurationError: ``TELEGRAM_BOT_TOKEN`` is not set; the message
                says how to get one, or how to run without one.
        """
        if self.token is None:
            raise ConfigurationError(
                "TELEGRAM_BOT_TOKEN is not set. Create a bot with @BotFather in Telegram, then "
                "run:  TELEGRAM_BOT_TOKEN=123456:ABC... python -m examples.quizbot\n"
                "To try the bot without Telegram, run it against the local simulator:  "
                "python -m examples.quizbot --simulate"
            )
        return self.token

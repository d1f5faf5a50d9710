"""Shared fixtures: injected clocks and the real services (Redis, PostgreSQL).

Service tests find their server through BOTSCALE_REDIS_URL / BOTSCALE_POSTGRES_DSN
(defaults: the loopback services).  Where none answers they skip with the reason,
unless BOTSCALE_REQUIRE_SERVICES=1 (set by .ci/run): then they fail loudly.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from botscale.testing import FakeClock

# PTB 22 warns (an error under warnings-as-errors) whenever it builds a RetryAfter
# from a 429 unless durations are timedeltas; bots under test run with it set.
os.environ.setdefault("PTB_TIMEDELTA", "1")

REDIS_URL = os.environ.get("BOTSCALE_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("BOTSCALE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVICES = os.environ.get("BOTSCALE_REQUIRE_SERVICES", "") == "1"


def _reachable(url: str, default_port: int) -> str | None:
    """``None`` if a TCP connection to the URL's host opens, else the reason."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port} did not answer ({exc})"


def require_service(name: str, url: str, default_port: int) -> str:
    """Return ``url`` if the service answers; skip (or fail under CI) otherwise."""
    reason = _reachable(url, default_port)
    if reason is None:
        return url
    message = f"{name} not reachable at {url}: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (BOTSCALE_REQUIRE_SERVICES=1 demands it)", pytrace=False)
    pytest.skip(f"{message}; set BOTSCALE_{name.upper()}_URL/DSN to run these tests")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis server."""
    return require_service("redis", REDIS_URL, 6379)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """DSN of a reachable PostgreSQL server."""
    return require_service("postgres", POSTGRES_DSN, 5432)


@pytest.fixture
def clock() -> FakeClock:
    """A manual clock starting at t=1000 s."""
    return FakeClock()


@pytest.fixture
def tmp_db(tmp_path: os.PathLike[str]) -> str:
    """Path of a fresh SQLite file."""
    return os.path.join(os.fspath(tmp_path), "bot.db")

"""Fixtures of the Redis tests: clients, a unique prefix per test, a dead server.

Tests share the server with everyone else's tests, so nothing here flushes a
database: each test gets its own prefix and its keys are deleted afterwards.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aredis
from redis.backoff import NoBackoff
from redis.retry import Retry


def delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key botscale wrote under ``prefix`` (``{prefix:...``)."""
    keys = list(client.scan_iter(match="{" + prefix + ":*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A prefix no other test uses; its keys are removed after the test."""
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    with redis.Redis.from_url(redis_url) as client:
        delete_prefix(client, name)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0) as c:
        yield c


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[aredis.Redis]:
    c = aredis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    yield c
    await c.aclose()


def spare_port() -> int:
    """A loopback TCP port nobody listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nobody listens on."""
    return spare_port()


@pytest.fixture
def dead_client() -> Iterator[redis.Redis]:
    """A client of a port where no Redis listens: every call fails fast."""
    with redis.Redis(
        port=spare_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    ) as c:
        yield c


@pytest.fixture
async def dead_aclient() -> AsyncIterator[aredis.Redis]:
    from redis.asyncio.retry import Retry as AsyncRetry

    c = aredis.Redis(
        port=spare_port(),
        socket_connect_timeout=0.2,
        socket_timeout=0.2,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    yield c
    await c.aclose()

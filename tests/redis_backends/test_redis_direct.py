"""RedisBackend's decision line: a connection per thread beside the client's pool.

The sync backend sends its decision script on connections of its own (redis-py's
per-command bookkeeping costs about a quarter of a local round trip).  These
tests check what that must not change: which clients get a line, that each
thread has one connection and ``close()`` ends them, that a connection killed
under it costs no decision, and that a forked child never uses its parent's.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from botscale import Decision
from botscale.backends._redis_base import DirectLine
from botscale.backends.redis import RedisBackend

pytestmark = pytest.mark.redis

INTERVAL = 2.0
ARGS = {"now": 0.0, "interval": INTERVAL, "burst": 5, "cost": 1}


def take(backend: RedisBackend, key: str = "k") -> Decision:
    return backend.acquire(key, now=0.0, interval=INTERVAL, burst=5, cost=1)


@pytest.fixture
def named(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A client whose connections (the pool's and a line's) carry a name of this test."""
    with redis.Redis.from_url(redis_url, client_name=prefix, socket_timeout=2.0) as c:
        c.ping()
        yield c


def connections(admin: redis.Redis, name: str) -> list[dict[str, object]]:
    return [c for c in admin.client_list() if c.get("name") == name]


def settles_at(admin: redis.Redis, name: str, count: int) -> int:
    """The server's count of ``name``'s connections once it is ``count`` (or after
    5 s): it notices a closed socket on its own schedule, after our ``close()``."""
    deadline = time.monotonic() + 5.0
    while True:
        seen = len(connections(admin, name))
        if seen == count or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


def test_only_a_plain_client_over_a_plain_pool_gets_a_line(redis_url: str) -> None:
    class Custom(redis.Redis):
        pass

    with redis.Redis.from_url(redis_url) as plain:
        assert isinstance(DirectLine.for_client(plain), DirectLine)
    others = [
        redis.Redis.from_url(redis_url, single_connection_client=True),
        redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(redis_url)),
        Custom.from_url(redis_url),
    ]
    for client in others:
        with client:
            assert DirectLine.for_client(client) is None, client


def test_each_thread_decides_on_its_own_connection_until_close(
    named: redis.Redis, client: redis.Redis, prefix: str
) -> None:
    pool_before = len(connections(client, prefix))
    backend = RedisBackend(named, prefix=prefix)
    barrier = threading.Barrier(3)
    results: list[Decision] = []

    def decide() -> None:
        barrier.wait(5)  # three threads alive at once: three lines, not one reused
        results.append(backend.acquire(threading.current_thread().name, **ARGS))
        barrier.wait(5)

    threads = [threading.Thread(target=decide, name=f"t{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [Decision(True, 4, 0.0)] * 3
    assert len(connections(client, prefix)) == pool_before + 3
    backend.close()
    assert settles_at(client, prefix, pool_before) == pool_before
    assert take(backend) == Decision(True, 4, 0.0)  # the client's path after close
    assert named.ping()  # the client stays the caller's


def test_a_thread_that_ends_takes_its_connection_with_it(
    named: redis.Redis, client: redis.Redis, prefix: str
) -> None:
    pool_before = len(connections(client, prefix))
    backend = RedisBackend(named, prefix=prefix)
    for i in range(5):  # a thread per job: connections must not pile up
        thread = threading.Thread(target=backend.acquire, args=(f"k{i}",), kwargs=ARGS)
        thread.start()
        thread.join(10)
    gc.collect()
    assert settles_at(client, prefix, pool_before) == pool_before
    backend.close()


def test_a_killed_connection_costs_no_decision(
    named: redis.Redis, client: redis.Redis, prefix: str
) -> None:
    backend = RedisBackend(named, prefix=prefix, on_error="closed")
    assert take(backend) == Decision(True, 4, 0.0)
    for victim in connections(client, prefix):  # the line's and the pool's
        client.client_kill_filter(_id=str(victim["id"]))
    assert take(backend) == Decision(True, 3, 0.0)  # retried through the client
    assert take(backend) == Decision(True, 2, 0.0)  # and on a new line again
    stats = backend.stats()
    assert (stats.errors, stats.degraded) == (0, 0)
    backend.close()


def test_a_dead_server_is_one_failure_per_decision(redis_url: str, prefix: str) -> None:
    # The line fails, the client's retry fails: the policy answers, counted once.
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    backend = RedisBackend(dead, prefix=prefix)
    assert take(backend) == Decision(True, 4, 0.0)  # "open": allowed while Redis fails
    assert backend.stats().errors == 1
    backend.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
def test_a_forked_child_opens_its_own_connection(named: redis.Redis, prefix: str) -> None:
    backend = RedisBackend(named, prefix=prefix, on_error="closed")
    assert take(backend) == Decision(True, 4, 0.0)
    line = backend._line
    assert line is not None
    assert len(line._open) == 1
    pid = os.fork()
    if pid == 0:  # the child: none of the parent's connections, a decision of its own
        code = 0
        try:
            if line._open or take(backend) != Decision(True, 3, 0.0) or len(line._open) != 1:
                code = 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert take(backend) == Decision(True, 2, 0.0)  # the parent's line still in step
    backend.close()

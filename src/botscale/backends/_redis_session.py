"""Sessions of the Redis state stores: ``with store.session(user_id) as s:`` across processes.

A session holds its key for the whole block - in this process (threads and
asyncio tasks line up in a :class:`~botscale._state.SessionLocks`) and across
processes (a Redis lock ``{<prefix>:sl:<key>}`` with a TTL) - loads the value,
and writes it back once if the block ends without an exception, exactly like
``MemoryStateStore.session``; concurrent handlers of one user lose no update,
whichever instance they run in.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

from .._protocols import Key
from .._state import Session, SessionLocks
from ._redis_lock import AsyncRedisKeyedLock, RedisKeyedLock

__all__ = [
    "AsyncSessionLock",
    "AsyncSessionLocks",
    "RedisSessionContext",
    "SessionLock",
    "SyncSessionLocks",
]

_MISSING: Final[Any] = object()


class SessionLock(RedisKeyedLock):
    """The cross-process part of a sync store's sessions (its own key namespace)."""

    _KIND = "sl"


class AsyncSessionLock(AsyncRedisKeyedLock):
    """The cross-process part of an async store's sessions."""

    _KIND = "sl"


class SyncSessionLocks:
    """In-process :class:`SessionLocks`, then the Redis lock (sync client, any caller)."""

    def __init__(self, lock: SessionLock) -> None:
        self._lock = lock
        self._local = SessionLocks()

    def acquire(self, key: Key) -> None:
        self._local.acquire(key)
        try:
            self._lock._acquire_remote(key, self._lock.redis_key(key), None)
        except BaseException:
            self._local.release(key)
            raise

    async def acquire_async(self, key: Key) -> None:
        # A sync store used from asyncio: its Redis calls block briefly, like
        # its get/set, but waiting for another process's session must not.
        await self._local.acquire_async(key)
        try:
            lock, token = self._lock, secrets.token_hex(16)
            for wait in lock._waits(None):  # no deadline: endless
                if lock._take(key, lock.redis_key(key), token):
                    break
                await asyncio.sleep(wait)
        except BaseException:
            self._local.release(key)
            raise

    def release(self, key: Key) -> None:
        try:
            self._lock._release_remote(key)
        finally:
            self._local.release(key)

    async def release_async(self, key: Key) -> None:
        self.release(key)


class AsyncSessionLocks:
    """In-process :class:`SessionLocks`, then the Redis lock (``redis.asyncio`` client)."""

    def __init__(self, lock: AsyncSessionLock) -> None:
        self._lock = lock
        self._local = SessionLocks()

    def acquire(self, key: Key) -> None:
        raise TypeError("an async store's session needs `async with`, not `with`")

    async def acquire_async(self, key: Key) -> None:
        await self._local.acquire_async(key)
        try:
            await self._lock._acquire_remote(key, self._lock.redis_key(key), None)
        except BaseException:
            self._local.release(key)
            raise

    def release(self, key: Key) -> None:
        raise TypeError("an async store's session needs `async with`, not `with`")

    async def release_async(self, key: Key) -> None:
        try:
            await self._lock._release_remote(key)
        finally:
            self._local.release(key)


class RedisSessionContext:
    """``store.session(key)`` of a Redis store: ``with`` (sync store) or ``async with``."""

    __slots__ = ("_default", "_key", "_locks", "_session", "_store", "_ttl")

    def __init__(
        self,
        store: Any,
        key: Key,
        locks: SyncSessionLocks | AsyncSessionLocks,
        *,
        default: Callable[[], Any],
        ttl: float | None,
    ) -> None:
        self._store = store
        self._key = key
        self._locks = locks
        self._default = default
        self._ttl = ttl
        self._session: Session | None = None

    def _open(self, value: Any) -> Session:
        self._session = Session(self._key, self._default() if value is _MISSING else value)
        return self._session

    def __enter__(self) -> Session:
        self._locks.acquire(self._key)
        try:
            return self._open(self._store.get(self._key, _MISSING))
        except BaseException:
            self._locks.release(self._key)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if exc_type is None and session is not None:
                if session.deleted:
                    self._store.delete(self._key)
                else:
                    self._store.set(self._key, session.value, ttl=self._ttl)
        finally:
            self._locks.release(self._key)

    async def __aenter__(self) -> Session:
        await self._locks.acquire_async(self._key)
        try:
            value = self._store.get(self._key, _MISSING)
            return self._open(await value if inspect.isawaitable(value) else value)
        except BaseException:
            await self._locks.release_async(self._key)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if exc_type is None and session is not None:
                if session.deleted:
                    result = self._store.delete(self._key)
                else:
                    result = self._store.set(self._key, session.value, ttl=self._ttl)
                if inspect.isawaitable(result):
                    await result
        finally:
            await self._locks.release_async(self._key)

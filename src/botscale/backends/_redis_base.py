"""What every Redis component shares: key layout, URL handling, scripts, clients.

Key layout (the prefix is validated so two bots sharing a Redis cannot collide):
every botscale key is ``{<prefix>:<kind>:<key>}`` - the whole name is a Redis
Cluster hash tag, so each key maps to one slot and single-key scripts are
cluster-safe.  Keys a script must touch together share one tag instead
(``{<prefix>:out}:...`` for the outgoing budget).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeAlias, TypeVar

from typing_extensions import ParamSpec

from .._compat import require
from .._errors import BackendError, ConfigurationError
from .._validation import check_positive
from ._breaker import CircuitBreaker, Guard, check_policy

if TYPE_CHECKING:
    import redis
    import redis.asyncio

    SyncRedis: TypeAlias = redis.Redis
    AsyncRedis: TypeAlias = redis.asyncio.Redis
else:  # redis-py is imported lazily: at run time a twin's client type is only a label
    SyncRedis = AsyncRedis = object

__all__ = [
    "DEFAULT_TIMEOUT",
    "FAILED",
    "AsyncRedis",
    "ClientT",
    "Connect",
    "DirectLine",
    "LuaScript",
    "RedisComponent",
    "SyncRedis",
    "check_prefix",
    "connect",
    "connect_async",
    "encode_key",
    "mask_url",
    "redis_errors",
]

DEFAULT_TIMEOUT: Final = 1.0
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_prefix(prefix: object) -> str:
    """Validate a key prefix: 1-64 characters of ``[A-Za-z0-9_.-]``.

    ``:`` (the separator), braces (cluster hash tags) and glob characters are
    refused so that one prefix can never be a prefix of another's key space.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, got {type(prefix).__name__}")
    if not _PREFIX_RE.fullmatch(prefix):
        raise ConfigurationError(
            "prefix must be 1-64 characters of letters, digits, '_', '.' or '-' "
            f"starting with a letter or digit (no ':', braces or spaces), got {prefix!r}"
        )
    return prefix


def encode_key(key: object, name: str = "key") -> str:
    """A state/lock key as text: ints as digits, strings tagged ``s:`` (so 42 != "42")."""
    if isinstance(key, str):
        return "s:" + key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"{name} must be str or int, got {type(key).__name__}")


_USERINFO_RE: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<info>[^/?#]*)@")
_QUERY_PASSWORD_RE: Final = re.compile(r"(?i)([?&]password=)[^&#]*")


def mask_url(url: str) -> str:
    """``url`` with its password (userinfo or ``?password=``) replaced by ``***``."""
    match = _USERINFO_RE.match(url)
    if match:
        # The userinfo runs to the last "@" before the host: passwords may hold "@".
        scheme, info = match["scheme"], match["info"]
        user, sep, _ = info.partition(":")
        masked = f"{user}:***" if sep else "***"
        url = scheme + masked + url[match.end() - 1 :]
    return _QUERY_PASSWORD_RE.sub(r"\1***", url)


_C = TypeVar("_C")


def _client_kwargs(socket_timeout: float, connect_timeout: float) -> dict[str, Any]:
    return {
        "socket_timeout": check_positive("socket_timeout", socket_timeout),
        "socket_connect_timeout": check_positive("socket_connect_timeout", connect_timeout),
    }


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise TypeError(f"url must be str, got {type(url).__name__}")
    return url


def _malformed(url: str, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"malformed Redis URL {mask_url(url)}: {_scrub(str(exc), url)} "
        "(expected redis://[user:password@]host[:port][/db], rediss://... or unix:///path)"
    )


def _scrub(text: str, url: str) -> str:
    """Remove the URL's password from a client message, whatever the message says."""
    match = _USERINFO_RE.match(url)
    if match and ":" in match["info"]:
        secret = match["info"].partition(":")[2]
        if secret:
            text = text.replace(secret, "***")
    return text


def connect(
    url: str,
    *,
    socket_timeout: float = DEFAULT_TIMEOUT,
    socket_connect_timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> redis.Redis:
    """A sync redis-py client for ``url`` with timeouts on every call.

    The client retries a failed command once without backoff (enough to
    replace a connection a Redis restart broke) instead of redis-py's default
    of several retries with backoff, so a dead server costs one fast failure
    and the circuit breaker takes over.

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, ``rediss://`` or ``unix://``.
        socket_timeout: seconds a command may take.
        socket_connect_timeout: seconds to open a connection.
        check: ``PING`` the server now, so a wrong URL fails at start.

    Raises:
        ConfigurationError: the URL is malformed (the message masks its password).
        BackendError: ``check`` and the server did not answer.
    """
    redis_mod = require("redis", "redis")
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = _check_url(url)
    kwargs = _client_kwargs(socket_timeout, socket_connect_timeout)
    client: redis.Redis = _from_url(redis_mod.Redis.from_url, url, Retry(NoBackoff(), 1), kwargs)
    if check:
        try:
            client.ping()
        except redis_mod.RedisError as exc:
            client.close()
            raise _unreachable(url, exc) from exc
    return client


def connect_async(
    url: str,
    *,
    socket_timeout: float = DEFAULT_TIMEOUT,
    socket_connect_timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for ``url``; the twin of :func:`connect`.

    ``check`` pings the server once through a short-lived *sync* connection
    (it blocks for at most ``socket_connect_timeout``), so a wrong URL fails
    where the client is built, before any event loop runs.
    """
    require("redis", "redis")
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    url = _check_url(url)
    kwargs = _client_kwargs(socket_timeout, socket_connect_timeout)
    if check:
        connect(url, check=True, **kwargs).close()
    return _from_url(aredis.Redis.from_url, url, Retry(NoBackoff(), 1), kwargs)


def _from_url(from_url: Callable[..., _C], url: str, retry: object, kwargs: dict[str, Any]) -> _C:
    """A client with ``retry`` and the timeouts; a malformed URL as ConfigurationError."""
    try:
        return from_url(url, retry=retry, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _malformed(url, exc) from None


def _unreachable(url: str, exc: Exception) -> BackendError:
    return BackendError(f"Redis at {mask_url(url)} is unreachable: {_scrub(str(exc), url)}")


def redis_errors() -> tuple[type[BaseException], type[BaseException]]:
    """``(RedisError, NoScriptError)`` from redis-py, imported lazily."""
    redis_mod = require("redis", "redis")
    return redis_mod.exceptions.RedisError, redis_mod.exceptions.NoScriptError


_LUA_LIB: Final = "_lib.lua"


class LuaScript:
    """A Lua script shipped next to this module, run by EVALSHA.

    Scripts may start with ``--!include _lib.lua`` to share functions.  A
    server that does not know the script (restart, ``SCRIPT FLUSH``, failover)
    answers NOSCRIPT; :meth:`run` / :meth:`arun` then load it and retry once.
    """

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        folder = resources.files(__package__ or "botscale.backends") / "lua"
        source = (folder / name).read_text(encoding="utf-8")
        if source.startswith(f"--!include {_LUA_LIB}\n"):
            source = (folder / _LUA_LIB).read_text(encoding="utf-8") + source
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def run(self, client: Any, numkeys: int, *args: Any) -> Any:
        """EVALSHA through a sync client, loading the script on NOSCRIPT."""
        try:
            return client.evalsha(self.sha, numkeys, *args)
        except redis_errors()[1]:
            client.script_load(self.source)
            return client.evalsha(self.sha, numkeys, *args)

    async def arun(self, client: Any, numkeys: int, *args: Any) -> Any:
        """EVALSHA through an async client, loading the script on NOSCRIPT."""
        try:
            return await client.evalsha(self.sha, numkeys, *args)
        except redis_errors()[1]:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, numkeys, *args)


class DirectLine:
    """One connection per thread, beside the client's pool, for a hot script's round trips.

    redis-py's ``execute_command`` takes a pooled connection, polls it for
    stray data, records metrics and retries for every command; on the
    decision path that costs about a quarter of a local round trip (redis-py
    8).  A line keeps one connection per thread, made with the pool's own
    connection class and arguments (host, auth, TLS, timeouts) but outside
    the pool, so it never takes a connection the client counts on, and sends
    with redis-py's ``send_command`` / ``read_response``.  A thread that ends
    takes its connection with it.  Any connection or
    timeout error drops the thread's connection and is raised for the caller
    to retry through the client, where redis-py's own retries apply.

    :meth:`for_client` builds one only for a plain ``redis.Redis`` over a
    plain ``ConnectionPool`` without client-side caching; any other client
    (cluster, sentinel, single-connection, a custom pool) gets ``None`` and
    keeps the client's path.  A forked child drops the parent's connections.
    """

    __slots__ = ("__weakref__", "_closed", "_local", "_lock", "_make", "_open", "broken")

    def __init__(self, make: Callable[[], Any]) -> None:
        exceptions = require("redis", "redis").exceptions
        self.broken: tuple[type[BaseException], ...] = (
            exceptions.ConnectionError,
            exceptions.TimeoutError,
            OSError,
        )
        """What :meth:`call` raises (after dropping the connection) when the line broke."""
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        # Weak: a thread that ends drops its connection, which redis-py then disconnects.
        self._open: weakref.WeakSet[Any] = weakref.WeakSet()
        self._closed = False
        _LINES.add(self)

    @classmethod
    def for_client(cls, client: Any) -> DirectLine | None:
        """A line beside ``client``'s pool, or ``None`` where the client's path must stay."""
        redis_mod = require("redis", "redis")
        pool: Any = getattr(client, "connection_pool", None)
        if (
            type(client) is not redis_mod.Redis
            or getattr(client, "connection", None) is not None  # single_connection_client
            or type(pool) is not redis_mod.ConnectionPool
            or getattr(pool, "cache", None) is not None  # client-side caching
        ):
            return None
        connection_class = pool.connection_class
        kwargs = dict(pool.connection_kwargs)
        return cls(lambda: connection_class(**kwargs))

    def call(self, *args: Any) -> Any:
        """Send one command on this thread's connection and read its reply.

        Raises:
            redis.ConnectionError, redis.TimeoutError: the connection broke
                (it is dropped); retry through the client.
            redis.ResponseError: the server answered with an error (the
                connection stays good).
        """
        try:
            conn = self._local.conn
        except AttributeError:
            conn = self._connection()
        try:
            conn.send_command(*args)
            return conn.read_response()
        except self.broken:
            self._drop(conn)
            raise

    def _connection(self) -> Any:
        conn = self._make()
        with self._lock:
            if self._closed:
                raise _closed_error()
            self._open.add(conn)
        self._local.conn = conn
        return conn

    def _drop(self, conn: Any) -> None:
        self._local.__dict__.pop("conn", None)
        with self._lock:
            self._open.discard(conn)
        conn.disconnect()

    def close(self) -> None:
        """Disconnect every thread's connection; later calls raise ``ConnectionError``."""
        with self._lock:
            self._closed = True
            conns = list(self._open)
            self._open.clear()
        for conn in conns:
            conn.disconnect()

    def _forget(self) -> None:
        """In a forked child: the parent's sockets are not this process's to use or close."""
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open = weakref.WeakSet()


def _closed_error() -> Exception:
    error: type[Exception] = require("redis", "redis").exceptions.ConnectionError
    return error("the Redis backend was closed")


_LINES: Final[weakref.WeakSet[DirectLine]] = weakref.WeakSet()


def _after_fork() -> None:
    for line in list(_LINES):
        line._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


ClientT = TypeVar("ClientT")
"""A component's client: ``redis.Redis`` (the sync twin) or ``redis.asyncio.Redis``."""
_ClientT_co = TypeVar("_ClientT_co", covariant=True)
_P = ParamSpec("_P")
_R = TypeVar("_R")
_F = TypeVar("_F")

FAILED: Final[Any] = object()
"""A ``fallback`` for :meth:`RedisComponent._call` that tells "Redis did not answer" apart."""


class Connect(Protocol[_ClientT_co]):
    """:func:`connect` or :func:`connect_async`: how a twin's ``from_url`` builds its client."""

    def __call__(
        self,
        url: str,
        *,
        socket_timeout: float = ...,
        socket_connect_timeout: float = ...,
        check: bool = ...,
    ) -> _ClientT_co: ...


class RedisComponent(Generic[ClientT]):
    """What every Redis component shares: client, prefix, key head, failure policy, breaker.

    A component's sync and async twins differ only in their Redis calls: the
    sync twin runs each through :meth:`_call`, the async twin awaits
    :meth:`_acall`, and both consult one :class:`Guard` (breaker, ``on_error``
    policy, counters) the same way.
    """

    __slots__ = ("_errors", "_guard", "_head", "client", "prefix")

    _connect: Connect[ClientT]
    """How ``from_url`` builds the client (the twins that have one set it)."""

    def __init__(self, client: ClientT, prefix: str, kind: str) -> None:
        self.client: Any = client
        self.prefix = check_prefix(prefix)
        self._head = "{" + self.prefix + ":" + kind + ":"

    @classmethod
    def _client_from_url(
        cls,
        url: str,
        prefix: str,
        socket_timeout: float,
        socket_connect_timeout: float,
        check: bool,
    ) -> ClientT:
        """``from_url``'s client; the prefix is checked first, so a bad one fails offline."""
        check_prefix(prefix)
        return cls._connect(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            check=check,
        )

    def _init_policy(
        self, on_error: str, accepted: tuple[str, ...], breaker: CircuitBreaker | None
    ) -> str:
        """Validate ``on_error`` and ``breaker``, set up the guard; return the policy."""
        policy = check_policy("on_error", on_error, accepted)
        self._guard = Guard(f"{type(self).__name__}(prefix={self.prefix!r})", policy, breaker)
        self._errors: type[BaseException] = redis_errors()[0]
        return policy

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this component's calls (possibly shared)."""
        return self._guard.breaker

    def _ready(self) -> bool:
        """Whether to call Redis now; if the breaker is open, the policy answers
        instead (``"closed"`` raises, any other counts a degraded answer)."""
        guard = self._guard
        if guard.ready():
            return True
        guard.degrade(None)
        return False

    def _failed(self, exc: BaseException) -> None:
        """A client error: record it (breaker, counters), then apply the policy."""
        guard = self._guard
        guard.failed(exc)
        guard.degrade(exc)

    def _call(
        self, fallback: _F, call: Callable[_P, _R], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> _R | _F:
        """``call(*args, **kwargs)`` under the guard; ``fallback`` when Redis cannot answer.

        While the breaker is open, or after a client error, the policy decides:
        ``"closed"`` raises :class:`~botscale.BackendError`, any other policy
        counts a degraded answer and returns ``fallback``.
        """
        if not self._ready():
            return fallback
        try:
            reply = call(*args, **kwargs)
        except self._errors as exc:
            self._failed(exc)
            return fallback
        self._guard.ok()
        return reply

    async def _acall(
        self,
        fallback: _F,
        call: Callable[_P, Awaitable[_R]],
        /,
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R | _F:
        """The awaiting twin of :meth:`_call`."""
        if not self._ready():
            return fallback
        try:
            reply = await call(*args, **kwargs)
        except self._errors as exc:
            self._failed(exc)
            return fallback
        self._guard.ok()
        return reply

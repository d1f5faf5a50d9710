"""Settings from ``BOTSCALE_*`` environment variables, checked at the boundary.

One frozen dataclass holds every knob with a sensible default (the numbers
bot authors settled on: 30 requests a minute per user, state capped at 2000
users for an hour, a 5-minute cache, batches of 50 every 2 s, 8 concurrent
calls to a slow API, operations over 2 s logged as slow).

Each field is declared with :func:`_setting`: its parser (from the
environment's text), its check (also run when ``Settings(...)`` is built in
code) and a description of what it accepts, so adding a setting is one line
and its error messages come for free.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ._errors import ConfigurationError
from ._gcra import Rate

__all__ = ["Settings", "SettingInfo"]

T = TypeVar("T")
_log: Final = logging.getLogger("botscale.settings")

_OFF: Final = frozenset({"none", "off", "no", "false", "disabled"})
_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*$", re.I)
_DURATION_UNITS: Final = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[str], Any]
    check: Callable[[Any], bool]
    accepts: str
    doc: str
    aliases: tuple[str, ...] = ()  # more suffixes after the prefix
    fallbacks: tuple[str, ...] = ()  # unprefixed names (platform conventions)
    secret: bool = False


def _setting(
    default: T,
    *,
    parse: Callable[[str], Any],
    check: Callable[[Any], bool],
    accepts: str,
    doc: str,
    aliases: tuple[str, ...] = (),
    fallbacks: tuple[str, ...] = (),
    secret: bool = False,
) -> T:
    """Declare one setting (a dataclass field carrying its parser and check)."""
    spec = _Spec(parse, check, accepts, doc, aliases, fallbacks, secret)
    field: T = dataclasses.field(default=default, metadata={"botscale": spec})
    return field


# -- parsers: text -> value (raise ValueError on bad text) ------------------------


def _parse_int(text: str) -> int:
    return int(text.strip())


def _parse_duration(text: str) -> float:
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(text)
    return float(match[1]) * _DURATION_UNITS[match[2] and match[2].lower()]


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    def parse_optional(text: str) -> T | None:
        return None if text.strip().lower() in _OFF else parse(text)

    return parse_optional


def _parse_str(text: str) -> str:
    return text.strip()


def _parse_level(text: str) -> str:
    text = text.strip().upper()
    if text.isdigit():
        name = logging.getLevelName(int(text))
        if name in _LEVELS:
            return str(name)
    return "WARNING" if text == "WARN" else text


def _parse_rate(text: str) -> Rate:
    return Rate.parse(text)


# -- checks: value -> ok? ---------------------------------------------------------------


def _is_int(value: object, minimum: int, maximum: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


def _is_positive(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and value > 0
        and math.isfinite(value)
    )


def _url_check(*schemes: str) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if value is None:
            return True
        if not isinstance(value, str):
            return False
        parts = urlsplit(value)
        return parts.scheme in schemes and bool(parts.netloc or parts.path)

    return check


def _optional_check(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


_DEFAULT_USER_RATE: Final = Rate(30, 60.0)
_SECONDS: Final = "a number of seconds > 0, optionally with a unit (500ms, 2s, 5m, 1h)"


@dataclass(frozen=True)
class SettingInfo:
    """One setting as documented by :meth:`Settings.variables`.

    Attributes:
        field: the attribute of :class:`Settings`.
        variable: the environment variable (with the prefix).
        also: other variables read, in order, when ``variable`` is unset.
        default: the default value.
        accepts: what the variable accepts.
        doc: what the setting does.
    """

    field: str
    variable: str
    also: tuple[str, ...]
    default: object
    accepts: str
    doc: str


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Every botscale knob, with defaults that suit a bot with real users.

    Build it in code (``Settings(batch_size=100)``) or from the environment
    (:meth:`from_env`).  Values are checked either way: a bad one raises
    :class:`~botscale.ConfigurationError` naming the field or variable and
    what it accepts.  Frozen: derive variants with :meth:`replace`.
    """

    redis_url: str | None = _setting(
        None,
        parse=_parse_str,
        check=_url_check("redis", "rediss", "unix"),
        accepts="a redis://, rediss:// or unix:// URL",
        doc="Redis for shared rate limits, state and de-duplication; unset: in memory.",
        fallbacks=("REDIS_URL",),
        secret=True,
    )
    postgres_dsn: str | None = _setting(
        None,
        parse=_parse_str,
        check=_url_check("postgres", "postgresql"),
        accepts="a postgresql:// or postgres:// DSN",
        doc="PostgreSQL for batched writes; unset: SQLite.",
        aliases=("DATABASE_URL",),
        fallbacks=("DATABASE_URL",),
        secret=True,
    )
    # _setting returns a dataclasses.field; Rate is a frozen value: nothing shared mutates.
    user_rate: Rate = _setting(  # noqa: RUF009
        _DEFAULT_USER_RATE,
        parse=_parse_rate,
        check=lambda v: isinstance(v, Rate),
        accepts="a rate such as 30/minute, 1/s or '20 per 60 seconds'",
        doc="Requests each user may make (token bucket refill).",
    )
    user_burst: int | None = _setting(
        None,
        parse=_optional(_parse_int),
        check=_optional_check(lambda v: _is_int(v, 1)),
        accepts="an int >= 1 (or 'none': the rate's limit)",
        doc="Bucket capacity per user; unset: the rate's limit.",
    )
    state_maxsize: int = _setting(
        2000,
        parse=_parse_int,
        check=lambda v: _is_int(v, 1),
        accepts="an int >= 1",
        doc="Most users whose conversation state is kept (least recently used go first).",
    )
    state_ttl: float | None = _setting(
        3600.0,
        parse=_optional(_parse_duration),
        check=_optional_check(_is_positive),
        accepts=f"{_SECONDS}, or 'none' to keep state until evicted",
        doc="Seconds a user's state lives after its last write.",
    )
    cache_maxsize: int = _setting(
        5000,
        parse=_parse_int,
        check=lambda v: _is_int(v, 1),
        accepts="an int >= 1",
        doc="Most entries of a cache.",
    )
    cache_ttl: float = _setting(
        300.0,
        parse=_parse_duration,
        check=_is_positive,
        accepts=_SECONDS,
        doc="Seconds a cached value stays fresh.",
    )
    slow_threshold: float = _setting(
        2.0,
        parse=_parse_duration,
        check=_is_positive,
        accepts=_SECONDS,
        doc="Operations slower than this are logged as slow.",
    )
    batch_size: int = _setting(
        50,
        parse=_parse_int,
        check=lambda v: _is_int(v, 1),
        accepts="an int >= 1",
        doc="Rows written in one batch.",
    )
    batch_delay: float = _setting(
        2.0,
        parse=_parse_duration,
        check=_is_positive,
        accepts=_SECONDS,
        doc="Longest a row waits before its batch is flushed.",
    )
    max_concurrency: int = _setting(
        8,
        parse=_parse_int,
        check=lambda v: _is_int(v, 1),
        accepts="an int >= 1",
        doc="Calls allowed at once to a slow external service (bulkhead).",
    )
    retry_attempts: int = _setting(
        3,
        parse=_parse_int,
        check=lambda v: _is_int(v, 1),
        accepts="an int >= 1",
        doc="Most attempts of a retried call (database, Bot API).",
    )
    retry_timeout: float | None = _setting(
        30.0,
        parse=_optional(_parse_duration),
        check=_optional_check(_is_positive),
        accepts=f"{_SECONDS}, or 'none' for attempts only",
        doc="Time budget of a retried call, waits included.",
    )
    monitor_host: str = _setting(
        "127.0.0.1",
        parse=_parse_str,
        check=lambda v: isinstance(v, str) and bool(v),
        accepts="a host name or address to bind",
        doc="Where the monitor's /health and /metrics listen.",
    )
    monitor_port: int | None = _setting(
        None,
        parse=_optional(_parse_int),
        check=_optional_check(lambda v: _is_int(v, 0, 65535)),
        accepts="an int in 0..65535 (0: any free port), or 'none' for no server",
        doc="Port of the monitor's HTTP server; unset: not served.",
    )
    log_level: str = _setting(
        "INFO",
        parse=_parse_level,
        check=lambda v: v in _LEVELS,
        accepts="DEBUG, INFO, WARNING, ERROR or CRITICAL (or 10..50)",
        doc="Level of botscale's loggers.",
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            spec = _spec(field)
            if spec is None:
                continue
            value = getattr(self, field.name)
            if not spec.check(value):
                raise ConfigurationError(
                    f"Settings.{field.name} must be {spec.accepts}, got {value!r}"
                )

    @property
    def user_capacity(self) -> int:
        """The per-user bucket capacity: ``user_burst``, or the rate's limit."""
        if self.user_burst is not None:
            return self.user_burst
        return max(1, math.floor(self.user_rate.limit))

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        prefix: str = "BOTSCALE_",
        strict: bool = False,
    ) -> Settings:
        """Read ``{prefix}{FIELD}`` variables (e.g. ``BOTSCALE_BATCH_SIZE=100``).

        Unset or empty variables keep the default.  ``redis_url`` also reads
        ``REDIS_URL``, and ``postgres_dsn`` reads ``{prefix}DATABASE_URL`` then
        ``DATABASE_URL``, the names hosting platforms set.  An unknown
        ``{prefix}`` variable close to a known name is logged as a likely typo
        (raised with ``strict=True``, as is any unknown one).

        Args:
            environ: the variables (default: ``os.environ``).
            prefix: the prefix of botscale's variables.
            strict: reject unknown ``{prefix}*`` variables.

        Raises:
            ConfigurationError: a variable's value is not accepted; the
                message names the variable, its value and what it accepts.
        """
        if environ is None:
            import os

            environ = os.environ
        values: dict[str, Any] = {}
        known: set[str] = set()
        for field in dataclasses.fields(cls):
            spec = _spec(field)
            if spec is None:
                continue
            names = _variables(field.name, spec, prefix)
            known.update(n for n in names if n.startswith(prefix))
            for name in names:
                raw = environ.get(name)
                if raw is None or not raw.strip():
                    continue
                values[field.name] = _read(name, raw, spec)
                break
        _check_unknown(environ, prefix, known, strict)
        return cls(**values)

    @classmethod
    def variables(cls, prefix: str = "BOTSCALE_") -> list[SettingInfo]:
        """Every setting with its variable(s), default and what it accepts (for docs)."""
        infos = []
        for field in dataclasses.fields(cls):
            spec = _spec(field)
            if spec is None:
                continue
            first, *also = _variables(field.name, spec, prefix)
            infos.append(
                SettingInfo(field.name, first, tuple(also), field.default, spec.accepts, spec.doc)
            )
        return infos

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (and checked)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            spec = _spec(field)
            if spec is not None and spec.secret and isinstance(value, str):
                value = _redact(value)
            shown.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def _spec(field: dataclasses.Field[Any]) -> _Spec | None:
    spec = field.metadata.get("botscale")
    return spec if isinstance(spec, _Spec) else None


def _variables(name: str, spec: _Spec, prefix: str) -> list[str]:
    names = [prefix + name.upper(), *(prefix + alias for alias in spec.aliases)]
    return names + [f for f in spec.fallbacks if f not in names]


def _read(name: str, raw: str, spec: _Spec) -> Any:
    shown = repr(_redact(raw) if spec.secret else raw)
    try:
        value = spec.parse(raw)
    except (ValueError, TypeError):
        value = _INVALID
    if value is _INVALID or not spec.check(value):
        raise ConfigurationError(f"{name}={shown} is not accepted: expected {spec.accepts}")
    return value


_INVALID: Final = object()


def _check_unknown(environ: Mapping[str, str], prefix: str, known: set[str], strict: bool) -> None:
    for name in environ:
        if not name.startswith(prefix) or name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        if strict:
            raise ConfigurationError(f"unknown setting {name}{hint}")
        if close:
            _log.warning("ignoring unknown setting %s%s", name, hint)

"""The one tree of botscale's exceptions.

Every error botscale raises on purpose derives from :class:`BotscaleError`, so a
bot can catch "anything botscale decided" in one place.  Configuration errors
are also ``ValueError`` so that code written against the standard library's
conventions keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BotscaleError",
    "ConfigurationError",
    "RateLimitExceeded",
    "WriterClosedError",
]


class BotscaleError(Exception):
    """Base class of every exception botscale raises on purpose."""


class ConfigurationError(BotscaleError, ValueError):
    """A constructor or call argument is outside its accepted range.

    The message names the argument, the value given and what is accepted.
    """


class RateLimitExceeded(BotscaleError):
    """A rate limit did not allow the call within the time it was given.

    Attributes:
        key: the limited key.
        retry_after: seconds until the call would be allowed (``0.0`` if unknown).
    """

    def __init__(self, key: str | int, retry_after: float, message: str | None = None) -> None:
        self.key = key
        self.retry_after = retry_after
        super().__init__(
            message or f"rate limit exceeded for key {key!r}: retry after {retry_after:.3f} s"
        )


class BackendError(BotscaleError):
    """A storage backend (Redis, a database) failed.

    The client library's own exception is chained as ``__cause__``.
    """


class WriterClosedError(BotscaleError, RuntimeError):
    """An item was put into a batch writer that is already closed."""

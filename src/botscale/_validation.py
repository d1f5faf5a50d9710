"""Argument checks shared by every public constructor.

Each check raises :class:`~botscale.ConfigurationError` (a ``ValueError``) or
``TypeError`` with a message that names the argument, the value given and the
accepted range, so bad configuration fails at the boundary.
"""

from __future__ import annotations

import math
from typing import Any

from ._errors import ConfigurationError

__all__ = [
    "check_key",
    "check_non_negative",
    "check_positive",
    "check_positive_int",
    "check_type",
]


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number > 0, else raise."""
    if not _is_real(value):
        raise TypeError(f"{name} must be a number of seconds > 0, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number >= 0, else raise."""
    if not _is_real(value):
        raise TypeError(f"{name} must be a number >= 0, got {type(value).__name__}")
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``, else raise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ConfigurationError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_type(name: str, value: Any, expected: type | tuple[type, ...], accepted: str) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is an instance of ``expected``."""
    if not isinstance(value, expected) or isinstance(value, bool):
        raise TypeError(f"{name} must be {accepted}, got {type(value).__name__}")


def check_key(key: Any, name: str = "key") -> str | int:
    """Accept a rate-limit / state key: ``str`` or ``int`` (not ``bool``)."""
    if isinstance(key, (str, int)) and not isinstance(key, bool):
        return key
    raise TypeError(f"{name} must be str or int, got {type(key).__name__}")

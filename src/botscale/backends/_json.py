"""JSON values for the Redis components: checked before they are written.

A shared Redis must never become a code-execution path, so values are JSON,
never pickle.  The check is stricter than ``json.dumps``: a tuple or a dict
with int keys would come back as something else (a list, str keys), so they
are refused at ``set`` rather than silently changed.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "loads"]


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path} has a key of type {type(key).__name__} ({key!r}); "
                    "JSON object keys are str (it would come back changed)"
                )
            _check(item, f"{path}[{key!r}]")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise TypeError(
        f"{path} is of type {type(value).__name__}, not JSON; Redis stores accept dict "
        "(str keys), list, str, int, float, bool and None (never pickle)"
    )


def dumps(value: Any, what: str = "value") -> str:
    """``value`` as compact JSON.

    Raises:
        TypeError: ``value`` (or a part of it) is not a JSON type; the message
            names the type and where it sits.
        ValueError: a float is NaN or infinite.
    """
    _check(value, what)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(raw: str | bytes) -> Any:
    """Decode a stored value."""
    return json.loads(raw)

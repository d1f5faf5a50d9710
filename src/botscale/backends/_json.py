"""JSON values for the Redis components: checked, then encoded compactly.

A shared Redis must never become a code-execution path, so values are JSON,
never pickle.  The check is :func:`botscale._state.check_json_value` (the one a
strict ``MemoryStateStore`` uses): a tuple or a dict with int keys would come
back as something else, so they are refused at write time, not changed.
"""

from __future__ import annotations

import json
from typing import Any

from .._state import check_json_value

__all__ = ["dumps", "loads"]


def dumps(value: Any, what: str = "value") -> str:
    """``value`` as compact JSON.

    Raises:
        TypeError: ``value`` (or a part of it) is not JSON; the message names
            the type and where it sits.
        ValueError: a NaN or infinite float, or a container holding itself.
    """
    check_json_value(value, what)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(raw: str | bytes) -> Any:
    """Decode a stored value."""
    return json.loads(raw)

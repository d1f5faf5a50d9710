"""Sinks for the batch writers: where batches of rows end up.

* :class:`SQLiteSink` — the embedded default (standard library ``sqlite3``).
* :class:`PostgresSink` — PostgreSQL through asyncpg (``pip install 'botscale[postgres]'``).

Any callable taking a list of items, sync or ``async``, is a sink too.  Both
classes are imported on first use, so ``import botscale.sinks`` loads neither
``sqlite3`` nor ``asyncpg``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import Columns, Row

if TYPE_CHECKING:
    from ._postgres import PostgresSink
    from ._sqlite import SQLiteSink

__all__ = ["Columns", "PostgresSink", "Row", "SQLiteSink"]

_LAZY = {"PostgresSink": "._postgres", "SQLiteSink": "._sqlite"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

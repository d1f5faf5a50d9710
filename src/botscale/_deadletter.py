"""Where a batch goes when the sink keeps failing: dead-letter handlers.

A dead-letter handler is any callable ``handler(items, error)``; the batch
writers call it with the items of a batch that could not be written after the
retry budget, and the last error.  Two are shipped: :class:`DeadLetterFile`
(JSON lines, the default next to a SQLite database) and a logging handler (the
default elsewhere).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["DeadLetterFile", "log_dead_letters"]

_log: Final = logging.getLogger("botscale.batch")


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class DeadLetterFile:
    """Append dead-lettered items to a file as JSON lines, one item per line.

    Each line is ``{"time": ..., "error": ..., "item": ...}``; values JSON
    cannot encode are written as their ``repr``.  Every append is flushed and
    fsynced: a dead letter exists to survive the crash that may follow.  The
    file can be read back with :meth:`read` to replay the items.

    Thread-safe; one instance may serve several writers.

    Args:
        path: the file to append to (created on first use with its directory).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[Any], error: BaseException) -> None:
        """Append ``items`` with ``error`` as the reason (raises ``OSError`` if it cannot)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        reason = _error_text(error)
        lines = "".join(
            json.dumps({"time": stamp, "error": reason, "item": item}, default=repr) + "\n"
            for item in items
        )
        with self._lock:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(lines)
                fh.flush()
                os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every record in the file, oldest first (``[]`` if there is no file).

        Each record is a dict with ``time``, ``error`` and ``item`` (a row
        comes back as a list).
        """
        try:
            with open(self.path, encoding="utf-8") as fh:
                return [json.loads(line) for line in fh if line.strip()]
        except FileNotFoundError:
            return []

    def __repr__(self) -> str:
        return f"DeadLetterFile({self.path!r})"


def log_dead_letters(items: Sequence[Any], error: BaseException) -> None:
    """The fallback dead-letter handler: log the items at ERROR, so they can be recovered."""
    _log.error(
        "dead letters: %d items could not be written (%s); the items: %r",
        len(items),
        _error_text(error),
        list(items),
    )

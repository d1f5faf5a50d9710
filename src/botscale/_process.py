"""Process figures for the monitor: resident memory, CPU time, threads.

psutil is used when installed (the ``cli`` extra); the core needs nothing:
without it resident memory comes from ``/proc/self/statm`` (Linux), else from
``resource.getrusage`` (the *peak* resident size, labelled as such), else it is
unknown (``None``).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["ProcessReader"]


class ProcessReader:
    """Reads this process's figures; chooses the best available source once."""

    def __init__(self) -> None:
        self._process: Any = None
        self._pid = 0
        self._source: str | None = None

    def _choose(self) -> str:
        try:
            import psutil  # optional (the cli extra): imported on first use

            self._process = psutil.Process()
            self._pid = os.getpid()
            self._process.memory_info()
            return "psutil"
        except Exception:  # not installed, or not permitted on this platform
            pass
        try:
            with open("/proc/self/statm", "rb") as f:
                f.read()
            return "procfs"
        except OSError:
            pass
        try:
            import resource  # noqa: F401  (POSIX only)

            return "ru_maxrss"
        except ImportError:
            return "none"

    @property
    def rss_source(self) -> str:
        """Where resident memory comes from: psutil, procfs, ru_maxrss (peak) or none."""
        if self._source is None:
            self._source = self._choose()
        return self._source

    def rss_bytes(self) -> int | None:
        """Resident set size in bytes (peak size under ``ru_maxrss``), ``None`` if unknown."""
        source = self.rss_source
        try:
            if source == "psutil":
                if self._pid != os.getpid():  # forked: psutil.Process() is the parent's
                    self._process = type(self._process)()
                    self._pid = os.getpid()
                return int(self._process.memory_info().rss)
            if source == "procfs":
                with open("/proc/self/statm", "rb") as f:
                    resident_pages = int(f.read().split()[1])
                return resident_pages * os.sysconf("SC_PAGE_SIZE")
            if source == "ru_maxrss":
                import resource
                import sys

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                # Linux reports KiB, macOS bytes.
                return int(peak) if sys.platform == "darwin" else int(peak) * 1024
        except Exception:  # a figure we cannot read is unknown, never an error
            return None
        return None

    @staticmethod
    def cpu_seconds() -> float:
        """User + system CPU time this process has used, in seconds."""
        return time.process_time()

    @staticmethod
    def threads() -> int:
        """Python threads alive in this process."""
        return threading.active_count()

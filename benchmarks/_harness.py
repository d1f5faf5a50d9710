"""Tiny benchmark harness: per-operation cost, best of several repeats, as ratios.

Every comparison is measured side by side in one run on one machine, so the
ratios mean something even where the absolute numbers do not.  Each
``bench_*.py`` module exposes ``run(quick: bool) -> list[Section]``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Row", "Section", "Target", "per_op", "per_op_async"]


@dataclass
class Row:
    name: str
    seconds: float  # per operation
    note: str = ""


@dataclass
class Target:
    description: str
    met: bool
    measured: str


@dataclass
class Section:
    title: str
    rows: list[Row]
    baseline: str  # the row name every ratio is relative to
    targets: list[Target] = field(default_factory=list)
    unit: str = "op"

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    def ratio(self, name: str, to: str | None = None) -> float:
        return self.row(name).seconds / self.row(to or self.baseline).seconds

    def markdown(self) -> str:
        base = self.row(self.baseline).seconds
        lines = [
            f"### {self.title}",
            "",
            f"| implementation | per {self.unit} | ratio to {self.baseline} |",
            "| --- | ---: | ---: |",
        ]
        for row in self.rows:
            note = f" ({row.note})" if row.note else ""
            lines.append(f"| {row.name}{note} | {_fmt(row.seconds)} | {row.seconds / base:.2f}x |")
        if self.targets:
            lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
            lines += [
                f"| {t.description} | {t.measured} | {'yes' if t.met else '**no**'} |"
                for t in self.targets
            ]
        return "\n".join(lines) + "\n"


def _fmt(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def per_op(fn: Callable[[], object], *, number: int, repeat: int = 5) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    gc.collect()
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / number


def per_op_async(make: Callable[[], object], *, number: int, repeat: int = 5) -> float:
    """Seconds per awaited call of the coroutine function ``make`` (own event loop)."""
    import asyncio

    async def loop_once() -> float:
        start = time.perf_counter()
        for _ in range(number):
            await make()  # type: ignore[misc]
        return time.perf_counter() - start

    best = float("inf")
    for _ in range(repeat):
        best = min(best, asyncio.run(loop_once()))
    return best / number

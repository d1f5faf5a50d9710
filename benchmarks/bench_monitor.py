"""Cost of recording one timing sample: botscale's monitor vs a list append and prometheus_client.

Recording sits on every handler call of a bot, so it must be cheap:

* the floor is appending the duration to a list (what print-timing code does;
  unbounded memory, no percentiles, not thread-safe), and the same with a lock;
* botscale ``Histogram.record`` (the pure bucket maths), ``PerformanceMonitor.record``
  (validation, name lookup, lock, slow check), ``track()`` as a ``with`` block
  (two clock reads), with the context an adapter attaches, and a ``@timed``
  no-op function against the bare call;
* prometheus_client's ``Histogram.observe`` and ``Summary.observe`` (labelled by
  operation, as botscale is), and ``Histogram.time()`` as the twin of ``track()``.

Runs are interleaved and each keeps its best, so a busy machine slows all alike.
A second section shows the cost of reading: ``stats()`` with 1 and 100
operation names, and the memory an operation name takes.
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from collections.abc import Callable

from _harness import Row, Section, Target, per_op
from botscale import PerformanceMonitor
from botscale._histogram import Histogram

SAMPLE = 0.0123


def _contenders() -> dict[str, Callable[[], Callable[[], object]]]:
    """Name -> factory of a fresh ``record_one()`` (fresh state for every run)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client import Histogram as PromHistogram
    from prometheus_client import Summary as PromSummary

    def floor() -> Callable[[], object]:
        samples: list[float] = []
        return lambda: samples.append(SAMPLE)

    def locked_floor() -> Callable[[], object]:
        samples: list[float] = []
        lock = threading.Lock()

        def add() -> None:
            with lock:
                samples.append(SAMPLE)

        return add

    def histogram() -> Callable[[], object]:
        h = Histogram()
        return lambda: h.record(SAMPLE)

    def record() -> Callable[[], object]:
        mon = PerformanceMonitor()
        return lambda: mon.record("db.save", SAMPLE)

    def track() -> Callable[[], object]:
        mon = PerformanceMonitor()

        def timed_block() -> None:
            with mon.track("db.save"):
                pass

        return timed_block

    def track_context() -> Callable[[], object]:
        mon = PerformanceMonitor()

        def timed_block() -> None:
            with mon.track("handler.start", user_id=42, chat_id=42, update="message"):
                pass

        return timed_block

    def prom_histogram() -> Callable[[], object]:
        h = PromHistogram("op_seconds", "d", ["operation"], registry=CollectorRegistry())
        return lambda: h.labels("db.save").observe(SAMPLE)

    def prom_histogram_child() -> Callable[[], object]:
        child = PromHistogram("op_seconds", "d", ["operation"], registry=CollectorRegistry())
        observe = child.labels("db.save").observe
        return lambda: observe(SAMPLE)

    def prom_summary() -> Callable[[], object]:
        s = PromSummary("op_seconds", "d", ["operation"], registry=CollectorRegistry())
        return lambda: s.labels("db.save").observe(SAMPLE)

    def prom_time() -> Callable[[], object]:
        h = PromHistogram("op_seconds", "d", ["operation"], registry=CollectorRegistry())

        def timed_block() -> None:
            with h.labels("db.save").time():
                pass

        return timed_block

    return {
        "list.append (floor)": floor,
        "list.append + lock": locked_floor,
        "botscale Histogram.record": histogram,
        "botscale record()": record,
        "botscale track()": track,
        "botscale track() + context": track_context,
        "prometheus Histogram.labels().observe": prom_histogram,
        "prometheus Histogram child .observe": prom_histogram_child,
        "prometheus Summary.labels().observe": prom_summary,
        "prometheus Histogram.labels().time()": prom_time,
    }


def _decorator_rows(number: int, repeat: int) -> dict[str, float]:
    mon = PerformanceMonitor()

    def bare() -> None:
        return None

    decorated = mon.timed("noop")(bare)
    best = {"plain call": float("inf"), "@timed call": float("inf")}
    for _ in range(repeat):
        best["plain call"] = min(best["plain call"], per_op(bare, number=number, repeat=1))
        best["@timed call"] = min(best["@timed call"], per_op(decorated, number=number, repeat=1))
    return {"botscale @timed (minus the plain call)": best["@timed call"] - best["plain call"]}


def _measure(number: int, repeat: int) -> dict[str, float]:
    contenders = _contenders()
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, make in contenders.items():
            best[name] = min(best[name], per_op(make(), number=number, repeat=1))
    best.update(_decorator_rows(number, repeat))
    return best


def _threads(number: int) -> float:
    """Seconds per sample with 4 threads recording into one monitor at once."""
    mon = PerformanceMonitor()
    workers = 4

    def work() -> None:
        for _ in range(number):
            mon.record("db.save", SAMPLE)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    assert mon.stats()["db.save"].count == workers * number
    return seconds / (workers * number)


def _recording(quick: bool) -> Section:
    number = 20_000 if quick else 200_000
    repeat = 3 if quick else 7
    best = _measure(number, repeat)
    best["botscale record(), 4 threads at once"] = _threads(number // 4)
    floor = "list.append (floor)"
    rows = [Row(name, seconds) for name, seconds in best.items()]
    rows[0].note = "unbounded, no percentiles"
    ours, track = best["botscale record()"], best["botscale track()"]
    observe = best["prometheus Histogram.labels().observe"]
    prom_time = best["prometheus Histogram.labels().time()"]
    return Section(
        "Recording one timing sample",
        rows,
        baseline=floor,
        targets=[
            Target("record() about 1 us (<= 1.2 us)", ours <= 1.2e-6, f"{ours * 1e6:.2f} us"),
            Target("track() about 1 us (<= 1.5 us)", track <= 1.5e-6, f"{track * 1e6:.2f} us"),
            Target(
                "record() within 1.5x of prometheus Histogram.labels().observe",
                ours <= 1.5 * observe,
                f"{ours / observe:.2f}x",
            ),
            Target(
                "track() within 1.5x of prometheus Histogram.labels().time()",
                track <= 1.5 * prom_time,
                f"{track / prom_time:.2f}x",
            ),
        ],
        unit="sample",
    )


def _memory_per_name(names: int = 100) -> tuple[float, float]:
    """Bytes per operation name after its first sample, and growth per later sample."""
    mon = PerformanceMonitor(max_names=names)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(names):
        mon.record(f"op{i}", SAMPLE)
    first = tracemalloc.get_traced_memory()[0]
    for n in range(200_000):
        mon.record(f"op{n % names}", (n % 1000 + 1) * 1e-4)
    later = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (first - before) / names, (later - first) / 200_000


def _reading(quick: bool) -> Section:
    number = 20 if quick else 100
    rows = []
    for names in (1, 100):
        mon = PerformanceMonitor(max_names=names)
        for n in range(10_000):
            mon.record(f"op{n % names}", (n % 1000 + 1) * 1e-4)
        label = f"stats(), {names} operation name{'s' if names > 1 else ''}"
        rows.append(Row(label, per_op(mon.stats, number=number)))
    per_name, per_sample = _memory_per_name()
    return Section(
        "Reading the monitor",
        rows,
        baseline=rows[0].name,
        targets=[
            Target(
                "memory per operation name fixed (<= 16 KiB, < 1 byte per later sample)",
                per_name <= 16 * 1024 and per_sample < 1,
                f"{per_name / 1024:.1f} KiB per name, {per_sample:.3f} bytes per later sample",
            ),
        ],
        unit="call",
    )


def run(quick: bool) -> list[Section]:
    return [_recording(quick), _reading(quick)]


if __name__ == "__main__":
    for section in run(quick=False):
        print(section.markdown())

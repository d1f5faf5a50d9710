"""A fixed-memory, log-bucketed histogram of durations (DDSketch-style).

Why not keep the samples: a bot records millions of timings, and a percentile
over a list grows without bound.  Here every histogram is one preallocated list
of counts, whatever the number of samples, and a quantile is read off the
buckets with a *relative* error of at most ``relative_accuracy`` (1 % by
default).

The maths.  With ``a = relative_accuracy`` and ``gamma = (1 + a) / (1 - a)``,
bucket ``k`` holds the values in ``(gamma**(k-1), gamma**k]``.  Reporting the
bucket as ``2 * gamma**k / (gamma + 1)`` is off by at most
``(gamma - 1) / (gamma + 1) = a`` relative to any value in it.  Buckets cover
``[min_value, max_value]`` (1 us .. 1 h by default: 1,100 buckets at 1 %);
smaller values fall into one underflow bucket (reported with an absolute error
below ``min_value``), larger ones into one overflow bucket (reported as the
largest sample seen).  Estimates are clamped to the exact ``[min, max]``, which
only ever brings them closer to the truth.

Quantile convention (also used by the tests): *nearest rank*.  For ``n``
samples sorted ascending, the ``q``-quantile is the sample of rank
``max(1, ceil(q * n))`` (1-based) -- always one of the recorded values.

Pure logic, no locking: :class:`~botscale.PerformanceMonitor` serialises access.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import accumulate

__all__ = ["DEFAULT_MAX_VALUE", "DEFAULT_MIN_VALUE", "Histogram", "nearest_rank"]

DEFAULT_MIN_VALUE = 1e-6
"""Smallest duration tracked with relative accuracy: 1 microsecond."""
DEFAULT_MAX_VALUE = 3600.0
"""Largest duration tracked with relative accuracy: 1 hour."""

_INF = math.inf
_log = math.log
_ceil = math.ceil


def nearest_rank(q: float, n: int) -> int:
    """The 1-based rank of the ``q``-quantile among ``n`` sorted samples (nearest rank)."""
    return max(1, math.ceil(q * n))


class _Layout:
    """The bucket boundaries shared by every histogram of one accuracy and range."""

    __slots__ = ("alpha", "hi", "inv_log_gamma", "last", "lo", "offset", "size", "value")

    def __init__(self, alpha: float, lo: float, hi: float) -> None:
        gamma = (1 + alpha) / (1 - alpha)
        log_gamma = math.log(gamma)
        self.alpha, self.lo, self.hi = alpha, lo, hi
        self.inv_log_gamma = 1.0 / log_gamma
        k_min = math.ceil(math.log(lo) / log_gamma)
        k_max = math.ceil(math.log(hi) / log_gamma)
        # index 0: underflow [0, lo); 1..k_max-k_min+1: log buckets; last: overflow (hi, inf).
        self.offset = k_min - 1
        self.size = k_max - k_min + 3
        self.last = self.size - 1
        ks = range(k_min, k_max + 1)
        self.value = [lo, *(2 * gamma**k / (gamma + 1) for k in ks), _INF]


@lru_cache(maxsize=16)
def _layout(alpha: float, lo: float, hi: float) -> _Layout:
    return _Layout(alpha, lo, hi)


class Histogram:
    """Counts of non-negative values in log-spaced buckets: constant memory, mergeable.

    Args:
        relative_accuracy: the documented bound ``a`` on the relative error of
            :meth:`quantile` for values in ``[min_value, max_value]``; in (0, 0.5).
        min_value: smallest value tracked with relative accuracy (> 0).
        max_value: largest value tracked with relative accuracy (> min_value).

    Raises:
        ValueError: an argument is outside its range.

    >>> h = Histogram()
    >>> for ms in (10, 20, 30, 40, 1000):
    ...     h.record(ms / 1000)
    >>> h.count, round(h.quantile(0.5), 3), h.max
    (5, 0.03, 1.0)
    """

    __slots__ = ("_counts", "_layout", "count", "max", "min", "sum")

    def __init__(
        self,
        relative_accuracy: float = 0.01,
        *,
        min_value: float = DEFAULT_MIN_VALUE,
        max_value: float = DEFAULT_MAX_VALUE,
    ) -> None:
        if not 0 < relative_accuracy < 0.5:
            raise ValueError(f"relative_accuracy must be in (0, 0.5), got {relative_accuracy!r}")
        if not 0 < min_value < max_value < _INF:
            raise ValueError(
                "min_value and max_value must satisfy 0 < min_value < max_value < inf, "
                f"got {min_value!r} and {max_value!r}"
            )
        self._layout = _layout(float(relative_accuracy), float(min_value), float(max_value))
        self._counts = [0] * self._layout.size
        self.count = 0
        self.sum = 0.0
        self.min = _INF
        self.max = 0.0

    @property
    def relative_accuracy(self) -> float:
        """The bound on the relative error of :meth:`quantile` inside the tracked range."""
        return self._layout.alpha

    @property
    def buckets(self) -> int:
        """Number of counters this histogram holds (its memory, fixed at construction)."""
        return self._layout.size

    def record(self, value: float) -> None:
        """Count one value (seconds).

        Raises:
            ValueError: ``value`` is negative, NaN or infinite.
        """
        if not 0.0 <= value < _INF:
            raise ValueError(f"value must be a finite number >= 0, got {value!r}")
        layout = self._layout
        if value < layout.lo:
            index = 0
        elif value > layout.hi:
            index = layout.last
        else:
            index = _ceil(_log(value) * layout.inv_log_gamma) - layout.offset
            # log() may round a value on a range edge one bucket out.
            if index < 1:
                index = 1
            elif index >= layout.last:
                index = layout.last - 1
        self._counts[index] += 1
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value

    def record_many(self, values: Iterable[float]) -> None:
        """Count every value of ``values``."""
        for value in values:
            self.record(value)

    def _check_compatible(self, other: Histogram) -> None:
        if not isinstance(other, Histogram):
            raise TypeError(f"other must be a Histogram, got {type(other).__name__}")
        if other._layout is not self._layout:
            raise ValueError("histograms of different accuracy or range cannot be combined")

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples to this histogram (as if they had been recorded here).

        Raises:
            TypeError: ``other`` is not a Histogram.
            ValueError: ``other`` has a different accuracy or range.
        """
        self._check_compatible(other)
        counts = self._counts
        for index, n in enumerate(other._counts):
            if n:
                counts[index] += n
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> Histogram:
        """An independent copy (for a consistent snapshot taken under a lock)."""
        new = Histogram.__new__(Histogram)
        new._layout = self._layout
        new._counts = self._counts.copy()
        new.count, new.sum, new.min, new.max = self.count, self.sum, self.min, self.max
        return new

    def since(self, earlier: Histogram) -> Histogram:
        """The samples recorded after ``earlier`` was copied from this histogram.

        ``min`` and ``max`` of the result are estimated from its buckets (within
        the same relative error), so its quantiles keep the same error bound.

        Raises:
            ValueError: ``earlier`` is not an earlier copy of this histogram.
        """
        self._check_compatible(earlier)
        counts = [a - b for a, b in zip(self._counts, earlier._counts, strict=True)]
        if min(counts) < 0:
            raise ValueError("earlier holds samples this histogram does not")
        new = Histogram.__new__(Histogram)
        new._layout = self._layout
        new._counts = counts
        new.count = self.count - earlier.count
        new.sum = max(0.0, self.sum - earlier.sum)
        used = [i for i, n in enumerate(counts) if n]
        if used:
            values = self._layout.value
            new.min = min(max(values[used[0]], self.min), self.max)
            new.max = max(min(values[used[-1]], self.max), new.min)
        else:
            new.min, new.max = _INF, 0.0
        return new

    def clear(self) -> None:
        """Forget every sample (the memory stays allocated)."""
        self._counts = [0] * self._layout.size
        self.count = 0
        self.sum = 0.0
        self.min = _INF
        self.max = 0.0

    @property
    def mean(self) -> float:
        """Arithmetic mean of the samples (exact), 0.0 when empty."""
        return self.sum / self.count if self.count else 0.0

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (nearest rank), within ``relative_accuracy`` of the exact one.

        Raises:
            ValueError: ``q`` is outside [0, 1], or the histogram is empty.
        """
        return self.quantiles((q,))[0]

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles in one pass over the buckets (``qs`` in any order)."""
        for q in qs:
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"quantile must be in [0, 1], got {q!r}")
        if not self.count:
            raise ValueError("quantile of an empty histogram")
        order = sorted(range(len(qs)), key=lambda i: qs[i])
        ranks = [nearest_rank(qs[i], self.count) for i in order]
        out = [0.0] * len(qs)
        values = self._layout.value
        lo, hi = self.min, self.max
        seen, r = 0, 0
        for index, n in enumerate(self._counts):
            if not n:
                continue
            seen += n
            while r < len(ranks) and ranks[r] <= seen:
                rank = ranks[r]
                # The extreme ranks are known exactly.
                if rank == self.count:
                    out[order[r]] = hi
                elif rank == 1:
                    out[order[r]] = lo
                else:
                    out[order[r]] = min(max(values[index], lo), hi)
                r += 1
            if r == len(ranks):
                break
        return out

    def cumulative_counts(self, bounds: Sequence[float]) -> list[int]:
        """Samples ``<= bound`` for each ascending bound (Prometheus ``le`` buckets).

        A sample is compared through its bucket's reported value, so only
        samples within ``relative_accuracy`` of a bound can land on the wrong side.
        """
        values = self._layout.value
        lo, hi = self.min, self.max
        per_bound = [0] * (len(bounds) + 1)
        for index, n in enumerate(self._counts):
            if n:
                per_bound[bisect_left(bounds, min(max(values[index], lo), hi))] += n
        return list(accumulate(per_bound))[: len(bounds)]

    def __repr__(self) -> str:
        return (
            f"Histogram(count={self.count}, relative_accuracy={self.relative_accuracy}, "
            f"buckets={self.buckets})"
        )

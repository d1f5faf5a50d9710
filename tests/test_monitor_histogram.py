"""The log-bucketed histogram: error bound, merge, window subtraction, bad input."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from botscale._histogram import DEFAULT_MAX_VALUE, DEFAULT_MIN_VALUE, Histogram, nearest_rank

ALPHA = 0.01
# Float slack for values that sit exactly on a bucket edge (log() rounding).
EDGE = 1 + 1e-9

in_range = st.floats(min_value=DEFAULT_MIN_VALUE, max_value=DEFAULT_MAX_VALUE)
samples = st.lists(in_range, min_size=1, max_size=300)
quantile = st.floats(min_value=0.0, max_value=1.0)


def exact_quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile, the convention the histogram documents."""
    ordered = sorted(values)
    return ordered[nearest_rank(q, len(ordered)) - 1]


def filled(values: list[float], **kwargs: float) -> Histogram:
    h = Histogram(**kwargs)
    h.record_many(values)
    return h


@settings(max_examples=300)
@given(samples, quantile)
def test_quantile_is_within_the_documented_relative_error(values: list[float], q: float) -> None:
    h = filled(values)
    exact = exact_quantile(values, q)
    assert abs(h.quantile(q) - exact) <= ALPHA * exact * EDGE


@given(
    st.lists(in_range, min_size=1, max_size=200),
    st.sampled_from([0.001, 0.005, 0.02, 0.05]),
    quantile,
)
def test_other_accuracies_keep_their_own_bound(values: list[float], alpha: float, q: float) -> None:
    h = filled(values, relative_accuracy=alpha)
    exact = exact_quantile(values, q)
    assert abs(h.quantile(q) - exact) <= alpha * exact * EDGE


@given(
    st.lists(st.floats(min_value=0.0, max_value=DEFAULT_MAX_VALUE), min_size=1, max_size=200),
    quantile,
)
def test_values_below_one_microsecond_have_an_absolute_error_below_it(
    values: list[float], q: float
) -> None:
    h = filled(values)
    exact = exact_quantile(values, q)
    assert abs(h.quantile(q) - exact) <= max(ALPHA * exact * EDGE, DEFAULT_MIN_VALUE)


@given(samples, samples)
def test_merge_equals_recording_all_samples_in_one(a: list[float], b: list[float]) -> None:
    merged = filled(a)
    merged.merge(filled(b))
    together = filled(a + b)
    assert merged._counts == together._counts
    assert (merged.count, merged.min, merged.max) == (together.count, together.min, together.max)
    assert merged.sum == pytest.approx(together.sum)
    qs = [0.0, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0]
    assert merged.quantiles(qs) == together.quantiles(qs)


@given(samples, samples, quantile)
def test_since_holds_exactly_the_later_samples(
    early: list[float], late: list[float], q: float
) -> None:
    h = filled(early)
    earlier = h.copy()
    h.record_many(late)
    window = h.since(earlier)
    assert window._counts == filled(late)._counts
    assert window.count == len(late)
    exact = exact_quantile(late, q)
    assert abs(window.quantile(q) - exact) <= ALPHA * exact * EDGE


@given(samples, st.lists(in_range, min_size=1, max_size=8, unique=True))
def test_cumulative_counts_only_misplace_samples_within_the_error(
    values: list[float], bounds: list[float]
) -> None:
    bounds.sort()
    got = filled(values).cumulative_counts(bounds)
    for bound, n in zip(bounds, got, strict=True):
        assert sum(v <= bound * (1 - ALPHA) / EDGE for v in values) <= n
        assert n <= sum(v <= bound / (1 - ALPHA) * EDGE for v in values)
    assert got == sorted(got)


def test_extremes_and_mean_are_exact() -> None:
    values = [0.003, 0.5, 0.01, 42.0, 0.2]
    h = filled(values)
    assert h.quantile(0.0) == h.min == 0.003
    assert h.quantile(1.0) == h.max == 42.0
    assert h.mean == pytest.approx(sum(values) / len(values))
    assert h.quantiles([0.99, 0.0, 0.5]) == [h.quantile(0.99), 0.003, h.quantile(0.5)]


def test_values_beyond_the_range_are_counted_and_reported_by_the_maximum() -> None:
    h = filled([0.0, 5e-7, 7200.0, 10_000.0])
    assert h.count == 4
    assert h._counts[0] == 2  # underflow
    assert h._counts[-1] == 2  # overflow
    assert h.quantile(1.0) == 10_000.0
    assert h.quantile(0.75) == 10_000.0  # inside the overflow bucket: the largest sample
    assert h.quantile(0.0) == 0.0


def test_memory_is_fixed_however_many_samples_arrive() -> None:
    h = Histogram()
    size = sys.getsizeof(h._counts)
    for i in range(20_000):
        h.record((i % 997 + 1) * 1e-4)
    assert sys.getsizeof(h._counts) == size
    assert len(h._counts) == h.buckets
    # 1 us .. 1 h at 1 %: ln(3.6e9) / ln(1.01 / 0.99) = 1,100.2 -> 1,101 log buckets,
    # plus underflow and overflow.
    assert h.buckets == math.ceil(math.log(3.6e9) / math.log(1.01 / 0.99)) + 2 == 1103


def test_clear_forgets_and_copy_is_independent() -> None:
    h = filled([0.1, 0.2])
    c = h.copy()
    h.clear()
    assert (h.count, h.sum, h.max) == (0, 0.0, 0.0)
    assert c.count == 2
    with pytest.raises(ValueError, match="empty"):
        h.quantile(0.5)


@pytest.mark.parametrize("bad", [-1e-9, -1.0, math.nan, math.inf, -math.inf])
def test_record_rejects_negative_nan_and_infinite_values(bad: float) -> None:
    h = Histogram()
    with pytest.raises(ValueError, match="finite number >= 0"):
        h.record(bad)
    assert h.count == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relative_accuracy": 0.0},
        {"relative_accuracy": 0.5},
        {"relative_accuracy": -0.1},
        {"min_value": 0.0},
        {"min_value": 10.0, "max_value": 1.0},
        {"max_value": math.inf},
    ],
)
def test_bad_layout_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Histogram(**kwargs)


def test_bad_quantile_and_incompatible_merges_are_refused() -> None:
    h = filled([0.1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        h.quantile(1.5)
    with pytest.raises(ValueError, match="different accuracy"):
        h.merge(Histogram(relative_accuracy=0.02))
    with pytest.raises(TypeError, match="Histogram"):
        h.merge([0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not"):
        Histogram().since(h)

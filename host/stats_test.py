from __future__ import annotations

import math

import numpy as np
import pytest

from qhil.host import Percentiles, wilson_interval
from qhil.host._stats import LogHistogram


def test_percentiles_of_a_known_sample() -> None:
    p = Percentiles.of(np.arange(1, 1001))
    assert p.n == 1000
    assert p.mean == 500.5
    assert p.p50 == 500.5
    assert p.p99 == pytest.approx(990.01)
    assert p.p999 == pytest.approx(999.001)
    assert p.max == 1000.0


def test_percentiles_match_numpy_on_random_data() -> None:
    v = np.random.default_rng(3).exponential(1000.0, size=5000)
    p = Percentiles.of(v)
    assert p.n == 5000
    assert p.mean == pytest.approx(v.mean())
    assert [p.p50, p.p99, p.p999] == pytest.approx(list(np.percentile(v, [50, 99, 99.9])))
    assert p.max == v.max()
    assert p.p50 < p.p99 < p.p999 < p.max


def test_percentiles_of_one_value_and_of_2d_input() -> None:
    assert Percentiles.of(np.array([7])) == Percentiles(1, 7.0, 7.0, 7.0, 7.0, 7.0)
    assert Percentiles.of(np.array([[1, 2], [3, 4]])).n == 4
    assert Percentiles.of([5, 1, 3]).p50 == 3.0  # type: ignore[arg-type]


def test_percentiles_of_an_empty_sample_are_zero() -> None:
    p = Percentiles.of(np.zeros(0))
    assert p == Percentiles(0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_percentiles_scaled() -> None:
    p = Percentiles.of(np.array([1000, 2000, 3000]))
    us = p.scaled(1e-3)
    assert us.n == 3
    assert us.mean == pytest.approx(2.0)
    assert us.p50 == pytest.approx(2.0)
    assert us.max == pytest.approx(3.0)
    assert us.p99 == pytest.approx(p.p99 * 1e-3)
    assert us.p999 == pytest.approx(p.p999 * 1e-3)


def test_percentiles_validation() -> None:
    with pytest.raises(ValueError, match="n must be >= 0"):
        Percentiles(-1, 0.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="percentiles must be ordered"):
        Percentiles(3, 1.0, 2.0, 1.0, 3.0, 4.0)
    with pytest.raises(ValueError, match="percentiles must be ordered"):
        Percentiles(3, 1.0, 1.0, 2.0, 3.0, 2.5)
    Percentiles(0, 0.0, 5.0, 1.0, 0.0, 0.0)  # an empty sample is not checked


# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Table I,
# method 3 (Wilson score, no continuity correction).
@pytest.mark.parametrize(
    ("errors", "shots", "lo", "hi"),
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(
    errors: int, shots: int, lo: float, hi: float
) -> None:
    got = wilson_interval(errors, shots)
    assert got == pytest.approx((lo, hi), abs=6e-5)


def test_wilson_interval_closed_forms() -> None:
    z2 = 1.959964**2
    for n in (1, 10, 1000):
        assert wilson_interval(0, n) == pytest.approx((0.0, z2 / (n + z2)))
        assert wilson_interval(n, n) == pytest.approx((n / (n + z2), 1.0))
    lo, hi = wilson_interval(50, 100)
    assert (lo + hi) / 2 == pytest.approx(0.5)
    assert hi - lo == pytest.approx(
        2 * 1.959964 * math.sqrt(0.25 / 100 + z2 / 40000) / (1 + z2 / 100)
    )


def test_wilson_interval_properties() -> None:
    lo, hi = wilson_interval(10, 1000)
    assert (round(lo, 5), round(hi, 5)) == (0.00544, 0.01831)
    assert lo < 10 / 1000 < hi
    narrow = wilson_interval(100, 10000)
    assert narrow[1] - narrow[0] < hi - lo, "more shots, narrower interval"
    wide = wilson_interval(10, 1000, z=3.0)
    assert wide[0] < lo and wide[1] > hi, "a larger z widens it"
    sym_lo, sym_hi = wilson_interval(30, 100)
    mirror_lo, mirror_hi = wilson_interval(70, 100)
    assert (sym_lo, sym_hi) == pytest.approx((1 - mirror_hi, 1 - mirror_lo))


def test_wilson_interval_of_no_shots_is_everything() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize(("errors", "shots"), [(-1, 10), (11, 10), (1, 0)])
def test_wilson_interval_rejects_impossible_counts(errors: int, shots: int) -> None:
    with pytest.raises(ValueError, match="need 0 <= errors <= shots"):
        wilson_interval(errors, shots)


# -- LogHistogram ---------------------------------------------------------------------------------

ERR = LogHistogram.RELATIVE_ERROR


def _lognormal_ns(n: int, seed: int) -> np.ndarray:
    """Latency-like samples: median ~20 us, a long tail, some below 128 ns."""
    return np.exp(np.random.default_rng(seed).normal(10.0, 2.0, size=n)).astype(np.int64)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_are_within_the_documented_bound(seed: int) -> None:
    v = _lognormal_ns(100_003, seed)
    h = LogHistogram()
    h.record_many(v)
    for q in (0, 1, 10, 50, 90, 99, 99.9, 99.99, 100):
        exact = float(np.percentile(v, q, method="inverted_cdf"))  # the nearest-rank sample
        got = h.percentile(q)
        assert exact <= got <= exact * (1 + ERR), q
        if exact < 128:
            assert got == exact
        assert got == pytest.approx(np.percentile(v, q), rel=ERR), "numpy's default, too"
    assert h.percentile(100) == h.max == v.max()
    assert h.percentile(0) == h.min == v.min()


def test_percentiles_of_histogram() -> None:
    v = _lognormal_ns(50_000, 4)
    h = LogHistogram()
    h.record_many(v)
    p, exact = Percentiles.of_histogram(h), Percentiles.of(v)
    assert (p.n, p.max) == (exact.n, exact.max)
    assert p.mean == pytest.approx(exact.mean, rel=1e-12)
    for got, want in [(p.p50, exact.p50), (p.p99, exact.p99), (p.p999, exact.p999)]:
        assert got == pytest.approx(want, rel=ERR)
    assert Percentiles.of_histogram(LogHistogram()) == Percentiles.of(np.zeros(0))
    one = LogHistogram()
    one.record(7)
    assert Percentiles.of_histogram(one) == Percentiles(1, 7.0, 7.0, 7.0, 7.0, 7.0)


def test_each_value_lands_in_a_bucket_at_most_the_bound_wide() -> None:
    for v in [
        0,
        1,
        127,
        128,
        129,
        255,
        256,
        1000,
        2**20 + 12345,
        2**39 + 1,
        LogHistogram.TOP_NS - 1,
    ]:
        h = LogHistogram()
        h.record_many(np.array([0, v]))
        edges, counts = h.buckets()
        assert edges[-1] >= v > (edges[-2] if len(edges) > 1 else -1), v
        assert edges[-1] <= v * (1 + ERR), v
        assert counts.sum() == 2 and counts[0] >= 1 and counts[-1] >= 1
        assert np.all(np.diff(edges) > 0)


def test_values_above_the_top_are_counted_as_overflow() -> None:
    top = LogHistogram.TOP_NS
    h = LogHistogram()
    h.record(top - 1)
    assert h.overflow == 0
    h.record(top)
    h.record_many(np.array([5, top * 3, 2**62]))
    h.record_many(np.full(100, top + 1, dtype=np.uint64))
    assert h.overflow == 103
    assert (h.count, h.max, h.min) == (105, 2**62, 5)
    assert h.sum == (top - 1) + top + 5 + top * 3 + 2**62 + 100 * (top + 1), "sums are exact"
    edges, counts = h.buckets()
    assert edges[-1] == np.iinfo(np.int64).max, "the overflow bucket is unbounded"
    assert edges[-2] == top - 1 and counts[-2] == 1
    assert counts[-1] == h.overflow and counts.sum() == h.count
    assert h.percentile(100) == 2**62


def test_record_many_equals_one_record_per_value() -> None:
    top = LogHistogram.TOP_NS
    rng = np.random.default_rng(5)
    for n in (1, 2, 16, 17, 300):
        v = np.concatenate([_lognormal_ns(n, n), [0, 127, 128, top - 1, top, 2 * top]])
        rng.shuffle(v)
        many, one = LogHistogram(), LogHistogram()
        many.record_many(v.reshape(1, -1))
        for x in v:
            one.record(x)
        _assert_same(many, one)


def test_record_with_a_count_equals_repeated_records() -> None:
    a, b = LogHistogram(), LogHistogram()
    a.record(1234, count=5)
    for _ in range(5):
        b.record(1234)
    _assert_same(a, b)


def test_merge_equals_recording_everything_in_one() -> None:
    v, w = _lognormal_ns(1000, 6), _lognormal_ns(500, 7)
    a, b, both = LogHistogram(), LogHistogram(), LogHistogram()
    a.record_many(v)
    b.record_many(np.append(w, 2**45))
    both.record_many(np.concatenate([v, w, [2**45]]))
    a.merge(b)
    _assert_same(a, both)
    assert b.count == 501, "the merged-in histogram is left as it was"
    empty = LogHistogram()
    empty.merge(LogHistogram())
    assert (empty.count, empty.min, empty.max) == (0, 0, 0)


def test_reset_forgets_everything_and_keeps_the_memory() -> None:
    h = LogHistogram()
    nbytes = h.nbytes
    h.record_many(np.array([3, 2**50, 99]))
    h.reset()
    assert (h.count, h.sum, h.min, h.max, h.overflow) == (0, 0, 0, 0, 0)
    assert [a.size for a in h.buckets()] == [0, 0]
    assert h.nbytes == nbytes
    h.record(42)
    assert (h.min, h.max) == (42, 42)


def test_memory_is_fixed_however_many_shots_are_recorded() -> None:
    h = LogHistogram()
    assert h.nbytes == LogHistogram.NUM_BUCKETS * 8
    shots = 0
    for seed in range(1400):  # 200k shots' worth: one record_many per decoded batch
        batch = _lognormal_ns(int(seed % 7 * 50 + 1), seed)
        h.record_many(batch)
        h.record(int(batch[0]), count=len(batch))
        shots += len(batch)
    assert shots >= 200_000
    assert h.count == 2 * shots
    assert h.nbytes == LogHistogram.NUM_BUCKETS * 8
    edges, counts = h.buckets()
    assert edges.shape == counts.shape and edges.size <= LogHistogram.NUM_BUCKETS
    assert edges.dtype == counts.dtype == np.int64
    assert counts.sum() == h.count


def test_histogram_rejects_bad_input() -> None:
    h = LogHistogram()
    with pytest.raises(ValueError, match="records values >= 0; got -1"):
        h.record(-1)
    with pytest.raises(ValueError, match="needs count >= 1; got 0"):
        h.record(5, count=0)
    with pytest.raises(TypeError):
        h.record(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes integers; got dtype float64"):
        h.record_many(np.array([1.0]))
    for n in (3, 100):
        with pytest.raises(ValueError, match="records values >= 0; got -2"):
            h.record_many(np.append(np.arange(n), -2))
    assert h.count == 0, "a rejected batch records nothing"
    with pytest.raises(ValueError, match="empty LogHistogram: check count first"):
        h.percentile(50)
    h.record(1)
    for q in (-1, 100.5):
        with pytest.raises(ValueError, match=r"q must be in 0\.\.100"):
            h.percentile(q)
    h.record_many(np.zeros(0, dtype=np.int64))
    assert h.count == 1


def _assert_same(a: LogHistogram, b: LogHistogram) -> None:
    assert (a.count, a.sum, a.min, a.max, a.overflow) == (b.count, b.sum, b.min, b.max, b.overflow)
    for x, y in zip(a.buckets(), b.buckets(), strict=True):
        np.testing.assert_array_equal(x, y)

from __future__ import annotations

import math

import numpy as np
import pytest

from qhil.host import Percentiles, wilson_interval


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

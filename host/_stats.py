"""Summary statistics shared by reports and benchmarks: percentiles and Wilson intervals."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["Percentiles", "wilson_interval"]


@dataclasses.dataclass(frozen=True)
class Percentiles:
    """Order statistics of a sample (in the sample's unit); all zero when it is empty.

    >>> p = Percentiles.of(np.arange(1, 1001))
    >>> p.n, p.p50, p.p99, p.max
    (1000, 500.5, 990.01, 1000.0)
    """

    n: int
    mean: float
    p50: float
    p99: float
    p999: float
    max: float

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0; got {self.n}")
        if self.n and not self.p50 <= self.p99 <= self.p999 <= self.max:
            raise ValueError(f"percentiles must be ordered: {self}")

    @classmethod
    def of(cls, values: np.ndarray) -> Percentiles:
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p99, p999 = (float(x) for x in np.percentile(v, [50, 99, 99.9]))
        return cls(int(v.size), float(v.mean()), p50, p99, p999, float(v.max()))

    def scaled(self, factor: float) -> Percentiles:
        """The same statistics in another unit (e.g. ns -> us with 1e-3)."""
        return Percentiles(
            self.n,
            self.mean * factor,
            self.p50 * factor,
            self.p99 * factor,
            self.p999 * factor,
            self.max * factor,
        )


def wilson_interval(errors: int, shots: int, *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial rate.

    >>> lo, hi = wilson_interval(10, 1000)
    >>> round(lo, 5), round(hi, 5)
    (0.00544, 0.01831)
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    """
    if not 0 <= errors <= shots:
        raise ValueError(f"need 0 <= errors <= shots; got errors={errors}, shots={shots}")
    if shots == 0:
        return 0.0, 1.0
    p = errors / shots
    denom = 1 + z * z / shots
    centre = (p + z * z / (2 * shots)) / denom
    half = z * math.sqrt(p * (1 - p) / shots + z * z / (4 * shots * shots)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)

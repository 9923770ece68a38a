"""Summary statistics shared by reports and benchmarks: percentiles, Wilson intervals and a
fixed-memory latency histogram for the decoder's per-shot timings."""

from __future__ import annotations

import dataclasses
import math
import operator
from typing import ClassVar

import numpy as np

__all__ = ["LogHistogram", "Percentiles", "wilson_interval"]


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

    @classmethod
    def of_histogram(cls, h: LogHistogram) -> Percentiles:
        """The statistics of what ``h`` recorded: ``n``, ``mean`` and ``max`` exact, the
        percentiles as ``h.percentile`` gives them (at most ``LogHistogram.RELATIVE_ERROR``
        above the true order statistic).

        >>> h = LogHistogram()
        >>> h.record_many(np.arange(1, 1001))
        >>> Percentiles.of_histogram(h)
        Percentiles(n=1000, mean=500.5, p50=503.0, p99=991.0, p999=999.0, max=1000.0)
        """
        if h.count == 0:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        p50, p99, p999 = (float(h.percentile(q)) for q in (50, 99, 99.9))
        return cls(h.count, h.sum / h.count, p50, p99, p999, float(h.max))

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


_SUB_BITS = 6  # 64 linear sub-buckets per power of two: at most 1/64 relative bucket width
_TOP_BITS = 40  # 2**40 ns is about 18 minutes
_NUM_BUCKETS = ((_TOP_BITS + 1 - _SUB_BITS) << _SUB_BITS) + 1  # the last: overflow
_SMALL_BATCH = 16  # up to this many values, a Python loop beats numpy's per-call overhead
_INT64_MAX = np.iinfo(np.int64).max


def _upper_edges() -> np.ndarray:
    """Largest value each bucket holds; the last, the overflow bucket, is unbounded."""
    i = np.arange(_NUM_BUCKETS, dtype=np.int64)
    shift = np.maximum((i >> _SUB_BITS) - 1, 0)
    edges = ((i - (shift << _SUB_BITS) + 1) << shift) - 1
    edges[-1] = _INT64_MAX
    edges.setflags(write=False)
    return edges


_UPPER = _upper_edges()


def _index(v: int) -> int:
    """The bucket of ``0 <= v <= 2**_TOP_BITS``: exact below 2**(_SUB_BITS + 1), log-linear
    above, and the overflow bucket for ``2**_TOP_BITS`` itself."""
    shift = v.bit_length() - 1 - _SUB_BITS
    return (shift << _SUB_BITS) + (v >> shift) if shift > 0 else v


def _indices(v: np.ndarray) -> np.ndarray:
    """``_index`` of each value of an int64 array, all in ``0 .. 2**_TOP_BITS``."""
    bit_length = np.frexp(v)[1]  # exact: every value is below 2**53
    shift = np.maximum(bit_length - (1 + _SUB_BITS), 0)
    return (shift << _SUB_BITS) + (v >> shift)


def _negative(value: int) -> ValueError:
    return ValueError(
        f"LogHistogram records values >= 0; got {value} (a time difference taken the wrong "
        "way round?)"
    )


class LogHistogram:
    """A fixed-memory recorder of non-negative integer samples (latencies in ns).

    HDR-style log-linear buckets: values below 2**7 each have their own bucket,
    and every power-of-two range above is split into 64 equal sub-buckets, up
    to ``TOP_NS`` = 2**40 ns (about 18 minutes): ``NUM_BUCKETS`` int64 counts,
    allocated once, whatever the number of samples. A value at or above
    ``TOP_NS`` is counted in a last, unbounded bucket and in ``overflow``, so
    nothing is dropped silently. ``count``, ``sum``, ``min`` and ``max`` are
    exact (``min`` and ``max`` are 0 while it is empty).

    Not thread-safe: one thread records. Another may read (``buckets``,
    ``percentile``, the properties) without a lock; it then sees each value
    whole but possibly a batch ahead of or behind the others.

    >>> h = LogHistogram()
    >>> h.record(1_000)
    >>> h.record_many(np.array([2_000, 3_000, 1_000_000], dtype=np.int64))
    >>> h.count, h.sum, h.min, h.max, h.overflow
    (4, 1006000, 1000, 1000000, 0)
    >>> h.percentile(50)  # 2000 lies in the bucket 2000..2015 (16 ns wide)
    2015
    """

    SUB_BITS: ClassVar[int] = _SUB_BITS
    TOP_NS: ClassVar[int] = 1 << _TOP_BITS
    NUM_BUCKETS: ClassVar[int] = _NUM_BUCKETS
    RELATIVE_ERROR: ClassVar[float] = 2.0**-_SUB_BITS

    def __init__(self) -> None:
        self._counts = np.zeros(_NUM_BUCKETS, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget every sample; the memory is kept and reused."""
        self._counts[:] = 0
        self._count = self._sum = self._overflow = self._max = 0
        self._min = _INT64_MAX

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> int:
        return self._sum

    @property
    def min(self) -> int:
        return self._min if self._count else 0

    @property
    def max(self) -> int:
        return self._max

    @property
    def overflow(self) -> int:
        """Samples at or above ``TOP_NS``: in the overflow bucket; ``sum`` and ``max`` exact."""
        return self._overflow

    @property
    def nbytes(self) -> int:
        """Memory held by its counts: fixed when it is built (``NUM_BUCKETS * 8``)."""
        return self._counts.nbytes

    def record(self, value: int, *, count: int = 1) -> None:
        """Record ``value`` (any integer type, >= 0) ``count`` times.

        >>> h = LogHistogram()
        >>> h.record(5, count=3)
        >>> h.count, h.sum, h.buckets()
        (3, 15, (array([5]), array([3])))
        """
        v = operator.index(value)
        if v < 0:
            raise _negative(v)
        if count < 1:
            raise ValueError(f"LogHistogram.record needs count >= 1; got {count}")
        self._count += count
        self._sum += v * count
        if v < self._min:  # not min(): this is the per-shot cost
            self._min = v
        if v > self._max:
            self._max = v
        if v >= self.TOP_NS:
            self._overflow += count
            v = self.TOP_NS
        self._counts[_index(v)] += count

    def record_many(self, values: np.ndarray) -> None:
        """Record every value of ``values``: any integer dtype, any shape, all >= 0 (else it
        raises and records none of them).

        The decoder's hot path: a Python loop for a few values, vectorised above that.

        >>> h = LogHistogram()
        >>> h.record_many(np.array([[0, 200], [2**41, 7]]))
        >>> h.count, h.overflow, h.max == 2**41
        (4, 1, True)
        """
        v = np.asarray(values)
        if v.dtype.kind not in "iu":
            raise TypeError(f"LogHistogram.record_many takes integers; got dtype {v.dtype}")
        if v.size == 0:
            return
        if v.size <= _SMALL_BATCH:
            xs = v.ravel().tolist()
            if min(xs) < 0:  # before any is recorded
                raise _negative(min(xs))
            for x in xs:
                self.record(x)
            return
        lo, hi = int(v.min()), int(v.max())
        if lo < 0:
            raise _negative(lo)
        # numpy's sum is int64: exact unless the batch could reach 2**63
        total = int(v.sum()) if hi * v.size < 1 << 63 else sum(v.ravel().tolist())
        if hi >= self.TOP_NS:
            self._overflow += int(np.count_nonzero(v >= self.TOP_NS))
            v = np.minimum(v, self.TOP_NS)  # _indices sends TOP_NS to the overflow bucket
        v = v.ravel().astype(np.int64, copy=False)
        np.add.at(self._counts, _indices(v), 1)
        self._count += v.size
        self._sum += total
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)

    def merge(self, other: LogHistogram) -> None:
        """Add every sample ``other`` recorded (``other`` is left as it was).

        >>> a, b = LogHistogram(), LogHistogram()
        >>> a.record(10); b.record(3); b.record(2**50)
        >>> a.merge(b)
        >>> a.count, a.min, a.max == 2**50, a.overflow
        (3, 3, True, 1)
        """
        self._counts += other._counts
        self._count += other._count
        self._sum += other._sum
        self._overflow += other._overflow
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def percentile(self, q: float) -> int:
        """The upper edge of the bucket holding the nearest-rank ``q``-th percentile, capped
        at ``max``.

        With ``x`` the sample of rank ``ceil(q * count / 100)`` (at least 1: the nearest-rank
        method, numpy's ``inverted_cdf``), the result ``r`` satisfies
        ``x <= r <= x * (1 + RELATIVE_ERROR)``, and ``r == x`` below 128; an ``x`` at or
        above ``TOP_NS`` gives ``max``. So it never under-reports a latency.

        >>> h = LogHistogram()
        >>> h.record_many(np.arange(1, 101))
        >>> h.percentile(0), h.percentile(50), h.percentile(99), h.percentile(100)
        (1, 50, 99, 100)
        """
        if not 0 <= q <= 100:
            raise ValueError(f"percentile q must be in 0..100; got {q}")
        if self._count == 0:
            raise ValueError("percentile of an empty LogHistogram: check count first")
        rank = max(1, math.ceil(q * self._count / 100))  # not q / 100 * n: 999.0000000000001
        idx = int(np.searchsorted(np.cumsum(self._counts), rank))
        return min(int(_UPPER[idx]), self._max)

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """``(upper_edges, counts)``, both fresh ``int64[k]``, for the buckets from the lowest
        to the highest non-empty one (k == 0 while empty).

        ``upper_edges`` ascend; bucket ``i`` holds the samples ``<= upper_edges[i]`` and above
        the previous bucket's edge, so a Prometheus exporter gets its cumulative ``le``
        buckets as ``np.cumsum(counts)``. The overflow bucket's edge is ``2**63 - 1``.

        >>> h = LogHistogram()
        >>> h.record_many(np.array([130, 130, 135], dtype=np.int64))
        >>> h.buckets()  # above 128 the buckets are 2 wide
        (array([131, 133, 135]), array([2, 0, 1]))
        """
        nz = np.flatnonzero(self._counts)
        if nz.size == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        return _UPPER[lo:hi].copy(), self._counts[lo:hi].copy()

"""Numba CPU backend of the pre-decoder: bit-identical to ``reference_logits``.

Algorithm
---------
Activations live channel-last and *compacted*: for every voxel of a zero-padded
grid ``cnt[b, t, y, x]`` counts its nonzero channels, ``idx[b, t, y, x, :cnt]``
names them and ``val[b, t, y, x, :cnt]`` holds their values. The padding ring
(``k // 2`` wide, for the layer that reads the grid) has ``cnt == 0``, so a
same-padded convolution needs no bounds checks, and zeros (ReLU outputs, the
padding, quiet detectors) cost nothing.

* Layer 0 reads the 0/1 input through a table: each voxel's four input bits
  form a code ``0..15`` and ``tab[tap, code, :]`` holds
  ``2**act_bits * sum(W0[:, c, tap] for the set bits c)``. An output voxel is its
  bias plus ``k**3`` table rows: no multiplications, whatever the density of
  the detection events and the static masks. (Inputs that are not 0/1 go
  through the general kernel below instead.)
* Every other layer is an output-stationary gather: for each output voxel,
  for each tap, for the input voxel's nonzero channels ``c`` (four at a time),
  ``acc[:] += a_c * W[tap, c, :]``, the output channel innermost and
  contiguous, so it vectorizes.
* The epilogue applies ReLU and ``>> weight_bits`` and compacts the result
  for the next layer (or, for the last layer, writes the int64 logits in the
  ``[B, 4, T, d, d]`` layout).
* Work is split with ``numba.prange`` over (shot, round) rows; the batch is
  processed in chunks so the working set stays in cache.

Why the result is exact
-----------------------
Every layer computes ``acc = bias + sum(a * w)`` over integer ``a`` and ``w``.
Before each layer the host computes, in Python integers, the bound
``M = max_o(|b_o| + max(A, 1) * sum_{c, tap} |W[o, c, tap]|)``, where ``A`` is
the largest activation actually present in the chunk (``2**act_bits`` for the
input). Every product, every partial sum in any order and the final sum are
integers of magnitude at most ``M``. The layer then runs in

* float32 if ``M < 2**24``, float64 if ``M < 2**53``: each such integer is
  representable, so each multiplication and addition is exact (IEEE rounding
  of an exactly representable result is the identity), whatever the order;
* int64 otherwise: two's-complement wrap-around makes addition and
  multiplication associative and commutative modulo ``2**64``, which is
  exactly what the reference's int64 NumPy arithmetic computes.

Converting the (integer-valued) accumulator to int64 before ReLU and the
arithmetic right shift reproduces ``np.maximum(acc, 0) >> weight_bits``.
Skipping zero activations only drops terms equal to zero. Hence the logits
equal ``reference_logits`` bit for bit; the tests check this for all three
arithmetic paths.
"""

from __future__ import annotations

import weakref

import numba
import numpy as np
from numba import prange

from qhil.bridge import njit_cached

from ._model import QuantizedModel

__all__ = ["numba_binarized", "numba_logits"]

_F32_LIMIT = 1 << 24
_F64_LIMIT = 1 << 53
_CHUNK_ELEMS = 1 << 21  # per-chunk activation entries (val + idx ~ 16 MiB at most)
_DTYPES = {"float32": np.float32, "float64": np.float64, "int64": np.int64}

# One set of flags for every kernel: parallel over (shot, round) rows, exact arithmetic.
_jit = njit_cached(parallel=True, fastmath=False, nogil=True)


# --------------------------------------------------------------------------- kernels


@njit_cached(inline="always")
def _epilogue(acc, b, t, y, x, wbits, last, logits, o_cnt, o_idx, o_val, po):
    """ReLU, rescale and compact one output voxel (or store its logits)."""
    c_out = acc.shape[0]
    if last:
        for co in range(c_out):
            logits[b, co, t, y, x] = np.int64(acc[co])
        return 0
    ov = o_val[b, t + po, y + po, x + po]
    oi = o_idx[b, t + po, y + po, x + po]
    n = 0
    vmax = 0
    for co in range(c_out):  # branch-free compaction: write always, advance if nonzero
        v = max(np.int64(acc[co]), 0) >> wbits
        ov[n] = v
        oi[n] = co
        n += v != 0
        vmax = max(vmax, v)
    o_cnt[b, t + po, y + po, x + po] = n
    return vmax


@_jit
def _layer_table(code, tab, bias, k, wbits, last, logits, o_cnt, o_idx, o_val, po, vmax):
    """Layer 0 on a 0/1 input: sum of k**3 table rows indexed by 4-bit codes.

    code: uint8[B, T+k-1, H+k-1, W+k-1]; tab: D[k**3 * 16, c_out]; bias: D[c_out].
    """
    n_b, tp, hp, wp = code.shape
    n_t, n_h, n_w = tp - (k - 1), hp - (k - 1), wp - (k - 1)
    c_out = tab.shape[1]
    for job in prange(n_b * n_t):
        b = job // n_t
        t = job - b * n_t
        acc = np.empty(c_out, dtype=tab.dtype)
        m = 0
        for y in range(n_h):
            for x in range(n_w):
                acc[:] = bias
                tap = 0
                for dt in range(k):
                    for dy in range(k):
                        for dx in range(k):
                            # row code 0 is zeros: no data-dependent branch
                            tr = tab[tap * 16 + code[b, t + dt, y + dy, x + dx]]
                            for co in range(c_out):
                                acc[co] += tr[co]
                            tap += 1
                v = _epilogue(acc, b, t, y, x, wbits, last, logits, o_cnt, o_idx, o_val, po)
                if v > m:
                    m = v
        vmax[job] = m


@_jit
def _layer_sparse(cnt, idx, val, w, bias, k, wbits, last, logits, o_cnt, o_idx, o_val, po, vmax):
    """General layer on compacted activations: per-row scatter into an accumulator plane.

    cnt: int32[B, T+k-1, H+k-1, W+k-1]; idx: int32[..., c_in]; val: D[..., c_in];
    w: D[k * c_in * k * k * c_out], laid out [dt, c, jy, jx, co] with jy = k-1-dy and
    jx = k-1-dx, so that one input value's contributions to the k outputs of one
    plane row, all output channels, are one contiguous run of k * c_out.
    """
    n_b, tp, hp, wp = cnt.shape
    p = k // 2
    n_t, n_h, n_w = tp - 2 * p, hp - 2 * p, wp - 2 * p
    c_in = idx.shape[4]
    c_out = bias.shape[0]
    seg = k * c_out  # one plane row segment: k output voxels x c_out channels
    row_w = (n_w + 2 * p) * c_out
    wc = k * seg  # weights per (dt, c)
    for job in prange(n_b * n_t):
        b = job // n_t
        t = job - b * n_t
        # plane[Y, X, co]: output (y, x) sits at (y + p, x + p); the ring absorbs the
        # contributions that fall outside the grid.
        plane = np.zeros((n_h + 2 * p) * row_w, dtype=w.dtype)
        for dt in range(k):
            ti = t + dt
            wdt = dt * c_in * wc
            for yu in range(n_h):
                for xu in range(n_w):
                    yi, xi = yu + p, xu + p
                    n = cnt[b, ti, yi, xi]
                    o0 = yu * row_w + xu * c_out
                    j = 0
                    while j + 4 <= n:  # four input channels at a time: fewer plane passes
                        r0 = wdt + idx[b, ti, yi, xi, j] * wc
                        r1 = wdt + idx[b, ti, yi, xi, j + 1] * wc
                        r2 = wdt + idx[b, ti, yi, xi, j + 2] * wc
                        r3 = wdt + idx[b, ti, yi, xi, j + 3] * wc
                        a0 = val[b, ti, yi, xi, j]
                        a1 = val[b, ti, yi, xi, j + 1]
                        a2 = val[b, ti, yi, xi, j + 2]
                        a3 = val[b, ti, yi, xi, j + 3]
                        for jy in range(k):
                            o = o0 + jy * row_w
                            q = jy * seg
                            # 1-D views: unit stride, no index wrap-around checks -> SIMD
                            pl = plane[o : o + seg]
                            w0 = w[r0 + q : r0 + q + seg]
                            w1 = w[r1 + q : r1 + q + seg]
                            w2 = w[r2 + q : r2 + q + seg]
                            w3 = w[r3 + q : r3 + q + seg]
                            for e in range(seg):
                                pl[e] += (a0 * w0[e] + a1 * w1[e] + a2 * w2[e]) + a3 * w3[e]
                        j += 4
                    while j < n:
                        r0 = wdt + idx[b, ti, yi, xi, j] * wc
                        a0 = val[b, ti, yi, xi, j]
                        for jy in range(k):
                            o = o0 + jy * row_w
                            q = jy * seg
                            pl = plane[o : o + seg]
                            w0 = w[r0 + q : r0 + q + seg]
                            for e in range(seg):
                                pl[e] += a0 * w0[e]
                        j += 1
        m = 0
        acc = np.empty(c_out, dtype=w.dtype)
        for y in range(n_h):
            for x in range(n_w):
                o = (y + p) * row_w + (x + p) * c_out
                pv = plane[o : o + c_out]
                for co in range(c_out):
                    acc[co] = pv[co] + bias[co]
                v = _epilogue(acc, b, t, y, x, wbits, last, logits, o_cnt, o_idx, o_val, po)
                if v > m:
                    m = v
        vmax[job] = m


@_jit
def _encode(x, p, code):
    """4-bit codes of a 0/1 input into a zero-padded grid; False if x is not 0/1."""
    n_b, _, n_t, n_h, n_w = x.shape
    ok = np.ones(n_b, dtype=np.bool_)
    for b in prange(n_b):
        for t in range(n_t):
            for y in range(n_h):
                for xx in range(n_w):
                    c0 = x[b, 0, t, y, xx]
                    c1 = x[b, 1, t, y, xx]
                    c2 = x[b, 2, t, y, xx]
                    c3 = x[b, 3, t, y, xx]
                    if (c0 | c1 | c2 | c3) > 1:
                        ok[b] = False
                    code[b, t + p, y + p, xx + p] = c0 | (c1 << 1) | (c2 << 2) | (c3 << 3)
    return ok.all()


@_jit
def _compact_input(x, p, scale, cnt, idx, val):
    """Compacted ``x << act_bits`` (general inputs), zero-padded by p."""
    n_b, n_c, n_t, n_h, n_w = x.shape
    for b in prange(n_b):
        for t in range(n_t):
            for y in range(n_h):
                for xx in range(n_w):
                    n = 0
                    for c in range(n_c):
                        v = x[b, c, t, y, xx]
                        if v != 0:
                            idx[b, t + p, y + p, xx + p, n] = c
                            val[b, t + p, y + p, xx + p, n] = v * scale
                            n += 1
                    cnt[b, t + p, y + p, xx + p] = n


# --------------------------------------------------------------------------- host side


class _Prepared:
    """Per-model constants: rearranged weights, per-dtype copies, bounds."""

    def __init__(self, model: QuantizedModel) -> None:
        self.wbits = int(model.weight_bits)
        self.act_bits = int(model.act_bits)
        self.ks = [int(w.shape[2]) for w in model.weights]
        self.c_out = [int(w.shape[0]) for w in model.weights]
        self.c_in = [int(w.shape[1]) for w in model.weights]
        self.w64 = []  # int64, flat [dt, c, k - 1 - dy, k - 1 - dx, co]
        self.b64 = []
        self.absum = []  # Python ints: per output channel, |b| and sum |W|
        for w, b in zip(model.weights, model.biases, strict=True):
            c_out = w.shape[0]
            flipped = np.asarray(w, dtype=np.int64)[:, :, :, ::-1, ::-1]
            self.w64.append(np.ascontiguousarray(flipped.transpose(2, 1, 3, 4, 0)).ravel())
            self.b64.append(np.ascontiguousarray(b, dtype=np.int64))
            s = [int(v) for v in np.abs(np.asarray(w, dtype=np.int64)).reshape(c_out, -1).sum(1)]
            bb = [abs(int(v)) for v in np.asarray(b, dtype=np.int64)]
            self.absum.append((bb, s))
        w0 = np.asarray(model.weights[0], dtype=np.int64)  # [c_out, 4, k, k, k]
        k0, c0 = self.ks[0], self.c_out[0]
        scaled = w0.transpose(2, 3, 4, 1, 0).reshape(k0**3, 4, c0) << self.act_bits
        tab = np.zeros((k0**3, 16, c0), dtype=np.int64)
        for code in range(16):
            for c in range(4):
                if code >> c & 1:
                    tab[:, code] += scaled[:, c]
        self.tab64 = tab.reshape(k0**3 * 16, c0)
        self._cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def bound(self, layer: int, amax: int) -> int:
        bb, s = self.absum[layer]
        a = max(int(amax), 1)
        return max(bi + a * si for bi, si in zip(bb, s, strict=True))

    def arrays(self, layer: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(weights, bias, layer-0 table) cast to dtype (exact: within the bound)."""
        key = (dtype, layer)
        if key not in self._cache:
            dt = _DTYPES[dtype]
            tab = self.tab64.astype(dt) if layer == 0 else self.tab64[:0]
            self._cache[key] = (self.w64[layer].astype(dt), self.b64[layer].astype(dt), tab)
        return self._cache[key]


_PREPARED: weakref.WeakKeyDictionary[QuantizedModel, _Prepared] = weakref.WeakKeyDictionary()


def _prepared(model: QuantizedModel) -> _Prepared:
    prep = _PREPARED.get(model)
    if prep is None:
        prep = _PREPARED[model] = _Prepared(model)
    return prep


def _pick_dtype(bound: int) -> str:
    if bound < _F32_LIMIT:
        return "float32"
    if bound < _F64_LIMIT:
        return "float64"
    return "int64"


def _run_chunk(x: np.ndarray, prep: _Prepared, logits: np.ndarray, force: str | None) -> None:
    n_b, _, n_t, n_h, n_w = x.shape
    n_layers = len(prep.ks)
    jobs = n_b * n_t
    vmax = np.zeros(jobs, dtype=np.int64)

    def grids(p: int, c: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = (n_b, n_t + 2 * p, n_h + 2 * p, n_w + 2 * p)
        return (
            np.zeros(shape, dtype=np.int32),
            np.empty((*shape, c), dtype=np.int32),
            np.empty((*shape, c), dtype=_DTYPES[dtype]),
        )

    def out_grids(layer: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        if layer == n_layers - 1:
            z4, z5 = (0, 0, 0, 0), (0, 0, 0, 0, 0)
            return np.zeros(z4, np.int32), np.zeros(z5, np.int32), np.zeros(z5, _DTYPES[dtype]), 0
        po = prep.ks[layer + 1] // 2
        return (*grids(po, prep.c_out[layer], dtype), po)

    k0 = prep.ks[0]
    p0 = k0 // 2
    code = np.zeros((n_b, n_t + 2 * p0, n_h + 2 * p0, n_w + 2 * p0), dtype=np.uint8)
    binary = _encode(x, p0, code)
    amax = 1 << prep.act_bits
    dtype = force or _pick_dtype(prep.bound(0, amax))
    w, bias, tab = prep.arrays(0, dtype)
    last = n_layers == 1
    o_cnt, o_idx, o_val, po = out_grids(0, dtype)
    if binary:
        _layer_table(code, tab, bias, k0, prep.wbits, last, logits, o_cnt, o_idx, o_val, po, vmax)
    else:
        amax = int(x.max()) << prep.act_bits
        dtype = force or _pick_dtype(prep.bound(0, amax))
        w, bias, _ = prep.arrays(0, dtype)
        cnt, idx, val = grids(p0, 4, dtype)
        _compact_input(x, p0, val.dtype.type(1 << prep.act_bits), cnt, idx, val)
        o_cnt, o_idx, o_val, po = out_grids(0, dtype)
        _layer_sparse(
            cnt, idx, val, w, bias, k0, prep.wbits, last, logits, o_cnt, o_idx, o_val, po, vmax
        )
    for layer in range(1, n_layers):
        cnt, idx, val = o_cnt, o_idx, o_val
        amax = int(vmax.max())
        dtype = force or _pick_dtype(prep.bound(layer, amax))
        w, bias, _ = prep.arrays(layer, dtype)
        if val.dtype != w.dtype:
            val = val.astype(w.dtype)  # exact: values <= amax <= bound
        last = layer == n_layers - 1
        o_cnt, o_idx, o_val, po = out_grids(layer, dtype)
        _layer_sparse(
            cnt, idx, val, w, bias, prep.ks[layer], prep.wbits, last, logits,
            o_cnt, o_idx, o_val, po, vmax,
        )  # fmt: skip


def numba_logits(
    x: np.ndarray,
    model: QuantizedModel,
    *,
    threads: int | None = None,
    _force: str | None = None,
) -> np.ndarray:
    """int64[B, 4, T, d, d] logits of uint8[B, 4, T, d, d] input; == ``reference_logits``.

    ``threads`` caps the Numba threads for this call (default: all of them); on a
    busy host, ``threads=1`` avoids waiting at the parallel regions' barriers.
    ``_force`` (tests only) pins the arithmetic to "float32", "float64" or "int64"
    instead of choosing it from the exactness bound; "float*" is exact only
    within the bound.
    """
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if x.ndim != 5 or x.shape[1] != 4:
        raise ValueError(f"x must be uint8[B, 4, T, d, d]; got shape {x.shape}")
    if _force is not None and _force not in _DTYPES:
        raise ValueError(f"_force must be one of {sorted(_DTYPES)}")
    prep = _prepared(model)
    n_b, _, n_t, n_h, n_w = x.shape
    logits = np.empty((n_b, 4, n_t, n_h, n_w), dtype=np.int64)
    if logits.size == 0:
        return logits
    per_shot = n_t * n_h * n_w * max(prep.c_out) * 2
    chunk = max(1, _CHUNK_ELEMS // per_shot)
    before = numba.get_num_threads()
    if threads is not None:
        cap = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(max(1, min(int(threads), cap)))
    try:
        for s in range(0, n_b, chunk):
            _run_chunk(x[s : s + chunk], prep, logits[s : s + chunk], _force)
    finally:
        numba.set_num_threads(before)
    return logits


def numba_binarized(
    x: np.ndarray, model: QuantizedModel, *, threads: int | None = None
) -> np.ndarray:
    """bool[B, 4, T, d, d]: ``numba_logits(x, model) > 0``."""
    return numba_logits(x, model, threads=threads) > 0

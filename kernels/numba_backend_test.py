from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from qhil.kernels._model import QuantizedModel, reference_logits
from qhil.kernels._numba_backend import _prepared, numba_binarized, numba_logits


def _input(rng: np.random.Generator, b: int, t: int, d: int, kind: str) -> np.ndarray:
    x = np.zeros((b, 4, t, d, d), dtype=np.uint8)
    if kind == "sparse":  # detection events ~5 %, static masks shared by the batch
        x[:, :2] = rng.random((b, 2, t, d, d)) < 0.05
        x[:, 2:] = rng.random((1, 2, t, d, d)) < 0.5
    elif kind == "dense":
        x[:] = rng.random(x.shape) < 0.5
    return x


def _check(x: np.ndarray, m: QuantizedModel, **kw: Any) -> None:
    got = numba_logits(x, m, **kw)
    assert got.dtype == np.int64 and got.shape == x.shape
    np.testing.assert_array_equal(got, reference_logits(x, m))


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("batch", [1, 17])
@pytest.mark.parametrize("kind", ["sparse", "dense", "zero"])
def test_matches_reference(kernel: int, batch: int, kind: str) -> None:
    rng = np.random.default_rng(kernel * 100 + batch)
    m = QuantizedModel.random(widths=(4, 8, 6, 4), kernel=kernel, seed=kernel + batch)
    for t, d in [(2, 2), (4, 3), (6, 5), (3, 9)]:
        _check(_input(rng, batch, t, d, kind), m)


@pytest.mark.parametrize("widths", [(4, 32, 32, 32, 4), (4, 16, 16, 16, 4), (4, 4)])
def test_typical_widths(widths: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    m = QuantizedModel.random(widths=widths, kernel=3, seed=3)
    for d in (5, 7):
        _check(_input(rng, 3, d + 1, d, "sparse"), m)


@pytest.mark.parametrize("force", ["float64", "int64"])
def test_every_arithmetic_path(force: str) -> None:
    rng = np.random.default_rng(11)
    m = QuantizedModel.random(widths=(4, 8, 8, 4), kernel=3, seed=5)
    for kind in ("sparse", "dense"):
        _check(_input(rng, 5, 4, 5, kind), m, _force=force)


def test_float32_path_is_chosen_when_exact() -> None:
    m = QuantizedModel.random(widths=(4, 8, 4), kernel=3, seed=2)
    assert _prepared(m).bound(0, 1 << m.act_bits) < 1 << 24
    _check(_input(np.random.default_rng(1), 4, 4, 4, "dense"), m, _force="float32")


def test_huge_weights_take_the_int64_path_and_wrap_like_numpy() -> None:
    rng = np.random.default_rng(3)
    shapes = [(8, 4), (8, 8), (4, 8)]
    ws = tuple(rng.integers(-(2**31), 2**31, (o, i, 3, 3, 3)).astype(np.int32) for o, i in shapes)
    bs = tuple(rng.integers(-(2**62), 2**62, o).astype(np.int64) for o, _ in shapes)
    m = QuantizedModel(ws, bs, weight_bits=0, act_bits=20)
    assert _prepared(m).bound(0, 1 << 20) >= 1 << 53
    _check(_input(rng, 3, 4, 4, "dense"), m)


def test_mixed_kernels_and_non_binary_input() -> None:
    rng = np.random.default_rng(4)
    a, b, c = (QuantizedModel.random(widths=(4, 6, 5, 4), kernel=k, seed=k) for k in (1, 3, 5))
    m = QuantizedModel((a.weights[0], b.weights[1], c.weights[2]), a.biases, 8, 6)
    x = _input(rng, 2, 5, 6, "sparse")
    _check(x, m)
    _check(x * rng.integers(0, 4, x.shape).astype(np.uint8), m)  # 0..3: general path


def test_binarized_and_errors() -> None:
    m = QuantizedModel.random(widths=(4, 8, 4), kernel=3, seed=9)
    x = _input(np.random.default_rng(5), 2, 3, 3, "sparse")
    np.testing.assert_array_equal(numba_binarized(x, m), reference_logits(x, m) > 0)
    np.testing.assert_array_equal(numba_logits(x, m, threads=1), reference_logits(x, m))
    assert numba_logits(x[:0], m).shape == (0, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="must be uint8"):
        numba_logits(x[:, :3], m)


@settings(max_examples=50, deadline=None)
@given(
    widths=hst.lists(hst.integers(1, 6), min_size=0, max_size=2),
    kernel=hst.sampled_from([1, 3]),
    shape=hst.tuples(hst.integers(1, 3), hst.integers(1, 5), hst.integers(1, 5)),
    bits=hst.tuples(hst.integers(0, 10), hst.integers(0, 8)),
    density=hst.floats(0.0, 1.0),
    seed=hst.integers(0, 2**32 - 1),
)
def test_hypothesis(
    widths: list[int],
    kernel: int,
    shape: tuple[int, int, int],
    bits: tuple[int, int],
    density: float,
    seed: int,
) -> None:
    m = QuantizedModel.random(
        widths=(4, *widths, 4), kernel=kernel, seed=seed, weight_bits=bits[0], act_bits=bits[1]
    )
    b, t, d = shape
    x = (np.random.default_rng(seed).random((b, 4, t, d, d)) < density).astype(np.uint8)
    _check(x, m)

"""The pre-decoder network as shipped: a 3D CNN in exact integer arithmetic.

The network is trained in floating point (``qhil train``, PyTorch), then
quantized: weights to ``round(w * 2**weight_bits)``, biases to the
accumulator's scale. Inference is integer-only:

    a_0 = x * 2**act_bits                                  (x is the 0/1 input)
    acc_i = bias_i + conv3d_same(a_i, W_i)                 (int64 accumulators)
    a_(i+1) = max(acc_i, 0) >> weight_bits                 (ReLU, then rescale; floor)
    logits = acc_last;  output = logits > 0

Integer arithmetic is associative, so every backend (NumPy reference, Numba
CPU, CUDA) and the PyTorch check compute bit-identical logits, whatever order
they sum in. Zero padding keeps the output the input's size, and the same
weights serve any distance and any number of rounds.

A model file is an ``.npz`` with ``weight_bits``, ``act_bits``, ``n_layers``,
``w{i}`` (int32[c_out, c_in, k, k, k], k odd) and ``b{i}`` (int64[c_out]), plus
a JSON ``meta`` string (architecture and training record).

>>> m = QuantizedModel.random(widths=(4, 8, 4), kernel=3, seed=1)
>>> m.parameter_count, m.receptive_field
(1740, 5)
>>> x = np.zeros((1, 4, 3, 3, 3), dtype=np.uint8)
>>> reference_logits(x, m).shape
(1, 4, 3, 3, 3)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["QuantizedModel", "reference_logits"]


@dataclasses.dataclass(frozen=True, eq=False)
class QuantizedModel:
    """Integer weights of the CNN.

    Attributes:
        weights: per layer int32[c_out, c_in, k, k, k], C-contiguous.
        biases: per layer int64[c_out], at the accumulator scale
            2**(weight_bits + act_bits).
        weight_bits: weights are real weights times 2**weight_bits.
        act_bits: activations are real activations times 2**act_bits.
        meta: architecture and training record (JSON-serializable).
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    weight_bits: int
    act_bits: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights or len(self.weights) != len(self.biases):
            raise ValueError("need one bias vector per weight tensor, and at least one layer")
        c_in = 4
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            if w.ndim != 5 or w.shape[1] != c_in or w.shape[2] % 2 == 0:
                raise ValueError(
                    f"layer {i}: weight shape {w.shape} must be (c_out, {c_in}, k, k, k), k odd"
                )
            if len(set(w.shape[2:])) != 1:
                raise ValueError(f"layer {i}: kernel must be cubic; got {w.shape[2:]}")
            if b.shape != (w.shape[0],):
                raise ValueError(f"layer {i}: bias shape {b.shape} != ({w.shape[0]},)")
            c_in = w.shape[0]
        if c_in != 4:
            raise ValueError(f"the last layer must have 4 outputs; got {c_in}")
        if not 0 <= self.weight_bits <= 20 or not 0 <= self.act_bits <= 20:
            raise ValueError("weight_bits and act_bits must be in 0..20")

    @property
    def parameter_count(self) -> int:
        return int(sum(w.size + b.size for w, b in zip(self.weights, self.biases, strict=True)))

    @property
    def receptive_field(self) -> int:
        """Extent, in cells and in rounds, of the input one output depends on."""
        return 1 + sum(w.shape[2] - 1 for w in self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        return (4, *(w.shape[0] for w in self.weights))

    @classmethod
    def random(cls, *, widths: tuple[int, ...], kernel: int, seed: int,
               weight_bits: int = 8, act_bits: int = 6) -> QuantizedModel:  # fmt: skip
        """Random integer weights, for tests of the inference backends."""
        rng = np.random.default_rng(seed)
        ws, bs = [], []
        for c_in, c_out in itertools.pairwise(widths):
            scale = 2**weight_bits / np.sqrt(c_in * kernel**3)
            shape = (c_out, c_in, kernel, kernel, kernel)
            ws.append(np.round(rng.normal(0, scale, shape)).astype(np.int32))
            bs.append(
                np.round(rng.normal(0, 2 ** (weight_bits + act_bits) / 4, c_out)).astype(np.int64)
            )
        return cls(tuple(ws), tuple(bs), weight_bits, act_bits)

    def save(self, path: str | Path) -> None:
        arrays: dict[str, Any] = {
            "weight_bits": np.int64(self.weight_bits),
            "act_bits": np.int64(self.act_bits),
            "n_layers": np.int64(len(self.weights)),
            "meta": np.array(json.dumps(self.meta)),
        }
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> QuantizedModel:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"model file {str(p)!r} does not exist")
        with np.load(p, allow_pickle=False) as f:
            n = int(f["n_layers"])
            return cls(
                weights=tuple(np.ascontiguousarray(f[f"w{i}"], dtype=np.int32) for i in range(n)),
                biases=tuple(np.ascontiguousarray(f[f"b{i}"], dtype=np.int64) for i in range(n)),
                weight_bits=int(f["weight_bits"]),
                act_bits=int(f["act_bits"]),
                meta=json.loads(str(f["meta"])),
            )


def _conv3d_same(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """int64[B, c_out, T, d, d] = sum over taps of shifted inputs times weights."""
    b_n, c_in, t_n, h, wd = a.shape
    k = w.shape[2]
    p = k // 2
    padded = np.zeros((b_n, c_in, t_n + 2 * p, h + 2 * p, wd + 2 * p), dtype=np.int64)
    padded[:, :, p : p + t_n, p : p + h, p : p + wd] = a
    out = np.zeros((b_n, w.shape[0], t_n, h, wd), dtype=np.int64)
    w64 = w.astype(np.int64)
    for dt in range(k):
        for dy in range(k):
            for dx in range(k):
                window = padded[:, :, dt : dt + t_n, dy : dy + h, dx : dx + wd]
                out += np.einsum("oc,bcthw->bothw", w64[:, :, dt, dy, dx], window)
    return out


def reference_logits(x: np.ndarray, model: QuantizedModel) -> np.ndarray:
    """The reference forward pass.

    Args:
        x: uint8[B, 4, T, d, d], 0/1 network input.

    Returns:
        int64[B, 4, T, d, d] logits; the output is ``logits > 0``.
    """
    a = x.astype(np.int64) << model.act_bits
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        acc = _conv3d_same(a, w) + b[None, :, None, None, None]
        if i == last:
            return acc
        a = np.maximum(acc, 0) >> model.weight_bits
    raise AssertionError("unreachable: a model has at least one layer")

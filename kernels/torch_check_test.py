"""The NumPy reference agrees bit for bit with the same integer network run in PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from qhil.kernels import QuantizedModel, reference_logits

torch = pytest.importorskip("torch")


def torch_logits(x: np.ndarray, model: QuantizedModel) -> np.ndarray:
    """The integer forward pass with torch.conv3d in float64: exact, every value is an
    integer below 2**53."""
    a = torch.from_numpy(x.astype(np.float64)) * 2**model.act_bits
    last = len(model.weights) - 1
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        k = w.shape[2]
        acc = torch.nn.functional.conv3d(
            a,
            torch.from_numpy(w.astype(np.float64)),
            torch.from_numpy(b.astype(np.float64)),
            padding=k // 2,
        )
        if i == last:
            return acc.numpy().astype(np.int64)
        a = torch.div(torch.relu(acc), 2**model.weight_bits, rounding_mode="floor")
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("widths", "kernel", "shape"),
    [
        ((4, 32, 32, 32, 4), 3, (2, 4, 6, 5, 5)),
        ((4, 8, 4), 5, (3, 4, 4, 7, 7)),
        ((4, 4), 1, (1, 4, 2, 3, 3)),
    ],
)
def test_reference_equals_pytorch(
    widths: tuple[int, ...], kernel: int, shape: tuple[int, ...]
) -> None:
    model = QuantizedModel.random(widths=widths, kernel=kernel, seed=len(widths))
    x = (np.random.default_rng(1).random(shape) < 0.2).astype(np.uint8)
    np.testing.assert_array_equal(reference_logits(x, model), torch_logits(x, model))


def test_packaged_model_matches_pytorch_on_real_syndromes() -> None:
    import stim

    from qhil.kernels import PreDecoder

    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=5,
        rounds=5,
        after_clifford_depolarization=0.004,
        before_measure_flip_probability=0.004,
    )
    pd = PreDecoder.for_circuit(circuit, backend="numpy")
    dets = circuit.compile_detector_sampler(seed=3).sample(64)
    x = pd.geometry.inputs(dets)
    np.testing.assert_array_equal(reference_logits(x, pd.model), torch_logits(x, pd.model))

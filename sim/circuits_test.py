from __future__ import annotations

import pytest
import stim

from qhil.sim import BASES, NoiseModel, memory_circuit


@pytest.mark.parametrize("basis", BASES)
def test_noiseless_is_stims_generator(basis: str) -> None:
    circuit = memory_circuit(distance=5, rounds=3, basis=basis)
    expected = stim.Circuit.generated(f"surface_code:rotated_memory_{basis}", distance=5, rounds=3)
    assert circuit == expected


def test_stim_depolarizing_uses_generator_arguments() -> None:
    noise = NoiseModel.stim_depolarizing(0.003)
    circuit = memory_circuit(distance=3, rounds=2, noise=noise)
    expected = stim.Circuit.generated(
        "surface_code:rotated_memory_z", distance=3, rounds=2, **noise.stim_generator_args()
    )
    assert circuit == expected


def test_noise_applied() -> None:
    noise = NoiseModel.si1000(0.001)
    circuit = memory_circuit(distance=3, rounds=2, basis="x", noise=noise)
    assert circuit == noise.noisy_circuit(memory_circuit(distance=3, rounds=2, basis="x"))
    assert circuit.num_detectors == 16


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distance": 4, "rounds": 1}, ValueError, "distance must be an odd integer >= 3; got 4"),
        ({"distance": 1, "rounds": 1}, ValueError, "distance must be an odd integer >= 3; got 1"),
        ({"distance": 3, "rounds": 0}, ValueError, "rounds must be >= 1; got 0"),
        ({"distance": 3.0, "rounds": 1}, TypeError, "distance must be an int"),
        (
            {"distance": 3, "rounds": 1, "basis": "y"},
            ValueError,
            "basis must be one of 'x', 'z'; got 'y'",
        ),
        ({"distance": 3, "rounds": 1, "noise": "sd6"}, TypeError, "noise must be a NoiseModel"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        memory_circuit(**kwargs)  # type: ignore[arg-type]

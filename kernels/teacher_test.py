from __future__ import annotations

import numpy as np
import pymatching
import pytest
import stim

from qhil.kernels._labels import CanonicalLabels
from qhil.kernels._teacher import TeacherLabels
from qhil.sim import NoiseModel, memory_circuit


@pytest.mark.parametrize(
    ("basis", "distance", "noise", "p"),
    [("z", 3, "si1000", 0.006), ("x", 5, "sd6", 0.005), ("z", 5, "stim-depolarizing", 0.004)],
)
def test_teacher_labels_reproduce_the_events_and_the_teachers_prediction(
    basis: str, distance: int, noise: str, p: float
) -> None:
    circuit = memory_circuit(
        distance=distance, rounds=distance, basis=basis, noise=NoiseModel.from_name(noise, p)
    )
    teacher = TeacherLabels.from_circuit(circuit)
    dets, labels, predicted = teacher.sample(400, seed=3)
    assert labels.shape == (400, *teacher.label_shape) and labels.dtype == np.uint8
    assert not labels[:, ~teacher.geometry.output_mask].any()
    fp_dets, fp_obs = teacher.geometry.footprint(labels)
    np.testing.assert_array_equal(fp_dets, dets)
    dem = circuit.detector_error_model(decompose_errors=True)
    corr = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
    want = corr.decode_batch(dets, enable_correlations=True).astype(bool)
    np.testing.assert_array_equal(fp_obs, want)
    np.testing.assert_array_equal(predicted, want)


def test_one_syndrome_gets_one_label_whatever_caused_it() -> None:
    """Canonical labels differ between shots with equal syndromes; teacher labels never do."""
    circuit = memory_circuit(
        distance=3, rounds=3, basis="z", noise=NoiseModel.from_name("stim-depolarizing", 0.01)
    )
    teacher = TeacherLabels.from_circuit(circuit)
    dets, canonical, _ = CanonicalLabels.from_circuit(circuit).sample(4000, seed=5)
    taught, _ = teacher.labels(dets)

    def label_sets(labels: np.ndarray) -> dict[bytes, set[bytes]]:
        seen: dict[bytes, set[bytes]] = {}
        for d, lab in zip(dets, labels, strict=True):
            seen.setdefault(np.packbits(d).tobytes(), set()).add(lab.tobytes())
        return seen

    assert max(len(v) for v in label_sets(canonical).values()) > 1  # the ambiguity is real
    assert max(len(v) for v in label_sets(taught).values()) == 1


def test_quiet_shots_are_all_zero_and_bad_shapes_fail() -> None:
    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_x", distance=3, rounds=2, after_clifford_depolarization=0.003
    )
    teacher = TeacherLabels.from_circuit(circuit)
    labels, predicted = teacher.labels(np.zeros((3, circuit.num_detectors), dtype=bool))
    assert not labels.any() and not predicted.any()
    with pytest.raises(ValueError, match="shape"):
        teacher.labels(np.zeros((3, circuit.num_detectors + 1), dtype=bool))

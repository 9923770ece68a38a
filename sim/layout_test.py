from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import stim

from qhil.sim import X_KIND, Z_KIND, DetectorLayout, NoiseModel, memory_circuit, sample_shots

_STIM_NOISE = [
    {},
    {"after_clifford_depolarization": 0.01},
    {"before_round_data_depolarization": 0.01, "before_measure_flip_probability": 0.02},
    {
        "after_clifford_depolarization": 0.003,
        "before_round_data_depolarization": 0.003,
        "before_measure_flip_probability": 0.003,
        "after_reset_flip_probability": 0.003,
    },
]


def _stim(basis: str, d: int, rounds: int, **noise: float) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}", distance=d, rounds=rounds, **noise
    )


def _check_invariants(layout: DetectorLayout, circuit: stim.Circuit, basis: str) -> None:
    d, rounds = layout.distance, layout.rounds
    assert layout.basis == basis
    assert layout.num_detectors == circuit.num_detectors
    assert layout.num_observables == circuit.num_observables == 1
    coords = circuit.get_detector_coordinates()
    assert np.array_equal(layout.time, [int(coords[i][2]) for i in range(len(coords))])
    assert layout.time.dtype == np.int32 and layout.kind.dtype == np.uint8
    assert layout.round_offsets.dtype == np.int64
    assert layout.round_offsets.shape == (rounds + 2,)
    for t in range(rounds + 1):
        lo, hi = layout.round_offsets[t], layout.round_offsets[t + 1]
        assert np.all(layout.time[lo:hi] == t)
    final = layout.time == rounds
    basis_kind = X_KIND if basis == "x" else Z_KIND
    half = (d * d - 1) // 2
    assert np.all(layout.kind[final] == basis_kind) and final.sum() == half
    first = layout.time == 0
    assert np.all(layout.kind[first] == basis_kind) and first.sum() == half
    if rounds > 1:  # middle rounds compare both stabilizer types
        assert (layout.time == 1).sum() == d * d - 1
    assert layout.x_present.sum() == layout.z_present.sum() == half
    # Each detector's stabilizer sits on a data qubit of its own support.
    for k, r, c in zip(layout.kind, layout.row, layout.col, strict=True):
        assert (int(r), int(c)) in layout.stabilizer_support(kind=int(k), row=int(r), col=int(c))
    # Logical: Z_L / X_L is a full row or column of d data qubits that commutes with
    # every stabilizer of the other type... and anticommutes with none.
    assert layout.logical_support.sum() == d
    other = Z_KIND if basis == "x" else X_KIND
    assert not np.any(layout.parity_check[other] @ layout.logical_support.ravel() % 2)
    for a in (
        layout.time,
        layout.row,
        layout.col,
        layout.kind,
        layout.round_offsets,
        layout.x_present,
        layout.z_present,
        layout.logical_support,
        layout.parity_check,
    ):
        assert not a.flags.writeable


@pytest.mark.parametrize("basis", ["x", "z"])
@pytest.mark.parametrize("d", [3, 5, 7])
def test_stim_circuits(basis: str, d: int) -> None:
    for i, rounds in enumerate((1, 2, d)):
        noise = _STIM_NOISE[(i + d) % len(_STIM_NOISE)]
        circuit = _stim(basis, d, rounds, **noise)
        layout = DetectorLayout.from_circuit(circuit)
        assert (layout.distance, layout.rounds) == (d, rounds)
        _check_invariants(layout, circuit, basis)


@pytest.mark.parametrize("basis", ["x", "z"])
@pytest.mark.parametrize("name", ["sd6", "si1000", "stim-depolarizing"])
def test_memory_circuits_match_stim(basis: str, name: str) -> None:
    circuit = memory_circuit(
        distance=5, rounds=3, basis=basis, noise=NoiseModel.from_name(name, 0.001)
    )
    layout = DetectorLayout.from_circuit(circuit)
    _check_invariants(layout, circuit, basis)
    reference = DetectorLayout.from_circuit(_stim(basis, 5, 3))
    for field in ("time", "row", "col", "kind", "x_present", "logical_support"):
        assert np.array_equal(getattr(layout, field), getattr(reference, field))


def test_kind_agrees_with_hadamard_conjugated_ancillas() -> None:
    # Independent check of the CX-direction rule: stim's X-type ancillas get H.
    circuit = _stim("z", 5, 2)
    layout = DetectorLayout.from_circuit(circuit)
    h_qubits = {t.value for op in circuit.flattened() if op.name == "H" for t in op.targets_copy()}
    x_ancillas = set(layout.stabilizer_qubits[X_KIND][layout.x_present].tolist())
    assert x_ancillas == h_qubits


@pytest.mark.parametrize("d", range(3, 17, 2))
def test_cell_rule_injective_per_kind(d: int) -> None:
    layout = DetectorLayout.from_circuit(_stim("z", d, 1))
    qubits = layout.stabilizer_qubits
    coords = stim.Circuit.generated(
        "surface_code:rotated_memory_z", distance=d, rounds=1
    ).get_final_qubit_coordinates()
    for kind in (X_KIND, Z_KIND):
        placed = qubits[kind][qubits[kind] >= 0]
        assert placed.size == len(set(placed.tolist())) == (d * d - 1) // 2
    assert np.array_equal(layout.x_present, qubits[X_KIND] >= 0)
    # The documented rule: the row-major-first data qubit of the support.
    for kind in (X_KIND, Z_KIND):
        for (r, c), m in np.ndenumerate(qubits[kind]):
            if m < 0:
                continue
            x, y = coords[int(m)]
            cells = [((y + dy - 1) // 2, (x + dx - 1) // 2) for dx in (-1, 1) for dy in (-1, 1)]
            inside = [cell for cell in cells if 0 <= min(cell) and max(cell) < d]
            assert (r, c) == min(inside)


def test_grid_round_trip() -> None:
    circuit = memory_circuit(distance=5, rounds=4, noise=NoiseModel.sd6(0.01))
    layout = DetectorLayout.from_circuit(circuit)
    dets = sample_shots(circuit, shots=64, seed=3).detectors
    grid = layout.to_grid(dets)
    assert grid.dtype == np.uint8 and grid.shape == (64, 2, 5, 5, 5)
    assert grid.sum() == dets.sum()
    assert np.array_equal(layout.from_grid(grid), dets)
    assert np.array_equal(layout.from_grid(layout.to_grid(dets.astype(np.uint8))), dets)
    # Empty slots stay zero; every detector slot is on its kind's present mask.
    present = layout.detector_present
    assert not grid[:, ~present].any()
    assert np.all(present[X_KIND] <= layout.x_present)
    assert np.all(present[Z_KIND] <= layout.z_present)


def test_grid_bad_shapes() -> None:
    layout = DetectorLayout.from_circuit(_stim("x", 3, 2))
    with pytest.raises(ValueError, match=r"dets must have shape \(shots, 16\)"):
        layout.to_grid(np.zeros(16, dtype=bool))
    with pytest.raises(ValueError, match="dets dtype must be one of bool, uint8; got float64"):
        layout.to_grid(np.zeros((1, 16)))
    with pytest.raises(ValueError, match=r"grid must have shape \(shots, 2, 3, 3, 3\)"):
        layout.from_grid(np.zeros((1, 2, 2, 3, 3), dtype=np.uint8))


def test_data_qubit_cells() -> None:
    layout = DetectorLayout.from_circuit(_stim("z", 3, 1))
    assert layout.data_qubit_cells[1] == (0, 0)
    assert layout.data_qubit_cells[19] == (2, 2)
    for q, (r, c) in layout.data_qubit_cells.items():
        assert layout.data_qubits[r, c] == q
    with pytest.raises(TypeError):
        layout.data_qubit_cells[1] = (1, 1)  # type: ignore[index]


@pytest.mark.parametrize(
    ("task", "match"),
    [
        ("repetition_code:memory", "no QUBIT_COORDS|expected two integers"),
        ("surface_code:unrotated_memory_z", "neither data"),
        ("color_code:memory_xyz", "expected two integers|unsupported"),
    ],
)
def test_rejects_other_codes(task: str, match: str) -> None:
    with pytest.raises(ValueError, match=f"not a rotated surface-code memory circuit: .*({match})"):
        DetectorLayout.from_circuit(stim.Circuit.generated(task, distance=3, rounds=2))


def test_rejects_no_detectors_and_ungrouped_times() -> None:
    with pytest.raises(ValueError, match="no detectors"):
        DetectorLayout.from_circuit(stim.Circuit("R 0\nM 0"))
    text = str(_stim("z", 3, 2))
    first = "DETECTOR(0, 4, 0) rec[-4]\n"
    # Re-state the same round-0 detector after the round-1 block (8 measurements and
    # one SHIFT_COORDS later), so detector order is no longer grouped by time.
    moved = text.replace(first, "", 1).replace(
        "DETECTOR(4, 6, 0) rec[-1] rec[-9]\n",
        "DETECTOR(4, 6, 0) rec[-1] rec[-9]\nDETECTOR(0, 4, -1) rec[-12]\n",
        1,
    )
    circuit = stim.Circuit(moved)
    assert circuit.num_detectors == 16
    with pytest.raises(ValueError, match="not grouped by time"):
        DetectorLayout.from_circuit(circuit)


def test_rejects_other_two_qubit_gates_and_extra_observables() -> None:
    text = str(_stim("z", 3, 1))
    with pytest.raises(ValueError, match="unsupported instruction CZ"):
        DetectorLayout.from_circuit(stim.Circuit(text.replace("CX 2 3 ", "CZ 2 3\nCX ", 1)))
    with pytest.raises(ValueError, match="exactly one observable"):
        DetectorLayout.from_circuit(stim.Circuit(text + "\nOBSERVABLE_INCLUDE(1) rec[-1]\n"))


def test_post_init_validates() -> None:
    layout = DetectorLayout.from_circuit(_stim("z", 3, 2))
    kwargs = {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout) if f.init}
    DetectorLayout(**kwargs)
    with pytest.raises(ValueError, match="basis must be one of 'x', 'z'; got 'y'"):
        DetectorLayout(**{**kwargs, "basis": "y"})
    with pytest.raises(ValueError, match="distance must be an odd integer >= 3; got 4"):
        DetectorLayout(**{**kwargs, "distance": 4})
    with pytest.raises(ValueError, match="ordered by time"):
        DetectorLayout(**{**kwargs, "time": kwargs["time"][::-1]})
    with pytest.raises(ValueError, match="share one"):
        row, col = kwargs["row"].copy(), kwargs["col"].copy()
        row[1], col[1] = row[0], col[0]
        DetectorLayout(**{**kwargs, "row": row, "col": col})


def _fields(layout: DetectorLayout) -> dict[str, np.ndarray]:
    return {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout) if f.init}


@pytest.mark.parametrize("basis", ["x", "z"])
@pytest.mark.parametrize("name", ["sd6", "si1000", "stim-depolarizing"])
def test_from_dem_equals_from_circuit(basis: str, name: str) -> None:
    for d, rounds in ((3, 1), (5, 3)):
        noise = NoiseModel.from_name(name, 0.002)
        circuit = memory_circuit(distance=d, rounds=rounds, basis=basis, noise=noise)
        # As sinter builds it.
        dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
        want = _fields(DetectorLayout.from_circuit(circuit))
        got = _fields(DetectorLayout.from_dem(dem))
        assert want.keys() == got.keys()
        for key, value in want.items():
            assert np.array_equal(value, got[key]), key


def test_from_dem_follows_the_models_detector_order() -> None:
    # Declare round 0's four detectors in reverse: the layout follows the DEM's indices.
    lines = str(_stim("z", 3, 2, after_clifford_depolarization=0.01)).splitlines()
    first = [i for i, ln in enumerate(lines) if ln.startswith("DETECTOR(")][:4]
    assert first == list(range(first[0], first[0] + 4))
    lines[first[0] : first[-1] + 1] = reversed(lines[first[0] : first[-1] + 1])
    circuit = stim.Circuit("\n".join(lines))
    want = _fields(DetectorLayout.from_circuit(circuit))
    got = _fields(DetectorLayout.from_dem(circuit.detector_error_model(decompose_errors=True)))
    assert not np.array_equal(want["row"], DetectorLayout.from_circuit(_stim("z", 3, 2)).row)
    for key, value in want.items():
        assert np.array_equal(value, got[key]), key


def test_from_dem_rejects_other_codes_and_other_observables() -> None:
    with pytest.raises(ValueError, match="no detectors"):
        DetectorLayout.from_dem(stim.DetectorErrorModel("error(0.1) L0"))
    rep = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=2)
    with pytest.raises(ValueError, match="expected \\(x, y, t\\)"):
        DetectorLayout.from_dem(rep.detector_error_model())
    color = stim.Circuit.generated("color_code:memory_xyz", distance=3, rounds=2)
    with pytest.raises(ValueError, match="surface_code:rotated_memory_x or _z"):
        DetectorLayout.from_dem(color.detector_error_model(decompose_errors=True))
    # Same detectors, but the observable times the weight-2 Z stabilizer at (0, 4):
    # another logical representative, which the template's support would get wrong.
    text = str(_stim("z", 3, 2, after_clifford_depolarization=0.01))
    last = "OBSERVABLE_INCLUDE(0) rec[-7] rec[-8] rec[-9]"
    assert text.rstrip().endswith(last)
    other = stim.Circuit(text.replace(last, last + " rec[-3] rec[-6]"))
    assert DetectorLayout.from_circuit(other).logical_support.sum() == 5
    with pytest.raises(ValueError, match="flips the observable differently"):
        DetectorLayout.from_dem(other.detector_error_model(decompose_errors=True))

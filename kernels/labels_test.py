"""Canonical training labels: every mechanism's correction reproduces it exactly."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import stim

from qhil.kernels import _labels
from qhil.kernels._labels import RULES, CanonicalLabels
from qhil.sim import NoiseModel, memory_circuit

P = 0.003


@functools.cache
def _stim_circuit(basis: str, distance: int, rounds: int) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=P,
        before_round_data_depolarization=P,
        before_measure_flip_probability=P,
        after_reset_flip_probability=P,
    )


@functools.cache
def _labels_for(key: tuple) -> CanonicalLabels:
    return CanonicalLabels.from_circuit(_circuit(key))


def _expected(circuit: stim.Circuit) -> tuple[np.ndarray, np.ndarray]:
    """Each mechanism's detectors and L0 flip, read straight off the DEM text (all components)."""
    dem = circuit.detector_error_model(decompose_errors=True).flattened()
    dets, obs = [], []
    for inst in dem:
        if inst.type != "error":
            continue
        row = np.zeros(dem.num_detectors, dtype=bool)
        flip = False
        for target in inst.targets_copy():
            if target.is_relative_detector_id():
                row[target.val] ^= True
            elif target.is_logical_observable_id():
                flip ^= True
        dets.append(row)
        obs.append([flip])
    return np.array(dets), np.array(obs)


def _corrections(lab: CanonicalLabels) -> np.ndarray:
    """uint8[num_errors, 4, T, d, d]: each mechanism's canonical correction, alone."""
    return lab.labels(np.eye(lab.num_errors, dtype=bool))


STIM_KEYS: list[tuple[object, ...]] = [
    ("stim", b, d, r) for b in ("x", "z") for d in (3, 5, 7) for r in sorted({1, 2, d})
]
SIM_KEYS: list[tuple[object, ...]] = [("sim", n, b) for n in ("sd6", "si1000") for b in ("x", "z")]


def _circuit(key: tuple) -> stim.Circuit:
    if key[0] == "stim":
        return _stim_circuit(*key[1:])
    return memory_circuit(
        distance=5, rounds=3, basis=key[2], noise=NoiseModel.from_name(key[1], 0.002)
    )


@pytest.mark.parametrize("key", STIM_KEYS + SIM_KEYS, ids=str)
def test_every_mechanism_is_reproduced(key: tuple) -> None:
    lab = _labels_for(key)
    want_dets, want_obs = _expected(_circuit(key))
    assert lab.num_errors == len(want_dets) == lab.dem.num_errors
    corr = _corrections(lab)
    got_dets, got_obs = lab.geometry.footprint(corr)
    bad = np.flatnonzero((got_dets != want_dets).any(axis=1) | (got_obs != want_obs)[:, 0])
    assert bad.size == 0, f"{bad.size} mechanisms not reproduced, e.g. #{bad[:3].tolist()}"
    # Only real outputs are used, every mechanism gets a nonempty correction.
    assert not (corr.astype(bool) & ~lab.geometry.output_mask).any()
    assert corr.reshape(lab.num_errors, -1).any(axis=1).all()
    # The rules cover every component of a rotated memory circuit; no search needed.
    assert lab.rule_counts["fallback"] == 0
    assert set(lab.rule_counts) == set(RULES)


@pytest.mark.parametrize("basis", ["x", "z"])
def test_sampled_labels_reproduce_the_shots(basis: str) -> None:
    lab = _labels_for(("stim", basis, 5, 5))
    dets, labels, obs = lab.sample(2000, seed=11)
    assert dets.shape == (2000, lab.geometry.num_detectors) and dets.dtype == np.bool_
    assert obs.shape == (2000, 1) and obs.dtype == np.bool_
    assert labels.shape == (2000, 4, 6, 5, 5) and labels.dtype == np.uint8
    assert dets.any() and obs.any() and labels.any()  # p is high enough to be a real check
    assert set(np.unique(labels).tolist()) <= {0, 1}
    assert not (labels.astype(bool) & ~lab.geometry.output_mask).any()
    fp_dets, fp_obs = lab.geometry.footprint(labels)
    np.testing.assert_array_equal(fp_dets, dets)
    np.testing.assert_array_equal(fp_obs, obs)
    # Same seed, same shots.
    again = lab.sample(2000, seed=11)
    np.testing.assert_array_equal(again[1], labels)


def test_labels_is_the_xor_of_the_fired_corrections() -> None:
    lab = _labels_for(("stim", "z", 3, 3))
    rng = np.random.default_rng(5)
    errors = rng.random((50, lab.num_errors)) < 0.05
    errors[0] = False
    corr = _corrections(lab).reshape(lab.num_errors, -1)
    want = (errors.astype(np.int64) @ corr.astype(np.int64)) & 1
    got = lab.labels(errors.astype(np.uint8))
    np.testing.assert_array_equal(got.reshape(50, -1), want)
    assert not got[0].any()
    assert lab.labels(np.zeros((0, lab.num_errors), dtype=bool)).shape == (0, 4, 4, 3, 3)


def test_sparse_matrix_is_reduced_and_sorted() -> None:
    lab = _labels_for(("stim", "x", 5, 2))
    rows, cols = lab.rows, lab.cols
    assert rows.dtype == cols.dtype == np.int64 and rows.shape == cols.shape
    key = rows * cols.max(initial=0) * 2 + cols
    assert np.all(np.diff(key) > 0)  # sorted by (row, col), no duplicates
    assert rows.min() == 0 and rows.max() == lab.num_errors - 1
    assert not rows.flags.writeable and not cols.flags.writeable


def test_fallback_search_alone_reproduces_every_component() -> None:
    lab = _labels_for(("stim", "z", 3, 3))
    table = _labels._EntryTable(lab.geometry)
    n = 0
    for inst in lab.dem:
        if inst.type != "error":
            continue
        for dets, obs in _labels._components(inst):
            entries = _labels._search(table, dets, obs)
            assert entries is not None, str(inst)
            assert table.effect(entries) == (dets, obs)
            n += 1
    assert n == sum(lab.rule_counts.values())


def test_each_rule_gives_its_documented_correction() -> None:
    lab = _labels_for(("stim", "z", 5, 5))
    geo = lab.geometry
    table = _labels._EntryTable(geo)
    idx = geo.det_index
    # Timelike: a bulk Z stabilizer, slices 2 and 3 -> its Z-measurement flip at round 2.
    weight = geo.layout.parity_check[1].sum(axis=1).reshape(5, 5)
    r, c = (int(v) for v in np.argwhere((idx[1, 2] >= 0) & (weight == 4))[0])
    pair = frozenset({int(idx[1, 2, r, c]), int(idx[1, 3, r, c])})
    rule, entries = _labels._map_component(table, pair, False)
    assert rule == "timelike"
    assert entries == [int(np.ravel_multi_index((3, 2, r, c), lab.label_shape))]
    # Spacelike: two Z stabilizers sharing a qubit, same slice -> one X data flip there.
    z = np.argwhere(idx[1, 2] >= 0)
    for (r0, c0), (r1, c1) in ((a, b) for a in z for b in z if tuple(a) < tuple(b)):
        shared = _labels._shared(geo, 1, (r0, c0), (r1, c1))
        if len(shared) == 1:
            break
    pair = frozenset({int(idx[1, 2, r0, c0]), int(idx[1, 2, r1, c1])})
    rule, entries = _labels._map_component(table, pair, False)
    assert rule == "spacelike"
    assert entries == [int(np.ravel_multi_index((1, 2, *shared[0]), lab.label_shape))]
    # Diagonal: the same pair across slices 2 and 3 -> data flip at 3 plus a meas flip at 2.
    pair = frozenset({int(idx[1, 2, r0, c0]), int(idx[1, 3, r1, c1])})
    rule, entries = _labels._map_component(table, pair, False)
    assert rule == "diagonal" and entries is not None
    want = [(1, 3, *shared[0]), (3, 2, r0, c0)]
    assert sorted(entries) == sorted(int(np.ravel_multi_index(w, lab.label_shape)) for w in want)


def test_unmappable_mechanism_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_labels, "_rule_candidates", lambda table, dets: ("fallback", []))
    monkeypatch.setattr(_labels, "_search", lambda table, dets, obs: None)
    with pytest.raises(ValueError, match=r"mechanism error\("):
        CanonicalLabels.from_circuit(_stim_circuit("z", 3, 1))


def test_bad_errors_shape_is_rejected() -> None:
    lab = _labels_for(("stim", "z", 3, 1))
    with pytest.raises(ValueError, match="errors must have shape"):
        lab.labels(np.zeros((2, lab.num_errors + 1), dtype=bool))
    with pytest.raises(ValueError, match="errors must have shape"):
        lab.labels(np.zeros(lab.num_errors, dtype=bool))

from __future__ import annotations

import re

import numpy as np
import pytest
import stim

from qhil.fpga import DetectorProgram
from qhil.sim import NoiseModel, memory_circuit

SHOTS = 200


def _generated(basis: str, distance: int, rounds: int) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=0.02,
        before_round_data_depolarization=0.02,
        before_measure_flip_probability=0.02,
        after_reset_flip_probability=0.02,
    )


def _check_against_stim(circuit: stim.Circuit, seed: int) -> None:
    program = DetectorProgram.from_circuit(circuit)
    meas = circuit.compile_sampler(seed=seed).sample(SHOTS)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=meas, separate_observables=True
    )
    assert dets.any(), "the noise must produce events, or the comparison proves little"
    assert program.num_detectors == circuit.num_detectors
    assert program.meas_offsets[-1] == circuit.num_measurements
    assert program.obs_ref.shape == (circuit.num_observables,)

    events = np.concatenate(
        [program.round_events(meas, t) for t in range(program.num_rounds)], axis=1
    )
    np.testing.assert_array_equal(events, dets)
    np.testing.assert_array_equal(program.observables(meas), obs)

    payloads = program.packed_payloads(meas)
    assert len(payloads) == program.num_rounds
    for t, payload in enumerate(payloads):
        lo, hi = program.det_offsets[t], program.det_offsets[t + 1]
        n = int(hi - lo)
        assert payload.dtype == np.uint8
        assert payload.shape == (SHOTS, (n + 7) // 8)
        assert payload.flags.c_contiguous
        np.testing.assert_array_equal(
            payload, np.packbits(dets[:, lo:hi], axis=1, bitorder="little")
        )
        unpacked = np.unpackbits(payload, axis=1, count=n, bitorder="little").astype(np.bool_)
        np.testing.assert_array_equal(unpacked, dets[:, lo:hi])


@pytest.mark.parametrize("basis", ["x", "z"])
@pytest.mark.parametrize(("distance", "rounds"), [(3, 1), (3, 2), (3, 5), (5, 1), (5, 3)])
def test_matches_stim_m2d_on_generated_circuits(basis: str, distance: int, rounds: int) -> None:
    _check_against_stim(_generated(basis, distance, rounds), seed=distance * 10 + rounds)


@pytest.mark.parametrize("noise", ["sd6", "si1000"])
@pytest.mark.parametrize(("basis", "distance", "rounds"), [("z", 3, 3), ("x", 3, 1), ("z", 5, 2)])
def test_matches_stim_m2d_on_project_noise_models(
    noise: str, basis: str, distance: int, rounds: int
) -> None:
    circuit = memory_circuit(
        distance=distance, rounds=rounds, basis=basis, noise=NoiseModel.from_name(noise, 0.01)
    )
    _check_against_stim(circuit, seed=rounds)


@pytest.mark.parametrize(("distance", "rounds"), [(3, 1), (3, 4), (5, 3)])
def test_round_structure_follows_detector_time_coordinates(distance: int, rounds: int) -> None:
    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_z", distance=distance, rounds=rounds
    )
    program = DetectorProgram.from_circuit(circuit)
    times = np.array([c[-1] for c in circuit.get_detector_coordinates().values()])
    assert program.num_rounds == rounds + 1
    assert program.bits_per_round == tuple(
        int(np.count_nonzero(times == t)) for t in range(rounds + 1)
    )
    n_stab = (distance**2 - 1) // 2
    assert program.bits_per_round[1:-1] == (2 * n_stab,) * (rounds - 1)
    assert program.bits_per_round[0] == program.bits_per_round[-1] == n_stab
    assert list(np.diff(program.det_offsets)) == list(program.bits_per_round)
    assert program.meas_offsets[0] == 0
    assert np.all(np.diff(program.meas_offsets) > 0)


def test_noiseless_circuit_gives_no_events() -> None:
    # The reference sample is XORed in: detectors whose noiseless parity is 1 still read 0.
    circuit = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=3)
    program = DetectorProgram.from_circuit(circuit)
    meas = circuit.compile_sampler(seed=1).sample(16)
    assert not any(p.any() for p in program.packed_payloads(meas))
    assert not program.observables(meas).any()


def test_reference_parity_is_applied() -> None:
    # X 0 makes the noiseless detector parity 1; stim defines detectors relative to it.
    circuit = stim.Circuit("""
        X 0
        M 0
        DETECTOR(0) rec[-1]
        M 0
        DETECTOR(1) rec[-1] rec[-2]
        OBSERVABLE_INCLUDE(0) rec[-1]
    """)
    program = DetectorProgram.from_circuit(circuit)
    assert program.det_ref.tolist() == [True, False]
    assert program.obs_ref.tolist() == [True]
    meas = np.array([[1, 1], [0, 1], [1, 0]], dtype=np.bool_)
    dets, obs = circuit.compile_m2d_converter().convert(
        measurements=meas, separate_observables=True
    )
    events = np.concatenate([program.round_events(meas, 0), program.round_events(meas, 1)], axis=1)
    np.testing.assert_array_equal(events, dets)
    np.testing.assert_array_equal(program.observables(meas), obs)


def test_packing_is_lsb_first() -> None:
    # One round of 10 detectors, each reading one measurement: bit i of the payload is detector i.
    circuit = stim.Circuit("".join(f"M {i}\nDETECTOR(0) rec[-1]\n" for i in range(10)))
    program = DetectorProgram.from_circuit(circuit)
    assert program.bits_per_round == (10,)
    meas = np.zeros((3, 10), dtype=np.bool_)
    meas[0, 0] = True
    meas[1, 9] = True
    meas[2, [1, 8]] = True
    (payload,) = program.packed_payloads(meas)
    assert payload.tolist() == [[0b0000_0001, 0], [0, 0b10], [0b10, 0b01]]


def test_program_arrays_are_read_only() -> None:
    program = DetectorProgram.from_circuit(
        stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
    )
    for name in ("meas_offsets", "det_offsets", "det_terms", "det_ref", "obs_terms", "obs_ref"):
        arr = getattr(program, name)
        assert not arr.flags.writeable, name
        with pytest.raises(ValueError):
            arr[...] = 0


def test_rejects_a_detector_reaching_two_rounds_back() -> None:
    circuit = stim.Circuit("""
        M 0
        DETECTOR(0) rec[-1]
        M 0
        DETECTOR(1) rec[-1] rec[-2]
        M 0
        DETECTOR(2) rec[-1] rec[-3]
    """)
    with pytest.raises(ValueError, match=r"detector 2 of round 2 uses measurement 0.*one previous"):
        DetectorProgram.from_circuit(circuit)


def test_accepts_a_detector_reaching_exactly_one_round_back() -> None:
    circuit = stim.Circuit("""
        M 0 1
        DETECTOR(0) rec[-1]
        M 0
        DETECTOR(1) rec[-1] rec[-3]
    """)
    program = DetectorProgram.from_circuit(circuit)
    assert program.bits_per_round == (1, 1)
    assert program.meas_offsets.tolist() == [0, 2, 3]


def test_rejects_an_observable_reaching_two_rounds_back() -> None:
    circuit = stim.Circuit("""
        M 0
        DETECTOR(0) rec[-1]
        OBSERVABLE_INCLUDE(0) rec[-1]
        M 0
        DETECTOR(1) rec[-1] rec[-2]
        M 0
        DETECTOR(2) rec[-1] rec[-2]
    """)
    with pytest.raises(ValueError, match="observable 0 of round 2"):
        DetectorProgram.from_circuit(circuit)


def test_rejects_a_circuit_without_detectors() -> None:
    with pytest.raises(ValueError, match="declares no detectors"):
        DetectorProgram.from_circuit(stim.Circuit("M 0 1\nOBSERVABLE_INCLUDE(0) rec[-1]"))
    with pytest.raises(ValueError, match="declares no detectors"):
        DetectorProgram.from_circuit(stim.Circuit())


def test_rejects_a_detector_without_coordinates() -> None:
    with pytest.raises(ValueError, match="detector 1 has no coordinates"):
        DetectorProgram.from_circuit(
            stim.Circuit("M 0\nDETECTOR(0) rec[-1]\nM 0\nDETECTOR rec[-1]")
        )


@pytest.mark.parametrize(
    "text",
    [
        "M 0\nDETECTOR(1) rec[-1]",  # does not start at time 0
        "M 0\nDETECTOR(1) rec[-1]\nM 0\nDETECTOR(0) rec[-1]",  # goes back in time
    ],
)
def test_rejects_detectors_out_of_time_order(text: str) -> None:
    with pytest.raises(ValueError, match="time order starting at time 0"):
        DetectorProgram.from_circuit(stim.Circuit(text))


@pytest.mark.parametrize(
    "shape", [(4, -1), (4, 1), (0,), (2, 3, 0)], ids=["short", "long", "1d", "3d"]
)
def test_rejects_wrong_measurement_shape(shape: tuple[int, ...]) -> None:
    circuit = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
    program = DetectorProgram.from_circuit(circuit)
    n = circuit.num_measurements
    shape = (*shape[:-1], n + shape[-1])
    with pytest.raises(ValueError, match=re.escape(f"must have shape (shots, {n}); got {shape}")):
        program.packed_payloads(np.zeros(shape, dtype=np.bool_))


def test_accepts_uint8_measurements() -> None:
    circuit = _generated("z", 3, 2)
    program = DetectorProgram.from_circuit(circuit)
    meas = circuit.compile_sampler(seed=3).sample(32)
    as_bool = program.packed_payloads(meas)
    as_u8 = program.packed_payloads(meas.astype(np.uint8))
    for a, b in zip(as_bool, as_u8, strict=True):
        np.testing.assert_array_equal(a, b)

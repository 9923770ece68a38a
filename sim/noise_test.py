from __future__ import annotations

import numpy as np
import pymatching
import pytest
import stim

from qhil.sim import NOISE_MODELS, NoiseModel, memory_circuit


def _ops(circuit: stim.Circuit) -> list[stim.CircuitInstruction]:
    return list(circuit.flattened())


def _noiseless(distance: int = 3, rounds: int = 3, basis: str = "z") -> stim.Circuit:
    return memory_circuit(distance=distance, rounds=rounds, basis=basis)


def test_factories_and_names() -> None:
    assert NOISE_MODELS == ("sd6", "si1000", "stim-depolarizing")
    for name in NOISE_MODELS:
        assert NoiseModel.from_name(name, 0.01) == NoiseModel(name=name, p=0.01)
    assert NoiseModel.sd6(0.01).name == "sd6"
    assert NoiseModel.si1000(0.01).name == "si1000"
    assert NoiseModel.stim_depolarizing(0.01).name == "stim-depolarizing"


def test_derived_probabilities() -> None:
    sd6 = NoiseModel.sd6(0.01)
    assert (sd6.two_qubit, sd6.one_qubit, sd6.reset_flip, sd6.measure_flip) == (0.01,) * 4
    assert sd6.idle == sd6.idle_during_measure_or_reset == 0.01
    si = NoiseModel.si1000(0.01)
    assert si.two_qubit == 0.01
    assert si.one_qubit == pytest.approx(0.001)
    assert si.reset_flip == pytest.approx(0.02)
    assert si.measure_flip == pytest.approx(0.05)
    assert si.idle == pytest.approx(0.001)
    assert si.idle_during_measure_or_reset == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("name", "p", "match"),
    [
        ("sd7", 0.1, "must be one of 'sd6', 'si1000', 'stim-depolarizing'; got 'sd7'"),
        ("sd6", -0.1, "p must be a finite number >= 0"),
        ("sd6", float("nan"), "p must be a finite number >= 0"),
        ("sd6", 1.5, "> 1"),
        ("si1000", 0.25, "5p <= 1"),
    ],
)
def test_bad_models(name: str, p: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NoiseModel.from_name(name, p)


def test_si1000_accepts_p_up_to_a_fifth() -> None:
    assert NoiseModel.si1000(0.2).measure_flip == pytest.approx(1.0)


def test_every_gate_followed_by_its_channel() -> None:
    noisy = NoiseModel.sd6(0.01).noisy_circuit(_noiseless())
    ops = _ops(noisy)
    for i, op in enumerate(ops):
        if op.name == "CX":
            after = ops[i + 1]
            assert after.name == "DEPOLARIZE2"
            assert after.gate_args_copy() == [0.01]
            assert after.targets_copy() == op.targets_copy()
        elif op.name == "H":
            # stim fuses this channel with same-strength idle noise that follows it.
            after = ops[i + 1]
            assert after.name == "DEPOLARIZE1"
            assert after.gate_args_copy() == [0.01]
            assert after.targets_copy()[: len(op.targets_copy())] == op.targets_copy()
        elif op.name in ("M", "MR"):
            assert ops[i - 1].name == "X_ERROR"
            assert ops[i - 1].targets_copy() == op.targets_copy()
        if op.name in ("R", "MR"):
            assert ops[i + 1].name == "X_ERROR"


def test_x_basis_flips_are_z_errors() -> None:
    c = stim.Circuit("RX 0\nTICK\nMRX 0\nTICK\nMX 0")
    noisy = NoiseModel.si1000(0.01).noisy_circuit(c)
    expected = stim.Circuit(
        "RX 0\nZ_ERROR(0.02) 0\nTICK\nZ_ERROR(0.05) 0\nMRX 0\nZ_ERROR(0.02) 0\nTICK\n"
        "Z_ERROR(0.05) 0\nMX 0"
    )
    assert noisy == expected


def test_si1000_measurement_flip_and_resonator_idle() -> None:
    noisy = NoiseModel.si1000(0.002).noisy_circuit(_noiseless())
    ops = _ops(noisy)
    flips = [ops[i - 1] for i, op in enumerate(ops) if op.name in ("M", "MR")]
    assert flips and all(f.gate_args_copy() == pytest.approx([0.01]) for f in flips)
    # Data qubits idle while ancillas are measured: DEPOLARIZE1(2p) right after MR.
    data = {1, 3, 5, 8, 10, 12, 15, 17, 19}
    idles = [op for op in ops if op.name == "DEPOLARIZE1"]
    resonator = [op for op in idles if op.gate_args_copy() == pytest.approx([0.004])]
    assert resonator
    assert all({t.value for t in op.targets_copy()} == data for op in resonator)


def test_idle_qubits_get_noise_every_moment() -> None:
    c = _noiseless(rounds=2)
    noisy = NoiseModel.sd6(0.001).noisy_circuit(c)
    all_qubits = {
        q
        for op in _ops(c)
        if op.name != "QUBIT_COORDS"
        for q in (t.value for t in op.targets_copy() if t.is_qubit_target)
    }
    moments = str(noisy.flattened()).split("TICK")
    assert len(moments) == len(str(c.flattened()).split("TICK"))
    for text in moments:
        moment = stim.Circuit(text)
        touched: set[int] = set()
        for op in moment:
            if op.name not in ("QUBIT_COORDS", "DETECTOR", "SHIFT_COORDS", "OBSERVABLE_INCLUDE"):
                touched.update(t.value for t in op.targets_copy() if t.is_qubit_target)
        assert touched == all_qubits  # every qubit acted on or depolarized as idle


def test_same_detectors_observables_and_graphlike_dem() -> None:
    for basis in ("x", "z"):
        c = _noiseless(distance=5, rounds=4, basis=basis)
        for name in ("sd6", "si1000"):
            noisy = NoiseModel.from_name(name, 0.001).noisy_circuit(c)
            assert noisy.num_detectors == c.num_detectors
            assert noisy.num_observables == c.num_observables
            assert noisy.num_measurements == c.num_measurements
            assert noisy.get_detector_coordinates() == c.get_detector_coordinates()
            assert noisy.without_noise().flattened() == c.flattened()
            dem = noisy.detector_error_model(decompose_errors=True)
            assert dem.num_errors > 0
            # Circuit-level noise must not shorten the code distance below d.
            shortest = noisy.search_for_undetectable_logical_errors(
                dont_explore_detection_event_sets_with_size_above=2,
                dont_explore_edges_with_degree_above=2,
                dont_explore_edges_increasing_symptom_degree=False,
            )
            assert len(shortest) == 5


def test_repeat_blocks_stay_compact() -> None:
    noisy = memory_circuit(distance=5, rounds=1000, noise=NoiseModel.sd6(0.001))
    assert any(isinstance(op, stim.CircuitRepeatBlock) for op in noisy)
    assert len(str(noisy)) < 20_000
    assert noisy.num_detectors == 12 + 24 * 999 + 12


def _moment_contents(circuit: stim.Circuit) -> list[list[tuple[str, tuple[float, ...], int]]]:
    """Per moment, the sorted (gate, args, qubit) triples: equal up to fusion/order."""
    moments: list[list[tuple[str, tuple[float, ...], int]]] = [[]]
    for op in circuit.flattened():
        if op.name == "TICK":
            moments.append([])
        else:
            args = tuple(op.gate_args_copy())
            moments[-1].extend((op.name, args, t.value) for t in op.targets_copy())
    return [sorted(m) for m in moments]


def _noisy_flat(model: NoiseModel, circuit: stim.Circuit) -> stim.Circuit:
    return model.noisy_circuit(circuit.flattened())


def test_repeat_edges_peeled_correctly() -> None:
    # Body ends with TICK and its head would otherwise merge with "R 1": first
    # iteration peeled; the idle noise must match the fully unrolled circuit.
    c = stim.Circuit("R 0 1\nTICK\nR 1\nREPEAT 3 {\n H 0\n TICK\n}\nM 0 1")
    model = NoiseModel.sd6(0.01)
    assert _moment_contents(model.noisy_circuit(c)) == _moment_contents(_noisy_flat(model, c))
    c = stim.Circuit("R 0 1\nREPEAT 3 {\n TICK\n H 0\n}\nM 1")
    assert _moment_contents(model.noisy_circuit(c)) == _moment_contents(_noisy_flat(model, c))
    c = stim.Circuit("R 0 1\nREPEAT 3 {\n H 0\n TICK\n H 1\n}\nM 0")  # unrolled
    assert _moment_contents(model.noisy_circuit(c)) == _moment_contents(_noisy_flat(model, c))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("R 0\nDEPOLARIZE1(0.1) 0\nM 0", "already contains noise"),
        ("R 0\nM(0.1) 0", "already contains noise"),
        ("MPP X0*X1", "unsupported measurement MPP"),
        ("M 0\nCX rec[-1] 1", "non-qubit target"),
    ],
)
def test_rejects_bad_circuits(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NoiseModel.sd6(0.01).noisy_circuit(stim.Circuit(text))


def test_stim_depolarizing_is_generator_only() -> None:
    with pytest.raises(ValueError, match="stim's circuit generator"):
        NoiseModel.stim_depolarizing(0.01).noisy_circuit(_noiseless())
    with pytest.raises(ValueError, match="'stim-depolarizing' model; got 'sd6'"):
        NoiseModel.sd6(0.01).stim_generator_args()


@pytest.mark.parametrize("name", NOISE_MODELS)
def test_ler_sanity_d3(name: str) -> None:
    c = memory_circuit(distance=3, rounds=3, noise=NoiseModel.from_name(name, 0.001))
    dets, obs = c.compile_detector_sampler(seed=5).sample(20_000, separate_observables=True)
    matching = pymatching.Matching.from_detector_error_model(
        c.detector_error_model(decompose_errors=True)
    )
    ler = np.mean(np.any(matching.decode_batch(dets) != obs, axis=1))
    assert 0 < ler < 0.01
    assert 0 < dets.mean() < 0.05

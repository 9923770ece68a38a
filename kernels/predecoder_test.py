from __future__ import annotations

import dataclasses

import numpy as np
import pymatching
import pytest
import stim

from qhil.kernels import (
    PreDecodedMatching,
    PreDecoder,
    PreDecoderGeometry,
    QuantizedModel,
    default_threshold,
    reference_logits,
)
from qhil.sim import NoiseModel, memory_circuit


def _never_fires() -> QuantizedModel:
    """A model whose logits are all negative: it corrects nothing."""
    m = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=0)
    ws = tuple(np.zeros_like(w) for w in m.weights)
    bs = (np.zeros(4, np.int64), np.full(4, -1, np.int64))
    return QuantizedModel(ws, bs, m.weight_bits, m.act_bits)


def _circuit(basis: str = "z", d: int = 3, rounds: int = 3, p: float = 0.004) -> stim.Circuit:
    return stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=d,
        rounds=rounds,
        after_clifford_depolarization=p,
        before_round_data_depolarization=p,
        before_measure_flip_probability=p,
        after_reset_flip_probability=p,
    )


@pytest.mark.parametrize(("basis", "d", "rounds"), [("z", 3, 1), ("x", 3, 4), ("z", 5, 2)])
def test_residual_and_obs_flip_are_exactly_the_outputs_footprint(
    basis: str, d: int, rounds: int
) -> None:
    circuit = _circuit(basis, d, rounds)
    model = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=3)
    pd = PreDecoder.for_circuit(circuit, model=model, backend="numpy", batch_size=7)
    dets, _ = circuit.compile_detector_sampler(seed=2).sample(50, separate_observables=True)
    res = pd.predecode(dets.astype(np.uint8))
    assert res.residual.dtype == bool and res.residual.shape == dets.shape
    assert res.obs_flip.dtype == bool and res.obs_flip.shape == (50, 1)
    outputs = pd.outputs(dets)
    assert outputs.any()  # the random model does act, so the check below means something
    flips, obs = pd.geometry.footprint(outputs)
    np.testing.assert_array_equal(res.residual, dets ^ flips)
    np.testing.assert_array_equal(res.obs_flip, obs)
    np.testing.assert_array_equal(res.corrections, outputs.reshape(50, -1).sum(axis=1))
    expected = reference_logits(pd.geometry.inputs(dets), model) > 0
    np.testing.assert_array_equal(outputs, expected & pd.geometry.output_mask)


def test_final_prediction_is_a_valid_decoding_for_any_model() -> None:
    # An oracle pre-decoder that outputs the canonical corrections of the errors that
    # happened leaves no residual and predicts the observable exactly.
    from qhil.kernels._labels import CanonicalLabels

    circuit = memory_circuit(distance=5, rounds=3, noise=NoiseModel.from_name("si1000", 0.003))
    labels = CanonicalLabels.from_circuit(circuit)
    dets, truth, obs = labels.sample(300, seed=4)
    flips, pre_l = labels.geometry.footprint(truth)
    assert not (dets ^ flips).any() and np.array_equal(pre_l, obs)


def test_a_model_that_never_fires_leaves_pymatching_alone() -> None:
    circuit = _circuit("x", 5, 5)
    dets, _ = circuit.compile_detector_sampler(seed=5).sample(500, separate_observables=True)
    dem = circuit.detector_error_model(decompose_errors=True)
    plain = PreDecodedMatching.from_circuit(
        circuit, model=_never_fires(), backend="numpy", correlated=False
    )
    m = pymatching.Matching.from_detector_error_model(dem)
    np.testing.assert_array_equal(plain.decode_batch(dets), m.decode_batch(dets).astype(bool))
    assert plain.num_detectors == circuit.num_detectors and plain.name == "predecoder"
    # The default pipeline puts correlated PyMatching behind the pre-decoder.
    pipeline = PreDecodedMatching.from_circuit(circuit, model=_never_fires(), backend="numpy")
    corr = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
    want = corr.decode_batch(dets, enable_correlations=True).astype(bool)
    assert pipeline.correlated
    np.testing.assert_array_equal(pipeline.decode_batch(dets), want)


def test_logits_and_the_models_calibrated_threshold() -> None:
    circuit = _circuit("z", 3, 3)
    dets, _ = circuit.compile_detector_sampler(seed=6).sample(50, separate_observables=True)
    model = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=2)
    pd = PreDecoder.for_circuit(circuit, model=model, backend="numpy")
    logits = pd.logits(dets)
    assert logits.dtype == np.int64 and pd.threshold == 0.0
    np.testing.assert_array_equal(logits, reference_logits(pd.geometry.inputs(dets), model))
    calibrated = dataclasses.replace(model, meta={"threshold": 1.5})
    pd = PreDecoder.for_circuit(circuit, model=calibrated, backend="numpy")
    assert pd.threshold == 1.5
    cut = 1.5 * 2 ** (model.weight_bits + model.act_bits)
    np.testing.assert_array_equal(pd.outputs(dets), (logits > cut) & pd.geometry.output_mask)
    assert PreDecoder.for_circuit(circuit, model=calibrated, threshold=0.0).threshold == 0.0
    # One binarization of logits computed once gives each threshold's result.
    res = pd.predecode(dets, logits=logits)
    direct = pd.predecode(dets)
    np.testing.assert_array_equal(res.residual, direct.residual)
    np.testing.assert_array_equal(res.obs_flip, direct.obs_flip)
    # The pipeline takes the threshold calibrated for its matcher.
    both = dataclasses.replace(model, meta={"threshold": 1.5, "threshold_correlated": 4.0})
    assert default_threshold(both) == 1.5 and default_threshold(both, correlated=True) == 4.0
    assert default_threshold(calibrated, correlated=True) == 1.5  # falls back
    pipe = PreDecodedMatching.from_circuit(circuit, model=both, backend="numpy")
    plain = PreDecodedMatching.from_circuit(circuit, model=both, backend="numpy", correlated=False)
    assert (pipe.predecoder.threshold, plain.predecoder.threshold) == (4.0, 1.5)


def test_bad_inputs_get_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    circuit = _circuit()
    model = _never_fires()
    with pytest.raises(ValueError, match="backend must be one of"):
        PreDecoder.for_circuit(circuit, model=model, backend="tpu")
    with pytest.raises(RuntimeError, match="CUDA backend needs an NVIDIA GPU"):
        PreDecoder.for_circuit(circuit, model=model, backend="cuda")
    with pytest.raises(ValueError, match="model must be one of"):
        PreDecoder.for_circuit(circuit, model="fancy")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PreDecoder.for_circuit(circuit, model=tmp_path / "missing.npz")
    rep = stim.Circuit.generated("repetition_code:memory", distance=3, rounds=3)
    with pytest.raises(ValueError, match="not a rotated surface-code memory circuit"):
        PreDecoder.for_circuit(rep, model=model)
    pd = PreDecoder.for_circuit(circuit, model=model, backend="numpy")
    with pytest.raises(ValueError, match="dets must have shape"):
        pd.predecode(np.zeros((2, 5), dtype=bool))


def test_model_files_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = QuantizedModel.random(widths=(4, 5, 4), kernel=3, seed=9)
    model.meta["note"] = "x"
    model.save(tmp_path / "m.npz")
    back = QuantizedModel.load(tmp_path / "m.npz")
    assert back.meta == {"note": "x"} and back.widths == (4, 5, 4)
    x = (np.random.default_rng(0).random((3, 4, 3, 3, 3)) < 0.3).astype(np.uint8)
    np.testing.assert_array_equal(reference_logits(x, back), reference_logits(x, model))
    with pytest.raises(ValueError, match="last layer must have 4 outputs"):
        QuantizedModel(model.weights[:1], model.biases[:1], 8, 6)


def test_geometry_masks() -> None:
    g = PreDecoderGeometry.from_circuit(_circuit("z", 5, 3))
    assert g.shape == (4, 5, 5) and g.obs_channel == 1
    assert not g.output_mask[2:, -1].any()  # no stabilizer measurement in the final slice
    assert g.input_mask.sum() == g.num_detectors


def test_threshold_trades_corrections_for_confidence() -> None:
    circuit = _circuit("z", 3, 3)
    model = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=3)
    dets = circuit.compile_detector_sampler(seed=2).sample(200)
    counts = []
    for threshold in (0.0, 1.0, 1e9):
        pd = PreDecoder.for_circuit(circuit, model=model, backend="numpy", threshold=threshold)
        res = pd.predecode(dets)
        counts.append(int(res.corrections.sum()))
    assert counts[0] >= counts[1] >= counts[2] == 0 and counts[0] > 0
    logits = reference_logits(pd.geometry.inputs(dets), model)
    scale = 2 ** (model.weight_bits + model.act_bits)
    expected = int(((logits > scale) & pd.geometry.output_mask).sum())
    assert counts[1] == expected

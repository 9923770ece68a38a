"""qhil's decoders inside sinter: the same predictions, and the sinter command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pymatching
import pytest
import sinter
import stim

from qhil.kernels import (
    SINTER_DECODERS,
    PreDecodedMatching,
    PreDecoder,
    QuantizedModel,
    sinter_decoders,
)
from qhil.sim import NoiseModel, memory_circuit

# Random weights at threshold 0 fire often, so the pre-decoder's share is exercised.
MODEL = QuantizedModel.random(widths=(4, 6, 4), kernel=3, seed=3)


def _circuit(basis: str, d: int = 3, rounds: int = 3, p: float = 0.006) -> stim.Circuit:
    return memory_circuit(
        distance=d, rounds=rounds, basis=basis, noise=NoiseModel.from_name("sd6", p)
    )


@pytest.mark.parametrize(("basis", "d", "rounds"), [("z", 3, 3), ("x", 5, 2)])
def test_sinter_decoders_predict_what_the_direct_pipelines_do(
    basis: str, d: int, rounds: int
) -> None:
    circuit = _circuit(basis, d, rounds)
    dem = circuit.detector_error_model(decompose_errors=True, approximate_disjoint_errors=True)
    packed, _ = circuit.compile_detector_sampler(seed=5).sample(
        400, separate_observables=True, bit_packed=True
    )
    dets = np.unpackbits(packed, axis=1, count=circuit.num_detectors, bitorder="little")
    decoders = sinter_decoders(model=MODEL, backend="numpy")
    assert (
        set(decoders) == set(SINTER_DECODERS) == {"qhil-predecoder", "qhil-predecoder-correlated"}
    )
    for name, correlated in SINTER_DECODERS.items():
        compiled = decoders[name].compile_decoder_for_dem(dem=dem)
        got = compiled.decode_shots_bit_packed(bit_packed_detection_event_data=packed)
        assert got.dtype == np.uint8 and got.shape == (400, 1)
        # The direct pipeline, laid out from the circuit rather than the DEM.
        pre = PreDecoder.for_circuit(circuit, model=MODEL, backend="numpy")
        res = pre.predecode(dets)
        assert res.corrections.sum() > 0
        matching = pymatching.Matching.from_detector_error_model(
            dem, enable_correlations=correlated
        )
        rest = matching.decode_batch(res.residual, enable_correlations=correlated)
        want = res.obs_flip ^ rest.astype(bool)
        np.testing.assert_array_equal(np.unpackbits(got, axis=1, count=1, bitorder="little"), want)
        pipeline = PreDecodedMatching.from_circuit(
            circuit, model=MODEL, backend="numpy", correlated=correlated
        )
        np.testing.assert_array_equal(pipeline.decode_batch(dets), want)


def test_for_dem_is_for_circuit() -> None:
    circuit = _circuit("x", 5, 3)
    dem = circuit.detector_error_model(decompose_errors=True)
    a = PreDecoder.for_dem(dem, model=MODEL, backend="numpy", batch_size=7, threshold=0.1)
    b = PreDecoder.for_circuit(circuit, model=MODEL, backend="numpy", threshold=0.1)
    assert (a.backend, a.batch_size, a.threshold) == ("numpy", 7, 0.1)
    np.testing.assert_array_equal(a.geometry.det_index, b.geometry.det_index)
    np.testing.assert_array_equal(a.geometry.output_mask, b.geometry.output_mask)
    dets = circuit.compile_detector_sampler(seed=1).sample(60)
    np.testing.assert_array_equal(a.logits(dets), b.logits(dets))


def test_bad_options_and_other_codes_get_clear_errors() -> None:
    with pytest.raises(
        ValueError, match=r"backend must be one of .*'numba'.*; got 'cuda-persistent'"
    ):
        sinter_decoders(backend="cuda-persistent")
    with pytest.raises(ValueError, match="model must be one of"):
        sinter_decoders(model="nope")
    decoder = sinter_decoders(model=MODEL, backend="numpy")["qhil-predecoder"]
    unrotated = stim.Circuit.generated(
        "surface_code:unrotated_memory_z", distance=3, rounds=2, after_clifford_depolarization=0.01
    )
    with pytest.raises(ValueError, match="not a rotated surface-code memory circuit"):
        decoder.compile_decoder_for_dem(dem=unrotated.detector_error_model(decompose_errors=True))


def test_sinter_collect_and_plot_on_the_command_line(tmp_path: Path) -> None:
    exe = shutil.which("sinter", path=str(Path(sys.executable).parent))
    assert exe, "sinter's command line is installed with the sinter package"
    circuit_path = tmp_path / "d=3,p=0.01.stim"
    circuit_path.write_text(str(_circuit("z", p=0.01)))
    csv_path = tmp_path / "stats.csv"
    names = [*SINTER_DECODERS, "pymatching"]
    run = subprocess.run(
        [exe, "collect", "--circuits", str(circuit_path), "--metadata_func", "auto",
         "--decoders", *names,
         "--custom_decoders_module_function", "qhil.kernels:sinter_decoders",
         "--max_shots", "300", "--max_errors", "10000", "--processes", "1", "--quiet",
         "--save_resume_filepath", str(csv_path)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    stats = sinter.read_stats_from_csv_files(csv_path)
    assert sorted(s.decoder for s in stats) == sorted(names)
    for s in stats:
        assert s.shots == 300 and 0 < s.errors < 300 and s.json_metadata == {"d": 3, "p": 0.01}
    png = tmp_path / "ler.png"
    plot = subprocess.run(
        [exe, "plot", "--in", str(csv_path), "--x_func", "metadata['p']",
         "--group_func", "decoder", "--out", str(png)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

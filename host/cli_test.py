from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import stim

from qhil.host import main


def test_run_writes_report_histogram_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, save = tmp_path / "out", tmp_path / "save"
    rc = main(
        command_line_args=[
            "run",
            "--distance",
            "3",
            "--rounds",
            "2",
            "--shots",
            "400",
            "--out",
            str(out),
            "--save",
            str(save),
            "--no-progress",
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shots_decoded"] == 400 and report["config"]["experiment"]["distance"] == 3
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "latency_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    circuit = stim.Circuit.from_file(save / "circuit.stim")
    dets = stim.read_shot_data_file(
        path=str(save / "detection_events.b8"), format="b8", num_detectors=circuit.num_detectors
    )
    pred = stim.read_shot_data_file(path=str(save / "predictions.b8"), format="b8", num_detectors=1)
    assert dets.shape == (400, circuit.num_detectors) and pred.shape == (400, 1)
    # Anyone can recheck the loop's decisions from the exported files alone.
    import pymatching

    m = pymatching.Matching.from_detector_error_model(
        circuit.detector_error_model(decompose_errors=True)
    )
    np.testing.assert_array_equal(m.decode_batch(dets).astype(bool), pred)
    rows = (save / "shots.csv").read_text().splitlines()
    assert rows[0].startswith("shot,fate,latency_ns") and len(rows) == 401
    assert all(r.split(",")[1] == "decoded" for r in rows[1:])


def test_config_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("[experiment]\ndistance = 3\nrounds = 1\nshots = 50\n[output]\ndir = 'x'\n")
    rc = main(
        command_line_args=[
            "run",
            "--config",
            str(cfg),
            "--shots",
            "70",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["shots_planned"] == 70 and report["config"]["experiment"]["rounds"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--distance", "4"], "distance must be an odd integer >= 3"),
        (["run", "--noise", "bogus"], "invalid choice: 'bogus' (choose from 'sd6', 'si1000'"),
        (["run", "--decoder", "nope"], "invalid choice: 'nope' (choose from 'pymatching', "),
        (["run", "--backend", "cuda"], "does not apply to name = 'pymatching'"),
        (["run", "-p", "0.5"], "p must be in [0, 0.2)"),
        (["run", "--transport", "zmq"], "needs an endpoint"),
        (["run", "--config", "/no/such/file.toml"], "does not exist"),
        (["serve"], "needs --bridge-name"),
        (["run", "--backend", "tpu"], "invalid choice: 'tpu' (choose from 'auto', 'numpy'"),
    ],
)
def test_bad_input_is_one_clear_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(command_line_args=args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_info_names_what_it_found(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(command_line_args=["info"]) == 0
    out = capsys.readouterr().out
    for line in ("GPU:", "board:", "front end:", "decoders:", "pymatching", "stim"):
        assert line in out


def test_shipped_defaults_file_is_the_defaults() -> None:
    from qhil.host import RunConfig

    path = Path(__file__).with_name("defaults.toml")
    assert RunConfig.load(path) == RunConfig()


def test_run_with_the_predecoder_on_a_chosen_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        command_line_args=[
            "run",
            "--decoder",
            "predecoder",
            "--backend",
            "numpy",
            "--distance",
            "3",
            "--rounds",
            "1",
            "--shots",
            "40",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decoder"] == "predecoder" and report["shots_decoded"] == 40
    assert report["config"]["decoder"]["backend"] == "numpy"


def test_train_writes_model_curves_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from qhil.kernels import QuantizedModel

    config = tmp_path / "tiny.toml"
    config.write_text(
        "[train]\nwidths = [4, 6, 4]\ndistances = [3]\np_values = [0.004]\nsteps = 4\n"
        "batch_size = 16\nval_every = 2\nval_shots = 32\ncheckpoint_every = 2\n"
        "calibration_shots = 32\n"
    )
    out = tmp_path / "m" / "model.npz"
    assert main(command_line_args=["train", "--config", str(config), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "kept step" in text and "validation errors against PyMatching's" in text
    model = QuantizedModel.load(out)
    assert {"threshold", "threshold_correlated", "kept_step"} <= set(model.meta)
    assert out.with_suffix(".curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not out.with_suffix(".ckpt.pt").exists()  # removed once the model is written
    assert main(command_line_args=["train", "--config", str(config), "--out", "m.txt"]) == 2
    assert "--out must name a .npz model file" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--out", "--save"])
def test_unwritable_output_paths_fail_before_the_run(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = blocker / "results"  # its parent is a regular file
    args = ["run", "--distance", "3", "--rounds", "1", "--shots", "10", "--no-progress"]
    args += ["--out", str(bad if flag == "--out" else tmp_path / "out")]
    if flag == "--save":
        args += ["--save", str(bad)]
    assert main(command_line_args=args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "decoder ready" not in err, err
    assert f"cannot write into {str(bad)!r} (Not a directory); pick another {flag}" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_folder_fails_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    args = ["run", "--shots", "10", "--no-progress", "--out", str(locked / "out")]
    assert main(command_line_args=args) == 2
    assert "(Permission denied); pick another --out" in capsys.readouterr().err


def test_a_ring_name_in_use_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qhil.bridge import ShmRing

    name = f"qhil-cli-{os.getpid()}"
    with ShmRing.create(n_slots=2, slot_size=64, name=f"{name}-up"):
        args = ["run", "--distance", "3", "--rounds", "1", "--shots", "10", "--no-progress"]
        args += ["--bridge-name", name, "--out", str(tmp_path)]
        assert main(command_line_args=args) == 2
    err = capsys.readouterr().err
    assert f"process {os.getpid()}, which created it, still runs" in err
    assert "Traceback" not in err


def test_save_run_takes_the_shots_in_chunks(tmp_path: Path) -> None:
    from qhil.host import RunConfig, run_loop, save_run
    from qhil.sim import ShotBatch

    cfg = RunConfig().with_overrides(
        {"experiment.distance": 3, "experiment.rounds": 1, "experiment.shots": 100}
    )
    out = run_loop(cfg, progress=False)
    whole = out.shots
    assert np.array_equal(whole.observables, out.result.raw_observables)  # what was streamed
    parts = [
        ShotBatch(
            **{
                k: getattr(whole, k)[i : i + 30]
                for k in ("measurements", "detectors", "observables")
            }
        )
        for i in range(0, 100, 30)
    ]
    a = save_run(tmp_path / "a", circuit=out.circuit, shots=whole, result=out.result)
    b = save_run(tmp_path / "b", circuit=out.circuit, shots=iter(parts), result=out.result)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    dets = stim.read_shot_data_file(
        path=str(a[1]), format="b8", num_detectors=out.circuit.num_detectors
    )
    assert np.array_equal(dets, whole.detectors)
    with pytest.raises(ValueError, match="got 90 shots for a run of 100"):
        save_run(tmp_path / "c", circuit=out.circuit, shots=parts[:3], result=out.result)

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pymatching
import pytest

from qhil.host._accuracy import (
    ACCURACY_DECODERS,
    CSV_HEADER,
    AccuracyTask,
    chunk_seed,
    read_rows,
    run_accuracy,
)
from qhil.host._accuracy_report import summarize, write_summary
from qhil.host._stats import wilson_interval
from qhil.kernels import PreDecoder, QuantizedModel, default_threshold
from qhil.sim import sample_shots

PM, PM_CORR, PRE, PIPE = ACCURACY_DECODERS
N_DEC = len(ACCURACY_DECODERS)
TASK = AccuracyTask(basis="z", distance=3, p=0.02)
TASK_X = AccuracyTask(basis="x", distance=3, rounds=2, p=0.01)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=0).save(path)
    return path


def _run(csv_path: Path, model: object, tasks: list[AccuracyTask], **kw: object) -> None:
    opts: dict[str, object] = {"min_errors": 10**6, "max_shots": 400, "chunk": 200}
    opts.update(kw)
    run_accuracy(tasks, csv_path=csv_path, model=model, backend="numpy", **opts)  # type: ignore[arg-type]


def test_task_defaults_and_strong_id() -> None:
    assert TASK.rounds == 3
    assert TASK.noise == "stim-depolarizing"
    assert TASK.strong_id == "stim-depolarizing:z:d3:r3:p0.02"
    assert AccuracyTask(basis="z", distance=3, p=0.02, rounds=3).strong_id == TASK.strong_id
    assert TASK_X.strong_id != TASK.strong_id
    assert AccuracyTask.from_metadata(TASK.metadata()) == TASK
    with pytest.raises(ValueError, match="basis"):
        AccuracyTask(basis="y", distance=3, p=0.01)
    with pytest.raises(ValueError, match="distance"):
        AccuracyTask(basis="z", distance=4, p=0.01)
    with pytest.raises(ValueError, match="noise"):
        AccuracyTask(basis="z", distance=3, p=0.01, noise="nope")


def test_chunk_seeds_are_stable_distinct_and_above_training() -> None:
    a = [chunk_seed(TASK.strong_id, i) for i in range(50)]
    b = [chunk_seed(TASK_X.strong_id, i) for i in range(50)]
    assert a == [chunk_seed(TASK.strong_id, i) for i in range(50)]
    assert len(set(a) | set(b)) == 100
    assert min(a + b) >= 10**9 and max(a + b) < 2**64
    assert chunk_seed("t", 0, seed_base=10**12) - 10**12 == chunk_seed("t", 0) - 10**9
    with pytest.raises(ValueError, match="seed_base"):
        chunk_seed("t", 0, seed_base=5)


def test_run_writes_header_and_one_row_per_chunk_and_decoder(
    tmp_path: Path, model_path: Path
) -> None:
    out = tmp_path / "acc.csv"
    lines: list[str] = []
    _run(out, model_path, [TASK, TASK_X], max_shots=500, progress=lines.append)
    with open(out, newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_HEADER
    rows = read_rows(out)
    # 500 shots in chunks of 200: 200, 200, 100; four decoders each; two tasks.
    assert len(rows) == 6 * N_DEC and len(lines) == 6
    for task in (TASK, TASK_X):
        mine = [r for r in rows if r["strong_id"] == task.strong_id]
        for dec in ACCURACY_DECODERS:
            assert [r["shots"] for r in mine if r["decoder"] == dec] == [200, 200, 100]
        for r in mine:
            assert 0 <= r["errors"] <= r["shots"] and r["discards"] == 0
            meta = dict(r["json_metadata"])
            if r["decoder"] in (PRE, PIPE):
                assert meta.pop("backend") == "numpy"
                assert meta.pop("model") == str(model_path)
                meta.pop("model_id")
            assert meta == task.metadata()
    counts = {r["decoder"]: r["custom_counts"] for r in rows[:N_DEC]}
    assert set(counts[PM]) == {"decode_ns", "pm_raw_b1_ns", "b1_shots"}
    assert set(counts[PM_CORR]) == {"decode_ns", "b1_ns", "b1_shots"}
    assert set(counts[PIPE]) == {"decode_ns", "b1_ns", "b1_shots", "events_after"}
    assert set(counts[PRE]) == {
        "events_before",
        "events_after",
        "predecoder_ns",
        "predecoder_b1_ns",
        "corrections",
        "pm_residual_ns",
        "pm_residual_b1_ns",
        "b1_shots",
    }
    assert counts[PM]["b1_shots"] == counts[PRE]["b1_shots"] == 200


def test_resume_does_not_redo_finished_work(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK], min_errors=5, max_shots=10_000)
    first = out.read_bytes()
    done = read_rows(out)
    assert all(sum(r["errors"] for r in done if r["decoder"] == d) >= 5 for d in ACCURACY_DECODERS)
    _run(out, model_path, [TASK], min_errors=5, max_shots=10_000)  # targets met: nothing
    assert out.read_bytes() == first
    _run(out, model_path, [TASK], max_shots=200)  # shot target met too
    assert out.read_bytes() == first
    # Raising the target continues, with new chunks (new seeds), not repeats.
    _run(out, model_path, [TASK], min_errors=10**6, max_shots=len(done) // N_DEC * 200 + 400)
    rows = read_rows(out)
    assert rows[: len(done)] == done and len(rows) == len(done) + 2 * N_DEC
    before = [r["custom_counts"] for r in rows if r["decoder"] == PRE]
    sigs = {(c["events_before"], c["pm_residual_b1_ns"]) for c in before}
    assert len(sigs) == len(before)


def test_time_budget_stops_after_one_chunk(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK, TASK_X], max_shots=10_000, max_seconds_per_task=0.0)
    rows = read_rows(out)
    assert len(rows) == 2 * N_DEC and {r["shots"] for r in rows} == {200}


def test_resume_refuses_another_model_and_survives_a_cut_line(
    tmp_path: Path, model_path: Path
) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK], max_shots=200)
    other = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1)
    with pytest.raises(ValueError, match="another model"):
        _run(out, other, [TASK], max_shots=400)
    text = out.read_text()
    out.write_text(text + '200,3,0,0.1,pymatching,stim-depolarizing:z:d3:r3:p0.02,"{""ba')
    assert len(read_rows(out)) == N_DEC  # the cut line is ignored
    _run(out, model_path, [TASK], max_shots=400)
    rows = read_rows(out)
    assert len(rows) == 2 * N_DEC and [r["shots"] for r in rows] == [200] * 2 * N_DEC
    assert out.read_text().count("\n") == 1 + 2 * N_DEC  # the cut line is gone, not mid-file


def test_predecoder_errors_match_an_independent_recomputation(
    tmp_path: Path, model_path: Path
) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK_X], max_shots=600, chunk=300)
    rows = read_rows(out)
    circuit = TASK_X.circuit()
    dem = circuit.detector_error_model(decompose_errors=True)
    matching = pymatching.Matching.from_detector_error_model(dem)
    corr = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
    pd = PreDecoder.for_circuit(circuit, model=model_path, backend="numpy")
    for i in range(2):
        batch = sample_shots(circuit, shots=300, seed=chunk_seed(TASK_X.strong_id, i))
        dets, obs = batch.detectors, batch.observables
        res = pd.predecode(dets)
        final = res.obs_flip ^ matching.decode_batch(res.residual).astype(bool)
        res_p = PreDecoder.for_circuit(
            circuit, model=model_path, backend="numpy",
            threshold=default_threshold(QuantizedModel.load(model_path), correlated=True),
        ).predecode(dets)  # fmt: skip
        pipe = res_p.obs_flip ^ corr.decode_batch(res_p.residual, enable_correlations=True)
        plain = matching.decode_batch(dets).astype(bool)
        correlated = corr.decode_batch(dets, enable_correlations=True).astype(bool)
        got = {r["decoder"]: r for r in rows[N_DEC * i : N_DEC * (i + 1)]}
        assert got[PRE]["errors"] == int(np.any(final != obs, axis=1).sum())
        assert got[PIPE]["errors"] == int(np.any(pipe.astype(bool) != obs, axis=1).sum())
        assert got[PM]["errors"] == int(np.any(plain != obs, axis=1).sum())
        assert got[PM_CORR]["errors"] == int(np.any(correlated != obs, axis=1).sum())
        cc = got[PRE]["custom_counts"]
        assert cc["events_before"] == int(dets.sum())
        assert cc["events_after"] == int(res.residual.sum())
        assert cc["corrections"] == int(res.corrections.sum())


def test_a_silent_predecoder_leaves_pymatching_alone(tmp_path: Path) -> None:
    """A network that never fires: residual = syndrome, so pre+PM errs exactly as PM."""
    w = np.zeros((4, 4, 1, 1, 1), dtype=np.int32)
    silent = QuantizedModel((w,), (np.full(4, -1, dtype=np.int64),), 8, 6)
    out = tmp_path / "acc.csv"
    _run(out, silent, [TASK], max_shots=400)
    rows = read_rows(out)
    for i in range(0, len(rows), N_DEC):
        got = {r["decoder"]: r for r in rows[i : i + N_DEC]}
        assert got[PRE]["errors"] == got[PM]["errors"]
        assert got[PIPE]["errors"] == got[PM_CORR]["errors"]
        cc = got[PRE]["custom_counts"]
        assert cc["events_after"] == cc["events_before"] and cc["corrections"] == 0
        assert got[PRE]["json_metadata"]["model"] == "<QuantizedModel>"


def _write_csv(path: Path, rows: list[tuple[int, int, str, dict[str, int]]]) -> None:
    meta = json.dumps(TASK.metadata())
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_HEADER)
        for shots, errors, dec, counts in rows:
            w.writerow([shots, errors, 0, 0.5, dec, TASK.strong_id, meta, json.dumps(counts)])


def test_summarize_sums_chunks_and_derives_figures(tmp_path: Path) -> None:
    out = tmp_path / "acc.csv"
    pre = {
        "events_before": 2160,
        "events_after": 540,
        "predecoder_ns": 3_000_000,
        "corrections": 7,
        "pm_residual_ns": 300_000,
        "pm_residual_b1_ns": 600_000,
        "predecoder_b1_ns": 1_000_000,
        "b1_shots": 100,
    }
    pm = {"decode_ns": 900_000, "pm_raw_b1_ns": 1_500_000, "b1_shots": 100}
    corr = {"decode_ns": 1_000_000, "b1_ns": 400_000, "b1_shots": 100}
    pipe = {"decode_ns": 4_000_000, "b1_ns": 2_000_000, "b1_shots": 100, "events_after": 1080}
    _write_csv(
        out,
        [
            (500, 30, PM, pm),
            (500, 20, PM_CORR, {**corr, "decode_ns": 2_000_000}),
            (500, 10, PRE, pre),
            (500, 5, PIPE, pipe),
            (500, 10, PM, pm),
            (500, 20, PM_CORR, corr),
            (500, 15, PRE, pre),
            (500, 15, PIPE, pipe),
        ],
    )
    rows = summarize(out, min_errors=30)
    assert [r["decoder"] for r in rows] == list(ACCURACY_DECODERS)
    by = {r["decoder"]: r for r in rows}
    assert [by[d]["shots"] for d in ACCURACY_DECODERS] == [1000] * 4
    assert [by[d]["errors"] for d in ACCURACY_DECODERS] == [40, 40, 25, 20]
    assert [by[d]["enough_errors"] for d in ACCURACY_DECODERS] == [True, True, False, False]
    assert by[PM]["seconds"] == pytest.approx(1.0)
    assert by[PRE]["counts"]["corrections"] == 14
    assert by[PRE]["ler"] == 0.025
    assert (by[PRE]["ler_lo"], by[PRE]["ler_hi"]) == wilson_interval(25, 1000)
    lo, hi = wilson_interval(40, 1000)
    assert (round(lo, 5), round(hi, 5)) == (0.02951, 0.05401)  # Wilson 95%, 40 of 1000, by hand
    assert (by[PM]["ler_lo"], by[PM]["ler_hi"]) == (lo, hi)
    r = by[PM_CORR]  # task-level figures are on every row of the task
    assert r["num_detectors"] == 24  # d=3, 3 rounds: 3 * (9 - 1)
    assert r["density_before"] == pytest.approx(4320 / (1000 * 24))
    assert r["density_after"] == pytest.approx(1080 / (1000 * 24))
    assert r["density_cut"] == pytest.approx(4.0)
    assert r["pm_us_per_round_raw"] == pytest.approx(1_800_000 / 1000 / 3 / 1000)
    assert r["pm_us_per_round_residual"] == pytest.approx(600_000 / 1000 / 3 / 1000)
    assert r["pm_speedup"] == pytest.approx(3.0)
    assert r["pm_b1_us_per_round_raw"] == pytest.approx(3_000_000 / 200 / 3 / 1000)
    assert r["pm_b1_us_per_round_residual"] == pytest.approx(1_200_000 / 200 / 3 / 1000)
    assert r["pm_b1_speedup"] == pytest.approx(2.5)
    assert r["pm_corr_us_per_round"] == pytest.approx(3_000_000 / 1000 / 3 / 1000)
    assert r["predecoder_us_per_shot"] == pytest.approx(6.0)
    assert r["ler_ratio_pm"] == pytest.approx(40 / 25)
    assert r["ler_ratio_pm_corr"] == pytest.approx(40 / 25)
    assert r["pipeline_gain_pm"] == r["pipeline_gain_pm_corr"] == pytest.approx(2.0)
    assert r["predecoder_b1_us_per_shot"] == pytest.approx(10.0)
    assert r["pm_corr_us_per_shot"] == pytest.approx(3.0)
    assert r["pm_corr_b1_us_per_shot"] == pytest.approx(4.0)
    assert r["pipeline_us_per_shot"] == pytest.approx(8.0)
    assert r["pipeline_b1_us_per_shot"] == pytest.approx(20.0)
    assert r["pipeline_density_cut"] == pytest.approx(2.0)


def test_write_summary_makes_a_table_and_a_plot(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    tasks = [TASK, AccuracyTask(basis="z", distance=3, p=0.01), TASK_X]
    _run(out, model_path, tasks, max_shots=300, chunk=300)
    md, png = tmp_path / "s.md", tmp_path / "s.png"
    rows = write_summary(out, md_path=md, png_path=png, machine="test box")
    assert len(rows) == 3 * N_DEC
    text = md.read_text()
    assert "test box" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(table) == 2 * (1 + 3)  # accuracy and time: header, one line per task
    assert "LER pipeline" in table[0] and "cut ×" in table[0] and "low" in table[0]
    assert all(ln.rstrip().endswith("| yes |") for ln in table[1:4])  # < 100 errors each
    assert "pipeline b1 µs/shot" in table[4] and table[5].count("|") == table[4].count("|")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000

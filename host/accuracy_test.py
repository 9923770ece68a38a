from __future__ import annotations

import collections
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import sinter

from qhil.host._accuracy import ACCURACY_DECODERS, AccuracyTask, run_accuracy, time_decoders
from qhil.host._accuracy_report import summarize, write_summary
from qhil.host._stats import wilson_interval
from qhil.kernels import QuantizedModel

PM, PM_CORR, PRE, PIPE = ACCURACY_DECODERS
TASK = AccuracyTask(basis="z", distance=3, p=0.02)
TASK_X = AccuracyTask(basis="x", distance=3, rounds=2, p=0.01)
TIMING_KEYS = {"timed_shots", "decode_ns", "b1_shots", "b1_ns"}
PIPELINE_KEYS = TIMING_KEYS | {
    "predecoder_ns",
    "predecoder_b1_ns",
    "residual_decode_ns",
    "residual_b1_ns",
    "detection_events",
    "residual_events",
    "detectors_checked",
    "corrections",
    "backend=numpy",
}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.npz"
    QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=0).save(path)
    return path


def _run(csv_path: Path, model: object, tasks: list[AccuracyTask], **kw: object) -> None:
    opts: dict[str, object] = {"min_errors": 10**6, "max_shots": 400, "chunk": 200}
    opts.update(kw)
    run_accuracy(tasks, csv_path=csv_path, model=model, backend="numpy", **opts)  # type: ignore[arg-type]


def _stats(csv_path: Path) -> dict[tuple[str, str], sinter.TaskStats]:
    return {
        (AccuracyTask.from_metadata(s.json_metadata).name, s.decoder): s
        for s in sinter.read_stats_from_csv_files(csv_path)
    }


def test_task_defaults_and_name() -> None:
    assert TASK.rounds == 3
    assert TASK.noise == "stim-depolarizing"
    assert TASK.name == "stim-depolarizing:z:d3:r3:p0.02"
    assert AccuracyTask(basis="z", distance=3, p=0.02, rounds=3).name == TASK.name
    assert TASK_X.name != TASK.name
    assert AccuracyTask.from_metadata({**TASK.metadata(), "model_id": "x"}) == TASK
    with pytest.raises(ValueError, match="basis"):
        AccuracyTask(basis="y", distance=3, p=0.01)
    with pytest.raises(ValueError, match="distance"):
        AccuracyTask(basis="z", distance=4, p=0.01)
    with pytest.raises(ValueError, match="noise"):
        AccuracyTask(basis="z", distance=3, p=0.01, noise="nope")
    jobs = TASK.sinter_tasks(model_id="abc")
    assert [j.decoder for j in jobs] == list(ACCURACY_DECODERS)
    assert len({j.strong_id() for j in jobs}) == 4
    assert [j.json_metadata.get("model_id") for j in jobs] == [None, None, "abc", "abc"]


def test_run_collects_every_decoder_and_times_them(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    lines: list[str] = []
    _run(out, model_path, [TASK, TASK_X], max_shots=500, progress=lines.append)
    assert out.read_text().splitlines()[0] == sinter.CSV_HEADER
    stats = _stats(out)
    assert len(stats) == 8
    for task in (TASK, TASK_X):
        for dec in ACCURACY_DECODERS:
            s = stats[(task.name, dec)]
            assert s.shots == 500 and 0 <= s.errors <= 500 and s.discards == 0
            meta = dict(s.json_metadata)
            assert (meta.pop("model_id", None) is not None) == (dec in (PRE, PIPE))
            assert meta == task.metadata()
            keys = set(s.custom_counts)
            assert keys == (PIPELINE_KEYS if dec in (PRE, PIPE) else TIMING_KEYS)
            assert s.custom_counts["timed_shots"] == 200 and s.custom_counts["b1_shots"] == 200
        assert any(ln.startswith(f"{task.name} {PIPE}: 500 shots") for ln in lines)
    assert multiprocessing.active_children() == []


def test_resume_does_not_redo_finished_work(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK], min_errors=5, max_shots=10_000)
    first = out.read_bytes()
    done = _stats(out)
    assert all(s.errors >= 5 or s.shots == 10_000 for s in done.values())
    _run(out, model_path, [TASK], min_errors=5, max_shots=10_000)  # targets met: nothing
    _run(out, model_path, [TASK], max_shots=1)  # shot target met too
    assert out.read_bytes() == first
    # Raising the target continues; the timing pass is not redone.
    target = max(s.shots for s in done.values()) + 300
    _run(out, model_path, [TASK], max_shots=target)
    again = _stats(out)
    for key, s in again.items():
        assert s.shots == target
        assert s.custom_counts == done[key].custom_counts


def test_time_budget_stops_a_task_early(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK], max_shots=10**6, chunk=100, max_seconds_per_task=0.0)
    stats = _stats(out)
    assert 1 <= len(stats) and sum(s.shots for s in stats.values()) < 10**6
    assert multiprocessing.active_children() == []  # sinter's workers are gone


def test_resume_refuses_another_model(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    _run(out, model_path, [TASK], max_shots=100)
    other = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1)
    with pytest.raises(ValueError, match="another model"):
        _run(out, other, [TASK], max_shots=200)


def test_timing_pass_counts_on_the_same_shots() -> None:
    """A network that never fires leaves the syndrome as it is."""
    w = np.zeros((4, 4, 1, 1, 1), dtype=np.int32)
    silent = QuantizedModel((w,), (np.full(4, -1, dtype=np.int64),), 8, 6)
    circuit = TASK_X.circuit()
    dem = circuit.detector_error_model(decompose_errors=True)
    counts = time_decoders(circuit, dem, model=silent, backend="numpy", shots=50)
    assert set(counts) == set(ACCURACY_DECODERS)
    for dec in (PRE, PIPE):
        c = counts[dec]
        assert c["residual_events"] == c["detection_events"] > 0 and c["corrections"] == 0
        assert c["detectors_checked"] == 50 * circuit.num_detectors
        assert c["decode_ns"] == c["predecoder_ns"] + c["residual_decode_ns"]
    assert all(c["timed_shots"] == c["b1_shots"] == 50 for c in counts.values())


def _write_csv(path: Path, rows: list[tuple[int, int, str, dict[str, int]]]) -> None:
    jobs = {j.decoder: j for j in TASK.sinter_tasks(model_id="m")}
    lines = [sinter.CSV_HEADER]
    for shots, errors, dec, counts in rows:
        job = jobs[dec]
        lines.append(
            sinter.TaskStats(
                strong_id=job.strong_id(), decoder=dec, json_metadata=job.json_metadata,
                shots=shots, errors=errors, seconds=0.5 if shots else 0.0,
                custom_counts=collections.Counter(counts),
            ).to_csv_line()
        )  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def test_summarize_sums_rows_and_derives_figures(tmp_path: Path) -> None:
    out = tmp_path / "acc.csv"
    timing = {"timed_shots": 1000, "b1_shots": 100}
    pre = {**timing, "detection_events": 2400, "residual_events": 600, "detectors_checked": 24000,
           "predecoder_ns": 6_000_000, "predecoder_b1_ns": 1_000_000, "corrections": 7,
           "residual_decode_ns": 600_000, "residual_b1_ns": 1_200_000, "backend=numba": 1000,
           "decode_ns": 6_600_000, "b1_ns": 2_200_000}  # fmt: skip
    pipe = {**pre, "residual_events": 1200, "decode_ns": 8_000_000, "b1_ns": 2_000_000}
    pm = {**timing, "decode_ns": 1_800_000, "b1_ns": 3_000_000}
    corr = {**timing, "decode_ns": 3_000_000, "b1_ns": 400_000}
    _write_csv(out, [(500, 30, PM, {}), (500, 20, PM_CORR, {}), (500, 10, PRE, {}),
                     (500, 5, PIPE, {}), (500, 10, PM, {}), (500, 20, PM_CORR, {}),
                     (500, 15, PRE, {}), (500, 15, PIPE, {}), (0, 0, PM, pm),
                     (0, 0, PM_CORR, corr), (0, 0, PRE, pre), (0, 0, PIPE, pipe)])  # fmt: skip
    rows = summarize(out, min_errors=30)
    assert [r["decoder"] for r in rows] == list(ACCURACY_DECODERS)
    by = {r["decoder"]: r for r in rows}
    assert [by[d]["shots"] for d in ACCURACY_DECODERS] == [1000] * 4
    assert [by[d]["errors"] for d in ACCURACY_DECODERS] == [40, 40, 25, 20]
    assert [by[d]["enough_errors"] for d in ACCURACY_DECODERS] == [True, True, False, False]
    assert by[PM]["seconds"] == pytest.approx(1.0)
    assert by[PRE]["counts"]["corrections"] == 7 and by[PRE]["backends"] == ["numba"]
    assert by[PRE]["ler"] == 0.025
    assert (by[PRE]["ler_lo"], by[PRE]["ler_hi"]) == wilson_interval(25, 1000)
    lo, hi = wilson_interval(40, 1000)
    assert (round(lo, 5), round(hi, 5)) == (0.02951, 0.05401)  # Wilson 95%, 40 of 1000, by hand
    assert (by[PM]["ler_lo"], by[PM]["ler_hi"]) == (lo, hi)
    r = by[PM_CORR]  # task-level figures are on every row of the task
    assert r["density_before"] == pytest.approx(0.1)
    assert r["density_after"] == pytest.approx(0.025)
    assert r["density_cut"] == pytest.approx(4.0)
    assert r["pipeline_density_cut"] == pytest.approx(2.0)
    assert r["pm_us_per_round_raw"] == pytest.approx(1_800_000 / 1000 / 3 / 1000)
    assert r["pm_us_per_round_residual"] == pytest.approx(600_000 / 1000 / 3 / 1000)
    assert r["pm_speedup"] == pytest.approx(3.0)
    assert r["pm_b1_us_per_round_raw"] == pytest.approx(3_000_000 / 100 / 3 / 1000)
    assert r["pm_b1_us_per_round_residual"] == pytest.approx(1_200_000 / 100 / 3 / 1000)
    assert r["pm_b1_speedup"] == pytest.approx(2.5)
    assert r["pm_corr_us_per_round"] == pytest.approx(1.0)
    assert r["pm_corr_us_per_shot"] == pytest.approx(3.0)
    assert r["pm_corr_b1_us_per_shot"] == pytest.approx(4.0)
    assert r["predecoder_us_per_shot"] == pytest.approx(6.0)
    assert r["predecoder_b1_us_per_shot"] == pytest.approx(10.0)
    assert r["pipeline_us_per_shot"] == pytest.approx(8.0)
    assert r["pipeline_b1_us_per_shot"] == pytest.approx(20.0)
    assert r["ler_ratio_pm"] == r["ler_ratio_pm_corr"] == pytest.approx(40 / 25)
    assert r["pipeline_gain_pm"] == r["pipeline_gain_pm_corr"] == pytest.approx(2.0)


def test_write_summary_makes_a_table_and_a_plot(tmp_path: Path, model_path: Path) -> None:
    out = tmp_path / "acc.csv"
    tasks = [TASK, AccuracyTask(basis="z", distance=3, p=0.01), TASK_X]
    _run(out, model_path, tasks, max_shots=300, chunk=300)
    md, png = tmp_path / "s.md", tmp_path / "s.png"
    rows = write_summary(out, md_path=md, png_path=png, machine="test box")
    assert len(rows) == 3 * len(ACCURACY_DECODERS)
    text = md.read_text()
    assert "test box" in text and "backend(s): numpy" in text
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(table) == 2 * (1 + 3)  # accuracy and time: header, one line per task
    assert "LER pipeline" in table[0] and "cut ×" in table[0] and "low" in table[0]
    assert all(ln.rstrip().endswith("| yes |") for ln in table[1:4])  # < 100 errors each
    assert "pipeline b1 µs/shot" in table[4] and table[5].count("|") == table[4].count("|")
    assert "—" not in "".join(table[5:])  # every timing figure is there
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_a_csv_from_the_older_qhil_is_refused_with_the_fix(
    tmp_path: Path, model_path: Path
) -> None:
    old = tmp_path / "old.csv"
    meta = '"{""basis"":""z"",""distance"":3}"'
    old.write_text(
        "shots,errors,discards,seconds,decoder,strong_id,json_metadata,custom_counts\n"
        f"10,1,0,0.1,pymatching,same-id,{meta},{{}}\n"
        f"10,1,0,0.1,pymatching-correlated,same-id,{meta},{{}}\n"
    )
    with pytest.raises(ValueError, match=r"move it away or pass --csv NEW\.csv"):
        run_accuracy([TASK], csv_path=old, model=model_path)

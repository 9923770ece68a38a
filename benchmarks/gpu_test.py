"""Tests of ``benchmarks/gpu.py`` (the GPU benchmark) and its echo kernel. No timings asserted.

Without a GPU: the script refuses cleanly (exit 2, one line, nothing written); the
markdown renders from a fabricated results dict (TEST INPUT, never written to docs);
``main`` records a failing section and still runs the others (fake sections, output
in a temporary folder); the echo kernel compiles to PTX for sm_90; the bridge-loopback
and persistent-kernel sections run end to end in Numba's CUDA simulator (a subprocess,
``python benchmarks/gpu_test.py sim``, because ``NUMBA_ENABLE_CUDASIM`` must be set
before ``numba.cuda`` is imported), the streaming-latency part of the loop section
too; and the loop section's ``run_loop`` part runs at d=3 with the Numba
backend, stopped by its time cap. With a GPU, a ``gpu`` test runs the whole script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
_SCRIPT = _HERE / "gpu.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("qhil_gpu_benchmark", _SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu() -> ModuleType:
    return _load()


# --------------------------------------------------------------------------- test input
# Fabricated: the SHAPE of real results with made-up values, for the renderer only.

_P = {"n": 10, "mean": 2.0, "p50": 1.5, "p99": 3.0, "p999": 3.5, "max": 4.0}
TEST_INPUT: dict[str, Any] = {
    "generated_utc": "TEST INPUT",
    "complete": False,
    "machine": "TEST INPUT: fabricated host, not a measurement",
    "gpu": {
        "name": "TEST INPUT GPU (fabricated)",
        "compute_capability": "00",
        "sm_count": 0,
        "memory_gib": 0.0,
        "cuda_runtime": 0,
        "cuda_driver": 0,
        "cupy": "test",
        "numba": "test",
        "nvidia_smi": "TEST INPUT, 0.0",
    },
    "left_running": ["TEST INPUT kernel"],
    "sections": {
        "bridge_loopback": {
            "ok": True,
            "threads": 128,
            "n_slots": 16,
            "round_trips_requested": 10,
            "warmup": 2,
            "start_s": 0.5,
            "kernel_exited": True,
            "rows": [
                {
                    "payload_bytes": 48,
                    "compiled_us": _P,
                    "call_overhead_us": _P,
                    "python_api_us": _P,
                    "mismatches": 0,
                }
            ],
            "wall_s": 1.0,
            "cap_s": 90.0,
        },
        "inference": {
            "ok": True,
            "distance": 13,
            "rounds": 13,
            "tensor_shape": [4, 14, 13, 13],
            "model": "default",
            "fused_supported": True,
            "agreement": {"fused == per-layer, batch 1": True},
            "rows": [
                {
                    "backend": "cuda",
                    "mode": "fused",
                    "batch": 256,
                    "repeats": 5,
                    "us_per_call": _P,
                    "us_per_shot": _P,
                    "us_per_round_p50": 0.1,
                    "device_us_per_shot": _P,
                    "device_us_per_round_p50": 0.05,
                },
                {
                    "backend": "cuda",
                    "mode": "per-layer",
                    "batch": 1,
                    "repeats": 5,
                    "us_per_call": _P,
                    "us_per_shot": _P,
                    "us_per_round_p50": 0.1,
                    "device_error": "TEST INPUT error",
                },
            ],
            "wall_s": 1.0,
            "cap_s": 90.0,
        },
        "sustained": {"ok": False, "error": "TEST INPUT: injected\nfailure", "wall_s": 2.0},
        "loop": {
            "ok": True,
            "distance": 13,
            "p": 0.003,
            "noise": "stim-depolarizing p=0.003",
            "mode": "lockstep, 1 shot in flight, shm bridge",
            "runs": [
                {
                    "rounds": 13,
                    "decoder": "predecoder",
                    "backend": "cuda-persistent",
                    "shots_planned": 2000,
                    "shots_decoded": 1999,
                    "stopped_at_cap": True,
                    "latency_us": _P,
                    "decode_us_per_shot": _P,
                    "ler": 0.001,
                    "rounds_lost": 0,
                },
                {
                    "rounds": 13,
                    "decoder": "pymatching",
                    "shots_planned": 2000,
                    "shots_decoded": 2000,
                    "stopped_at_cap": False,
                    "latency_us": _P,
                    "decode_us_per_shot": _P,
                    "ler": 0.002,
                    "rounds_lost": 1,
                },
                {
                    "rounds": 104,
                    "decoder": "predecoder",
                    "backend": "cuda",
                    "shots_planned": 300,
                    "error": "TEST INPUT boom",
                },
                {
                    "rounds": 104,
                    "decoder": "pymatching",
                    "shots_planned": 300,
                    "skipped": "section cap reached",
                },
            ],
            "predecoder_over_pymatching": [
                {"rounds": 13, "p50_ratio": 1.0, "p99_ratio": None, "p999_ratio": 2.0}
            ],
            "streaming": [
                {
                    "rounds": 13,
                    "shots_planned": 2000,
                    "shots_decoded": 1500,
                    "reaction_us": _P,
                    "kernel_tail_us": _P,
                    "pymatching_us": _P,
                    "achieved_round_interval_us": _P,
                    "ler": 0.0,
                    "incomplete": 0,
                },
                {"rounds": 104, "shots_planned": 300, "skipped": "section cap reached"},
            ],
            "wall_s": 3.0,
            "cap_s": 90.0,
        },
    },
}


# --------------------------------------------------------------------------- no GPU


def test_refuses_without_a_gpu_and_writes_nothing(
    gpu: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if gpu.gpu_unavailable_reason() is None:
        pytest.skip("a GPU is usable here: the refusal path cannot be taken for real")
    out = tmp_path / "out"
    assert gpu.main(["--out", str(out), "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpu.py: no usable GPU, nothing measured or written: ")
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_refusal_path_with_the_check_forced(
    gpu: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(gpu, "gpu_unavailable_reason", lambda: "TEST: forced\nno GPU")
    out = tmp_path / "out"
    assert gpu.main(["--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("TEST: forced no GPU")
    assert not out.exists()


def test_markdown_renders_the_test_input(gpu: ModuleType) -> None:
    md = gpu.render_markdown(TEST_INPUT)
    assert md.startswith("# GPU benchmark\n")
    assert "TEST INPUT GPU (fabricated)" in md and "**Incomplete run**" in md
    assert "TEST INPUT kernel did not exit" in md
    for title in ("(a) Bridge loopback", "(b) Pre-decoder inference", "(c) Sustained",
                  "(d) Whole-loop"):  # fmt: skip
        assert f"## {title}" in md
    assert "| 48 B | compiled | 10 | 1.50 | 3.00 | 3.50 | 4.00 |" in md
    assert "| cuda | fused | 256 | 5 | 1.50 / 3.00 | 0.100 | 1.50 / 3.00 | 0.050 |" in md
    assert "TEST INPUT error" in md
    assert "**Failed** after 2.0 s: `TEST INPUT: injected failure`" in md
    assert "| 13 | predecoder (cuda-persistent) | 1,999 / 2,000 | 1.5 / 3.0 / 3.5 / 4.0 |" in md
    assert "| 13 | 1,500 / 2,000 | 1.5 / 3.0 / 3.5 / 4.0 | 1.5 / 3.0 | 1.5 | 1.50 |" in md
    assert "| 104 | - / 300 | section cap reached |" in md
    assert "failed: `TEST INPUT boom`" in md and "section cap reached" in md
    assert "= 1.00 (p50), - (p99), 2.00 (p99.9)" in md


def test_main_records_a_failing_section_and_runs_the_rest(
    gpu: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fake GPU, fake sections (TEST INPUT), output in tmp_path only.
    sections = TEST_INPUT["sections"]
    monkeypatch.setattr(gpu, "gpu_unavailable_reason", lambda: None)
    monkeypatch.setattr(gpu, "gpu_description", lambda: TEST_INPUT["gpu"])
    for name, fn in (("bridge_loopback", "bench_bridge_loopback"), ("loop", "bench_loop")):
        body = {k: v for k, v in sections[name].items() if k not in ("ok", "wall_s", "cap_s")}
        monkeypatch.setattr(gpu, fn, lambda deadline, _b=body, **kw: _b)

    def boom(deadline: float, **kw: Any) -> dict[str, Any]:
        raise RuntimeError("TEST: injected failure")

    monkeypatch.setattr(gpu, "bench_inference", boom)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--seconds", "5", "--sections", "bridge_loopback,inference,loop"]
    assert gpu.main(argv) == 0
    data = json.loads((out / "gpu.json").read_text())
    assert data["complete"] and list(data["sections"]) == ["bridge_loopback", "inference", "loop"]
    inf = data["sections"]["inference"]
    assert not inf["ok"] and inf["error"] == "RuntimeError: TEST: injected failure"
    assert data["sections"]["loop"]["ok"] and data["sections"]["bridge_loopback"]["ok"]
    assert all(s["cap_s"] == 5.0 for s in data["sections"].values())
    assert "`RuntimeError: TEST: injected failure`" in (out / "gpu.md").read_text()
    with pytest.raises(SystemExit):
        gpu.main(["--out", str(out), "--sections", "nonsense"])


def test_loop_section_runs_and_its_cap_stops_a_run(gpu: ModuleType) -> None:
    # d=3 with the Numba backend: far more shots than fit, so the time cap ends each run.
    t0 = time.monotonic()
    s = gpu.bench_loop(deadline=t0 + 6.0, distance=3, rounds_list=(3,), shots={3: 10**6},
                       backend="numba")  # fmt: skip
    runs = s["runs"]
    assert [(r["rounds"], r["decoder"]) for r in runs] == [(3, "predecoder"), (3, "pymatching")]
    for r in runs:
        assert "error" not in r and "skipped" not in r, r
        assert r["stopped_at_cap"] and r["aborted"]
        assert 0 < r["shots_decoded"] < 10**6 and r["latency_us"]["n"] == r["shots_decoded"]
    (ratio,) = s["predecoder_over_pymatching"]
    assert ratio["rounds"] == 3 and ratio["p50_ratio"] > 0
    assert time.monotonic() - t0 < 12.0


# --------------------------------------------------------------------------- simulator


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "sim"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # a hung kernel fails the test instead of hanging it
        check=False,
    )
    assert proc.returncode == 0, f"simulator scenario failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_bridge_loopback_section_in_the_simulator(sim_run: dict[str, Any]) -> None:
    a = sim_run["bridge_loopback"]
    assert a["ok"], a
    assert a["kernel_exited"]
    assert [r["payload_bytes"] for r in a["rows"]] == [48, 100]
    for r in a["rows"]:
        assert r["mismatches"] == 0
        assert r["compiled_us"]["n"] > 0 and r["python_api_us"]["n"] > 0


def test_sustained_section_in_the_simulator(sim_run: dict[str, Any]) -> None:
    c = sim_run["sustained"]
    assert c["ok"], c
    assert c["checked_against_cpu"]["mismatches"] == [] and c["checked_against_cpu"]["shots"] == 4
    assert c["results"] == c["submitted"] > 0 and c["backlog_bounded"] and c["incomplete"] == 0
    assert c["packets_taken"] == 3 * c["submitted"]  # one packet per round, rounds + 1 rounds
    assert c["max_packets_queued"] <= c["n_slots"]
    assert c["rounds_per_s"] == pytest.approx(c["results_per_s"] * 3)
    assert c["stop"]["exited"] and c["stop"]["error"] is None
    k = c["stop"]["counters"]
    assert k["packets"] == k["rounds_accepted"] == c["stop"]["submitted"]
    assert c["single_shot_latency_us"]["n"] > 0 and c["single_shot_tail_us"]["n"] > 0


def test_streaming_latency_in_the_simulator(sim_run: dict[str, Any]) -> None:
    rows = sim_run["streaming"]
    assert [r["rounds"] for r in rows] == [1, 4]
    for r in rows:
        assert "skipped" not in r, r
        assert r["shots_decoded"] == r["shots_planned"] and r["incomplete"] == 0
        assert r["reaction_us"]["n"] == r["shots_planned"] - 3  # three warm-up shots
        assert r["kernel_exited"]
        k = r["counters"]
        assert k["packets"] == k["rounds_accepted"] == r["shots_planned"] * (r["rounds"] + 1)
        assert k["shots_decoded"] == r["shots_planned"]


def test_real_section_shapes_render(sim_run: dict[str, Any]) -> None:
    assert sim_run["markdown_ok"], sim_run.get("markdown_error")


@pytest.mark.gpu
def test_whole_script_on_a_gpu(tmp_path: Path) -> None:
    cmd = [sys.executable, str(_SCRIPT), "--out", str(tmp_path), "--seconds", "8",
           "--round-trips", "2000", "--sustain-seconds", "1", "--loop-shots", "100",
           "--loop-shots-long", "20"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=590, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert data["complete"] and data["gpu"]["name"]
    assert set(data["sections"]) == {"bridge_loopback", "inference", "sustained", "loop"}
    for name, s in data["sections"].items():
        assert s["ok"], f"{name}: {s.get('error')}"
    assert (tmp_path / "gpu.md").read_text().startswith("# GPU benchmark")


# --------------------------------------------------------------------------- scenario


def _sim_scenario() -> dict[str, Any]:
    from qhil.kernels import QuantizedModel

    g = _load()
    out: dict[str, Any] = {}
    out["bridge_loopback"] = g._run_section(
        g.bench_bridge_loopback, 30.0, sizes=(48, 100), round_trips=10, warmup=2,
        api_round_trips=2,
    )  # fmt: skip
    model = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1)
    out["sustained"] = g._run_section(
        g.bench_sustained, 30.0, distance=3, rounds=2, p=0.05, sustain_s=0.5, model=model,
        n_slots=4, pool=16, latency_shots=2, batch_shots=3, check=4, watchdog_s=10.0,
        cpu_backend="numpy",
    )  # fmt: skip
    out["streaming"] = g.bench_streaming(
        deadline=time.monotonic() + 60.0, distance=3, p=0.05, rounds_list=(1, 4),
        shots={1: 5, 4: 4}, round_period_s=1e-4, n_slots=4, model=model, watchdog_s=10.0,
    )  # fmt: skip
    try:
        results = {**TEST_INPUT, "complete": True, "left_running": []}
        results["sections"] = {**TEST_INPUT["sections"], **out}
        md = g.render_markdown(results)
        out["markdown_ok"] = "## (c) Sustained" in md and "results/s" in md
    except Exception as ex:
        out["markdown_ok"] = False
        out["markdown_error"] = f"{type(ex).__name__}: {ex}"
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["sim"]:
        sys.setswitchinterval(5e-4)  # simulator: the busy-polling kernel threads share the GIL
        print(json.dumps(_sim_scenario(), default=str))

"""Tests of ``PersistentPreDecoder`` (the persistent GPU kernel fed through mapped memory).

Without a GPU the kernel runs in Numba's CUDA simulator. ``NUMBA_ENABLE_CUDASIM``
must be set before ``numba.cuda`` is first imported and it changes what
``numba.cuda`` is for the whole process, so the simulator scenarios run in a
subprocess (``python -m qhil.kernels.persistent_test <scenario>``, the
``__main__`` block below) and report JSON; the pytest process itself never
switches to the simulator. The subprocess timeout is the "never hangs" check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

_MODULE = "qhil.kernels.persistent_test"


def _scenario(name: str, *args: str, sim: bool = True, timeout_s: float = 90.0) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", _MODULE, name, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,  # a hung kernel or watchdog fails the test instead of hanging it
        check=False,
    )
    assert proc.returncode == 0, f"scenario {name!r} failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    t0 = time.monotonic()
    out = _scenario("all")
    out["subprocess_s"] = time.monotonic() - t0
    return out


def test_streamed_windows_match_the_cpu_path_exactly(sim_run: dict[str, Any]) -> None:
    s = sim_run["stream"]
    assert s["results"] == s["submitted"] == 20
    assert s["mismatches"] == []  # residual, obs_flip and corrections all equal the CPU path
    assert s["in_order"] and s["seqs"] == list(range(20))
    # the random model really acts, so equality is not vacuous
    assert s["corrections_total"] > 0 and s["residual_differs_from_dets"] > 0
    assert s["producer_blocked"] > 0  # n_slots=4 < 20: the ring wrapped and pushed back


def test_shutdown_flag_ends_the_kernel(sim_run: dict[str, Any]) -> None:
    for key in ("stream", "idle"):
        r = sim_run[key]["report"]
        assert r["exited"] and r["error"] is None, r
        assert not sim_run[key]["launcher_alive"]
    idle = sim_run["idle"]
    assert idle["report"]["heartbeat"] > 0  # it beats while polling an empty ring
    assert idle["report"]["submitted"] == idle["report"]["returned"] == 0


def test_watchdog_reports_a_stalled_kernel_and_stops_it(sim_run: dict[str, Any]) -> None:
    s = sim_run["stall"]
    assert s["before_stall_ok"]  # it worked before the stall
    assert s["raised"] == "KernelStalled"
    assert "stalled" in s["message"] and "heartbeat stuck at" in s["message"]
    assert "shutdown requested" in s["message"]
    assert s["detected_after_s"] >= s["watchdog_s"]
    assert s["kernel_exited"]  # the watchdog's shutdown ended the kernel
    assert s["submit_raised"] == "KernelStalled"
    assert s["report"]["exited"] and "stalled" in s["report"]["error"]
    assert not s["launcher_alive"]


def test_tables_are_built_from_the_geometry_footprints() -> None:
    stim = pytest.importorskip("stim")
    import numpy as np

    from qhil.kernels._geometry import PreDecoderGeometry
    from qhil.kernels._model import QuantizedModel
    from qhil.kernels._persistent import build_tables

    c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=3)
    g = PreDecoderGeometry.from_circuit(c)
    m = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1)
    t = build_tables(g, m)
    rng = np.random.default_rng(5)
    e = rng.random((8, *g.output_mask.shape)) < 0.2
    flips, obs = g.footprint(e)
    flat = (e & g.output_mask).reshape(8, -1)
    for i in range(t.num_detectors):
        want = flat[:, t.det_src[t.det_ptr[i] : t.det_ptr[i + 1]]].sum(axis=1) % 2
        assert (want == flips[:, i]).all()
    got_obs = flat[:, t.obs_src[t.obs_ptr[0] : t.obs_ptr[1]]].sum(axis=1) % 2
    assert (got_obs == obs[:, 0]).all()
    assert t.wflat.size + t.bflat.size == m.parameter_count
    x = g.inputs(np.zeros((1, g.num_detectors), dtype=bool))
    assert (t.mask_act == (x[0].ravel().astype(np.int64) << m.act_bits)).all()


def test_persistent_kernel_compiles_to_ptx_for_sm90(tmp_path: Path) -> None:
    r = _scenario("ptx", str(tmp_path / "persistent.ptx"), sim=False, timeout_s=120.0)
    if not r["ok"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable here: {r['reason']}")
    assert r["ld_acquire_sys"] > 0 and r["st_release_sys"] > 0  # the flag protocol
    assert r["membar_sys"] > 0  # cuda.threadfence_system()
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("PTX generated; ptxas (CUDA toolkit) not found to assemble it for sm_90")
    proc = subprocess.run(
        [ptxas, "-arch=sm_90", str(tmp_path / "persistent.ptx"), "-o", str(tmp_path / "k.cubin")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.gpu
def test_persistent_kernel_on_a_gpu() -> None:
    r = _scenario("gpu", sim=False, timeout_s=300.0)
    s = r["stream"]
    assert s["results"] == s["submitted"] == s["expected"]
    assert s["mismatches"] == [] and s["in_order"]
    assert s["report"]["exited"] and s["report"]["error"] is None
    st = r["stall"]
    assert st["raised"] == "KernelStalled" and st["kernel_exited"]


# --------------------------------------------------------------------------- scenarios


def _setup(distance: int = 3, rounds: int = 2, shots: int = 20) -> tuple[Any, ...]:
    import numpy as np
    import stim

    from qhil.kernels._geometry import PreDecoderGeometry
    from qhil.kernels._model import QuantizedModel, reference_logits

    circuit = stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=0.05,
    )
    geometry = PreDecoderGeometry.from_circuit(circuit)
    model = QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1)
    dets = circuit.compile_detector_sampler(seed=3).sample(shots)
    dets[0] = False  # a quiet shot and a saturated one among the random ones
    dets[1] = True
    # The CPU path: reference_logits -> binarize -> mask -> footprint.
    e = (reference_logits(geometry.inputs(dets), model) > 0) & geometry.output_mask
    flips, obs = geometry.footprint(e)
    expected = (dets ^ flips, obs, e.reshape(shots, -1).sum(axis=1))
    return geometry, model, np.asarray(dets), expected


def _stream(pd: Any, dets: Any, expected: Any, deadline_s: float) -> dict[str, Any]:
    import threading

    residual, obs, corrections = expected
    blocked = [0]

    def produce() -> None:
        for i, d in enumerate(dets):
            while not pd.submit(1000 + i, d):
                blocked[0] += 1
                time.sleep(1e-3)

    producer = threading.Thread(target=produce, daemon=True)
    t0 = time.monotonic()
    producer.start()
    results: list[Any] = []
    while len(results) < len(dets) and time.monotonic() - t0 < deadline_s:
        results += pd.poll()
        time.sleep(2e-3)
    producer.join(1.0)
    wall = time.monotonic() - t0
    mismatches = []
    for r in results:
        shot_id, res, flip = r  # unpacks as a tuple
        i = shot_id - 1000
        if not (
            (res == residual[i]).all()
            and (flip == obs[i]).all()
            and r.corrections == corrections[i]
        ):
            mismatches.append(shot_id)
    shot_ids = [r.shot_id for r in results]
    return {
        "submitted": pd.ring.pushed,
        "results": len(results),
        "expected": len(dets),
        "mismatches": mismatches,
        "in_order": shot_ids == sorted(shot_ids),
        "seqs": [r.seq for r in results],
        "corrections_total": int(sum(r.corrections for r in results)),
        "residual_differs_from_dets": int((residual != dets).sum()),
        "producer_blocked": blocked[0],
        "wall_s": wall,
    }


def _report(rep: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(rep)


def _stall(pd: Any, dets: Any, expected: Any) -> dict[str, Any]:
    from qhil.bridge._gpu_ring import STATE_EXITED
    from qhil.kernels._persistent import PersistentKernelError

    residual = expected[0]
    for i in range(2):
        assert pd.submit(i, dets[i])
    got: list[Any] = []
    t0 = time.monotonic()
    while len(got) < 2 and time.monotonic() - t0 < 30:
        got += pd.poll()
        time.sleep(2e-3)
    before_ok = len(got) == 2 and all((r.residual == residual[r.shot_id]).all() for r in got)
    pd._debug_stall(True)
    t_stall, raised, message = time.monotonic(), None, ""
    while time.monotonic() - t_stall < 30:
        try:
            pd.poll()
        except PersistentKernelError as ex:
            raised, message = type(ex).__name__, str(ex)
            break
        time.sleep(5e-3)
    detected = time.monotonic() - t_stall
    t1 = time.monotonic()
    while pd.ring.state != STATE_EXITED and time.monotonic() - t1 < 10:
        time.sleep(1e-3)
    exited = pd.ring.state == STATE_EXITED
    try:
        pd.submit(99, dets[0])
        submit_raised = None
    except PersistentKernelError as ex:
        submit_raised = type(ex).__name__
    rep = pd.stop(timeout_s=10.0)
    return {
        "before_stall_ok": before_ok,
        "raised": raised,
        "message": message,
        "detected_after_s": detected,
        "watchdog_s": pd.watchdog_s,
        "kernel_exited": exited,
        "submit_raised": submit_raised,
        "report": _report(rep),
        "launcher_alive": pd._launcher is not None and pd._launcher.is_alive(),
    }


def _main(argv: list[str]) -> dict[str, Any]:
    name = argv[0]
    if name == "ptx":
        try:
            from numba import cuda

            from qhil.kernels._persistent import KERNEL_SIGNATURE, persistent_kernel

            ptx, _ = cuda.compile_ptx(persistent_kernel.py_func, KERNEL_SIGNATURE, cc=(9, 0))
        except Exception as ex:  # no NVVM / no compile_ptx: the test skips with this reason
            return {"ok": False, "reason": f"{type(ex).__name__}: {str(ex).strip()[:300]}"}
        Path(argv[1]).write_text(ptx)
        return {
            "ok": True,
            "ld_acquire_sys": ptx.count("ld.acquire.sys"),
            "st_release_sys": ptx.count("st.release.sys"),
            "membar_sys": ptx.count("membar.sys") + ptx.count("fence.sc.sys"),
        }

    from qhil.kernels._persistent import PersistentPreDecoder

    out: dict[str, Any] = {}
    geometry, model, dets, expected = _setup()
    if name == "gpu":
        geometry, model, dets, expected = _setup(distance=5, rounds=5, shots=200)
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=10.0)
    out["stream"] = _stream(pd, dets, expected, deadline_s=60.0)
    out["stream"]["report"] = _report(pd.stop(timeout_s=10.0))
    out["stream"]["launcher_alive"] = pd._launcher is not None and pd._launcher.is_alive()
    if name == "all":
        pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=10.0)
        t0 = time.monotonic()
        while pd.ring.heartbeat == 0 and time.monotonic() - t0 < 10:
            time.sleep(1e-3)
        out["idle"] = {"report": _report(pd.stop(timeout_s=10.0))}
        out["idle"]["launcher_alive"] = pd._launcher is not None and pd._launcher.is_alive()
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=2.0)
    out["stall"] = _stall(pd, dets, expected)
    return out


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # Simulator only: kernel threads, the producer and the watchdog share the GIL;
        # shorter switch intervals keep the busy-polling kernel from starving them.
        sys.setswitchinterval(5e-4)
    print(json.dumps(_main(sys.argv[1:])))

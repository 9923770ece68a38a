"""Tests of ``PersistentPreDecodedMatching`` (the persistent kernel as the loop's decoder)
on its own: batch decoding, close and a stall. With the decoder service and the whole
loop: ``hil_tests/persistent_loop_test.py``.

Its shots travel as per-round wire-v1 packets into the kernel's mapped ring. As in
``predecoder_test.py``, the simulator scenarios run in a subprocess
(``python -m qhil.kernels.persistent.pipeline_test <scenario>``) with
``NUMBA_ENABLE_CUDASIM=1`` set before ``numba.cuda`` is imported, and report
JSON; the pytest process never switches to the simulator. The subprocess
timeout is the "never hangs" check.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qhil.bridge import run_scenario

_MODULE = "qhil.kernels.persistent.pipeline_test"


_scenario = functools.partial(run_scenario, _MODULE, timeout_s=90.0)


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    t0 = time.monotonic()
    out = _scenario("sim")
    out["subprocess_s"] = time.monotonic() - t0
    return out


def test_decode_batch_equals_the_cpu_pipeline_exactly(sim_run: dict[str, Any]) -> None:
    s = sim_run["decode"]
    assert s["decoder"] == {"name": "predecoder", "simulated": True, "n_det": s["n_det"]}
    assert s["shape"] == [s["shots"], 1] and s["dtype"] == "bool"
    assert s["equal"], s  # bit for bit PreDecodedMatching(backend="numpy")
    assert s["second_call_equal"]  # a second call on the same (still running) kernel
    assert s["empty_shape"] == [0, 1]
    # the random model really acts: the residual differs from the raw events somewhere
    assert s["predecoder_acts"]
    # one packet per round; 12 shots through 4 slots: the rings filled and decode_batch waited
    assert s["submitted"] == 2 * s["shots"] * s["rounds_per_shot"] and s["n_slots"] < s["shots"]
    assert s["counters"]["rounds_accepted"] == s["counters"]["packets"] == s["submitted"]
    assert s["counters"]["shots_decoded"] == 2 * s["shots"]


def test_close_stops_the_kernel(sim_run: dict[str, Any]) -> None:
    c = sim_run["close"]
    assert c["report"]["exited"] and c["report"]["error"] is None, c
    assert c["report"]["taken"] == c["report"]["submitted"]  # every packet taken
    assert c["report"]["returned"] == c["report"]["counters"]["shots_decoded"]  # every shot
    assert not c["launcher_alive"] and not c["collector_alive"]
    assert c["closed"] and c["second_close_same"]
    assert "closed" in c["after_close_error"]
    assert c["context_manager_exited"] and c["finalizer_exited"]


def test_stalled_kernel_is_a_clear_runtime_error(sim_run: dict[str, Any]) -> None:
    s = sim_run["stall"]
    assert s["raised"] == "RuntimeError"
    assert "stalled" in s["message"] and "heartbeat stuck at" in s["message"], s
    assert "cuda-persistent" in s["message"]
    assert s["cause"] == "KernelStalled"
    assert s["report_exited"]


# --------------------------------------------------------------------------- scenarios


def _circuit(distance: int = 3, rounds: int = 2) -> Any:
    import stim

    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=0.05,
    )


def _sim(tmp: str) -> dict[str, Any]:
    """Batch decoding, then close, then a stall, each on its own kernel (12 shots, d=3)."""
    from qhil.kernels._model import QuantizedModel

    path = Path(tmp) / "tiny.npz"
    QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1).save(path)
    circuit = _circuit()
    dets = circuit.compile_detector_sampler(seed=3).sample(12)
    dets[0] = False
    dets[1] = True
    decode, dec, rep = _sim_decode(circuit, path, dets)
    return {
        "decode": decode,
        "close": _sim_close(dec, rep, circuit, path, dets),
        "stall": _sim_stall(circuit, path, dets),
    }


def _sim_decode(circuit: Any, path: Path, dets: Any) -> tuple[dict[str, Any], Any, Any]:
    """``decode_batch`` twice through 4 slots against ``PreDecodedMatching`` on numpy,
    and an empty batch; then the decoder closed. The findings, the decoder, its report."""
    import numpy as np

    from qhil.kernels._pipeline import PreDecodedMatching
    from qhil.kernels.persistent import PersistentPreDecodedMatching

    cpu = PreDecodedMatching.from_circuit(circuit, model=path, backend="numpy")
    want = cpu.decode_batch(dets)
    dec = PersistentPreDecodedMatching.from_circuit(circuit, model=path, watchdog_s=10.0, n_slots=4)
    try:
        got = dec.decode_batch(dets)
        got2 = dec.decode_batch(dets[::-1].astype(np.uint8))
        empty = dec.decode_batch(dets[:0])
        decode = {
            "decoder": {"name": dec.name, "simulated": dec.simulated, "n_det": dec.num_detectors},
            "n_det": circuit.num_detectors,
            "shots": len(dets),
            "shape": list(got.shape),
            "dtype": str(got.dtype),
            "equal": bool(np.array_equal(got, want)),
            "second_call_equal": bool(np.array_equal(got2, want[::-1])),
            "empty_shape": list(empty.shape),
            "predecoder_acts": bool(
                (cpu.predecoder.predecode(dets).residual != dets.astype(bool)).any()
            ),
            "submitted": dec.predecoder.ring.pushed,
            "rounds_per_shot": dec.predecoder.tables.rounds,
            "n_slots": dec.predecoder.ring.spec.n_slots,
        }
    finally:
        rep = dec.close(timeout_s=10.0)
    decode["counters"] = rep.counters
    return decode, dec, rep


def _sim_close(dec: Any, rep: Any, circuit: Any, path: Path, dets: Any) -> dict[str, Any]:
    """The closed decoder ``dec`` (closed with report ``rep``): its threads gone, a second
    close the same, decoding refused; and a context manager's and a finalizer's kernels."""
    import dataclasses

    from qhil.bridge import STATE_EXITED
    from qhil.kernels.persistent import PersistentPreDecodedMatching

    pd = dec.predecoder
    try:
        dec.decode_batch(dets)
        after = ""
    except RuntimeError as ex:
        after = str(ex)
    # the context manager and the finalizer stop their kernels too
    with PersistentPreDecodedMatching.from_circuit(circuit, model=path, watchdog_s=10.0) as dec2:
        dec2.decode_batch(dets[:2])
    cm_exited = dec2.predecoder.ring.state == STATE_EXITED and not _alive(dec2.predecoder)
    dec3 = PersistentPreDecodedMatching.from_circuit(circuit, model=path, watchdog_s=10.0)
    dec3.decode_batch(dets[:1])
    pd3 = dec3.predecoder
    del dec3  # no cycles: collected at once, and its finalizer stops the kernel
    fin_exited = pd3.ring.state == STATE_EXITED and not _alive(pd3)
    return {
        "report": dataclasses.asdict(rep),
        "launcher_alive": _alive(pd),
        "collector_alive": dec._s.thread is not None and dec._s.thread.is_alive(),
        "closed": dec.closed,
        "second_close_same": dec.close() is rep,
        "after_close_error": after,
        "context_manager_exited": cm_exited,
        "finalizer_exited": fin_exited,
    }


def _sim_stall(circuit: Any, path: Path, dets: Any) -> dict[str, Any]:
    """A kernel made to stall mid-batch (watchdog 1 s): what ``decode_batch`` raised."""
    from qhil.kernels.persistent import PersistentPreDecodedMatching

    dec = PersistentPreDecodedMatching.from_circuit(circuit, model=path, watchdog_s=1.0)
    stall: dict[str, Any]
    try:
        dec.decode_batch(dets[:2])
        dec.predecoder._debug_stall(True)
        try:
            dec.decode_batch(dets)
            stall = {"raised": None, "message": "", "cause": None}
        except Exception as ex:
            stall = {
                "raised": type(ex).__name__,
                "message": str(ex),
                "cause": type(ex.__cause__).__name__,
            }
    finally:
        stall["report_exited"] = dec.close(timeout_s=10.0).exited
    return stall


def _alive(pd: Any) -> bool:
    return pd.run.launcher_alive


def _main(argv: list[str]) -> dict[str, Any]:
    import tempfile

    name = argv[0]
    if name == "sim":
        with tempfile.TemporaryDirectory() as tmp:
            return _sim(tmp)
    raise SystemExit(f"unknown scenario {name!r}")


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # Simulator only: kernel threads, the collector and the watchdog share the GIL.
        sys.setswitchinterval(5e-4)
    print(json.dumps(_main(sys.argv[1:])))

"""Tests of the persistent echo kernel and the device pieces both kernels share.

As in ``predecoder_test.py``, the simulator scenarios run in a subprocess
(``python -m qhil.kernels.persistent.echo_test <scenario>``) because
``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is first imported; the
compile checks run there too, without the simulator.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from qhil.bridge import run_scenario

_MODULE = "qhil.kernels.persistent.echo_test"
_scenario = functools.partial(run_scenario, _MODULE, timeout_s=60.0)


def test_echo_kernel_round_trips_through_a_small_ring() -> None:
    e = _scenario("echo")
    assert e["received"] == e["sent"] == 40
    assert e["payload_ok"] and e["headers_ok"] and e["in_order"]
    assert e["round_trip_ok"] and e["exited"] and not e["launcher_alive"]
    assert e["heartbeat"] > 0 and e["stopped_raises"] == "PersistentKernelError"


def test_flag_intrinsics_and_the_wait_loop_compile_to_system_scope_ptx() -> None:
    r = _scenario("ptx_flags", sim=False, timeout_s=120.0)
    if not r["ok"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable here: {r['reason']}")
    assert r["ld.acquire.sys.u64"] >= 3 and r["st.release.sys.u64"] >= 2
    assert r["membar.sys"] >= 1
    assert r["call"] == 0  # await_flag is inlined: the PTX calls no device function


def test_echo_kernel_compiles_to_ptx_for_sm90(tmp_path: Path) -> None:
    path = tmp_path / "echo.ptx"
    r = _scenario("ptx_echo", str(path), sim=False, timeout_s=120.0)
    if not r["ok"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable here: {r['reason']}")
    assert r["ld.acquire.sys.u64"] >= 2 and r["st.release.sys.u64"] >= 2
    assert r["membar.sys"] >= 2
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("PTX generated; ptxas (CUDA toolkit) not found to assemble it for sm_90")
    proc = subprocess.run(
        [ptxas, "-arch=sm_90", str(path), "-o", str(tmp_path / "echo.cubin")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.mark.gpu
def test_echo_kernel_on_a_gpu() -> None:
    e = _scenario("echo", sim=False, timeout_s=300.0)
    assert e["received"] == e["sent"] and e["payload_ok"] and e["headers_ok"] and e["in_order"]
    assert e["round_trip_ok"] and e["exited"]


# --------------------------------------------------------------------------- scenarios


def _echo() -> dict[str, Any]:
    import numpy as np

    from qhil.kernels.persistent import EchoLoopback, PersistentKernelError

    echo = EchoLoopback(16, n_slots=4)
    echo.wait_running(timeout_s=30.0)
    ring = echo.ring
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, 16, dtype=np.uint8) for _ in range(40)]
    received: list[tuple[Any, Any]] = []

    def produce() -> None:  # another thread, as a front end is
        for i, p in enumerate(sent):
            while not ring.try_push(3, 500 + i, p):
                time.sleep(1e-4)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    t0 = time.monotonic()
    while len(received) < len(sent) and time.monotonic() - t0 < 30:
        hdr, data, _ = ring.pop()
        received += list(zip(hdr.tolist(), data, strict=True))
        time.sleep(1e-3)
    producer.join(1.0)
    payload = np.arange(5, dtype=np.uint8)
    echo.round_trip(payload, timeout_s=20.0)
    round_trip_ok = echo.last_payload.tolist() == (payload ^ 0xFF).tolist()
    exited = echo.stop(timeout_s=10.0)
    try:
        echo.round_trip(payload, timeout_s=1.0)
        stopped_raises = None
    except PersistentKernelError:
        stopped_raises = "PersistentKernelError"
    return {
        "sent": len(sent),
        "received": len(received),
        "payload_ok": all((d == (sent[h[1] - 500] ^ 0xFF)).all() for h, d in received),
        "headers_ok": all(h[0] == 3 and h[2] == h[1] - 500 and h[3] == 16 for h, _ in received),
        "in_order": [h[1] for h, _ in received] == list(range(500, 500 + len(received))),
        "round_trip_ok": round_trip_ok,
        "exited": exited,
        "launcher_alive": echo.run.launcher_alive,
        "heartbeat": ring.heartbeat,
        "stopped_raises": stopped_raises,
    }


_PTX_KEYS = ("ld.acquire.sys.u64", "st.release.sys.u64", "membar.sys")


def _ptx_flags() -> dict[str, Any]:
    from numba import cuda

    from qhil.bridge import W_HEARTBEAT
    from qhil.kernels.persistent import await_flag, flag_load, flag_store

    def probe(ctrl, seq):  # type: ignore[no-untyped-def]
        v = flag_load(seq, 0)
        cuda.threadfence_system()
        status, beat = await_flag(ctrl, seq, 1, v + 1, 0)
        flag_store(ctrl, W_HEARTBEAT, flag_load(ctrl, 1) + status + beat)

    try:
        ptx, _ = cuda.compile_ptx(probe, "void(uint64[::1], uint64[::1])", cc=(9, 0))
    except Exception as ex:  # no NVVM: the test skips with this reason
        return {"ok": False, "reason": f"{type(ex).__name__}: {str(ex).strip()[:300]}"}
    return {"ok": True, "call": ptx.count("call.uni"), **{k: ptx.count(k) for k in _PTX_KEYS}}


def _ptx_echo(path: str) -> dict[str, Any]:
    from numba import cuda

    from qhil.kernels.persistent import ECHO_SIGNATURE, echo_kernel

    try:
        ptx, _ = cuda.compile_ptx(echo_kernel.py_func, ECHO_SIGNATURE, cc=(9, 0))
    except Exception as ex:
        return {"ok": False, "reason": f"{type(ex).__name__}: {str(ex).strip()[:300]}"}
    Path(path).write_text(ptx)
    counts = {k: ptx.count(k) for k in _PTX_KEYS}
    counts["membar.sys"] += ptx.count("fence.sc.sys")
    return {"ok": True, **counts}


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.setswitchinterval(5e-4)  # simulator: the busy-polling kernel shares the GIL
    which = sys.argv[1]
    if which == "ptx_flags":
        result = _ptx_flags()
    elif which == "ptx_echo":
        result = _ptx_echo(sys.argv[2])
    else:
        result = _echo()
    print(json.dumps(result))

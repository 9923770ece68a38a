"""Tests of the mapped-memory slot ring between the host and a persistent GPU kernel.

The ring needs ``numba.cuda.mapped_array``: on a machine without a GPU the
scenarios run in Numba's CUDA simulator, in a subprocess (``python -m
qhil.bridge.gpu_ring_test <scenario>``, the ``__main__`` block below), because
``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is first imported and
would change it for the whole pytest process. Results come back as JSON.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from typing import Any

import pytest
from numba import cuda  # module-global: the simulator swaps it in while a kernel runs

from qhil.bridge._sim_testing import run_scenario

_MODULE = "qhil.bridge.gpu_ring_test"


_scenario = functools.partial(run_scenario, _MODULE, timeout_s=60.0)


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    return _scenario("all")


def test_spec_is_validated() -> None:
    from qhil.bridge._gpu_ring import MappedRingSpec

    with pytest.raises(ValueError, match="power of two"):
        MappedRingSpec(n_slots=6, in_width=8, out_width=8, n_obs=1)
    with pytest.raises(ValueError, match="in_width must be >= 1"):
        MappedRingSpec(n_slots=4, in_width=0, out_width=8, n_obs=1)
    assert MappedRingSpec(n_slots=2, in_width=1, out_width=1, n_obs=1).n_slots == 2


def test_host_side_protocol(sim_run: dict[str, Any]) -> None:
    p = sim_run["protocol"]
    assert p["pushed_until_full"] == [True] * 4 + [False]  # n_slots = 4
    assert p["in_seq"] == [1, 2, 3, 4] and p["hdr_seq"] == [0, 1, 2, 3]
    assert p["push_after_kernel_freed_slot0"] and p["in_seq0_after"] == 5
    assert p["popped_unpublished"] == 0
    assert p["popped"] == 1 and p["pop_payload_ok"] and p["out_done"] == 1
    assert p["stale_flag_popped"] == 0  # a flag from another lap is not this window's
    assert p["counter_words"] == [5, 6, 7, 0]
    assert p["too_long_payload"] == "ValueError"


def test_echo_kernel_round_trip_through_a_small_ring(sim_run: dict[str, Any]) -> None:
    e = sim_run["echo"]
    assert e["received"] == e["sent"] == 40
    assert e["payload_ok"] and e["headers_ok"] and e["in_order"]
    assert e["exited"] and not e["launcher_alive"]
    assert e["heartbeat"] > 0


def test_flag_intrinsics_compile_to_system_scope_ptx() -> None:
    r = _scenario("ptx", sim=False, timeout_s=120.0)
    if not r["ok"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable here: {r['reason']}")
    assert r["ld.acquire.sys.u64"] >= 2 and r["st.release.sys.u64"] >= 1
    assert r["membar.sys"] >= 1


@pytest.mark.gpu
def test_echo_kernel_on_a_gpu() -> None:
    e = _scenario("echo", sim=False, timeout_s=300.0)["echo"]
    assert e["received"] == e["sent"] and e["payload_ok"] and e["headers_ok"] and e["in_order"]
    assert e["exited"]


# --------------------------------------------------------------------------- scenarios


def _protocol() -> dict[str, Any]:
    import numpy as np

    from qhil.bridge import _gpu_ring as g
    from qhil.bridge._gpu_ring import W_IN_DONE, MappedRingSpec, MappedSlotRing

    ring = MappedSlotRing(MappedRingSpec(n_slots=4, in_width=8, out_width=8, n_obs=1))
    h = ring._host
    pushed = [ring.try_push(7, 100 + i, np.full(8, i, np.uint8)) for i in range(5)]
    out: dict[str, Any] = {
        "pushed_until_full": pushed,
        "in_seq": h["in_seq"].tolist(),
        "hdr_seq": h["in_hdr"][:, 2].tolist(),
    }
    h["ctrl"][W_IN_DONE] = 1  # acting as the kernel: window 0 copied out
    out["push_after_kernel_freed_slot0"] = ring.try_push(7, 104, np.full(8, 4, np.uint8))
    out["in_seq0_after"] = int(h["in_seq"][0])
    out["popped_unpublished"] = len(ring.pop()[0])
    # acting as the kernel: result 0 into slot 0, then its flag
    h["out_hdr"][0] = (7, 100, 0, 3, 1, 55, 2, 0)
    h["out_data"][0] = np.arange(8)
    h["out_obs"][0] = 1
    h["out_seq"][0] = 1
    hdr, data, obs = ring.pop()
    out["popped"] = len(hdr)
    out["pop_payload_ok"] = bool(
        hdr.tolist() == [[7, 100, 0, 3, 1, 55, 2, 0]]
        and (data[0] == np.arange(8)).all()
        and obs[0, 0] == 1
    )
    h["ctrl"][g.W_COUNTERS : g.W_COUNTERS + 3] = (5, 6, 7)  # acting as the kernel
    out["counter_words"] = ring.counter_words()[:4].tolist()
    out["out_done"] = ring.word(24)
    h["out_seq"][1] = 1 + 4  # window 4's flag in slot 1 (wrong lap: window 1 is expected)
    out["stale_flag_popped"] = len(ring.pop()[0])
    try:
        ring.try_push(0, 0, np.zeros(9, np.uint8))
        out["too_long_payload"] = None
    except ValueError:
        out["too_long_payload"] = "ValueError"
    return out


def _echo() -> dict[str, Any]:
    import numpy as np

    from qhil.bridge import _gpu_ring as g

    @cuda.jit
    def echo(ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs):  # type: ignore[no-untyped-def]
        # A one-thread persistent kernel speaking the ring protocol: out = in XOR 0xFF.
        n_slots = in_seq.shape[0]
        n = np.int64(0)
        beat = np.int64(0)
        g.flag_store(ctrl, g.W_STATE, g.STATE_RUNNING)
        while True:
            slot = n & (n_slots - 1)
            go = 0
            while go == 0:
                if g.flag_load(ctrl, g.W_SHUTDOWN) != 0:
                    go = -1
                elif np.int64(g.flag_load(in_seq, slot)) == n + 1:
                    go = 1
                else:
                    beat += 1
                    g.flag_store(ctrl, g.W_HEARTBEAT, beat)
            if go < 0:
                break
            cuda.threadfence_system()
            while n - np.int64(g.flag_load(ctrl, g.W_OUT_DONE)) >= n_slots:
                if g.flag_load(ctrl, g.W_SHUTDOWN) != 0:
                    go = -1
                    break
            if go < 0:
                break
            for j in range(in_hdr.shape[1]):
                out_hdr[slot, j] = in_hdr[slot, j]
            for j in range(in_data.shape[1]):
                out_data[slot, j] = in_data[slot, j] ^ 0xFF
            out_obs[slot, 0] = in_data[slot, 0] & 1
            cuda.threadfence_system()
            g.flag_store(ctrl, g.W_IN_DONE, n + 1)
            g.flag_store(out_seq, slot, n + 1)
            n += 1
        cuda.threadfence_system()
        g.flag_store(ctrl, g.W_STATE, g.STATE_EXITED)

    ring = g.MappedSlotRing(g.MappedRingSpec(n_slots=4, in_width=16, out_width=16, n_obs=1))
    sim = g.simulator_enabled()
    launcher = None
    if sim:  # a simulated launch returns only when the kernel ends
        launcher = threading.Thread(target=lambda: echo[1, 1](*ring.device_args()), daemon=True)
        launcher.start()
    else:
        echo[1, 1, cuda.stream()](*ring.device_args())
    rng = np.random.default_rng(0)
    sent = [rng.integers(0, 256, 16, dtype=np.uint8) for _ in range(40)]
    received: list[tuple[Any, Any]] = []

    def produce() -> None:
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
    ring.request_shutdown()
    t1 = time.monotonic()
    while ring.state != g.STATE_EXITED and time.monotonic() - t1 < 10:
        time.sleep(1e-3)
    if launcher is not None:
        launcher.join(10)
    elif ring.state == g.STATE_EXITED:
        cuda.synchronize()
    return {
        "sent": len(sent),
        "received": len(received),
        "payload_ok": all((d == (sent[h[1] - 500] ^ 0xFF)).all() for h, d in received),
        "headers_ok": all(h[0] == 3 and h[2] == h[1] - 500 for h, _ in received),
        "in_order": [h[1] for h, _ in received] == list(range(500, 500 + len(received))),
        "exited": ring.state == g.STATE_EXITED,
        "launcher_alive": launcher is not None and launcher.is_alive(),
        "heartbeat": ring.heartbeat,
    }


def _ptx() -> dict[str, Any]:
    try:
        from qhil.bridge._gpu_ring import W_HEARTBEAT, flag_load, flag_store

        def probe(ctrl, seq):  # type: ignore[no-untyped-def]
            v = flag_load(seq, 0)
            cuda.threadfence_system()
            flag_store(ctrl, W_HEARTBEAT, flag_load(ctrl, 1) + v)

        ptx, _ = cuda.compile_ptx(probe, "void(uint64[::1], uint64[::1])", cc=(9, 0))
    except Exception as ex:
        return {"ok": False, "reason": f"{type(ex).__name__}: {str(ex).strip()[:300]}"}
    keys = ("ld.acquire.sys.u64", "st.release.sys.u64", "membar.sys")
    return {"ok": True, **{k: ptx.count(k) for k in keys}}


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        sys.setswitchinterval(5e-4)  # simulator: the busy-polling kernel shares the GIL
    which = sys.argv[1]
    if which == "ptx":
        result = _ptx()
    elif which == "echo":
        result = {"echo": _echo()}
    else:
        result = {"protocol": _protocol(), "echo": _echo()}
    print(json.dumps(result))

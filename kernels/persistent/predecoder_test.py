"""Tests of ``PersistentPreDecoder``: the streaming persistent kernel fed per-round packets.

Without a GPU the kernel runs in Numba's CUDA simulator. ``NUMBA_ENABLE_CUDASIM``
must be set before ``numba.cuda`` is first imported and it changes what
``numba.cuda`` is for the whole process, so the simulator scenarios run in a
subprocess (``python -m qhil.kernels.persistent.predecoder_test <scenario>``, the
``__main__`` block below) and report JSON; the pytest process itself never
switches to the simulator. The subprocess timeout is the "never hangs" check.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qhil.bridge import run_scenario

_MODULE = "qhil.kernels.persistent.predecoder_test"

# (distance, rounds, basis, model widths, kernel size, shots, threshold): rounds=1; a kernel
# of 5; rounds > 2 x the receptive field (5); d=5 with three layers (lag 3 > T = 3); a
# confidence threshold.
EXACT_CASES = [
    (3, 1, "z", (4, 4, 4), 3, 3, 0.0),
    (3, 3, "x", (4, 4), 5, 2, 0.0),
    (3, 11, "z", (4, 4, 4), 3, 2, 0.0),
    (5, 2, "x", (4, 4, 4, 4), 3, 2, 0.0),
    (5, 4, "z", (4, 4, 4), 3, 2, 0.5),
]


_scenario = functools.partial(run_scenario, _MODULE, timeout_s=120.0)


@pytest.fixture(scope="module")
def sim_run() -> dict[str, Any]:
    t0 = time.monotonic()
    out = _scenario("all")
    out["subprocess_s"] = time.monotonic() - t0
    return out


def test_streamed_rounds_equal_the_reference_exactly(sim_run: dict[str, Any]) -> None:
    cases = sim_run["exact"]
    assert [c["case"] for c in cases] == [list(c[:3]) for c in EXACT_CASES]
    for c in cases:
        assert c["results"] == c["shots"] and c["mismatches"] == [], c
        assert c["all_decoded"] and c["rounds"] == [c["T"]] * c["shots"], c
        assert c["in_order"]
        k = c["counters"]
        assert k["packets"] == k["rounds_accepted"] == c["shots"] * c["T"] == c["sent"], k
        assert k["shots_decoded"] == c["shots"]
        assert sum(k.values()) == 2 * k["packets"] + k["shots_decoded"]  # nothing else counted
        assert c["report"]["exited"] and c["report"]["error"] is None
    # the random models really act, so equality is not vacuous
    assert all(c["corrections_total"] > 0 for c in cases)
    assert sum(c["residual_differs_from_dets"] for c in cases) > 0
    assert cases[0]["input_ring_wrapped"]  # more packets than slots: the producer waited


def test_malformed_and_unexpected_packets_are_counted_and_skipped(sim_run: dict[str, Any]) -> None:
    m = sim_run["malformed"]
    k = m["counters"]
    want = {
        "bad_crc": 1, "stale": 3, "bad_magic": 1, "truncated": 1, "unknown_stream": 1,
        "seq_gap": 2, "packets_missing": 2, "duplicate": 2, "bad_field": 2, "bad_length": 1,
        "end_of_stream": 1, "bad_version": 1, "rounds_accepted": 15, "shots_decoded": 4,
        "shots_incomplete": 3, "dropped_at_shutdown": 0, "packets": m["sent"],
    }  # fmt: skip
    assert k == want, k
    rejected = sum(v for name, v in k.items() if name not in (
        "seq_gap", "packets_missing", "rounds_accepted", "shots_decoded", "shots_incomplete",
        "end_of_stream", "packets", "dropped_at_shutdown"))  # fmt: skip
    assert k["packets"] == k["rounds_accepted"] + rejected + k["end_of_stream"]
    assert m["results"] == [[0, "DECODED", 3], [1, "INCOMPLETE", 1], [2, "INCOMPLETE", 1],
                            [3, "DECODED", 3], [4, "DECODED", 3], [6, "INCOMPLETE", 1],
                            [7, "DECODED", 3]]  # fmt: skip
    assert m["decoded_equal_reference"]
    assert m["t_fpga_echoed"]  # the record carries the last packet's t_fpga and seq
    assert m["report"]["exited"] and m["report"]["error"] is None  # never crashed or hung


def test_shutdown_while_waiting_mid_shot(sim_run: dict[str, Any]) -> None:
    s = sim_run["mid_shot"]
    assert s["first_shot_decoded"]
    assert s["report"]["exited"] and s["report"]["error"] is None
    assert not s["launcher_alive"]
    assert s["open_shot"] == [1, "INCOMPLETE", 2]  # emitted on shutdown: nothing lost
    assert s["report"]["counters"]["shots_incomplete"] == 1
    w = s["output_wait"]  # shutdown while waiting for a free output slot
    assert w["report"]["exited"] and w["report"]["error"] is None
    k = w["report"]["counters"]
    assert k["packets"] == 7 and k["rounds_accepted"] == 6 and k["dropped_at_shutdown"] == 1
    assert w["records"] == [0, 1]
    idle = sim_run["idle"]
    assert idle["report"]["exited"] and idle["report"]["heartbeat"] > 0  # beats while polling
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


@pytest.mark.parametrize("basis", ["x", "z"])
def test_footprint_tables_equal_footprint_on_every_unit_output(basis: str) -> None:
    stim = pytest.importorskip("stim")

    from qhil.kernels._geometry import PreDecoderGeometry
    from qhil.kernels._model import QuantizedModel
    from qhil.kernels.persistent._tables import build_tables

    c = stim.Circuit.generated(f"surface_code:rotated_memory_{basis}", distance=3, rounds=3)
    g = PreDecoderGeometry.from_circuit(c)
    t = build_tables(g, QuantizedModel.random(widths=(4, 4), kernel=3, seed=1))
    n_out = g.output_mask.size
    flips, obs = g.footprint(np.eye(n_out, dtype=np.uint8).reshape(n_out, *g.output_mask.shape))
    got = np.zeros_like(flips)
    for i in range(t.num_detectors):
        got[t.det_src[t.det_ptr[i] : t.det_ptr[i + 1]], i] = True
    assert (got == flips).all()
    got_obs = np.zeros(n_out, dtype=bool)
    got_obs[t.obs_src] = True
    assert (got_obs == obs[:, 0]).all()


def test_tables_follow_the_geometry_footprints_slice_by_slice() -> None:
    stim = pytest.importorskip("stim")

    from qhil.kernels._geometry import PreDecoderGeometry
    from qhil.kernels._model import QuantizedModel
    from qhil.kernels.persistent._tables import L_AOFF, L_LAG, L_RING, build_tables

    c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=3)
    g = PreDecoderGeometry.from_circuit(c)
    m = QuantizedModel.random(widths=(4, 6, 5, 4), kernel=3, seed=1)
    t = build_tables(g, m, stream_id=9)
    rng = np.random.default_rng(5)
    e = rng.random((8, *g.output_mask.shape)) < 0.2
    flips, obs = g.footprint(e)
    flat = (e & g.output_mask).reshape(8, -1)
    for i in range(t.num_detectors):
        want = flat[:, t.det_src[t.det_ptr[i] : t.det_ptr[i + 1]]].sum(axis=1) % 2
        assert (want == flips[:, i]).all()
    t_n = t.rounds
    got_obs = sum(
        flat[:, t.obs_src[t.obs_ptr[s] : t.obs_ptr[s + 1]]].sum(axis=1) for s in range(t_n)
    )
    assert (got_obs % 2 == obs[:, 0]).all()
    assert t.wflat.size + t.bflat.size == m.parameter_count
    x = g.inputs(np.zeros((1, g.num_detectors), dtype=bool))
    assert (t.mask_act == (x[0].ravel().astype(np.int64) << m.act_bits)).all()
    assert t.layers[:, L_LAG].tolist() == [1, 2, 3] and t.layers[:, L_RING].tolist() == [3] * 3
    assert t.layers[:, L_AOFF].tolist() == [0, 4 * 3 * 9, (4 + 6) * 3 * 9]
    assert t.act_len == (4 + 6 + 5) * 3 * 9 and int(t.dims[6]) == 9
    assert t.n_bits.tolist() == np.diff(g.layout.round_offsets).tolist()
    for n in (0, 1, 5, 44, t.max_packet - 1):  # the parallel CRC's tables are zlib's CRC
        msg = rng.integers(0, 256, n, dtype=np.uint8)
        terms = t.crc_tab[n - 1 - np.arange(n), msg]
        crc = int(t.crc_zero[n] ^ np.bitwise_xor.reduce(terms, initial=0))
        assert crc == zlib.crc32(msg.tobytes())


def test_streaming_kernel_compiles_to_ptx_for_sm90(tmp_path: Path) -> None:
    r = _scenario("ptx", str(tmp_path / "streaming.ptx"), sim=False, timeout_s=120.0)
    if not r["ok"]:
        pytest.skip(f"numba.cuda.compile_ptx unavailable here: {r['reason']}")
    assert r["ld_acquire_sys"] > 0 and r["st_release_sys"] > 0  # the flag protocol
    assert r["membar_sys"] > 0  # cuda.threadfence_system()
    assert r["atom_xor"] > 0  # the parallel CRC's reduction
    assert r["calls"] == 0  # every inline_device step is compiled into the kernel
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("PTX generated; ptxas (CUDA toolkit) not found to assemble it for sm_90")
    proc = subprocess.run(
        [ptxas, "-arch=sm_90", str(tmp_path / "streaming.ptx"), "-o", str(tmp_path / "k.cubin")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.gpu
def test_streaming_kernel_on_a_gpu() -> None:
    r = _scenario("gpu", sim=False, timeout_s=300.0)
    for c in r["exact"]:
        assert c["results"] == c["shots"] and c["mismatches"] == [] and c["all_decoded"], c
    assert r["malformed"]["counters"]["packets"] == r["malformed"]["sent"]
    assert r["malformed"]["decoded_equal_reference"]
    st = r["stall"]
    assert st["raised"] == "KernelStalled" and st["kernel_exited"]


# --------------------------------------------------------------------------- scenarios


def _setup(distance: int, rounds: int, basis: str, widths: tuple[int, ...], kernel: int,
           shots: int, threshold: float = 0.0) -> tuple[Any, ...]:  # fmt: skip
    import stim

    from qhil.kernels._geometry import PreDecoderGeometry
    from qhil.kernels._model import QuantizedModel
    from qhil.kernels._predecoder import PreDecoder

    circuit = stim.Circuit.generated(
        f"surface_code:rotated_memory_{basis}",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=0.05,
    )
    geometry = PreDecoderGeometry.from_circuit(circuit)
    model = QuantizedModel.random(widths=widths, kernel=kernel, seed=1)
    dets = circuit.compile_detector_sampler(seed=3).sample(shots)
    dets[0] = False  # a quiet shot and a saturated one among the random ones
    dets[1] = True
    ref = PreDecoder(geometry, model, "numpy", threshold=threshold).predecode(dets)
    return geometry, model, np.asarray(dets), ref


def _matches(r: Any, ref: Any, i: int) -> bool:
    return bool(
        (r.residual == ref.residual[i]).all()
        and (r.obs_flip == ref.obs_flip[i]).all()
        and r.corrections == int(ref.corrections[i])
    )


def _collect(pd: Any, n: int, deadline_s: float, until: Any = None) -> list[Any]:
    results: list[Any] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        results += pd.poll()
        if len(results) >= n and (until is None or until()):
            break
        time.sleep(2e-3)
    return results


def _exact(case: tuple[Any, ...]) -> dict[str, Any]:
    import dataclasses
    import threading

    from qhil.kernels.persistent import PersistentPreDecoder

    geometry, model, dets, ref = _setup(*case)  # the reference: reference_logits inside
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=20.0,
                                    threshold=case[-1])  # fmt: skip
    shots = len(dets)
    producer = threading.Thread(target=pd.submit, args=(1000, dets), kwargs={"timeout_s": 60.0})
    producer.start()  # a host thread producing per-round packets while this one polls
    results = _collect(pd, shots, 90.0)
    producer.join(10.0)
    rep = pd.stop(timeout_s=10.0)
    ids = [r.shot_id for r in results]
    return {
        "case": list(case[:3]),
        "shots": shots,
        "T": pd.tables.rounds,
        "sent": pd.ring.pushed,
        "input_ring_wrapped": pd.ring.pushed > pd.ring.spec.n_slots,
        "results": len(results),
        "mismatches": [r.shot_id for r in results if not _matches(r, ref, r.shot_id - 1000)],
        "all_decoded": all(r.decoded for r in results),
        "rounds": [r.rounds for r in results],
        "in_order": ids == list(range(1000, 1000 + len(ids))),
        "corrections_total": int(sum(r.corrections for r in results)),
        "residual_differs_from_dets": int((ref.residual != dets).sum()),
        "counters": rep.counters,
        "report": dataclasses.asdict(rep),
    }


def _packets(geometry: Any, dets: Any) -> Any:
    """pkt(shot, round, seq, ...) -> wire-v1 bytes of that round of ``dets[shot]``."""
    from qhil.bridge import FLAG_FIRST_ROUND, FLAG_LAST_ROUND, syndrome_size, write_syndrome

    off = geometry.layout.round_offsets
    t_n = len(off) - 1

    def pkt(shot: int, rnd: int, seq: int, *, stream: int = 0, flags: int | None = None,
            n_bits: int | None = None, t_fpga: int | None = None) -> np.ndarray:  # fmt: skip
        bits = dets[shot % len(dets), off[rnd] : off[rnd + 1]]
        if flags is None:
            flags = (FLAG_FIRST_ROUND if rnd == 0 else 0) | (
                FLAG_LAST_ROUND if rnd == t_n - 1 else 0
            )
        nb = len(bits) if n_bits is None else n_bits
        payload = np.zeros(64, dtype=np.uint8)
        packed = np.packbits(bits, bitorder="little")
        payload[: len(packed)] = packed
        buf = np.zeros(syndrome_size(max(nb, len(bits))), dtype=np.uint8)
        tf = 1000 + (seq & 0xFFFF) if t_fpga is None else t_fpga
        n = write_syndrome(buf, stream, shot, rnd, np.uint64(seq), tf, flags, payload, nb)
        return buf[:n].copy()

    return pkt


def _with(packet: np.ndarray, offset: int, value: int) -> np.ndarray:
    packet[offset] = value
    return packet


def _malformed() -> dict[str, Any]:
    import dataclasses
    import threading

    from qhil.bridge import FLAG_END_OF_STREAM
    from qhil.kernels.persistent import PersistentPreDecoder

    geometry, model, dets, ref = _setup(3, 2, "z", (4, 4, 4), 3, 8)  # T = 3
    pkt = _packets(geometry, dets)
    bad_crc = pkt(1, 1, 4)
    bad_crc[-1] ^= 0x5A
    seq = [  # (packet, what the kernel must make of it)
        pkt(0, 0, 0), pkt(0, 1, 1), pkt(0, 2, 2),  # shot 0 decoded
        pkt(1, 0, 3), bad_crc, pkt(1, 2, 5),  # bad CRC (seq 4 unread: a gap); round 2 stale
        np.frombuffer(b"XXXX" + bytes(40), dtype=np.uint8),  # bad magic
        pkt(2, 0, 6)[:41],  # truncated
        pkt(2, 0, 6, stream=5),  # unknown stream (seq 6 is not consumed)
        pkt(2, 0, 6), pkt(2, 2, 8), pkt(2, 1, 7),  # out of order: gap, stale, stale late
        pkt(3, 0, 9), pkt(3, 0, 9), pkt(3, 1, 10), pkt(3, 1, 11), pkt(3, 2, 12),  # duplicates
        pkt(4, 0, 13, flags=0x03), pkt(4, 0, 14), pkt(4, 1, 15), pkt(4, 2, 16),  # bad flags
        pkt(5, 1, 17, n_bits=3),  # n_bits not this layout's
        pkt(5, 0, 2**63),  # seq >= 2**63
        _with(pkt(5, 0, 18), 4, 2),  # wire version 2
        pkt(6, 0, 18), pkt(6, 0, 19, flags=FLAG_END_OF_STREAM, n_bits=0),  # end of stream
        pkt(7, 0, 20), pkt(7, 1, 21), pkt(7, 2, 22, t_fpga=777),  # shot 7 decoded
    ]  # fmt: skip
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=20.0)

    failed: list[BaseException] = []

    def produce() -> None:
        try:
            for p in seq:
                assert pd.sender.send(p, timeout_s=60.0)
        except BaseException as ex:  # reported below, not lost in the thread
            failed.append(ex)

    producer = threading.Thread(target=produce)
    producer.start()
    done = lambda: bool(failed) or pd.counters()["packets"] == len(seq)  # noqa: E731
    results = _collect(pd, 7, 90.0, until=done)
    producer.join(10.0)
    if failed:
        raise failed[0]
    rep = pd.stop(timeout_s=10.0)
    decoded = [r for r in results if r.decoded]
    last = results[-1] if results else None
    return {
        "sent": len(seq),
        "counters": rep.counters,
        "results": [[r.shot_id, r.status.name, r.rounds] for r in results],
        "decoded_equal_reference": bool(decoded)
        and all(_matches(r, ref, r.shot_id) for r in decoded),
        "t_fpga_echoed": last is not None and (last.t_fpga, last.seq) == (777, 22),
        "report": dataclasses.asdict(rep),
    }


def _mid_shot() -> dict[str, Any]:
    import dataclasses

    from qhil.kernels.persistent import PersistentPreDecoder

    geometry, model, dets, ref = _setup(3, 2, "z", (4, 4, 4), 3, 2)
    pkt = _packets(geometry, dets)
    pd = PersistentPreDecoder.start(geometry, model, n_slots=8, watchdog_s=20.0)
    for i, (shot, rnd) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]):
        assert pd.sender.send(pkt(shot, rnd, i), timeout_s=30.0)
    got = _collect(pd, 1, 60.0, until=lambda: pd.counters()["packets"] == 5)
    rep = pd.stop(timeout_s=10.0)  # the kernel is waiting for shot 1's last round
    rest = pd.ring.pop()[0]  # poll() would raise "stopped" once drained; read the ring
    out = {
        "first_shot_decoded": len(got) == 1 and got[0].decoded and _matches(got[0], ref, 0),
        "report": dataclasses.asdict(rep),
        "launcher_alive": pd.run.launcher_alive,
        "open_shot": [int(rest[0][1]), "INCOMPLETE" if rest[0][4] == 1 else "?", int(rest[0][6])]
        if len(rest) == 1
        else None,
    }
    # Two output slots, never polled: shot 2's round 0 waits for one; shutdown ends the wait.
    pd = PersistentPreDecoder.start(geometry, model, n_slots=2, watchdog_s=20.0)
    for i in range(7):
        assert pd.sender.send(pkt(i // 3, i % 3, i), timeout_s=30.0)
    t0 = time.monotonic()
    while pd.ring.in_done < 7 and time.monotonic() - t0 < 30:
        time.sleep(2e-3)
    rep = pd.stop(timeout_s=10.0)
    out["output_wait"] = {
        "report": dataclasses.asdict(rep),
        "records": [int(h[1]) for h in pd.ring.pop()[0]],
    }
    return out


def _idle() -> dict[str, Any]:
    import dataclasses

    from qhil.kernels.persistent import PersistentPreDecoder

    geometry, model, _, _ = _setup(3, 1, "z", (4, 4), 3, 2)
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=20.0)
    t0 = time.monotonic()
    while pd.ring.heartbeat == 0 and time.monotonic() - t0 < 10:
        time.sleep(1e-3)
    return {"report": dataclasses.asdict(pd.stop(timeout_s=10.0))}


def _stall() -> dict[str, Any]:
    import dataclasses

    from qhil.bridge import STATE_EXITED
    from qhil.kernels.persistent import PersistentKernelError, PersistentPreDecoder

    geometry, model, dets, ref = _setup(3, 1, "z", (4, 4), 3, 2)
    pd = PersistentPreDecoder.start(geometry, model, n_slots=4, watchdog_s=2.0)
    pd.submit(0, dets[:2])
    got = _collect(pd, 2, 30.0)
    before_ok = len(got) == 2 and all(_matches(r, ref, r.shot_id) for r in got)
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
        "report": dataclasses.asdict(rep),
        "launcher_alive": pd.run.launcher_alive,
    }


def _ptx(path: str) -> dict[str, Any]:
    try:
        from numba import cuda

        from qhil.kernels.persistent._kernel import KERNEL_SIGNATURE, streaming_kernel

        ptx, _ = cuda.compile_ptx(streaming_kernel.py_func, KERNEL_SIGNATURE, cc=(9, 0))
    except Exception as ex:  # no NVVM / no compile_ptx: the test skips with this reason
        return {"ok": False, "reason": f"{type(ex).__name__}: {str(ex).strip()[:300]}"}
    Path(path).write_text(ptx)
    return {
        "ok": True,
        "ld_acquire_sys": ptx.count("ld.acquire.sys"),
        "st_release_sys": ptx.count("st.release.sys"),
        "membar_sys": ptx.count("membar.sys") + ptx.count("fence.sc.sys"),
        "atom_xor": ptx.count("atom.shared.xor") + ptx.count("atom.xor"),
        "calls": ptx.count("call.uni") + ptx.count("\tcall "),
    }


def _main(argv: list[str]) -> dict[str, Any]:
    name = argv[0]
    if name == "ptx":
        return _ptx(argv[1])
    if name == "gpu":
        cases = [(5, 5, "z", (4, 8, 4), 3, 50), (13, 13, "z", (4, 16, 4), 3, 8)]
        return {"exact": [_exact(c) for c in cases], "malformed": _malformed(), "stall": _stall()}
    return {
        "exact": [_exact(c) for c in EXACT_CASES],
        "malformed": _malformed(),
        "mid_shot": _mid_shot(),
        "idle": _idle(),
        "stall": _stall(),
    }


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # Simulator only: kernel threads, the producer and the watchdog share the GIL;
        # shorter switch intervals keep the busy-polling kernel from starving them.
        sys.setswitchinterval(5e-4)
    print(json.dumps(_main(sys.argv[1:])))

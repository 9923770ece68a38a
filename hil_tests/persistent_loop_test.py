"""The persistent pre-decoder in the loop: the decoder service streaming rounds into it
through faults, the whole loop in the simulator (and on a GPU), and the refusal where
it cannot run.

The scenarios run in a subprocess (``python -m hil_tests.persistent_loop_test
<scenario>``, from the repository root) with ``NUMBA_ENABLE_CUDASIM=1`` set before
``numba.cuda`` is imported, and report JSON. The subprocess timeout is the "never hangs"
check.
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

REPO = Path(__file__).resolve().parents[1]
_scenario = functools.partial(
    run_scenario, "hil_tests.persistent_loop_test", timeout_s=90.0, cwd=str(REPO)
)


def test_without_a_gpu_or_the_simulator_the_backend_is_refused_clearly() -> None:
    r = _scenario("refuse", sim=False, timeout_s=60.0)
    if r["available"]:
        pytest.skip(f"a GPU is usable here: {r['reason']}")
    msg = r["message"]
    assert r["raised"] == "RuntimeError"
    assert "cuda-persistent" in msg and "GPU" in msg and "Numba" in msg
    assert "NUMBA_ENABLE_CUDASIM=1" in msg and "--backend cuda, numba or numpy" in msg
    # the config accepts the backend; only building the decoder refuses it
    assert r["config_ok"]
    # never offered by "auto", and refused by the batch PreDecoder with a pointer
    assert "cuda-persistent" not in r["available_backends"]
    assert "streams shots" in r["batch_message"]


def test_config_accepts_the_backend() -> None:
    from qhil.host import ConfigError, DecoderSettings

    assert DecoderSettings(name="predecoder", backend="cuda-persistent").backend == (
        "cuda-persistent"
    )
    with pytest.raises(ConfigError):
        DecoderSettings(backend="cuda-persistant")


def test_the_service_streams_rounds_and_faults_still_balance() -> None:
    # The decoder service fed 40 shots' packets through a FaultInjector (drops, duplicates,
    # reorders), once with the CPU pipeline (batch path) and once with the persistent
    # kernel (streamed round by round): the same correction for every shot. ~4 s.
    r = _scenario("stream_faults")
    assert r["equal"], r["differ"]
    assert r["answered_every_shot"]
    assert all(r["faults"][k] > 0 for k in ("drop", "duplicate", "reorder")), r["faults"]
    assert r["ref_decoded"] == r["decoded"] and r["ref_incomplete"] == r["incomplete"] > 0
    assert r["decoded"] + r["incomplete"] == r["shots"]
    assert r["decoder_errors"] == 0 and r["first_decoder_error"] == ""
    assert r["balanced"] == "ok"
    # the batch path streams nothing; the kernel got every accepted round via on_round
    assert not r["ref_streaming"] and r["ref_rounds_streamed"] == 0
    c = r["decoder_counts"]
    assert r["streaming"] and r["rounds_stream_failed"] == 0
    assert r["rounds_streamed"] == r["rounds_accepted"] == c["rounds_forwarded"]
    assert c["kernel_packets"] == c["rounds_forwarded"] and c["rounds_not_forwarded"] == 0
    assert c["batch_calls"] == 0  # decode_batch never used
    # out-of-order rounds: the kernel gave those shots up, the CPU fallback decoded them
    assert c["shots_kernel"] > 0 and c["shots_fallback"] > 0
    assert c["shots_kernel"] + c["shots_fallback"] == r["decoded"]
    assert c["kernel_shots_decoded"] == c["shots_kernel"]
    assert c["kernel_stale"] > 0 and c["kernel_records_incomplete"] > 0
    assert c["shots_abandoned"] == r["incomplete"]
    assert r["leftover_results"] == 0 and r["dropped_pending"] <= 1  # nothing accumulates
    assert "cannot switch to 'batch'" in r["mixing_error"]
    assert r["report_exited"] and r["report_error"] is None


@pytest.mark.slow
def test_loop_with_the_persistent_predecoder_in_the_simulator() -> None:
    # The whole loop (front-end cycle model, shm bridge, decoder process): the service
    # streams each round's packet into the kernel as it arrives. Default model, d=3, one
    # round: ~10 s on 2 cores.
    r = _scenario("sim_loop", timeout_s=240.0)
    assert not r["aborted"], r
    assert r["shots_decoded"] == r["shots_emitted"] == r["shots"]
    assert r["decoder_errors"] == 0 and r["first_decoder_error"] == ""
    assert r["equal_offline"]  # the loop's predictions == PreDecodedMatching(numpy) offline
    c = r["decoder_counts"]
    assert r["streaming"] and r["rounds_streamed"] == r["rounds_accepted"] == 2 * r["shots"]
    assert c["kernel_packets"] == c["kernel_rounds_accepted"] == r["rounds_streamed"]
    assert c["shots_kernel"] == r["shots"] and c["shots_fallback"] == 0
    assert c["batch_calls"] == 0


@pytest.mark.gpu
def test_loop_with_the_persistent_predecoder_on_a_gpu() -> None:
    r = _scenario("gpu_loop", sim=False, timeout_s=600.0)
    assert not r["aborted"]
    assert r["shots_decoded"] == r["shots_emitted"] == r["shots"]
    assert r["decoder_errors"] == 0 and r["first_decoder_error"] == ""
    assert r["equal_offline"]  # the loop's predictions == PreDecodedMatching(numpy) offline


# --------------------------------------------------------------------------- scenarios


def _circuit(distance: int = 3, rounds: int = 2) -> Any:
    import stim

    return stim.Circuit.generated(
        "surface_code:rotated_memory_z",
        distance=distance,
        rounds=rounds,
        after_clifford_depolarization=0.05,
    )


class _Collect:
    """A PacketSender that keeps what it is given (FaultInjector's inner end)."""

    max_packet = 256

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def try_send(self, packet: Any) -> bool:
        self.packets.append(bytes(packet))
        return True

    def send(self, packet: Any, *, timeout_s: float) -> bool:
        return self.try_send(packet)

    def reserve(self) -> Any:  # room, always (FaultInjector asks before it sends)
        import numpy as np

        return np.zeros(self.max_packet, dtype=np.uint8)

    def commit(self, length: int) -> None:
        raise AssertionError("FaultInjector sends with try_send; commit is not used")

    def close(self) -> None:
        pass


def _faulty_packets(circuit: Any, shots: int, *, rate: float, seed: int) -> tuple[list[bytes], Any]:
    """Every shot's per-round packets (then end of stream), through a FaultInjector."""
    from qhil.bridge import (
        FLAG_END_OF_STREAM,
        FLAG_FIRST_ROUND,
        FLAG_LAST_ROUND,
        FaultInjector,
        SyndromePacket,
    )
    from qhil.fpga import DetectorProgram

    program = DetectorProgram.from_circuit(circuit)
    off, rounds = program.det_offsets, len(program.bits_per_round)
    dets = circuit.compile_detector_sampler(seed=11).sample(shots)
    sink = _Collect()
    tx = FaultInjector(sink, rate=rate, kinds=("drop", "duplicate", "reorder"), seed=seed)
    seq = 0
    for shot in range(shots):
        for r in range(rounds):
            flags = (FLAG_FIRST_ROUND if r == 0 else 0) | (
                FLAG_LAST_ROUND if r == rounds - 1 else 0
            )
            p = SyndromePacket(stream_id=0, shot=shot, round=r, seq=seq, t_fpga=seq,
                               bits=dets[shot, off[r] : off[r + 1]], flags=flags)  # fmt: skip
            assert tx.try_send(p.encode())
            seq += 1
    tx.flush()
    eos = SyndromePacket(stream_id=0, shot=0, round=0, seq=seq, t_fpga=seq, bits=[],
                         flags=FLAG_END_OF_STREAM)  # fmt: skip
    return [*sink.packets, eos.encode()], tx


def _serve(decoder: Any, circuit: Any, packets: list[bytes], *, pace_s: float) -> tuple[Any, Any]:
    """Serve ``packets`` (fed from a thread, ``pace_s`` apart) -> (HostStats, corrections)."""
    import threading

    from qhil.bridge import CorrectionPacket, ShmRing, packet_buffers
    from qhil.fpga import DetectorProgram
    from qhil.host import DecoderService, ServiceConfig

    # A long assembly timeout: which shots complete then depends on packet order only.
    cfg = ServiceConfig(assembly_timeout_s=60.0, eos_grace_s=0.05)
    svc = DecoderService(decoder, DetectorProgram.from_circuit(circuit), config=cfg)
    svc.warm_up()
    with ShmRing.create(n_slots=1024) as up, ShmRing.create(n_slots=1024) as down:
        tx = up.sender()

        def feed() -> None:
            for p in packets:
                assert tx.send(p, timeout_s=5.0)
                time.sleep(pace_s)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        stats = svc.serve(up.receiver(), down.sender())
        feeder.join(5.0)
        out, lengths = packet_buffers(1024, down.receiver().max_packet)
        n = down.receiver().recv_into(out, lengths, timeout_s=0.0)
    return stats, [CorrectionPacket.decode(out[i, : lengths[i]]) for i in range(n)]


def _corrections(cs: list[Any]) -> dict[int, Any]:
    return {c.shot: [int(c.status), c.obs.tolist(), c.frame.tolist()] for c in cs if not c.flags}


def _stream_faults(tmp: str) -> dict[str, Any]:
    from pathlib import Path

    import numpy as np

    from qhil.kernels import PreDecodedMatching, QuantizedModel
    from qhil.kernels.persistent import PersistentPreDecodedMatching

    path = Path(tmp) / "tiny.npz"
    QuantizedModel.random(widths=(4, 4, 4), kernel=3, seed=1).save(path)
    circuit = _circuit()
    shots = 40
    packets, injector = _faulty_packets(circuit, shots, rate=0.12, seed=4)
    cpu = PreDecodedMatching.from_circuit(circuit, model=path, backend="numpy")
    ref_stats, ref = _serve(cpu, circuit, packets, pace_s=0.0)
    dec = PersistentPreDecodedMatching.from_circuit(
        circuit, model=path, watchdog_s=10.0, n_slots=8, fallback_backend="numpy"
    )
    try:
        stats, got = _serve(dec, circuit, packets, pace_s=2e-3)
        counts = dec.streaming_counts()
        try:
            dec.decode_batch(np.zeros((1, circuit.num_detectors), np.uint8))
            mixing = ""
        except RuntimeError as ex:
            mixing = str(ex)
    finally:
        report = dec.close(timeout_s=10.0)
    want, have = _corrections(ref), _corrections(got)
    return {
        "shots": shots,
        "faults": injector.counts(),
        "ref_decoded": ref_stats.shots_decoded,
        "ref_incomplete": ref_stats.shots_incomplete,
        "ref_streaming": ref_stats.streaming,
        "ref_rounds_streamed": ref_stats.rounds_streamed,
        "decoded": stats.shots_decoded,
        "incomplete": stats.shots_incomplete,
        "decoder_errors": stats.shots_decoder_error,
        "first_decoder_error": stats.first_decoder_error,
        "streaming": stats.streaming,
        "rounds_accepted": stats.counts["rounds_accepted"],
        "rounds_streamed": stats.rounds_streamed,
        "rounds_stream_failed": stats.rounds_stream_failed,
        "decoder_counts": stats.decoder_counts,
        "counts_after": counts,
        "answered_every_shot": sorted(have) == list(range(shots)),
        "equal": have == want,
        "differ": {
            k: [want.get(k), have.get(k)]
            for k in set(want) | set(have)
            if want.get(k) != have.get(k)
        },
        "mixing_error": mixing,
        "leftover_results": len(dec._s.streamed),
        "dropped_pending": len(dec._s.dropped),
        "report_exited": report.exited,
        "report_error": report.error,
        "balanced": _balanced(stats),
    }


def _balanced(stats: Any) -> str:
    try:
        stats.check_balanced()
    except AssertionError as ex:
        return str(ex)
    return "ok"


def _refuse() -> dict[str, Any]:
    from qhil.host import DecoderSettings, make_decoder
    from qhil.kernels import PreDecoder, available_backends
    from qhil.kernels.persistent import persistent_available

    ok, why = persistent_available()
    out: dict[str, Any] = {"available": ok, "reason": why, "raised": None, "message": ""}
    out["config_ok"] = DecoderSettings(name="predecoder", backend="cuda-persistent") is not None
    out["available_backends"] = list(available_backends())
    try:
        PreDecoder.for_circuit(_circuit(), backend="cuda-persistent")
        out["batch_message"] = ""
    except ValueError as ex:
        out["batch_message"] = str(ex)
    if ok:
        return out
    try:
        make_decoder("predecoder", _circuit(), backend="cuda-persistent")
    except Exception as ex:
        out["raised"], out["message"] = type(ex).__name__, str(ex)
    return out


def _loop(*, shots: int, distance: int, rounds: int, timeout_s: float) -> dict[str, Any]:
    import numpy as np

    from qhil.host import RunConfig, run_loop
    from qhil.kernels import PreDecodedMatching

    cfg = RunConfig().with_overrides(
        {
            "experiment.distance": distance,
            "experiment.rounds": rounds,
            "experiment.p": 0.005,
            "experiment.shots": shots,
            "experiment.seed": 7,
            "decoder.name": "predecoder",
            "decoder.backend": "cuda-persistent",
            "frontend.correction_timeout_rounds": round(timeout_s * 1e6),
            "frontend.stall_timeout_s": max(2.0, 2 * timeout_s),
        }
    )
    out = run_loop(cfg, progress=False)
    r = out.report
    offline = PreDecodedMatching.from_circuit(out.circuit, backend="numpy").decode_batch(
        out.shots.detectors
    )
    host = out.host
    return {
        "shots": shots,
        "aborted": bool(r.aborted),
        "shots_emitted": int(r.shots_emitted),
        "shots_decoded": int(r.shots_decoded),
        "decoder_errors": -1 if host is None else int(host.shots_decoder_error),
        "first_decoder_error": "no host stats" if host is None else host.first_decoder_error,
        "equal_offline": bool(np.array_equal(out.result.predictions, offline)),
        "streaming": host is not None and host.streaming,
        "rounds_streamed": -1 if host is None else host.rounds_streamed,
        "rounds_accepted": -1 if host is None else host.counts["rounds_accepted"],
        "decoder_counts": {} if host is None else host.decoder_counts,
    }


def _main(argv: list[str]) -> dict[str, Any]:
    import tempfile

    name = argv[0]
    if name == "stream_faults":
        with tempfile.TemporaryDirectory() as tmp:
            return _stream_faults(tmp)
    if name == "refuse":
        return _refuse()
    if name == "gpu_loop":
        return _loop(shots=2000, distance=5, rounds=5, timeout_s=0.5)
    if name == "sim_loop":  # a simulated kernel needs ~1 s per shot: long timeouts
        return _loop(shots=4, distance=3, rounds=1, timeout_s=60.0)
    raise SystemExit(f"unknown scenario {name!r}")


if __name__ == "__main__":
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        # Simulator only: kernel threads, the collector and the watchdog share the GIL.
        sys.setswitchinterval(5e-4)
    print(json.dumps(_main(sys.argv[1:])))

"""``qhil bench``: timing the bridge alone and the whole loop. Benchmarks, never tests.

- ``bridge``: round trip of one packet between two processes (ping on one
  link, the peer echoes on the other), for the shared-memory ring and ZeroMQ
  over ipc:// and tcp://127.0.0.1. Warm-up first, then one sample per packet.
  The same run measures the floor (``qhil.bridge.floor_round_trips``: a compiled
  ping-pong through one cache line each way) and reports each transport as a
  ratio to it.
- ``loop``: the closed loop (cycle model, shm bridge, PyMatching) at several
  distances with rounds = d, reporting reaction latency and how it splits into
  transport and decoding.

Results are dictionaries ready for JSON, each naming the machine.
"""

from __future__ import annotations

import multiprocessing
import tempfile
import time
from typing import Any

import numpy as np

from qhil.bridge import BridgeSpec, TransportClosed, floor_round_trips, open_bridge, packet_buffers
from qhil.host._bench_ring import compiled_ring_round_trips
from qhil.host._config import RunConfig
from qhil.host._report import machine_description
from qhil.host._stats import Percentiles

__all__ = ["bench_backends", "bench_bridge", "bench_loop", "bench_throughput"]

_PACKET = 48  # a d=5 syndrome packet is 47 bytes


def _echo(spec: BridgeSpec) -> None:
    bridge = open_bridge(spec, side="host")
    buf, lengths = packet_buffers(64, spec.max_packet)
    try:
        while True:
            n = bridge.rx.recv_into(buf, lengths, timeout_s=1.0)
            for i in range(n):
                if lengths[i] == 0:
                    return
                bridge.tx.send(buf[i, : lengths[i]], timeout_s=1.0)
    except TransportClosed:
        return
    finally:
        bridge.close()


def _round_trips(spec: BridgeSpec, *, packets: int, warmup: int) -> np.ndarray:
    ctx = multiprocessing.get_context("spawn")
    fpga = open_bridge(spec, side="fpga") if spec.transport == "shm" else None
    proc = ctx.Process(target=_echo, args=(fpga.spec if fpga else spec,), daemon=True)
    proc.start()
    if fpga is None:
        fpga = open_bridge(spec, side="fpga")
    buf, lengths = packet_buffers(4, spec.max_packet)
    packet = np.arange(_PACKET, dtype=np.uint8)
    rtt = np.zeros(packets, dtype=np.int64)
    try:
        for i in range(-warmup, packets):
            t0 = time.perf_counter_ns()
            if not fpga.tx.send(packet, timeout_s=5.0):
                raise RuntimeError("bridge benchmark: the echo process stopped taking packets")
            if fpga.rx.recv_into(buf, lengths, timeout_s=5.0) != 1:
                raise RuntimeError("bridge benchmark: no echo within 5 s")
            if i >= 0:
                rtt[i] = time.perf_counter_ns() - t0
        fpga.tx.send(packet[:0], timeout_s=1.0)  # empty packet: the echo process stops
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
        fpga.close()
    return rtt


def bench_bridge(*, packets: int = 20_000, warmup: int = 2_000) -> dict[str, Any]:
    """Packet round trip (ping + echo) per transport, in microseconds, and each
    percentile as a ratio to the compiled ping-pong floor measured in the same run."""
    floor = floor_round_trips(packets, warmup=warmup)
    floor_us = Percentiles.of(floor.round_trip_ns).scaled(1e-3).__dict__
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        specs = {
            "shm ring": BridgeSpec(transport="shm", n_slots=256),
            "zmq ipc://": BridgeSpec(transport="zmq", endpoint=f"ipc://{tmp}/bench.sock"),
            "zmq tcp://127.0.0.1": BridgeSpec(transport="zmq", endpoint="tcp://127.0.0.1:45871"),
        }
        for label, spec in specs.items():
            rtt = _round_trips(spec, packets=packets, warmup=warmup)
            results[label] = Percentiles.of(rtt).scaled(1e-3).__dict__
            if label == "shm ring":  # the same ring, the Python taken away
                rtt = compiled_ring_round_trips(packets, warmup=warmup, packet_bytes=_PACKET)
                results["shm ring, compiled ends"] = Percentiles.of(rtt).scaled(1e-3).__dict__
    ratios = {
        label: {k: p[k] / floor_us[k] for k in ("p50", "p99", "p999") if floor_us[k] > 0}
        for label, p in results.items()
    }
    return {
        "machine": machine_description(),
        "packet_bytes": _PACKET,
        "packets": packets,
        "floor": {"method": floor.method, "detail": floor.detail, "round_trip_us": floor_us},
        "round_trip_us": results,
        "ratio_to_floor": ratios,
    }


def bench_loop(
    *, distances: tuple[int, ...] = (3, 5, 7, 9, 13), shots: int = 10_000, p: float = 0.003
) -> dict[str, Any]:
    """The closed loop per distance (rounds = d); latency split into transport and decoding.

    ``overhead_us_p50`` is the median reaction minus the median decode: what the loop
    adds to the decoder (a difference of medians, not a per-shot median)."""
    from qhil.host._runner import run_loop

    rows = []
    for d in distances:
        cfg = RunConfig().with_overrides(
            {
                "experiment.distance": d,
                "experiment.rounds": d,
                "experiment.shots": shots,
                "experiment.p": p,
            }
        )
        report = run_loop(cfg, progress=False).report
        lat = report.latency_us
        rows.append(
            {
                "distance": d,
                "rounds": d,
                "shots_decoded": report.shots_decoded,
                "rounds_lost": sum(report.rounds_lost.values()),
                "ler": report.logical_error_rate,
                "latency_us": lat.__dict__,
                "latency_cycles_p50": report.latency_cycles.p50,
                "transport_out_us": report.transport_out_us.__dict__,
                "service_us": report.service_us.__dict__,
                "transport_back_us": report.transport_back_us.__dict__,
                "decode_us_per_shot": report.decode_us_per_shot.__dict__,
                "transport_share_p50": (report.transport_out_us.p50 + report.transport_back_us.p50)
                / lat.p50
                if lat.p50
                else 0.0,
                "decode_share_p50": report.decode_us_per_shot.p50 / lat.p50 if lat.p50 else 0.0,
                "overhead_us_p50": lat.p50 - report.decode_us_per_shot.p50,
                "service_path": "compiled shm hot path"
                if report.host and report.host.get("hot_path")
                else "general loop",
                "rounds_per_s": report.rounds_per_s,
                "budget_miss_fraction": report.budget_miss_fraction,
            }
        )
    return {
        "machine": machine_description(),
        "mode": "lockstep, 1 shot in flight",
        "noise": f"stim-depolarizing p={p}",
        "rows": rows,
    }


def bench_throughput(*, distance: int = 5, shots: int = 50_000) -> dict[str, Any]:
    """Sustained rounds/s: lockstep with 64 shots in flight, and paced at a 1 us round clock."""
    from qhil.host._runner import run_loop

    rows = []
    for mode, extra in (
        ("lockstep, 64 in flight", {"frontend.max_in_flight": 64}),
        ("paced, 1 us round clock", {"frontend.mode": "paced"}),
    ):
        cfg = RunConfig().with_overrides(
            {
                "experiment.distance": distance,
                "experiment.rounds": distance,
                "experiment.shots": shots,
                **extra,
            }
        )
        r = run_loop(cfg, progress=False).report
        rows.append(
            {
                "mode": mode,
                "rounds_per_s": r.rounds_per_s,
                "shots_per_s": r.shots_per_s,
                "rounds_lost": sum(r.rounds_lost.values()),
                "latency_us": r.latency_us.__dict__,
                "pacing_interval_us": r.pacing["interval_s"] * 1e6 if r.pacing else None,
            }
        )
    return {"machine": machine_description(), "distance": distance, "shots": shots, "rows": rows}


def bench_backends(
    *,
    model: str = "default",
    distances: tuple[int, ...] = (5, 9, 13),
    batches: tuple[int, ...] = (1, 256),
    p: float = 0.003,
    repeats: int = 20,
) -> dict[str, Any]:
    """Pre-decoder inference time per shot for each CPU backend (median over repeats, µs)."""
    from qhil.kernels import PreDecoder, available_backends
    from qhil.sim import NoiseModel, memory_circuit, sample_shots

    rows = []
    for d in distances:
        circuit = memory_circuit(
            distance=d, rounds=d, noise=NoiseModel.from_name("stim-depolarizing", p)
        )
        dets = sample_shots(circuit, shots=max(batches), seed=10**9 + d).detectors
        for backend in [b for b in ("numpy", "numba") if b in available_backends()]:
            pd = PreDecoder.for_circuit(circuit, model=model, backend=backend)
            for batch in batches:
                if backend == "numpy" and batch > 16:
                    batch_dets = dets[:16]  # the reference is slow; per-shot cost is flat in batch
                else:
                    batch_dets = dets[:batch]
                pd.outputs(batch_dets)  # warm-up (JIT compile / caches)
                times = []
                for _ in range(max(3, repeats if backend == "numba" else 3)):
                    t0 = time.perf_counter_ns()
                    pd.outputs(batch_dets)
                    times.append((time.perf_counter_ns() - t0) / len(batch_dets))
                rows.append(
                    {
                        "distance": d,
                        "rounds": d,
                        "backend": backend,
                        "batch": batch,
                        "measured_batch": len(batch_dets),
                        "us_per_shot": Percentiles.of(np.array(times)).scaled(1e-3).__dict__,
                        "us_per_round": float(np.median(times)) * 1e-3 / d,
                    }
                )
    return {"machine": machine_description(), "model": model, "rows": rows}

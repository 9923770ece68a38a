"""Benchmark: the GPU path (mapped-memory bridge, CUDA pre-decoder, persistent kernel, loop).

Needs an NVIDIA GPU with CuPy and numba-cuda (the 'gpu' extra). Without one it
prints why on one line and exits with status 2, measuring and writing nothing.
Run from the repository root::

    python benchmarks/gpu.py                  # all four sections, ~8 minutes at most
    python benchmarks/gpu.py --seconds 30     # tighter wall-clock cap per section
    python benchmarks/gpu.py --sections inference,sustained

Sections (each guarded: a failure is recorded with its error text and the
others still run; each has a wall-clock cap, ``--seconds``):

- ``bridge_loopback``: a persistent echo kernel on the mapped pinned-memory
  slot ring (``qhil.bridge._gpu_echo``); host round trip per window.
- ``inference``: ``cuda_logits`` per shot and per round at d=13, rounds=13,
  batch 1 and 256, per-layer and fused launches; the Numba CPU backend alongside.
- ``sustained``: ``PersistentPreDecoder`` fed per-round wire-v1 packets
  (written straight into its mapped ring) back to back; results/s and rounds/s
  against the 1 µs round clock, and whether the backlog stayed bounded.
- ``loop``: ``qhil.host.run_loop`` reaction latency with the persistent
  pre-decoder (``--backend cuda-persistent``, rounds streamed into the kernel
  by the decoder service as they arrive) and with PyMatching alone, d=13,
  p=0.003, rounds 13 and 104; then the streaming path: each round's packet
  written into the GPU ring on the round clock, latency from the last round to
  the PyMatching result.

Writes ``docs/benchmarks/gpu.json`` and ``gpu.md``, naming the GPU and the host,
after every section (a later crash or hang keeps what was measured; ``complete``
says whether the run finished). Timings, never assertions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import faulthandler
import functools
import inspect
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SECTIONS = ("bridge_loopback", "inference", "sustained", "loop")
# Run order: the inference section uses CuPy before any persistent kernel is resident, so
# a persistent kernel that failed to exit cannot stall its launches.
RUN_ORDER = ("inference", "bridge_loopback", "sustained", "loop")
ROUND_CLOCK_HZ = 1e6  # the 1 µs QEC round clock: 1,000,000 rounds/s
SEED = 10**9  # fresh shots, never seen in training (as benchmarks/predecoder.py)

# Set when a persistent kernel did not exit: later GPU timings may be disturbed.
_LEFT_RUNNING: list[str] = []


# --------------------------------------------------------------------------- the GPU


def gpu_unavailable_reason() -> str | None:
    """None if CuPy and numba-cuda can both use a GPU here, else why not (one line)."""
    from qhil.bridge._gpu_ring import simulator_enabled

    if simulator_enabled():
        return "NUMBA_ENABLE_CUDASIM=1 is set: Numba's CUDA simulator is not a GPU; unset it"
    try:
        from numba import cuda

        if not cuda.is_available():
            return (
                "numba.cuda sees no usable GPU (needs an NVIDIA driver and numba-cuda; "
                "install the 'gpu' extra)"
            )
    except Exception as ex:
        return f"numba.cuda is not usable ({type(ex).__name__}: {ex})"
    from qhil.kernels._cuda_backend import cuda_available

    ok, why = cuda_available()
    return None if ok else why


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def gpu_description() -> dict[str, Any]:
    """The GPU by CuPy's device properties and ``nvidia-smi``, and the software versions."""
    import cupy  # type: ignore[import-not-found]
    import numba

    rt = cupy.cuda.runtime
    dev = cupy.cuda.Device()
    props = rt.getDeviceProperties(dev.id)
    name = props["name"]
    out: dict[str, Any] = {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "device_id": dev.id,
        "compute_capability": str(dev.compute_capability),
        "sm_count": int(props.get("multiProcessorCount", 0)),
        "memory_gib": round(int(props.get("totalGlobalMem", 0)) / 2**30, 1),
        "can_map_host_memory": bool(props.get("canMapHostMemory", 0)),
        "cuda_runtime": int(rt.runtimeGetVersion()),
        "cuda_driver": int(rt.driverGetVersion()),
        "cupy": cupy.__version__,
        "numba": numba.__version__,
    }
    try:
        from importlib.metadata import version

        out["numba_cuda"] = version("numba-cuda")
    except Exception:
        out["numba_cuda"] = None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        out["nvidia_smi"] = None
    else:
        try:
            proc = subprocess.run(
                [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            text = proc.stdout.strip() or proc.stderr.strip()
            out["nvidia_smi"] = _one_line(text) if text else f"exit {proc.returncode}"
        except Exception as ex:
            out["nvidia_smi"] = f"failed: {type(ex).__name__}: {ex}"
    return out


# --------------------------------------------------------------------------- helpers


def _circuit(distance: int, rounds: int, p: float) -> Any:
    from qhil.sim import NoiseModel, memory_circuit

    noise = NoiseModel.from_name("stim-depolarizing", p)
    return memory_circuit(distance=distance, rounds=rounds, noise=noise)


def _pct_us(ns: np.ndarray) -> dict[str, float]:
    from qhil.host._stats import Percentiles

    return dataclasses.asdict(Percentiles.of(np.asarray(ns)).scaled(1e-3))


def _time_calls(
    fn: Callable[[], Any], sync: Callable[[], Any], *, repeats: int, deadline: float, least: int = 3
) -> np.ndarray:
    """ns per call: ``sync(); t0; fn(); sync(); t1``, ``repeats`` times (at least ``least``,
    more only while before ``deadline``)."""
    times = []
    for i in range(repeats):
        if i >= least and time.monotonic() > deadline:
            break
        sync()
        t0 = time.perf_counter_ns()
        fn()
        sync()
        times.append(time.perf_counter_ns() - t0)
    return np.array(times, dtype=np.int64)


# --------------------------------------------------------------------------- (a) bridge


def bench_bridge_loopback(
    *,
    deadline: float,
    sizes: Sequence[int] = (48,),
    round_trips: int = 20_000,
    warmup: int = 2_000,
    api_round_trips: int = 2_000,
    threads: int | None = None,
    n_slots: int = 16,
) -> dict[str, Any]:
    """Round trip host -> echo kernel -> host through the mapped ring, per payload size."""
    from qhil.bridge._gpu_echo import EchoLoopback

    rows = []
    t0 = time.monotonic()
    echo = EchoLoopback(max(sizes), n_slots=n_slots, threads=threads)
    try:
        echo.wait_running(timeout_s=max(5.0, deadline - time.monotonic()))
        start_s = time.monotonic() - t0
        clock = time.perf_counter_ns
        for k, size in enumerate(sizes):
            payload = np.ascontiguousarray((np.arange(size) * 37 + k) % 256, dtype=np.uint8)
            expected = payload ^ np.uint8(0xFF)
            share = (deadline - time.monotonic()) / (len(sizes) - k)
            stop_compiled = time.monotonic() + 0.8 * share
            mismatches = 0
            for _ in range(warmup):
                echo.round_trip(payload)
                if time.monotonic() > stop_compiled:
                    break
            rtt = np.empty(round_trips, dtype=np.int64)
            done = 0
            for i in range(round_trips):
                if (i & 255) == 0 and time.monotonic() > stop_compiled:
                    break
                seq = echo.ring.pushed
                t = clock()
                echo.round_trip(payload)
                rtt[i] = clock() - t
                done += 1
                if echo.last_header[2] != seq or not np.array_equal(echo.last_payload, expected):
                    mismatches += 1
            overhead = echo.call_overhead_ns(payload, 2000)
            stop_api = time.monotonic() + 0.2 * share
            api = []
            for i in range(api_round_trips):
                if i >= 10 and time.monotonic() > stop_api:
                    break
                t = clock()
                echo.round_trip_api(payload)
                api.append(clock() - t)
                if not np.array_equal(echo.last_payload, expected):
                    mismatches += 1
            rows.append(
                {
                    "payload_bytes": int(size),
                    "compiled_us": _pct_us(rtt[:done]),
                    "call_overhead_us": _pct_us(overhead),
                    "python_api_us": _pct_us(np.array(api, dtype=np.int64)),
                    "mismatches": mismatches,
                }
            )
    finally:
        exited = echo.stop(timeout_s=5.0)
        if not exited:
            _LEFT_RUNNING.append("echo kernel")
    return {
        "threads": echo.threads,
        "n_slots": n_slots,
        "round_trips_requested": round_trips,
        "warmup": warmup,
        "start_s": start_s,
        "kernel_exited": exited,
        "rows": rows,
    }


# --------------------------------------------------------------------------- (b) inference


def bench_inference(
    *,
    deadline: float,
    distance: int = 13,
    rounds: int = 13,
    p: float = 0.003,
    batches: Sequence[int] = (1, 256),
    repeats: int = 50,
    model: Any = "default",
    cpu_reference: bool = True,
) -> dict[str, Any]:
    """``cuda_logits`` per shot: end to end (H2D + kernels + D2H) and device-resident input."""
    import cupy  # type: ignore[import-not-found]

    from qhil.kernels import PreDecoderGeometry
    from qhil.kernels import _cuda_backend as cb
    from qhil.kernels._predecoder import resolve_model
    from qhil.sim import sample_shots

    circuit = _circuit(distance, rounds, p)
    geometry = PreDecoderGeometry.from_circuit(circuit)
    m = resolve_model(model)
    dets = sample_shots(circuit, shots=max(batches), seed=SEED + distance).detectors
    x = geometry.inputs(dets)
    has_fused = "fused" in inspect.signature(cb.cuda_logits).parameters
    modes: list[tuple[str, bool | None]] = (
        [("per-layer", False), ("fused", True)] if has_fused else [("per-layer", None)]
    )
    rows: list[dict[str, Any]] = []
    agree: dict[str, Any] = {}
    first: dict[int, np.ndarray] = {}
    stream = cupy.cuda.Stream(non_blocking=True)  # never the legacy default stream
    cases = len(modes) * len(batches) + (len(batches) if cpu_reference else 0)
    with stream:
        for label, fused in modes:
            kw = {} if fused is None else {"fused": fused}
            for batch in batches:
                xb = np.ascontiguousarray(x[:batch])
                case_end = time.monotonic() + (deadline - time.monotonic()) / max(cases, 1)
                cases -= 1
                t0 = time.monotonic()
                out = cb.cuda_logits(xb, m, **kw)  # compiles / uploads weights on first use
                first_call_s = time.monotonic() - t0
                if batch in first:
                    agree[f"{label} == per-layer, batch {batch}"] = bool(
                        np.array_equal(out, first[batch])
                    )
                else:
                    first[batch] = out
                mid = time.monotonic() + 0.5 * (case_end - time.monotonic())
                e2e = _time_calls(
                    functools.partial(cb.cuda_logits, xb, m, **kw),
                    stream.synchronize,
                    repeats=repeats,
                    deadline=mid,
                )
                row: dict[str, Any] = {
                    "backend": "cuda",
                    "mode": label,
                    "batch": batch,
                    "first_call_s": first_call_s,
                    "repeats": len(e2e),
                    "us_per_call": _pct_us(e2e),
                    "us_per_shot": _pct_us(e2e / batch),
                    "us_per_round_p50": float(np.median(e2e)) * 1e-3 / batch / rounds,
                }
                try:  # kernels only: the input already on the device, no copy back
                    xd = cupy.asarray(xb)
                    dm = cb._device_model(cupy, m)
                    fwd = cb._forward if fused else cb._per_layer
                    fwd(cupy, xd, dm, m)
                    dev = _time_calls(
                        functools.partial(fwd, cupy, xd, dm, m),
                        stream.synchronize,
                        repeats=repeats,
                        deadline=case_end,
                    )
                    row["device_us_per_shot"] = _pct_us(dev / batch)
                    row["device_us_per_round_p50"] = float(np.median(dev)) * 1e-3 / batch / rounds
                except Exception as ex:
                    row["device_error"] = f"{type(ex).__name__}: {ex}"
                rows.append(row)
    try:
        from qhil.kernels._numba_backend import numba_logits

        n = min(4, max(batches))
        agree[f"cuda == numba logits, {n} shots"] = bool(
            np.array_equal(first[max(batches)][:n], numba_logits(np.ascontiguousarray(x[:n]), m))
        )
        if cpu_reference:
            for batch in batches:
                xb = np.ascontiguousarray(x[:batch])
                case_end = time.monotonic() + (deadline - time.monotonic()) / max(cases, 1)
                cases -= 1
                threads = 1 if batch <= 4 else None  # as PreDecoder's numba backend does
                numba_logits(xb, m, threads=threads)  # warm-up
                cpu = _time_calls(
                    functools.partial(numba_logits, xb, m, threads=threads),
                    lambda: None,
                    repeats=min(repeats, 10),
                    deadline=case_end,
                )
                rows.append(
                    {
                        "backend": "numba (CPU)",
                        "mode": "threads=1" if threads == 1 else "all cores",
                        "batch": batch,
                        "repeats": len(cpu),
                        "us_per_call": _pct_us(cpu),
                        "us_per_shot": _pct_us(cpu / batch),
                        "us_per_round_p50": float(np.median(cpu)) * 1e-3 / batch / rounds,
                    }
                )
    except Exception as ex:
        agree["numba"] = f"unavailable: {type(ex).__name__}: {ex}"
    return {
        "distance": distance,
        "rounds": rounds,
        "tensor_shape": [4, *geometry.shape],
        "model": model if isinstance(model, str) else "custom",
        "fused_supported": has_fused,
        "agreement": agree,
        "rows": rows,
    }


# --------------------------------------------------------------------------- (c) sustained


def _wait_result(pd: Any, what: str, timeout_s: float = 10.0) -> Any:
    """Spin on ``pd.poll()`` until one result arrives; raise after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while True:
        res = pd.poll()
        if res:
            return res
        if time.monotonic() > end:
            raise TimeoutError(f"no result for {what} within {timeout_s} s: {pd.counters()}")


def bench_sustained(
    *,
    deadline: float,
    distance: int = 13,
    rounds: int = 13,
    p: float = 0.003,
    sustain_s: float = 10.0,
    max_shots: int | None = None,
    n_slots: int = 256,
    threads: int | None = None,
    model: Any = "default",
    pool: int = 256,
    latency_shots: int = 500,
    batch_shots: int = 32,
    check: int = 16,
    watchdog_s: float = 2.0,
    cpu_backend: str = "numba",
) -> dict[str, Any]:
    """``PersistentPreDecoder`` fed per-round wire-v1 packets: one shot in flight, then
    back to back. Packets are encoded straight into the ring's slots by one compiled
    call per ring's worth (``GpuPacketSender.try_send_rounds``)."""
    from qhil.kernels import PreDecoder, PreDecoderGeometry
    from qhil.kernels._persistent import PersistentPreDecoder
    from qhil.kernels._predecoder import resolve_model
    from qhil.sim import sample_shots

    circuit = _circuit(distance, rounds, p)
    geometry = PreDecoderGeometry.from_circuit(circuit)
    m = resolve_model(model)
    shots = sample_shots(circuit, shots=pool, seed=SEED + 7 * distance).detectors
    dets = np.ascontiguousarray(shots, dtype=np.uint8)
    t_n = rounds + 1  # packets per shot: the final data-qubit round is one too
    clock = time.perf_counter_ns
    got: dict[int, Any] = {}
    t0 = time.monotonic()
    pd = PersistentPreDecoder.start(geometry, m, n_slots=n_slots, threads=threads,
                                    watchdog_s=watchdog_s)  # fmt: skip
    start_s = time.monotonic() - t0
    out: dict[str, Any] = {
        "distance": distance,
        "rounds": rounds,
        "rounds_per_shot": t_n,
        "n_slots": n_slots,
        "threads": pd.threads,
        "start_s": start_s,
        "path": "per-round wire-v1 packets into mapped pinned memory",
    }
    try:
        # 1. one shot in flight: its packets published, then the result polled
        lat_end = time.monotonic() + min(0.25 * (deadline - time.monotonic()), 30.0)
        lat, tail = [], []
        sid = 0
        while sid < latency_shots + 3:
            if sid >= 13 and time.monotonic() > lat_end:
                break
            batch = pd.rounds_of(sid, dets[sid % pool])
            t = clock()
            k = pd.push(batch)
            while k < batch.num_packets:  # n_slots < T: the kernel frees slots as it goes
                k = pd.push(batch, k)
            t_sent = clock()
            res = _wait_result(pd, f"shot {sid}")
            t_done = clock()
            if sid >= 3:  # the first shots warm caches and the mapping
                lat.append(t_done - t)
                tail.append(t_done - t_sent)
            for r in res:
                if r.shot_id < check:
                    got[r.shot_id] = r
            sid += 1
        out["single_shot_latency_us"] = _pct_us(np.array(lat, dtype=np.int64))
        out["single_shot_tail_us"] = _pct_us(np.array(tail, dtype=np.int64))
        # 2. back to back for sustain_s (or max_shots): the rings' back-pressure paces us
        sustain = max(0.5, min(sustain_s, 0.6 * (deadline - time.monotonic())))
        base, submitted, returned, incomplete, full = sid, 0, 0, 0, 0
        max_queued = 0
        taken0 = pd.ring.in_done
        t_start = time.perf_counter()
        t_end = t_start + sustain
        t_first = t_last = None
        drain_timeout = max(5.0, 20 * watchdog_s)
        batch, k = None, 0
        while True:
            now = time.perf_counter()
            producing = now < t_end and (max_shots is None or submitted < max_shots)
            if producing or batch is not None:
                if batch is None:
                    n = (
                        batch_shots
                        if max_shots is None
                        else min(batch_shots, max_shots - submitted)
                    )
                    first = base + submitted
                    idx = np.arange(first, first + n) % pool
                    batch, k = pd.rounds_of(first, dets[idx]), 0
                    submitted += n
                before, k = k, pd.push(batch, k)
                full += k == before
                if k == batch.num_packets:
                    batch = None
                max_queued = max(max_queued, pd.ring.pushed - pd.ring.in_done)
            res = pd.poll()
            if res:
                returned += len(res)
                incomplete += sum(not r.decoded for r in res)
                t_last = time.perf_counter()
                if t_first is None:
                    t_first = t_last
            if not producing and batch is None and returned >= submitted:
                break
            if not producing and now > t_end + drain_timeout:
                raise TimeoutError(
                    f"backlog did not drain within {drain_timeout} s: "
                    f"{submitted - returned} results outstanding; {pd.counters()}"
                )
        window = (t_last or t_start) - t_start
        shots_per_s = returned / window if window > 0 else 0.0
        steady = (
            (returned - 1) / (t_last - t_first)
            if t_first is not None and t_last is not None and t_last > t_first
            else 0.0
        )
        rps = shots_per_s * t_n
        need = ROUND_CLOCK_HZ / t_n
        out.update(
            {
                "sustain_s": sustain,
                "submitted": submitted,
                "results": returned,
                "incomplete": incomplete,
                "packets_taken": pd.ring.in_done - taken0,
                "window_s": window,
                "results_per_s": shots_per_s,
                "results_per_s_after_first": steady,
                "rounds_per_s": rps,
                "rounds_per_s_stabilizer_only": shots_per_s * rounds,
                "ratio_to_round_clock": rps / ROUND_CLOCK_HZ,
                "shots_per_s_needed_at_round_clock": need,
                "backlog_growth_at_round_clock_shots_per_s": max(0.0, need - shots_per_s),
                "max_packets_queued": max_queued,
                "backlog_bounded": max_queued <= n_slots and returned == submitted,
                "ring_full_events": full,
            }
        )
    finally:
        report = pd.stop(timeout_s=5.0)
        if not report.exited:
            _LEFT_RUNNING.append("PersistentPreDecoder kernel")
        out["stop"] = dataclasses.asdict(report)
    # 3. the first results against the CPU path (exact equality expected)
    n = min(check, len(got))
    if n:
        cpu = PreDecoder(geometry, m, cpu_backend).predecode(dets[:n])
        bad = [
            i
            for i in range(n)
            if not (
                got[i].decoded
                and np.array_equal(got[i].residual, cpu.residual[i])
                and np.array_equal(got[i].obs_flip, cpu.obs_flip[i])
                and got[i].corrections == int(cpu.corrections[i])
            )
        ]
        out["checked_against_cpu"] = {"shots": n, "backend": cpu_backend, "mismatches": bad}
    return out


# --------------------------------------------------------------------------- (d) the loop


def bench_streaming(
    *,
    deadline: float,
    distance: int = 13,
    p: float = 0.003,
    rounds_list: Sequence[int] = (13, 104),
    shots: dict[int, int] | None = None,
    round_period_s: float = 1e-6,
    n_slots: int = 256,
    threads: int | None = None,
    model: Any = "default",
    watchdog_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Reaction latency with each round's packet written into the GPU ring on the round
    clock, as the bridge's producer would: from publishing a shot's last round to
    ``obs_flip ^ PyMatching(residual)`` on the host. One shot in flight."""
    import pymatching

    from qhil.kernels import PreDecoderGeometry
    from qhil.kernels._persistent import PersistentPreDecoder
    from qhil.kernels._predecoder import resolve_model
    from qhil.sim import sample_shots

    shots = shots or {13: 2000, 104: 300}
    m = resolve_model(model)
    clock = time.perf_counter_ns
    period_ns = round_period_s * 1e9
    rows: list[dict[str, Any]] = []
    for i, rounds in enumerate(rounds_list):
        row: dict[str, Any] = {"rounds": rounds, "shots_planned": shots.get(rounds, 100)}
        cap_end = time.monotonic() + (deadline - time.monotonic()) / (len(rounds_list) - i)
        if cap_end - time.monotonic() < 1.0:
            row["skipped"] = "section cap reached"
            rows.append(row)
            continue
        circuit = _circuit(distance, rounds, p)
        geometry = PreDecoderGeometry.from_circuit(circuit)
        sample = sample_shots(circuit, shots=row["shots_planned"], seed=SEED + 11 * rounds)
        dets = np.ascontiguousarray(sample.detectors, dtype=np.uint8)
        dem = circuit.detector_error_model(decompose_errors=True)
        matching = pymatching.Matching.from_detector_error_model(dem)
        t_n = rounds + 1
        reaction, tail, match, interval, full = [], [], [], [], 0
        errors = incomplete = processed = 0
        pd = PersistentPreDecoder.start(geometry, m, n_slots=n_slots, threads=threads,
                                        watchdog_s=watchdog_s)  # fmt: skip
        try:
            for s in range(len(dets)):
                if s >= 3 and time.monotonic() > cap_end:
                    break
                batch = pd.rounds_of(s, dets[s])
                t0 = clock()
                for k in range(t_n):  # one packet per round clock tick
                    due = t0 + int(k * period_ns)
                    while clock() < due:
                        pass
                    while pd.push(batch, k, k + 1) == k:
                        full += 1  # the input ring is full: the front end would drop it
                t_last = clock()
                (r,) = _wait_result(pd, f"shot {s}")
                t_res = clock()
                pred = r.obs_flip ^ np.asarray(matching.decode(r.residual), dtype=bool)
                t_done = clock()
                if s >= 3:  # warm-up
                    reaction.append(t_done - t_last)
                    tail.append(t_res - t_last)
                    match.append(t_done - t_res)
                    interval.append((t_last - t0) / (t_n - 1))
                errors += bool((pred != sample.observables[s]).any())
                incomplete += not r.decoded
                processed += 1
        finally:
            report = pd.stop(timeout_s=5.0)
            if not report.exited:
                _LEFT_RUNNING.append("PersistentPreDecoder kernel (streaming)")
        row.update(
            {
                "shots_decoded": processed,
                "shots_timed": len(reaction),
                "incomplete": incomplete,
                "ler": errors / max(1, processed),
                "round_period_us": round_period_s * 1e6,
                "achieved_round_interval_us": _pct_us(np.array(interval, dtype=np.int64)),
                "reaction_us": _pct_us(np.array(reaction, dtype=np.int64)),
                "kernel_tail_us": _pct_us(np.array(tail, dtype=np.int64)),
                "pymatching_us": _pct_us(np.array(match, dtype=np.int64)),
                "ring_full_spins": full,
                "kernel_exited": report.exited,
                "counters": report.counters,
            }
        )
        rows.append(row)
    return rows


def _request_clean_stop() -> bool:
    """Do what a first Ctrl-C does to ``run_loop`` (finish cleanly), without a signal."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and "_ctrl_c_requests_stop" in getattr(handler, "__qualname__", ""):
        handler(signal.SIGINT, None)  # first call only sets run_loop's stop flag
        return True
    return False


def _run_capped(cfg: Any, cap_s: float) -> tuple[Any, bool]:
    """``run_loop(cfg)``'s report, stopped cleanly ``cap_s`` after the call (start-up included,
    at least 0.5 s of running); and whether the cap stopped it."""
    from qhil.host._runner import run_loop

    t0 = time.monotonic()
    capped = [False]
    timers: list[threading.Timer] = []

    def fire() -> None:
        capped[0] = _request_clean_stop()

    def arm() -> None:  # called by run_loop once the decoder is ready
        timer = threading.Timer(max(0.5, cap_s - (time.monotonic() - t0)), fire)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    try:
        report = run_loop(cfg, progress=False, on_start=arm).report
    finally:
        for timer in timers:
            timer.cancel()
    return report, capped[0]


def bench_loop(
    *,
    deadline: float,
    distance: int = 13,
    p: float = 0.003,
    rounds_list: Sequence[int] = (13, 104),
    shots: dict[int, int] | None = None,
    backend: str = "cuda-persistent",
    decoders: Sequence[str] = ("predecoder", "pymatching"),
    streaming: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_loop`` reaction latency per (rounds, decoder), each run capped by time; then
    (unless ``streaming`` is None) :func:`bench_streaming` with those keyword arguments.

    With ``backend="cuda-persistent"`` the decoder service streams each round's
    packet into the persistent kernel as it arrives (``StreamingDecoder.on_round``),
    so only the last round's work and PyMatching remain once a shot completes.
    ``bench_streaming`` measures that path without the loop: each round's packet
    written into the GPU ring on the round clock.
    """
    from qhil.host._config import RunConfig

    shots = shots or {13: 2000, 104: 300}
    plan = [(r, d) for r in rounds_list for d in decoders]
    runs: list[dict[str, Any]] = []
    loop_deadline = deadline
    if streaming is not None:  # the loop runs get 60% of the cap, streaming the rest
        loop_deadline = time.monotonic() + 0.6 * (deadline - time.monotonic())
    for i, (rounds, decoder) in enumerate(plan):
        remaining = loop_deadline - time.monotonic()
        n_shots = shots.get(rounds, min(shots.values()))
        row: dict[str, Any] = {"rounds": rounds, "decoder": decoder, "shots_planned": n_shots}
        if decoder == "predecoder":
            row["backend"] = backend
        if remaining < 2.0:
            row["skipped"] = "section cap reached"
            runs.append(row)
            continue
        cap = remaining / (len(plan) - i)
        overrides: dict[str, Any] = {
            "experiment.distance": distance,
            "experiment.rounds": rounds,
            "experiment.shots": n_shots,
            "experiment.p": p,
            "decoder.name": decoder,
        }
        if decoder == "predecoder":
            overrides["decoder.backend"] = backend
        t0 = time.monotonic()
        try:
            report, capped = _run_capped(RunConfig().with_overrides(overrides), cap)
        except Exception as ex:
            row["error"] = f"{type(ex).__name__}: {_one_line(str(ex))[:500]}"
            runs.append(row)
            continue
        row.update(
            {
                "wall_s": time.monotonic() - t0,
                "cap_s": cap,
                "stopped_at_cap": capped,
                "aborted": report.aborted,
                "shots_decoded": report.shots_decoded,
                "rounds_lost": sum(report.rounds_lost.values()),
                "ler": report.logical_error_rate,
                "latency_us": dataclasses.asdict(report.latency_us),
                "decode_us_per_shot": dataclasses.asdict(report.decode_us_per_shot),
                "service_us": dataclasses.asdict(report.service_us),
                "rounds_per_s": report.rounds_per_s,
                "budget_us": report.budget_us,
                "budget_miss_fraction": report.budget_miss_fraction,
                "notes": list(report.notes),
            }
        )
        runs.append(row)
    ratios = []
    for rounds in rounds_list:
        by = {r["decoder"]: r for r in runs if r["rounds"] == rounds and "latency_us" in r}
        pre, base = by.get("predecoder"), by.get("pymatching")
        if pre and base and pre["latency_us"]["n"] and base["latency_us"]["n"]:
            ratios.append(
                {
                    "rounds": rounds,
                    **{
                        f"{q}_ratio": pre["latency_us"][q] / base["latency_us"][q]
                        if base["latency_us"][q]
                        else None
                        for q in ("p50", "p99", "p999")
                    },
                }
            )
    out = {
        "distance": distance,
        "p": p,
        "noise": f"stim-depolarizing p={p}",
        "mode": "lockstep, 1 shot in flight, shm bridge",
        "runs": runs,
        "predecoder_over_pymatching": ratios,
    }
    if streaming is not None:
        out["streaming"] = bench_streaming(
            deadline=deadline, distance=distance, p=p, rounds_list=rounds_list, **streaming
        )
    return out


# --------------------------------------------------------------------------- markdown


def _f(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pcts(p: dict[str, Any], digits: int = 1) -> str:
    return " / ".join(_f(p[k], digits) for k in ("p50", "p99", "p999", "max"))


def _failed(s: dict[str, Any]) -> list[str]:
    return ["", f"**Failed** after {_f(s.get('wall_s'))} s: `{_one_line(s['error'])}`"]


def _md_bridge(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "A persistent echo kernel (`qhil.bridge._gpu_echo`, launched once, one block of "
        f"{s['threads']} threads) polls the input ring in mapped pinned host memory and writes "
        "each window (payload XOR 0xFF, header echoed) into the output ring; the host publishes "
        f"a window and spins for its echo. Up to {s['round_trips_requested']:,} round trips after "
        f"up to {s['warmup']:,} warm-up, `perf_counter_ns` around each. *compiled*: one Numba "
        "call that publishes and spins (it includes one call into compiled code, measured "
        "alone as *call overhead*); *Python API*: `ring.try_push` then `ring.pop(1)` in a loop.",
        "",
        "| payload | path | n | p50 µs | p99 µs | p99.9 µs | max µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        for path, key in (
            ("compiled", "compiled_us"),
            ("call overhead", "call_overhead_us"),
            ("Python API", "python_api_us"),
        ):
            p = r[key]
            lines.append(
                f"| {r['payload_bytes']} B | {path} | {p['n']:,} | {_f(p['p50'], 2)} | "
                f"{_f(p['p99'], 2)} | {_f(p['p999'], 2)} | {_f(p['max'], 2)} |"
            )
    bad = sum(r["mismatches"] for r in s["rows"])
    lines += [
        "",
        f"Echo mismatches: {bad}. Kernel exited on shutdown: {s['kernel_exited']}. "
        f"Start-up (allocation, compile, launch): {_f(s['start_s'], 2)} s.",
    ]
    return lines


def _md_inference(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Input tensor {s['tensor_shape']} per shot (d={s['distance']}, rounds={s['rounds']}), "
        f"model `{s['model']}`. *end to end*: `cuda_logits` (copy in, kernels, copy out), "
        "stream synchronized before and after each call; *device only*: the same kernels "
        "on input already on the device. Median per shot over the repeats; per round = per "
        f"shot / {s['rounds']}.",
        "",
        "| backend | mode | batch | repeats | end to end µs/shot p50 / p99 | µs/round p50 | "
        "device only µs/shot p50 / p99 | device µs/round p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        u = r["us_per_shot"]
        dev = r.get("device_us_per_shot")
        err = _one_line(r.get("device_error", "-")).replace("|", "/")
        dev_s = f"{_f(dev['p50'], 2)} / {_f(dev['p99'], 2)}" if dev else err
        lines.append(
            f"| {r['backend']} | {r['mode']} | {r['batch']} | {r['repeats']} | "
            f"{_f(u['p50'], 2)} / {_f(u['p99'], 2)} | {_f(r['us_per_round_p50'], 3)} | "
            f"{dev_s} | {_f(r.get('device_us_per_round_p50'), 3)} |"
        )
    if not s["fused_supported"]:
        lines += ["", "`cuda_logits` has no `fused=` here: per-layer launches only."]
    agree = "; ".join(f"{k}: {v}" for k, v in s["agreement"].items())
    lines += ["", f"Agreement checks: {agree or 'none'}."]
    return lines


def _md_sustained(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"`PersistentPreDecoder` (one persistent block of {s['threads']} threads, "
        f"{s['n_slots']} slots per ring direction), d={s['distance']}, rounds={s['rounds']}: "
        f"{s['path']}, {s['rounds_per_shot']} packets per shot, encoded "
        "straight into the ring's slots by one compiled call per ring's worth. "
        f"Start-up (tables, compile, launch): {_f(s['start_s'], 1)} s.",
        "",
    ]
    if "single_shot_latency_us" in s:
        p = s["single_shot_latency_us"]
        lines.append(
            f"- One shot in flight, first packet published to result polled ({p['n']:,} shots): "
            f"p50 / p99 / p99.9 / max = {_pcts(p)} µs."
        )
    if "single_shot_tail_us" in s:
        lines.append(
            "- The same shots, from the last packet published to the result polled (the "
            f"work left after the final round): {_pcts(s['single_shot_tail_us'])} µs."
        )
    if "results_per_s" in s:
        lines += [
            f"- Back to back for {_f(s['sustain_s'])} s: {s['results']:,} results in "
            f"{_f(s['window_s'], 2)} s = **{s['results_per_s']:,.0f} results/s** "
            f"({s['results_per_s_after_first']:,.0f}/s after the first result).",
            f"- Rounds/s = results/s × (rounds + 1) = × {s['rounds_per_shot']} (the final "
            "data-qubit measurement counted as a round, as `qhil run` counts them): "
            f"**{s['rounds_per_s']:,.0f} rounds/s**, {s['ratio_to_round_clock']:.3g} × the "
            f"1 µs round clock (1,000,000 rounds/s); stabilizer rounds only: "
            f"{s['rounds_per_s_stabilizer_only']:,.0f}/s.",
            f"- A 1 µs round clock delivers {s['shots_per_s_needed_at_round_clock']:,.0f} "
            "shots/s; the backlog would grow by "
            f"{s['backlog_growth_at_round_clock_shots_per_s']:,.0f} shots/s at that rate.",
            f"- Packets queued in the input ring: max {s['max_packets_queued']} of "
            f"{s['n_slots']}; every shot returned: {s['backlog_bounded']}; INCOMPLETE results: "
            f"{s['incomplete']}; the producer found the ring full {s['ring_full_events']:,} "
            "times (back-pressure).",
        ]
    c = s.get("checked_against_cpu")
    if c:
        lines.append(
            f"- First {c['shots']} results against the CPU path ({c['backend']}): "
            f"{len(c['mismatches'])} mismatches."
        )
    st = s.get("stop")
    if st:
        lines.append(
            f"- Stop: exited {st['exited']}, submitted {st['submitted']:,}, taken "
            f"{st['taken']:,}, returned {st['returned']:,}, error {st['error']}."
        )
    return lines


def _md_loop(s: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"`qhil.host.run_loop` ({s['mode']}, {s['noise']}, d={s['distance']}): reaction latency "
        "from the front end emitting a shot's last round to receiving its correction. "
        "The pre-decoder runs in the decoder process; with `cuda-persistent` the service "
        "streams each round into the kernel as it arrives, and decode µs/shot is the wait "
        "after the last round (kernel + PyMatching). Each run is capped in time and then "
        "stopped cleanly (as by Ctrl-C).",
        "",
        "| rounds | decoder | shots decoded / planned | latency p50 / p99 / p99.9 / max µs | "
        "decode µs/shot p50 | LER | rounds lost | stopped at cap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in s["runs"]:
        name = r["decoder"] + (f" ({r['backend']})" if "backend" in r else "")
        if "latency_us" not in r:
            why = r.get("skipped") or f"failed: `{r.get('error', '?')}`".replace("|", "/")
            lines.append(f"| {r['rounds']} | {name} | - / {r['shots_planned']:,} | {why} "
                         "| | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['rounds']} | {name} | {r['shots_decoded']:,} / {r['shots_planned']:,} | "
            f"{_pcts(r['latency_us'])} | {_f(r['decode_us_per_shot']['p50'])} | "
            f"{r['ler']:.2e} | {r['rounds_lost']} | {r['stopped_at_cap']} |"
        )
    for q in s["predecoder_over_pymatching"]:
        lines.append("")
        lines.append(
            f"Rounds {q['rounds']}: pre-decoder / PyMatching latency = "
            f"{_f(q['p50_ratio'], 2)} (p50), {_f(q['p99_ratio'], 2)} (p99), "
            f"{_f(q['p999_ratio'], 2)} (p99.9)."
        )
    if "streaming" in s:
        lines += _md_streaming(s["streaming"])
    return lines


def _md_streaming(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "**Streaming path.** A host front-end emulator writes each round's wire-v1 packet "
        "straight into the persistent kernel's ring in mapped pinned memory, paced on the "
        "round clock (a busy-wait in Python: the achieved interval is shown); the kernel "
        "computes on each round as it lands. Reaction latency: from publishing a shot's last "
        "round to `obs_flip ^ PyMatching(residual)` on the host; one shot in flight.",
        "",
        "| rounds | shots | reaction p50 / p99 / p99.9 / max µs | kernel tail p50 / p99 µs | "
        "PyMatching p50 µs | round interval p50 µs | LER | incomplete |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "reaction_us" not in r:
            lines.append(f"| {r['rounds']} | - / {r['shots_planned']:,} | "
                         f"{r.get('skipped', '?')} | | | | | |")  # fmt: skip
            continue
        t = r["kernel_tail_us"]
        lines.append(
            f"| {r['rounds']} | {r['shots_decoded']:,} / {r['shots_planned']:,} | "
            f"{_pcts(r['reaction_us'])} | {_f(t['p50'])} / {_f(t['p99'])} | "
            f"{_f(r['pymatching_us']['p50'])} | {_f(r['achieved_round_interval_us']['p50'], 2)} | "
            f"{r['ler']:.2e} | {r['incomplete']} |"
        )
    return lines


_TITLES = {
    "bridge_loopback": ("(a) Bridge loopback through mapped pinned memory", _md_bridge),
    "inference": ("(b) Pre-decoder inference (`cuda_logits`)", _md_inference),
    "sustained": ("(c) Sustained throughput through the persistent kernel", _md_sustained),
    "loop": ("(d) Whole-loop reaction latency", _md_loop),
}


def render_markdown(results: dict[str, Any]) -> str:
    """``gpu.md`` from the results dictionary (see ``main``)."""
    g = results["gpu"]
    smi = f"; nvidia-smi: {g['nvidia_smi']}" if g.get("nvidia_smi") else ""
    lines = [
        "# GPU benchmark",
        "",
        f"GPU: **{g['name']}** (compute capability {g['compute_capability']}, "
        f"{g['sm_count']} SMs, {g['memory_gib']} GiB{smi}); CUDA runtime {g['cuda_runtime']}, "
        f"driver {g['cuda_driver']}, CuPy {g['cupy']}, Numba {g['numba']}.",
        f"Host: {results['machine']}.",
        f"Generated by `python benchmarks/gpu.py` ({results['generated_utc']}); raw numbers in "
        "`gpu.json`. Timings, never assertions.",
    ]
    if not results.get("complete"):
        lines += ["", "**Incomplete run**: sections not listed below did not finish."]
    if results.get("left_running"):
        lines += [
            "",
            f"**Warning**: {', '.join(results['left_running'])} did not exit on shutdown; "
            "timings taken after it may be disturbed.",
        ]
    for name in SECTIONS:
        s = results["sections"].get(name)
        if s is None:
            continue
        title, body = _TITLES[name]
        lines += ["", f"## {title}"]
        if s.get("ok"):
            lines += body(s)
            lines.append("")
            lines.append(f"Section wall time {_f(s['wall_s'])} s (cap {_f(s['cap_s'], 0)} s).")
        else:
            lines += _failed(s)
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _run_section(fn: Callable[..., dict[str, Any]], cap_s: float, **kw: Any) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        out = {"ok": True, **fn(deadline=t0 + cap_s, **kw)}
    except Exception as ex:
        out = {
            "ok": False,
            "error": f"{type(ex).__name__}: {ex}",
            "traceback": traceback.format_exc(limit=12)[-4000:],
        }
    out["wall_s"] = time.monotonic() - t0
    out["cap_s"] = cap_s
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ordered = {k: results["sections"][k] for k in SECTIONS if k in results["sections"]}
    data = {**results, "sections": ordered, "left_running": list(_LEFT_RUNNING)}
    (out / "gpu.json").write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    (out / "gpu.md").write_text(render_markdown(data))


def main(argv: Sequence[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="wall-clock cap per section")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--distance", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=13)
    parser.add_argument("--long-rounds", type=int, default=104)
    parser.add_argument("--p", type=float, default=0.003)
    parser.add_argument("--round-trips", type=int, default=20_000)
    parser.add_argument("--sustain-seconds", type=float, default=10.0)
    parser.add_argument("--loop-shots", type=int, default=2000)
    parser.add_argument("--loop-shots-long", type=int, default=300)
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    reason = gpu_unavailable_reason()
    if reason is not None:
        print(f"gpu.py: no usable GPU, nothing measured or written: {_one_line(reason)}",
              file=sys.stderr)  # fmt: skip
        return 2
    from qhil.host._report import machine_description

    # A hang (a device that stops answering) must not outlive the GPU session: dump the
    # stacks and exit; what earlier sections measured is already on disk.
    faulthandler.dump_traceback_later(len(chosen) * args.seconds + 180, exit=True)
    try:
        d, r = args.distance, args.rounds
        n_det = _circuit(d, r, args.p).num_detectors
        results: dict[str, Any] = {
            "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"
            ),
            "complete": False,
            "machine": machine_description(),
            "gpu": gpu_description(),
            "settings": {**vars(args), "out": str(args.out), "sections": chosen},
            "sections": {},
        }
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "bridge_loopback": lambda: _run_section(
                bench_bridge_loopback, args.seconds, sizes=(48, n_det),
                round_trips=args.round_trips,
            ),
            "inference": lambda: _run_section(
                bench_inference, args.seconds, distance=d, rounds=r, p=args.p
            ),
            "sustained": lambda: _run_section(
                bench_sustained, args.seconds, distance=d, rounds=r, p=args.p,
                sustain_s=args.sustain_seconds,
            ),
            "loop": lambda: _run_section(
                bench_loop, args.seconds, distance=d, p=args.p,
                rounds_list=(r, args.long_rounds),
                shots={r: args.loop_shots, args.long_rounds: args.loop_shots_long},
                streaming={"shots": {r: args.loop_shots, args.long_rounds: args.loop_shots_long},
                           "round_period_s": 1 / ROUND_CLOCK_HZ},
            ),
        }  # fmt: skip
        for name in RUN_ORDER:
            if name not in chosen:
                continue
            print(f"gpu.py: {name} (cap {args.seconds:.0f} s) ...", file=sys.stderr, flush=True)
            results["sections"][name] = s = calls[name]()
            status = "ok" if s["ok"] else f"FAILED: {_one_line(s['error'])[:200]}"
            print(f"gpu.py: {name}: {status} ({s['wall_s']:.1f} s)", file=sys.stderr, flush=True)
            _write(results, args.out)
        results["complete"] = True
        _write(results, args.out)
    finally:
        faulthandler.cancel_dump_traceback_later()
    print(render_markdown({**results, "left_running": list(_LEFT_RUNNING)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

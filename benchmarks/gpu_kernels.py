"""GPU benchmark sections (a) bridge loopback, (b) inference, (c) sustained rounds/s (gpu.py)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpu_common import (
    _LEFT_RUNNING,
    ROUND_CLOCK_HZ,
    SEED,
    _circuit,
    _pct_us,
    _time_calls,
    _wait_result,
)

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
    from qhil.kernels.persistent import EchoLoopback

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

    from qhil.kernels import PreDecoderGeometry, resolve_model
    from qhil.kernels import _cuda_backend as cb
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
    from qhil.kernels import PreDecoder, PreDecoderGeometry, resolve_model
    from qhil.kernels.persistent import PersistentPreDecoder
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

"""GPU benchmark sections (a) bridge loopback and (b) inference; see gpu.py."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from gpu_common import _LEFT_RUNNING, SEED, _circuit, _pct_us, _time_calls

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
    cases = len(modes) * len(batches) + (len(batches) if cpu_reference else 0)
    case_ends = _case_ends(deadline, cases)
    agree: dict[str, Any] = {}
    rows, first = _cuda_rows(cupy, x, m, modes, batches, rounds, repeats, case_ends, agree)
    try:
        from qhil.kernels import numba_logits

        n = min(4, max(batches))
        agree[f"cuda == numba logits, {n} shots"] = bool(
            np.array_equal(first[max(batches)][:n], numba_logits(np.ascontiguousarray(x[:n]), m))
        )
        if cpu_reference:
            for batch in batches:
                xb = np.ascontiguousarray(x[:batch])
                end = next(case_ends)
                rows.append(_numba_row(numba_logits, xb, m, batch, rounds, repeats, end))
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


def _case_ends(deadline: float, cases: int) -> Iterator[float]:
    """Each case's end, taken as it starts: the time left before ``deadline`` shared
    evenly by the cases still to run."""
    while True:
        yield time.monotonic() + (deadline - time.monotonic()) / max(cases, 1)
        cases -= 1


def _cuda_rows(
    cupy: Any,
    x: np.ndarray,
    m: Any,
    modes: Sequence[tuple[str, bool | None]],
    batches: Sequence[int],
    rounds: int,
    repeats: int,
    case_ends: Iterator[float],
    agree: dict[str, Any],
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """One row per (launch mode, batch), and each batch's logits from the first mode;
    the later modes' logits against those go into ``agree`` (exact equality expected)."""
    from qhil.kernels import _cuda_backend as cb

    rows: list[dict[str, Any]] = []
    first: dict[int, np.ndarray] = {}
    stream = cupy.cuda.Stream(non_blocking=True)  # never the legacy default stream
    with stream:
        for label, fused in modes:
            kw = {} if fused is None else {"fused": fused}
            for batch in batches:
                xb = np.ascontiguousarray(x[:batch])
                case_end = next(case_ends)
                t0 = time.monotonic()
                out = cb.cuda_logits(xb, m, **kw)  # compiles / uploads weights on first use
                first_call_s = time.monotonic() - t0
                if batch in first:
                    agree[f"{label} == per-layer, batch {batch}"] = bool(
                        np.array_equal(out, first[batch])
                    )
                else:
                    first[batch] = out
                row: dict[str, Any] = {
                    "backend": "cuda",
                    "mode": label,
                    "batch": batch,
                    "first_call_s": first_call_s,
                }
                mid = time.monotonic() + 0.5 * (case_end - time.monotonic())
                row.update(_time_end_to_end(xb, batch, m, kw, stream, rounds, repeats, mid))
                row.update(
                    _time_on_device(cupy, xb, batch, m, fused, stream, rounds, repeats, case_end)
                )
                rows.append(row)
    return rows, first


def _time_end_to_end(
    xb: np.ndarray,
    batch: int,
    m: Any,
    kw: dict[str, Any],
    stream: Any,
    rounds: int,
    repeats: int,
    end: float,
) -> dict[str, Any]:
    """``cuda_logits`` timed until ``end``: host input in, host logits out."""
    from qhil.kernels import _cuda_backend as cb

    e2e = _time_calls(
        functools.partial(cb.cuda_logits, xb, m, **kw),
        stream.synchronize,
        repeats=repeats,
        deadline=end,
    )
    return {
        "repeats": len(e2e),
        "us_per_call": _pct_us(e2e),
        "us_per_shot": _pct_us(e2e / batch),
        "us_per_round_p50": float(np.median(e2e)) * 1e-3 / batch / rounds,
    }


def _time_on_device(
    cupy: Any,
    xb: np.ndarray,
    batch: int,
    m: Any,
    fused: bool | None,
    stream: Any,
    rounds: int,
    repeats: int,
    end: float,
) -> dict[str, Any]:
    """The kernels alone timed until ``end``: the input already on the device, no copy
    back. A failure is recorded as ``device_error``, not raised."""
    from qhil.kernels import _cuda_backend as cb

    try:
        xd = cupy.asarray(xb)
        dm = cb._device_model(cupy, m)
        fwd = cb._forward if fused else cb._per_layer
        fwd(cupy, xd, dm, m)
        dev = _time_calls(
            functools.partial(fwd, cupy, xd, dm, m),
            stream.synchronize,
            repeats=repeats,
            deadline=end,
        )
        return {
            "device_us_per_shot": _pct_us(dev / batch),
            "device_us_per_round_p50": float(np.median(dev)) * 1e-3 / batch / rounds,
        }
    except Exception as ex:
        return {"device_error": f"{type(ex).__name__}: {ex}"}


def _numba_row(
    numba_logits: Callable[..., np.ndarray],
    xb: np.ndarray,
    m: Any,
    batch: int,
    rounds: int,
    repeats: int,
    end: float,
) -> dict[str, Any]:
    """The Numba CPU backend's logits for one batch, timed until ``end``."""
    threads = 1 if batch <= 4 else None  # as PreDecoder's numba backend does
    numba_logits(xb, m, threads=threads)  # warm-up
    cpu = _time_calls(
        functools.partial(numba_logits, xb, m, threads=threads),
        lambda: None,
        repeats=min(repeats, 10),
        deadline=end,
    )
    return {
        "backend": "numba (CPU)",
        "mode": "threads=1" if threads == 1 else "all cores",
        "batch": batch,
        "repeats": len(cpu),
        "us_per_call": _pct_us(cpu),
        "us_per_shot": _pct_us(cpu / batch),
        "us_per_round_p50": float(np.median(cpu)) * 1e-3 / batch / rounds,
    }

"""GPU benchmark section (c): the persistent pre-decoder's sustained rounds/s; see gpu.py."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from gpu_common import _LEFT_RUNNING, ROUND_CLOCK_HZ, SEED, _circuit, _pct_us, _wait_result


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
    from qhil.kernels import PreDecoderGeometry, resolve_model
    from qhil.kernels.persistent import PersistentPreDecoder
    from qhil.sim import sample_shots

    circuit = _circuit(distance, rounds, p)
    geometry = PreDecoderGeometry.from_circuit(circuit)
    m = resolve_model(model)
    shots = sample_shots(circuit, shots=pool, seed=SEED + 7 * distance).detectors
    dets = np.ascontiguousarray(shots, dtype=np.uint8)
    t_n = rounds + 1  # packets per shot: the final data-qubit round is one too
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
        lat_end = time.monotonic() + min(0.25 * (deadline - time.monotonic()), 30.0)
        sid, got, latency = _single_shot_latency(pd, dets, latency_shots, check, lat_end)
        out.update(latency)
        sustain = max(0.5, min(sustain_s, 0.6 * (deadline - time.monotonic())))
        flow = _back_to_back(pd, dets, sid, sustain, max_shots, batch_shots, watchdog_s)
        out.update(_throughput(flow, sustain, rounds, n_slots))
    finally:
        report = pd.stop(timeout_s=5.0)
        if not report.exited:
            _LEFT_RUNNING.append("PersistentPreDecoder kernel")
        out["stop"] = dataclasses.asdict(report)
    n = min(check, len(got))
    if n:
        out["checked_against_cpu"] = _check_against_cpu(geometry, m, cpu_backend, dets, got, n)
    return out


def _single_shot_latency(
    pd: Any, dets: np.ndarray, latency_shots: int, check: int, end: float
) -> tuple[int, dict[int, Any], dict[str, Any]]:
    """One shot in flight: its packets published, then its result polled; until
    ``latency_shots`` are timed or ``end`` (at least 13 shots). The next shot id, the
    results of shots below ``check``, and the latency percentiles."""
    clock = time.perf_counter_ns
    pool = len(dets)
    got: dict[int, Any] = {}
    lat, tail = [], []
    sid = 0
    while sid < latency_shots + 3:
        if sid >= 13 and time.monotonic() > end:
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
    return (
        sid,
        got,
        {
            "single_shot_latency_us": _pct_us(np.array(lat, dtype=np.int64)),
            "single_shot_tail_us": _pct_us(np.array(tail, dtype=np.int64)),
        },
    )


@dataclasses.dataclass
class _Flow:
    """What the back-to-back run pushed and got back (``perf_counter`` times)."""

    submitted: int
    returned: int
    incomplete: int
    ring_full_events: int
    max_packets_queued: int
    packets_taken: int
    t_start: float
    t_first: float | None
    t_last: float | None


def _back_to_back(
    pd: Any,
    dets: np.ndarray,
    base: int,
    sustain: float,
    max_shots: int | None,
    batch_shots: int,
    watchdog_s: float,
) -> _Flow:
    """Shots from id ``base`` on, ``batch_shots`` at a time, pushed for ``sustain`` s (or
    until ``max_shots``) as fast as the rings' back-pressure lets them; then the backlog
    drained. Counters stay local variables in the loop: it is the thing being timed."""
    pool = len(dets)
    submitted, returned, incomplete, full = 0, 0, 0, 0
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
                n = batch_shots if max_shots is None else min(batch_shots, max_shots - submitted)
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
    taken = pd.ring.in_done - taken0
    return _Flow(submitted, returned, incomplete, full, max_queued, taken, t_start, t_first, t_last)


def _throughput(flow: _Flow, sustain: float, rounds: int, n_slots: int) -> dict[str, Any]:
    """Results/s and rounds/s of the back-to-back run, against the round clock."""
    t_n = rounds + 1
    window = (flow.t_last or flow.t_start) - flow.t_start
    shots_per_s = flow.returned / window if window > 0 else 0.0
    steady = (
        (flow.returned - 1) / (flow.t_last - flow.t_first)
        if flow.t_first is not None and flow.t_last is not None and flow.t_last > flow.t_first
        else 0.0
    )
    rps = shots_per_s * t_n
    need = ROUND_CLOCK_HZ / t_n
    return {
        "sustain_s": sustain,
        "submitted": flow.submitted,
        "results": flow.returned,
        "incomplete": flow.incomplete,
        "packets_taken": flow.packets_taken,
        "window_s": window,
        "results_per_s": shots_per_s,
        "results_per_s_after_first": steady,
        "rounds_per_s": rps,
        "rounds_per_s_stabilizer_only": shots_per_s * rounds,
        "ratio_to_round_clock": rps / ROUND_CLOCK_HZ,
        "shots_per_s_needed_at_round_clock": need,
        "backlog_growth_at_round_clock_shots_per_s": max(0.0, need - shots_per_s),
        "max_packets_queued": flow.max_packets_queued,
        "backlog_bounded": flow.max_packets_queued <= n_slots and flow.returned == flow.submitted,
        "ring_full_events": flow.ring_full_events,
    }


def _check_against_cpu(
    geometry: Any, m: Any, cpu_backend: str, dets: np.ndarray, got: dict[int, Any], n: int
) -> dict[str, Any]:
    """The first ``n`` results against the CPU path (exact equality expected)."""
    from qhil.kernels import PreDecoder

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
    return {"shots": n, "backend": cpu_backend, "mismatches": bad}

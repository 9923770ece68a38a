"""GPU benchmark section (d): the loop's reaction latency, and the streaming path; see gpu.py."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpu_common import _LEFT_RUNNING, SEED, _circuit, _one_line, _pct_us, _wait_result

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

    from qhil.kernels import PreDecoderGeometry, resolve_model
    from qhil.kernels.persistent import PersistentPreDecoder
    from qhil.sim import sample_shots

    shots = shots or {13: 2000, 104: 300}
    m = resolve_model(model)
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
        pd = PersistentPreDecoder.start(geometry, m, n_slots=n_slots, threads=threads,
                                        watchdog_s=watchdog_s)  # fmt: skip
        try:
            row.update(
                _stream_shots(pd, dets, sample.observables, matching, t_n, round_period_s, cap_end)
            )
        finally:
            report = pd.stop(timeout_s=5.0)
            if not report.exited:
                _LEFT_RUNNING.append("PersistentPreDecoder kernel (streaming)")
        row.update({"kernel_exited": report.exited, "counters": report.counters})
        rows.append(row)
    return rows


def _stream_shots(
    pd: Any,
    dets: np.ndarray,
    observables: np.ndarray,
    matching: Any,
    t_n: int,
    round_period_s: float,
    cap_end: float,
) -> dict[str, Any]:
    """Each shot's ``t_n`` packets pushed one per round clock tick (busy-waited), then its
    result matched; reaction latency and logical errors over the shots."""
    clock = time.perf_counter_ns
    period_ns = round_period_s * 1e9
    reaction, tail, match, interval, full = [], [], [], [], 0
    errors = incomplete = processed = 0
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
        errors += bool((pred != observables[s]).any())
        incomplete += not r.decoded
        processed += 1
    return {
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
    }


def _request_clean_stop() -> bool:
    """Do what a first Ctrl-C does to ``run_loop`` (finish cleanly), without a signal."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and "ctrl_c_requests_stop" in getattr(handler, "__qualname__", ""):
        handler(signal.SIGINT, None)  # first call only sets run_loop's stop flag
        return True
    return False


def _run_capped(cfg: Any, cap_s: float) -> tuple[Any, bool]:
    """``run_loop(cfg)``'s report, stopped cleanly ``cap_s`` after the call (start-up included,
    at least 0.5 s of running); and whether the cap stopped it."""
    from qhil.host import run_loop

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
    from qhil.host import RunConfig

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
        row.update(_loop_run(RunConfig, distance, p, rounds, n_shots, decoder, backend, cap))
        runs.append(row)
    out = {
        "distance": distance,
        "p": p,
        "noise": f"stim-depolarizing p={p}",
        "mode": "lockstep, 1 shot in flight, shm bridge",
        "runs": runs,
        "predecoder_over_pymatching": _latency_ratios(runs, rounds_list),
    }
    if streaming is not None:
        out["streaming"] = bench_streaming(
            deadline=deadline, distance=distance, p=p, rounds_list=rounds_list, **streaming
        )
    return out


def _loop_run(
    run_config: Any,
    distance: int,
    p: float,
    rounds: int,
    n_shots: int,
    decoder: str,
    backend: str,
    cap: float,
) -> dict[str, Any]:
    """One ``run_loop`` run of ``run_config()`` with these settings, stopped cleanly after
    ``cap`` s: its report's figures, or its error (one line). The caller imports
    ``RunConfig``: that import is slow, and must not eat into a run's cap."""
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
        report, capped = _run_capped(run_config().with_overrides(overrides), cap)
    except Exception as ex:
        return {"error": f"{type(ex).__name__}: {_one_line(str(ex))[:500]}"}
    return {
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


def _latency_ratios(runs: list[dict[str, Any]], rounds_list: Sequence[int]) -> list[dict[str, Any]]:
    """Pre-decoder over PyMatching-alone latency percentiles, per rounds that has both runs."""
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
    return ratios

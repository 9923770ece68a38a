"""The GPU benchmark's markdown report (docs/benchmarks/gpu.md); see gpu.py."""

from __future__ import annotations

from typing import Any

from gpu_common import SECTIONS, _one_line

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
        "A persistent echo kernel (`qhil.kernels.persistent.EchoLoopback`, launched once, "
        "one block of "
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

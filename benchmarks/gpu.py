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
  slot ring (``qhil.kernels.persistent.EchoLoopback``); host round trip per window.
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
import datetime
import faulthandler
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The parts live beside this script (python benchmarks/gpu.py puts this folder on
# sys.path; a loader by file path, as the tests use, does not).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_common import (
    _LEFT_RUNNING,
    OUT,
    ROUND_CLOCK_HZ,
    RUN_ORDER,
    SECTIONS,
    _circuit,
    _one_line,
    gpu_description,
    gpu_unavailable_reason,
)
from gpu_kernels import bench_bridge_loopback, bench_inference
from gpu_loop import bench_loop, bench_streaming
from gpu_report import render_markdown
from gpu_sustained import bench_sustained

__all__ = [
    "bench_bridge_loopback",
    "bench_inference",
    "bench_loop",
    "bench_streaming",
    "bench_sustained",
    "gpu_unavailable_reason",
    "main",
    "render_markdown",
]


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
    from qhil.host import machine_description

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

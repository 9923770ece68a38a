"""Soak: a `qhil serve` daemon over tcp:// with CURVE, fed by `qhil run` front ends for at
least 10^7 rounds (d=5, rounds=5), first fault-free, then with 0.1% injected faults.

Both are real processes, as on a rack. Every second the script reads each one's
resident memory (``/proc/PID/status``) into ``soak_rss.csv`` (flushed per row).
At the end it reports, per phase: rounds emitted, decoded and lost by reason
(fault-free must lose none; with faults every loss has a reason), the rate,
reaction-latency percentiles, and RSS growth after warm-up (the first 20% of a
phase) for both processes. It plots RSS and latency against time. Results go
to ``docs/benchmarks/soak.md`` / ``.png`` / ``.json``. Run from the repository
root::

    python benchmarks/soak.py                         # 10^7 rounds per phase
    python benchmarks/soak.py --rounds-total 100000   # a quick one

These are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qhil.host import machine_description

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
WARM_UP = 0.2  # fraction of a phase before RSS counts as steady


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def _qhil(*args: str) -> list[str]:
    return [sys.executable, "-m", "qhil.host", *args]


def _start_serve(work: Path, endpoint: str, d: int, r: int) -> subprocess.Popen[str]:
    serve = subprocess.Popen(
        _qhil(
            "serve",
            "--transport",
            "zmq",
            "--endpoint",
            endpoint,
            "--keys",
            str(work / "keys"),
            "--distance",
            str(d),
            "--rounds",
            str(r),
            "--log-format",
            "json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stdout is not None
    first = json.loads(serve.stdout.readline())
    if first.get("event") == "compiling":  # a cold kernel cache; "listening" follows
        first = json.loads(serve.stdout.readline())
    if first.get("event") != "listening":
        raise RuntimeError(f"qhil serve did not start: {first}")
    return serve


def _run_phase(
    name: str, args: argparse.Namespace, work: Path, endpoint: str, serve_pid: int, rss: Any
) -> dict[str, Any]:
    shots = -(-args.rounds_total // (args.rounds + 1))  # rounds + the final data round
    out = work / name
    cmd = _qhil(
        "run",
        "--transport",
        "zmq",
        "--endpoint",
        endpoint,
        "--external-decoder",
        "--keys",
        str(work / "keys"),
        "--distance",
        str(args.distance),
        "--rounds",
        str(args.rounds),
        "--shots",
        str(shots),
        "--seed",
        str(args.seed),
        "--no-progress",
        "--max-in-flight",
        str(args.max_in_flight),
        "--json",
        "--out",
        str(out),
        "--save",
        str(out / "save"),
        *(["--fault-rate", str(args.fault_rate)] if name == "faults" else []),
    )
    t0 = time.monotonic()
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while run.poll() is None:
        # report.json appears when streaming ends; the --save export follows it.
        stage = "export" if (out / "report.json").exists() else "stream"
        rss.writerow(
            [name, stage, f"{time.monotonic() - t0:.1f}", f"{rss_mb(run.pid):.1f}",
             f"{rss_mb(serve_pid):.1f}"]
        )  # fmt: skip
        time.sleep(args.sample_s)
    stdout, stderr = run.communicate()
    if run.returncode != 0:
        raise RuntimeError(f"qhil run ({name}) exited {run.returncode}: {stderr[-2000:]}")
    report = json.loads(stdout)
    return {
        "name": name,
        "shots": shots,
        "wall_s": time.monotonic() - t0,
        "report": report,
        "latency": _latency_over_time(out / "save" / "shots.csv"),
    }


def _latency_over_time(shots_csv: Path, *, windows: int = 40) -> dict[str, list[float]]:
    """Reaction latency p50 / p99 / p99.9 (µs) in equal windows of emission time."""
    cols = np.loadtxt(shots_csv, delimiter=",", skiprows=1, usecols=(2, 4), dtype=np.int64)
    lat, emit = cols[:, 0], cols[:, 1]
    ok = lat >= 0
    lat, emit = lat[ok], emit[ok]
    t = (emit - emit.min()) * 1e-9
    edges = np.linspace(0, t.max() + 1e-9, windows + 1)
    series: dict[str, list[float]] = {"t_s": [], "p50_us": [], "p99_us": [], "p999_us": []}
    for lo, hi in itertools.pairwise(edges):
        sel = lat[(t >= lo) & (t < hi)]
        if sel.size:
            p = np.percentile(sel, [50, 99, 99.9]) * 1e-3
            for key, v in zip(("p50_us", "p99_us", "p999_us"), p, strict=True):
                series[key].append(round(float(v), 2))
            series["t_s"].append(round(float(hi), 1))
    return series


def _rss_growth(rows: list[list[str]], phase: str, column: int) -> dict[str, float]:
    """RSS while the front end streams: growth is max - min after warm-up; ``peak_mb``
    also covers the --save export after streaming."""
    mine = [r for r in rows if r[0] == phase and float(r[column]) > 0]
    vals = np.array([float(r[column]) for r in mine if r[1] == "stream"])
    steady = vals[int(len(vals) * WARM_UP) :] if len(vals) > 4 else vals
    if steady.size == 0:
        return {"start_mb": 0.0, "end_mb": 0.0, "growth_mb": 0.0, "peak_mb": 0.0}
    return {
        "start_mb": round(float(steady[0]), 1),
        "end_mb": round(float(steady[-1]), 1),
        "growth_mb": round(float(steady.max() - steady.min()), 1),
        "peak_mb": round(max(float(r[column]) for r in mine), 1),
    }


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    subprocess.run(_qhil("keys", "generate", str(work / "keys")), check=True, capture_output=True)
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    serve = _start_serve(work, endpoint, args.distance, args.rounds)
    rss_path = work / "soak_rss.csv"
    phases = []
    try:
        with rss_path.open("w", newline="") as f:
            rss = csv.writer(f)
            rss.writerow(["phase", "stage", "t_s", "front_end_rss_mb", "decoder_rss_mb"])
            for name in ("fault_free", "faults"):
                phases.append(_run_phase(name, args, work, endpoint, serve.pid, rss))
                f.flush()
    finally:
        serve.send_signal(signal.SIGTERM)
        stdout, _ = serve.communicate(timeout=60)
    rows = list(csv.reader(rss_path.open()))[1:]
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    sessions = [e for e in events if e["event"] == "session_ended"]
    for p in phases:
        p["rss_front_end"] = _rss_growth(rows, p["name"], 3)
        p["rss_decoder"] = _rss_growth(rows, p["name"], 4)
    return {
        "machine": machine_description(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "phases": phases,
        "decoder_sessions": [s["stats"] for s in sessions],
        "decoder_link": sessions[-1]["link"] if sessions else {},
        "decoder_exit": serve.returncode,
        "rss_rows": rows,
    }


def render(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [
        "# Soak: `qhil serve` over tcp:// with CURVE",
        "",
        f"Machine: {result['machine']}. No GPU. d={a['distance']}, rounds={a['rounds']}, "
        "noise stim-depolarizing p=0.003, lockstep with up to "
        f"{a['max_in_flight']} shots in flight (so latency includes queueing behind them), "
        "PyMatching. Two "
        f"`qhil run` front ends in turn against one `qhil serve` daemon (separate processes, "
        f"tcp://127.0.0.1 with CURVE keys); faults phase: --fault-rate {a['fault_rate']} on "
        f"the front end's outgoing packets. Decoder exit status after SIGTERM: "
        f"{result['decoder_exit']}.",
        "",
        "| phase | rounds emitted | decoded | lost (by reason) | rounds/s | latency p50 / p99 / "
        "p99.9 µs | front-end RSS growth while streaming, after warm-up (peak incl. export) "
        "| decoder RSS growth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in result["phases"]:
        r = p["report"]
        lost = {k: v for k, v in r["rounds_lost"].items() if v}
        lat = r["latency_us"]
        fe, de = p["rss_front_end"], p["rss_decoder"]
        lines.append(
            f"| {p['name']} | {r['rounds_emitted']:,} | {r['rounds_decoded']:,} | "
            f"{sum(lost.values()):,} {json.dumps(lost) if lost else ''} | "
            f"{r['rounds_per_s']:,.0f} | {lat['p50']:.1f} / {lat['p99']:.1f} / "
            f"{lat['p999']:.1f} | {fe['growth_mb']} MB ({fe['start_mb']}→{fe['end_mb']}; "
            f"peak {fe['peak_mb']}) | "
            f"{de['growth_mb']} MB ({de['start_mb']}→{de['end_mb']}) |"
        )
    link = result["decoder_link"]
    lines += [
        "",
        "Decoder link counters at the end: "
        + ", ".join(f"{k}={v:,}" for k, v in link.items() if v),
        "",
        "RSS is sampled once a second; 'growth' is max − min while the front end streams, "
        f"after the first {int(WARM_UP * 100)}% of it. The front end holds a per-shot ledger "
        "(fates, predictions, latencies: about 62 B per shot), allocated and touched when the "
        "run starts, so its RSS is flat while it streams; the peak comes after streaming, "
        "in the `--save` export (shaded in the plot), which this benchmark uses for "
        "latency against time.",
        "",
        "![RSS and latency against time](soak.png)",
    ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, len(result["phases"]), figsize=(11, 6), squeeze=False)
    for i, p in enumerate(result["phases"]):
        rows = [r for r in result["rss_rows"] if r[0] == p["name"]]
        t = [float(r[2]) for r in rows]
        ax1[i].plot(t, [float(r[3]) for r in rows], label="front end (qhil run)")
        ax1[i].plot(t, [float(r[4]) for r in rows], label="decoder (qhil serve)")
        export = [x for x, r in zip(t, rows, strict=True) if r[1] == "export"]
        if export:
            ax1[i].axvspan(export[0], export[-1], alpha=0.15, label="--save export")
        ax1[i].set(title=p["name"], xlabel="s", ylabel="RSS MB")
        ax1[i].legend(fontsize=8)
        lat = p["latency"]
        for key in ("p50_us", "p99_us", "p999_us"):
            ax2[i].plot(lat["t_s"], lat[key], label=key.replace("_us", ""))
        ax2[i].set(xlabel="s since first shot", ylabel="reaction latency µs", yscale="log")
        ax2[i].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(*, command_line_args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds-total", type=int, default=10_000_000, help="rounds per phase (default: 10^7)"
    )
    parser.add_argument("--distance", type=int, default=5, help="default: 5")
    parser.add_argument("--rounds", type=int, default=5, help="QEC rounds per shot (default: 5)")
    parser.add_argument("--fault-rate", type=float, default=0.001, help="default: 0.001")
    parser.add_argument("--seed", type=int, default=7, help="default: 7")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=16,
        help="shots awaiting a correction at once (default: 16)",
    )
    parser.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period")
    parser.add_argument("--out", type=Path, default=OUT, help=f"results folder (default: {OUT})")
    args = parser.parse_args(command_line_args)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qhil-soak-") as tmp:
        result = soak(args, Path(tmp))
    plot(result, args.out / "soak.png")
    rows = result["rss_rows"]
    (args.out / "soak.json").write_text(json.dumps(result) + "\n")
    (args.out / "soak.md").write_text(render({**result, "rss_rows": rows}))
    print(render({**result, "rss_rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

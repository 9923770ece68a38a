"""Showing a run to a person: the summary table and the latency histogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from qhil.host._report import RunReport
from qhil.host._stats import Percentiles

__all__ = ["print_summary", "write_histogram"]


def _pct(p: Percentiles, unit: str, digits: int = 1) -> str:
    if p.n == 0:
        return "n/a"
    f = f"{{:.{digits}f}}"
    return " / ".join(f.format(v) for v in (p.p50, p.p99, p.p999, p.max)) + f" {unit}"


def print_summary(report: RunReport, *, console: Console | None = None) -> None:
    """Print the run's summary table."""
    console = console or Console()
    t = Table(
        title=f"qhil run - {report.mode} front end, {report.transport} bridge, {report.decoder}",
        show_header=False,
        title_justify="left",
    )
    t.add_column(style="bold")
    t.add_column()
    lo, hi = report.ler_ci95
    t.add_row(
        "shots",
        f"{report.shots_decoded:,} decoded of {report.shots_emitted:,} emitted "
        f"({report.shots_planned:,} planned)",
    )
    t.add_row("rounds", f"{report.rounds_decoded:,} decoded of {report.rounds_emitted:,} emitted")
    lost = {k: v for k, v in report.rounds_lost.items() if v}
    t.add_row("rounds lost", ", ".join(f"{k}: {v:,}" for k, v in lost.items()) or "none")
    t.add_row(
        "logical error rate",
        f"{report.logical_error_rate:.2e} ({report.logical_errors} errors; "
        f"95% CI {lo:.2e} .. {hi:.2e})",
    )
    t.add_row("reaction latency p50/p99/p99.9/max", _pct(report.latency_us, "us"))
    t.add_row("  in FPGA cycles", _pct(report.latency_cycles, "cycles", 0))
    if report.transport_out_us.n:
        t.add_row("  transport out (p50/p99/p99.9/max)", _pct(report.transport_out_us, "us"))
    t.add_row("  decoder service", _pct(report.service_us, "us"))
    if report.transport_back_us.n:
        t.add_row("  transport back", _pct(report.transport_back_us, "us"))
    t.add_row("  of which decoding (per shot)", _pct(report.decode_us_per_shot, "us"))
    t.add_row(
        "budget misses",
        f"{report.budget_misses:,} of {report.shots_decoded:,} "
        f"({100 * report.budget_miss_fraction:.1f}%) over {report.budget_us:g} us",
    )
    t.add_row(
        "throughput",
        f"{report.rounds_per_s:,.0f} rounds/s, {report.shots_per_s:,.0f} shots/s "
        f"over {report.wall_s:.2f} s",
    )
    if report.pacing:
        p = report.pacing
        t.add_row(
            "pacing achieved",
            f"{p['interval_s'] * 1e6:.2f} us/round (target {p['target_interval_s'] * 1e6:g} us); "
            f"lag p50 {p['lag_p50_s'] * 1e6:.1f} us, p99 {p['lag_p99_s'] * 1e6:.1f} us",
        )
    rejected = {k: v for k, v in report.frontend_rejections.items() if v}
    if report.host:
        host_counts = report.host["counts"]
        for k in (
            "bad_magic",
            "bad_version",
            "truncated",
            "bad_crc",
            "bad_length",
            "seq_gap",
            "duplicate",
            "unknown_stream",
            "bad_field",
            "stale",
        ):
            if host_counts.get(k):
                rejected[f"decoder:{k}"] = host_counts[k]
    t.add_row("packets rejected", ", ".join(f"{k}: {v}" for k, v in rejected.items()) or "none")
    if report.aborted:
        t.add_row("[red]run ended early[/red]", report.aborted)
    for note in report.notes:
        t.add_row("note", note)
    t.add_row("machine", report.machine)
    console.print(t)


def write_histogram(latency_ns: np.ndarray, report: RunReport, path: Path) -> Path:
    """Write the reaction-latency histogram (log-scaled counts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    lat_us = np.asarray(latency_ns, dtype=np.float64) * 1e-3
    if lat_us.size:
        hi = max(float(np.percentile(lat_us, 99.9)) * 1.5, report.budget_us * 1.2)
        ax.hist(np.clip(lat_us, 0, hi), bins=120, range=(0, hi), color="#3b6ea5")
        ax.set_yscale("log")
        p = report.latency_us
        for value, label, style in (
            (p.p50, "p50", "-"),
            (p.p99, "p99", "--"),
            (p.p999, "p99.9", ":"),
        ):
            ax.axvline(
                value, color="black", linestyle=style, linewidth=1, label=f"{label} {value:.1f} us"
            )
    else:
        ax.text(
            0.5, 0.5, "no corrections arrived", ha="center", va="center", transform=ax.transAxes
        )
    ax.axvline(
        report.budget_us, color="#c0392b", linewidth=1.5, label=f"budget {report.budget_us:g} us"
    )
    ax.set_xlabel("reaction latency (us): last round emitted -> correction received")
    ax.set_ylabel("shots")
    ax.set_title(
        f"{report.decoder}, {report.transport} bridge, {report.mode}; "
        f"{report.shots_decoded:,} shots",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path

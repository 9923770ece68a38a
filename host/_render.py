"""Showing a run to a person: the summary table, the latency histogram and timeline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Console
from rich.table import Table

from qhil.host._report import RunReport
from qhil.host._stats import Percentiles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["print_summary", "write_histogram", "write_timeline"]


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
    if report.timeouts and (waited := _timeouts_line(report.timeouts)):
        t.add_row("waited for timeouts", waited)
    for note in report.notes:
        t.add_row("note", note)
    if report.kernels:
        t.add_row("kernels", _kernels_line(report.kernels))
    t.add_row("machine", report.machine)
    console.print(t)


# Log axes cannot show 0; a latency under the clock's 1 ns resolution is drawn at 1 ns.
_FLOOR_US = 1e-3
_BLUE, _RED = "#3b6ea5", "#c0392b"


def _fmt_us(v: float) -> str:
    return f"{v / 1e3:.2f} ms" if v >= 1e3 else f"{v:.1f} us"


def _positive_us(latency_ns: np.ndarray) -> tuple[np.ndarray, int]:
    """Latencies in us, raised to the log-axis floor; and how many were raised."""
    lat_us = np.asarray(latency_ns, dtype=np.float64) * 1e-3
    low = lat_us < _FLOOR_US
    return np.where(low, _FLOOR_US, lat_us), int(np.count_nonzero(low))


def _floor_note(floored: int) -> list[str]:
    return [f"{floored:,} shot(s) under 1 ns drawn at 1 ns"] if floored else []


def _log_bins(lo: float, hi: float, per_decade: int = 25) -> np.ndarray:
    """Log-spaced bin edges from exactly lo to exactly hi, so no sample falls outside."""
    if hi <= lo:
        lo, hi = lo / 1.05, hi * 1.05
    n = int(np.clip(np.ceil(np.log10(hi / lo) * per_decade), 20, 200))
    edges = np.geomspace(lo, hi, n + 1)
    edges[0], edges[-1] = lo, hi
    return edges


def _log_axis(axis: str, ax: Axes, lo: float, hi: float) -> None:
    """Log scale labelled in plain numbers; 1-2-5 ticks when the span is short."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    getattr(ax, f"set_{axis}lim")(lo, hi)
    getattr(ax, f"set_{axis}scale")("log")
    a = ax.xaxis if axis == "x" else ax.yaxis
    a.set_major_locator(LogLocator(subs=(1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def _save(fig: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def _subplots(width: float) -> tuple[Figure, Axes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, 4), dpi=120)


def _title(ax: Axes, report: RunReport, what: str, notes: list[str]) -> None:
    head = (
        f"{what}: {report.decoder}, {report.transport} bridge, {report.mode}; "
        f"{report.shots_decoded:,} shots decoded"
    )
    ax.set_title("\n".join([head, *notes]), fontsize=9, loc="left")


def _legend(ax: Axes) -> None:
    # Outside the axes: a heavy tail or a stall can reach any corner of the plot.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _budget_label(report: RunReport) -> str:
    return f"budget {report.budget_us:g} us ({100 * report.budget_miss_fraction:.1f}% over)"


def _histogram_figure(latency_ns: np.ndarray, report: RunReport) -> Figure:
    fig, ax = _subplots(8.5)
    lat_us, floored = _positive_us(latency_ns)
    budget = report.budget_us
    notes = _floor_note(floored)
    if lat_us.size:
        lo, hi = float(lat_us.min()), float(lat_us.max())
        ax.hist(lat_us, bins=_log_bins(lo, hi).tolist(), color=_BLUE)
        ax.set_yscale("log")
        p = report.latency_us
        for value, label, style, color in (
            (p.p50, "p50", "-", "black"),
            (p.p99, "p99", "--", "black"),
            (p.p999, "p99.9", ":", "black"),
            (p.max, "max", "-", "grey"),
        ):
            ax.axvline(value, color=color, linestyle=style, lw=1, label=f"{label} {_fmt_us(value)}")
    else:
        lo = hi = budget
        ax.text(0.5, 0.5, "no corrections arrived", ha="center", transform=ax.transAxes)
    ax.axvline(budget, color=_RED, lw=1.5, label=_budget_label(report))
    _log_axis("x", ax, min(lo, budget) / 1.5, max(hi, budget) * 1.5)
    ax.set_xlabel("reaction latency (us, log scale): last round emitted -> correction received")
    ax.set_ylabel("shots per bin (log-spaced bins)")
    _title(ax, report, "Latency", notes)
    _legend(ax)
    fig.tight_layout()
    return fig


def _timeouts_line(t: dict[str, Any]) -> str:
    """The shots that waited for a timeout, and for how long ("" when none did)."""
    parts = []
    if t["shots_timed_out"]:
        parts.append(
            f"{t['shots_timed_out']:,} shots waited out the {t['correction_timeout_ms']:g} ms "
            f"correction timeout ({t['waited_s']:.2f} s, "
            f"{100 * t['share_of_run']:.0f}% of the run)"
        )
    if t["shots_given_up_by_decoder"]:
        parts.append(
            f"{t['shots_given_up_by_decoder']:,} the decoder gave up (a round missing) "
            f"within its {t['assembly_timeout_ms']:g} ms assembly timeout"
        )
    if not parts:
        return ""
    return "; ".join(parts) + (
        " (both in round-clock periods: --correction-timeout-rounds, --assembly-timeout-rounds)"
    )


def _kernels_line(k: dict[str, Any]) -> str:
    if not k["warm"]:
        return (
            f"[red]not warm[/red]: {k['compiled_during_run']} compiled during the run, "
            "so its latencies include compile time"
        )
    how = (
        f"{k['compiled_before_run']} compiled before the run (first run; cached in {k['cache']})"
        if k["compiled_before_run"]
        else f"loaded from the cache ({k['cache']})"
    )
    return f"warm: {how}; ready in {k['prepare_s']:.1f} s"


def write_histogram(latency_ns: np.ndarray, report: RunReport, path: Path) -> Path:
    """Write the reaction-latency histogram as a PNG.

    Log-spaced bins run from the fastest to the slowest shot, so the bulk and
    the tail are both legible and no shot is cut off.
    """
    return _save(_histogram_figure(latency_ns, report), path)


def _block_percentiles(
    x: np.ndarray, lat_us: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
    """p50 and p99 of blocks of >= 100 shots in emit order, as steps spanning each block.

    Steps, not points joined at block centres: in a stall a block spans a long
    time, and a line between centres would invent values across it.
    """
    blocks = min(100, x.size // 100)
    if blocks < 2:
        return None
    order = np.argsort(x, kind="stable")
    xs, ls = np.array_split(x[order], blocks), np.array_split(lat_us[order], blocks)
    steps = np.array([(b[0], b[-1]) for b in xs]).ravel()
    p50, p99 = np.repeat(np.array([np.percentile(b, [50, 99]) for b in ls]), 2, axis=0).T
    return steps, p50, p99, x.size // blocks


def _timeline_figure(
    emit_ns: np.ndarray, latency_ns: np.ndarray, decoded: np.ndarray, report: RunReport
) -> Figure:
    fig, ax = _subplots(10)
    emit_ns, decoded = np.asarray(emit_ns), np.asarray(decoded, dtype=bool)
    lat_us, floored = _positive_us(np.asarray(latency_ns)[decoded])
    notes = _floor_note(floored)
    emitted = emit_ns > 0
    if np.all(emitted[decoded]):
        t0 = emit_ns[emitted].min() if emitted.any() else 0
        x = (emit_ns - t0) * 1e-9
        ax.set_xlabel("time the shot's last round was emitted (s since the first shot)")
    else:  # a front end without per-shot emit times: plot against shot order instead
        x = np.arange(emit_ns.size, dtype=np.float64)
        ax.set_xlabel("shot index (this front end records no per-shot emit time)")
    budget = report.budget_us
    lo = hi = budget
    if lat_us.size:
        lo, hi = min(lo, float(lat_us.min())), max(hi, float(lat_us.max()))
        ax.scatter(x[decoded], lat_us, s=3, lw=0, alpha=0.5, color=_BLUE)
        blocks = _block_percentiles(x[decoded], lat_us)
        if blocks is not None:
            steps, p50, p99, size = blocks
            ax.plot(steps, p50, color="black", lw=1, label=f"p50 per {size:,} shots")
            ax.plot(steps, p99, color="black", lw=1, ls="--", label=f"p99 per {size:,} shots")
    else:
        ax.text(0.5, 0.5, "no corrections arrived", ha="center", transform=ax.transAxes)
    lost = emitted & ~decoded
    if lost.any():
        ax.plot(
            x[lost],
            np.full(int(lost.sum()), 0.96),
            "|",
            color=_RED,
            ms=8,
            transform=ax.get_xaxis_transform(),
            label=f"lost after emission ({int(lost.sum()):,} shots)",
        )
    ax.axhline(budget, color=_RED, lw=1.5, label=_budget_label(report))
    _log_axis("y", ax, lo / 1.5, hi * 2)
    ax.set_ylabel("reaction latency (us, log scale)")
    _title(ax, report, "Latency per shot", notes)
    _legend(ax)
    fig.tight_layout()
    return fig


def write_timeline(
    emit_ns: np.ndarray, latency_ns: np.ndarray, decoded: np.ndarray, report: RunReport, path: Path
) -> Path:
    """Write each shot's reaction latency against when it was emitted, as a PNG.

    Arrays have one entry per planned shot, as in ``FrontEndResult``. Stalls
    and drift show here where a histogram hides them; shots lost after
    emission are ticked along the top.
    """
    return _save(_timeline_figure(emit_ns, latency_ns, decoded, report), path)

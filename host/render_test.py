from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from qhil.fpga import Fate, FrontEndResult
from qhil.host._render import (
    _block_percentiles,
    _histogram_figure,
    _log_bins,
    _timeline_figure,
    write_histogram,
    write_timeline,
)
from qhil.host._report import RunReport

PNG = b"\x89PNG\r\n\x1a\n"
CLOCK_HZ = 250e6


def _result(latency_ns: np.ndarray, fates: np.ndarray, emit_ns: np.ndarray) -> FrontEndResult:
    shots = fates.shape[0]
    lat = np.where(np.all(fates == Fate.DECODED, axis=1), latency_ns, -1).astype(np.int64)
    zeros = np.zeros(shots, dtype=np.int64)
    return FrontEndResult(
        mode="lockstep",
        fates=fates,
        predictions=np.zeros((shots, 1), dtype=bool),
        raw_observables=np.zeros((shots, 1), dtype=bool),
        latency_ns=lat,
        latency_cycles=np.where(lat >= 0, lat * CLOCK_HZ // 1e9, -1).astype(np.int64),
        emit_ns=np.asarray(emit_ns, dtype=np.int64),
        host_rx_ns=zeros,
        host_tx_ns=zeros,
        budget_cycles=2500,  # 10 us
        fabric_clock_hz=CLOCK_HZ,
        wall_s=1.0,
        pacing=None,
        rejections={},
        registers={},
    )


def _run(
    latency_ns: np.ndarray, lost: np.ndarray | None = None, emit_ns: np.ndarray | None = None
) -> tuple[FrontEndResult, RunReport]:
    """A finished result with these latencies (lost shots timed out) and its report."""
    shots = latency_ns.size
    lost = np.zeros(shots, dtype=bool) if lost is None else lost
    fates = np.where(lost, Fate.LOST_TIMEOUT, Fate.DECODED).astype(np.uint8)[:, None]
    if emit_ns is None:
        emit_ns = 5_000_000_000 + np.arange(shots, dtype=np.int64) * 200_000  # 200 us apart
    result = _result(latency_ns, fates, emit_ns)
    report = RunReport.build(
        config={},
        transport="shm",
        decoder="pymatching",
        result=result,
        host=None,
        shared_clock=True,
    )
    return result, report


def _heavy_tail(n: int = 5000) -> np.ndarray:
    """Bulk near 60 us with a long tail and one 19 ms outlier, as in issue 11."""
    lat = np.random.default_rng(7).lognormal(np.log(60e3), 0.3, n).astype(np.int64)
    lat[n // 2] = 19_000_000
    return lat


def _title(fig: Figure) -> str:
    return fig.axes[0].get_title(loc="left")


def _legend(fig: Figure) -> list[str]:
    legend = fig.axes[0].get_legend()
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def test_log_bins_span_exactly_min_to_max() -> None:
    edges = _log_bins(23.4, 19_000.0)
    assert edges[0] == 23.4 and edges[-1] == 19_000.0
    assert np.all(np.diff(np.log(edges)) == pytest.approx(np.log(edges[1] / edges[0])))
    same = _log_bins(5.0, 5.0)  # one distinct value still gets bins of positive width
    assert same[0] < 5.0 < same[-1] and np.all(np.diff(same) > 0)


def test_histogram_keeps_the_whole_tail_and_marks_percentiles() -> None:
    lat = _heavy_tail()
    _, report = _run(lat)
    fig = _histogram_figure(lat, report)
    ax = fig.axes[0]
    bars: list[Any] = list(ax.patches)  # Rectangles
    assert sum(b.get_height() for b in bars) == lat.size
    assert max(b.get_x() + b.get_width() for b in bars) == pytest.approx(19_000.0)
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] > 19_000.0
    assert ax.get_xlim()[0] < report.budget_us  # the budget line is in view
    labels = _legend(fig)
    p = report.latency_us
    for want in (f"p50 {p.p50:.1f} us", f"p99 {p.p99:.1f} us", f"p99.9 {p.p999:.1f} us"):
        assert want in labels
    assert "max 19.00 ms" in labels
    assert any(s.startswith("budget 10 us (100.0% over)") for s in labels)
    assert "drawn at 1 ns" not in _title(fig)


def test_histogram_says_when_a_latency_is_raised_to_the_log_floor() -> None:
    lat = _heavy_tail()
    lat[:3] = 0  # a coarse clock can read zero; a log axis cannot show it
    _, report = _run(lat)
    fig = _histogram_figure(lat, report)
    assert "3 shot(s) under 1 ns drawn at 1 ns" in _title(fig)
    bars: list[Any] = list(fig.axes[0].patches)  # Rectangles
    assert sum(b.get_height() for b in bars) == lat.size


def test_write_histogram_of_an_empty_run(tmp_path: Path) -> None:
    lat = np.zeros(0, dtype=np.int64)
    _, report = _run(lat)
    fig = _histogram_figure(lat, report)
    assert not fig.axes[0].patches
    assert "no corrections arrived" in [t.get_text() for t in fig.axes[0].texts]
    path = write_histogram(lat, report, tmp_path / "h" / "latency_histogram.png")
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in path.parent.iterdir()] == ["latency_histogram.png"]


def test_timeline_plots_every_decoded_shot_and_ticks_the_lost_ones(tmp_path: Path) -> None:
    lat = _heavy_tail(3000)
    lost = np.zeros(lat.size, dtype=bool)
    lost[1000:1040] = True  # a stall: these timed out
    result, report = _run(lat, lost)
    fig = _timeline_figure(result.emit_ns, result.latency_ns, result.decoded, report)
    ax = fig.axes[0]
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    xy = np.asarray(points.get_offsets())
    assert len(xy) == 2960
    # x is seconds since the first emit: shots are 200 us apart
    assert xy[0][0] == 0.0 and xy[-1][0] == pytest.approx(2999 * 200e-6)
    assert np.max(xy[:, 1]) == pytest.approx(19_000.0)
    assert ax.get_yscale() == "log" and ax.get_ylim()[1] > 19_000.0
    assert "s since the first shot" in ax.get_xlabel()
    labels = _legend(fig)
    assert "lost after emission (40 shots)" in labels
    assert "p99 per 102 shots" in labels and "p50 per 102 shots" in labels  # 2960 // 29
    assert any(s.startswith("budget 10 us") for s in labels)
    (ticks,) = [line for line in ax.get_lines() if str(line.get_label()).startswith("lost")]
    assert np.asarray(ticks.get_xdata()).size == 40
    path = write_timeline(
        result.emit_ns, result.latency_ns, result.decoded, report, tmp_path / "t.png"
    )
    assert path.read_bytes()[:8] == PNG
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]


def test_block_percentiles_are_steps_over_each_block() -> None:
    # 300 shots, the middle 100 slow and spread over a long stretch of time
    x = np.r_[np.arange(100.0), 100 + 10 * np.arange(100.0), 1100 + np.arange(100.0)]
    lat = np.r_[np.ones(100), np.full(100, 10.0), np.full(100, 5.0)]
    blocks = _block_percentiles(x, lat)
    assert blocks is not None
    steps, p50, p99, size = blocks
    np.testing.assert_array_equal(steps, [0, 99, 100, 1090, 1100, 1199])
    np.testing.assert_array_equal(p50, [1, 1, 10, 10, 5, 5])
    np.testing.assert_array_equal(p99, p50)
    assert size == 100
    assert _block_percentiles(x[:199], lat[:199]) is None  # one block says nothing over time


def test_timeline_falls_back_to_shot_index_without_emit_times() -> None:
    lat = _heavy_tail(150)
    result, report = _run(lat, emit_ns=np.zeros(lat.size, dtype=np.int64))
    fig = _timeline_figure(result.emit_ns, result.latency_ns, result.decoded, report)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("shot index")
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(np.asarray(points.get_offsets())[:, 0], np.arange(150))
    assert not any("per" in s for s in _legend(fig))  # too few shots for block percentiles


def test_timeline_of_a_run_where_nothing_was_decoded(tmp_path: Path) -> None:
    lat = np.full(20, 50_000, dtype=np.int64)
    result, report = _run(lat, lost=np.ones(20, dtype=bool))
    fig = _timeline_figure(result.emit_ns, result.latency_ns, result.decoded, report)
    ax = fig.axes[0]
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    assert "no corrections arrived" in [t.get_text() for t in ax.texts]
    assert "lost after emission (20 shots)" in _legend(fig)
    path = write_timeline(
        result.emit_ns, result.latency_ns, result.decoded, report, tmp_path / "t.png"
    )
    assert path.read_bytes()[:8] == PNG

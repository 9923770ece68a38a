"""The accuracy sweep's summary: per-task figures, a markdown report and a plot.

:func:`summarize` reads a ``qhil bench accuracy`` CSV (sinter's, ``host/_accuracy.py``)
with ``sinter.read_stats_from_csv_files``, which sums each task's rows;
:func:`write_summary` turns that into two markdown tables (accuracy, then time)
and a log-log plot of LER against p.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import sinter

from qhil.host._accuracy import ACCURACY_DECODERS, PIPE, PM, PM_CORR, PRE, AccuracyTask
from qhil.host._stats import wilson_interval

__all__ = ["summarize", "write_summary"]

_FIGURES = (
    "density_before",
    "density_after",
    "density_cut",
    "pipeline_density_cut",
    "pm_us_per_round_raw",
    "pm_us_per_round_residual",
    "pm_speedup",
    "pm_b1_us_per_round_raw",
    "pm_b1_us_per_round_residual",
    "pm_b1_speedup",
    "pm_corr_us_per_round",
    "predecoder_us_per_shot",
    "predecoder_b1_us_per_shot",
    "pm_corr_us_per_shot",
    "pm_corr_b1_us_per_shot",
    "pipeline_us_per_shot",
    "pipeline_b1_us_per_shot",
    "ler_ratio_pm",
    "ler_ratio_pm_corr",
    "pipeline_gain_pm",
    "pipeline_gain_pm_corr",
)


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _group(csv_path: Path) -> dict[tuple[str, str], sinter.TaskStats]:
    """The CSV's stats per (task name, decoder); one model's only."""
    groups: dict[tuple[str, str], sinter.TaskStats] = {}
    for stat in sinter.read_stats_from_csv_files(Path(csv_path)):
        key = (AccuracyTask.from_metadata(stat.json_metadata).name, stat.decoder)
        if key in groups:
            raise ValueError(
                f"{csv_path} holds two sets of {key[1]} rows for {key[0]} (from two "
                "models?); keep one CSV file per model"
            )
        groups[key] = stat
    return groups


def _per(row: dict[str, Any] | None, key: str, *, per: str = "timed_shots", scale: float) -> Any:
    """A summed count over another (the timing pass's shots by default), times ``scale``."""
    if row is None:
        return None
    c = row["counts"]
    return c[key] / c[per] * scale if c.get(per) and key in c else None


def _task_figures(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The whole task's figures from its decoders' rows (None where one is missing)."""
    a, b, c, e = (rows.get(k) for k in (PM, PM_CORR, PRE, PIPE))
    us_round, us = 1e-3 / next(iter(rows.values()))["rounds"], 1e-3
    fig: dict[str, Any] = dict.fromkeys(_FIGURES)
    fig["density_before"] = _per(c, "detection_events", per="detectors_checked", scale=1.0)
    fig["density_after"] = _per(c, "residual_events", per="detectors_checked", scale=1.0)
    fig["density_cut"] = _div(fig["density_before"], fig["density_after"])
    fig["pipeline_density_cut"] = _per(e, "detection_events", per="residual_events", scale=1.0)
    fig["pm_us_per_round_raw"] = _per(a, "decode_ns", scale=us_round)
    fig["pm_us_per_round_residual"] = _per(c, "residual_decode_ns", scale=us_round)
    fig["pm_b1_us_per_round_raw"] = _per(a, "b1_ns", per="b1_shots", scale=us_round)
    fig["pm_b1_us_per_round_residual"] = _per(c, "residual_b1_ns", per="b1_shots", scale=us_round)
    fig["pm_speedup"] = _div(fig["pm_us_per_round_raw"], fig["pm_us_per_round_residual"])
    fig["pm_b1_speedup"] = _div(fig["pm_b1_us_per_round_raw"], fig["pm_b1_us_per_round_residual"])
    fig["pm_corr_us_per_round"] = _per(b, "decode_ns", scale=us_round)
    fig["pm_corr_us_per_shot"] = _per(b, "decode_ns", scale=us)
    fig["pm_corr_b1_us_per_shot"] = _per(b, "b1_ns", per="b1_shots", scale=us)
    fig["predecoder_us_per_shot"] = _per(c, "predecoder_ns", scale=us)
    fig["predecoder_b1_us_per_shot"] = _per(c, "predecoder_b1_ns", per="b1_shots", scale=us)
    fig["pipeline_us_per_shot"] = _per(e, "decode_ns", scale=us)
    fig["pipeline_b1_us_per_shot"] = _per(e, "b1_ns", per="b1_shots", scale=us)
    ler_pm, ler_corr, ler_pre, ler_pipe = (r["ler"] if r else None for r in (a, b, c, e))
    fig["ler_ratio_pm"] = _div(ler_pm, ler_pre)
    fig["ler_ratio_pm_corr"] = _div(ler_corr, ler_pre)
    fig["pipeline_gain_pm"] = _div(ler_pm, ler_pipe)
    fig["pipeline_gain_pm_corr"] = _div(ler_corr, ler_pipe)
    return fig


def summarize(csv_path: Path, *, min_errors: int = 100) -> list[dict[str, Any]]:
    """One dictionary per (task, decoder), from sinter's sums of the CSV's rows.

    Each has the task's fields, ``task`` (``AccuracyTask.name``), ``decoder``,
    ``shots``, ``errors``, ``discards``, ``seconds`` (sinter's: sampling and
    decoding), ``ler`` (per shot), ``ler_lo``/``ler_hi`` (95% Wilson),
    ``enough_errors`` (``errors >= min_errors``) and ``counts`` (summed
    ``custom_counts``: the timing pass's), plus figures of the whole task, the
    same on each of its rows (None where a decoder or its timing is missing):

    - ``density_before`` / ``density_after``: detection events per detector
      per shot, before and after the pre-decoder; ``density_cut``: their ratio;
      ``pipeline_density_cut``: the same cut at the pipeline's threshold;
    - ``pm_us_per_round_raw`` / ``pm_us_per_round_residual`` (batched) and
      ``pm_b1_us_per_round_raw`` / ``pm_b1_us_per_round_residual`` (one shot
      per call): PyMatching µs per round, means; ``pm_speedup`` and
      ``pm_b1_speedup``: raw over residual;
    - ``pm_corr_us_per_round``, ``pm_corr_us_per_shot`` and
      ``pm_corr_b1_us_per_shot``: correlated PyMatching alone;
    - ``predecoder_us_per_shot`` / ``predecoder_b1_us_per_shot``: inference;
    - ``pipeline_us_per_shot`` / ``pipeline_b1_us_per_shot``: inference plus
      correlated PyMatching on the residual;
    - ``ler_ratio_pm`` / ``ler_ratio_pm_corr``: LER of PyMatching (uncorrelated
      / correlated) over LER of pre-decoder + PyMatching;
    - ``pipeline_gain_pm`` / ``pipeline_gain_pm_corr``: the same over the
      pipeline's LER (above 1: the pipeline is better);
    - ``backends``: the pre-decoder backends the timing pass ran on.
    """
    out: list[dict[str, Any]] = []
    by_task: dict[str, dict[str, dict[str, Any]]] = {}
    for (name, decoder), stat in _group(csv_path).items():
        counts = dict(stat.custom_counts)
        lo, hi = wilson_interval(stat.errors, stat.shots)
        row = {
            **AccuracyTask.from_metadata(stat.json_metadata).metadata(),
            "task": name,
            "decoder": decoder,
            "shots": stat.shots,
            "errors": stat.errors,
            "discards": stat.discards,
            "seconds": stat.seconds,
            "ler": stat.errors / stat.shots if stat.shots else 0.0,
            "ler_lo": lo,
            "ler_hi": hi,
            "enough_errors": stat.errors >= min_errors,
            "counts": counts,
            "backends": sorted(k.split("=", 1)[1] for k in counts if k.startswith("backend=")),
        }
        out.append(row)
        by_task.setdefault(name, {})[decoder] = row
    for rows in by_task.values():
        fig = _task_figures(rows)
        for row in rows.values():
            row.update(fig)
    order = {d: i for i, d in enumerate(ACCURACY_DECODERS)}
    out.sort(
        key=lambda r: (r["noise"], r["basis"], r["distance"], r["rounds"], r["p"],
                       order.get(r["decoder"], len(order)), r["decoder"])
    )  # fmt: skip
    return out


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return format(x, spec)


def _fmt_ler(r: dict[str, Any] | None) -> str:
    if r is None:
        return "—"
    return f"{r['ler']:.2e} [{r['ler_lo']:.1e}, {r['ler_hi']:.1e}]"


_ACC_HEAD = (
    "| noise | basis | d | rounds | p | shots | LER PM | LER PM-corr | LER pre+PM "
    "| LER pipeline | PM / pre+PM | PM / pipeline | PM-corr / pipeline | cut × "
    "| pipeline cut × | low |"
)
_TIME_HEAD = (
    "| noise | basis | d | p | PM µs/round raw | residual | speedup | PM b1 µs/round raw "
    "| residual | b1 speedup | pre µs/shot | pre b1 µs/shot | pipeline µs/shot "
    "| pipeline b1 µs/shot | PM-corr µs/shot | PM-corr b1 µs/shot |"
)


def _table_lines(tasks: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    acc = [_ACC_HEAD, "|" + "---|" * 16]
    tim = [_TIME_HEAD, "|" + "---|" * 16]
    for decs in tasks.values():
        r0 = next(iter(decs.values()))
        low = any(not d["enough_errors"] for d in decs.values()) or len(decs) < len(
            ACCURACY_DECODERS
        )
        key = [r0["noise"], r0["basis"], str(r0["distance"])]
        acc.append("| " + " | ".join([
            *key, str(r0["rounds"]), f"{r0['p']:g}", str(max(d["shots"] for d in decs.values())),
            *(_fmt_ler(decs.get(k)) for k in ACCURACY_DECODERS),
            _fmt(r0["ler_ratio_pm"], ".2f"), _fmt(r0["pipeline_gain_pm"], ".2f"),
            _fmt(r0["pipeline_gain_pm_corr"], ".2f"), _fmt(r0["density_cut"], ".2f"),
            _fmt(r0["pipeline_density_cut"], ".2f"),
            "yes" if low else "",
        ]) + " |")  # fmt: skip
        tim.append("| " + " | ".join([
            *key, f"{r0['p']:g}",
            *(_fmt(r0[k]) for k in ("pm_us_per_round_raw", "pm_us_per_round_residual")),
            _fmt(r0["pm_speedup"], ".2f"),
            *(_fmt(r0[k]) for k in ("pm_b1_us_per_round_raw", "pm_b1_us_per_round_residual")),
            _fmt(r0["pm_b1_speedup"], ".2f"),
            *(_fmt(r0[k]) for k in (
                "predecoder_us_per_shot", "predecoder_b1_us_per_shot", "pipeline_us_per_shot",
                "pipeline_b1_us_per_shot", "pm_corr_us_per_shot", "pm_corr_b1_us_per_shot")),
        ]) + " |")  # fmt: skip
    return acc, tim


def write_summary(
    csv_path: Path, *, md_path: Path, png_path: Path, machine: str, min_errors: int = 100
) -> list[dict[str, Any]]:
    """Write the markdown report (accuracy table, time table) and a log-log plot of LER vs p.

    Returns :func:`summarize`'s rows.
    """
    rows = summarize(csv_path, min_errors=min_errors)
    tasks: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        tasks.setdefault(r["task"], {})[r["decoder"]] = r
    backends = sorted({b for r in rows for b in r["backends"]})
    acc, tim = _table_lines(tasks)
    lines = [
        "# Accuracy: PyMatching alone versus the pre-decoder pipelines",
        "",
        f"- machine: {machine}",
        f"- pre-decoder backend(s): {', '.join(backends) or '—'}",
        f"- data: `{Path(csv_path).name}` (sinter's CSV: `sinter plot` reads it)",
        "- LER: logical errors per shot, with 95% Wilson intervals; sinter sampled each "
        "decoder's shots afresh (OS entropy, never the training seeds).",
        "- PM: sinter's `pymatching`; PM-corr: `pymatching-correlated`; pre+PM: "
        "`qhil-predecoder`, the pre-decoder then uncorrelated PyMatching on the residual; "
        "pipeline: `qhil-predecoder-correlated`, the pre-decoder then correlated PyMatching "
        "on the residual (`qhil run --decoder predecoder`). Ratios above 1 mean the "
        "pipeline (or pre+PM) is better.",
        "- cut: detection-event density before / after the pre-decoder at its default "
        "threshold (for pre+PM); pipeline cut: the same at the pipeline's threshold.",
        f"- low: `yes` where a decoder has fewer than {min_errors} errors.",
        "",
        "## Accuracy",
        "",
        *acc,
        "",
        "## Time",
        "",
        "From a timing pass per task: every decoder on the same fresh shots, batched "
        "(`decode_batch` of them all) and batch-1 (one call per shot, the first 500). "
        "PyMatching µs/round: mean decode time per shot divided by rounds, on the raw and on "
        "the residual syndrome. Pre-decoder µs/shot: inference, batched and batch-1. "
        "Pipeline µs/shot: inference plus correlated PyMatching on the residual, against "
        "correlated PyMatching alone on the raw syndrome.",
        "",
        *tim,
    ]
    Path(md_path).write_text("\n".join(lines) + "\n")
    _plot(rows, Path(png_path), machine=machine)
    return rows


_STYLE = {
    PM: {"marker": "o", "linestyle": "-", "label": "PyMatching"},
    PM_CORR: {"marker": "s", "linestyle": "--", "label": "PyMatching correlated"},
    PRE: {"marker": "^", "linestyle": ":", "label": "pre-decoder + PyMatching"},
    PIPE: {"marker": "v", "linestyle": "-.", "label": "pre-decoder + correlated"},
}


def _plot(rows: list[dict[str, Any]], png_path: Path, *, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["noise"], r["basis"]) for r in rows})
    fig, axes = plt.subplots(
        1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 4.5), squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for ax, (noise, basis) in zip(axes[0], panels, strict=False):
        sub = [r for r in rows if r["noise"] == noise and r["basis"] == basis]
        curves = sorted({(r["distance"], r["rounds"]) for r in sub})
        for i, (d, t) in enumerate(curves):
            color = cmap(i / max(1, len(curves) - 1) * 0.85)
            for dec in ACCURACY_DECODERS:
                pts = sorted(
                    (
                        r
                        for r in sub
                        if (r["distance"], r["rounds"]) == (d, t) and r["decoder"] == dec
                    ),
                    key=lambda r: r["p"],
                )
                pts = [r for r in pts if r["errors"] > 0]  # a zero has no place on a log axis
                if not pts:
                    continue
                ps = np.array([r["p"] for r in pts])
                ler = np.array([r["ler"] for r in pts])
                yerr = np.array(
                    [[r["ler"] - r["ler_lo"] for r in pts], [r["ler_hi"] - r["ler"] for r in pts]]
                )
                name = f"d={d}" if t == d else f"d={d}, r={t}"
                style = _STYLE[dec]
                ax.errorbar(
                    ps,
                    ler,
                    yerr=yerr,
                    color=color,
                    marker=style["marker"],
                    linestyle=style["linestyle"],
                    capsize=2,
                    markersize=4,
                    label=f"{name} {style['label']}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("physical error rate p")
        ax.set_ylabel("logical error rate per shot")
        ax.set_title(f"{basis.upper()} basis, {noise}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    fig.suptitle(f"LER vs p (95% Wilson intervals) — {machine}", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)

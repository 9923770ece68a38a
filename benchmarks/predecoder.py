"""Benchmark: the pre-decoder's accuracy and effect, and its inference time per backend.

Accuracy rows stream to ``docs/benchmarks/predecoder_accuracy.csv``, collected by
``sinter.collect`` (``qhil.host.run_accuracy``): sinter's own CSV, which ``sinter
plot`` reads, resumable (rerunning continues where the CSV stopped); the summary
goes to ``predecoder_accuracy.md`` and ``.png``. Backend timings go to
``predecoder_backends.md``. Shots are fresh: sinter seeds stim from OS entropy,
never the training seeds. Run from the repository root::

    python benchmarks/predecoder.py                  # the full grid (long on a CPU)
    python benchmarks/predecoder.py --distances 3,5 --noise sd6 --max-shots 20000

The CSV is per model: after retraining, move the old one away first; so too a CSV
written before the benchmark ran on sinter (one task name as the strong id of all
four decoders' rows), which sinter refuses to read.

These are measurements, never assertions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from qhil.host import AccuracyTask, bench_backends, machine_description, run_accuracy, write_summary

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"


def render_backends(results: dict[str, Any]) -> str:
    lines = [
        "# Pre-decoder inference time per backend",
        "",
        f"Machine: {results['machine']}; model `{results['model']}`. No GPU here: the CUDA "
        "backend is unmeasured. Median over repeats after warm-up; rounds = d.",
        "",
        "| d | backend | batch | µs/shot p50 | µs/shot p99 | µs/round p50 |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        p = r["us_per_shot"]
        note = f" (timed on {r['measured_batch']})" if r["measured_batch"] != r["batch"] else ""
        lines.append(
            f"| {r['distance']} | {r['backend']} | {r['batch']}{note} | "
            f"{p['p50']:.0f} | {p['p99']:.0f} | {r['us_per_round']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--distances", default="3,5,7,9,11", help="comma-separated odd d")
    parser.add_argument("--bases", default="z,x", help="comma-separated, of x, z")
    parser.add_argument("--ps", default="0.002,0.003,0.005", help="comma-separated p")
    parser.add_argument(
        "--noise", default="stim-depolarizing,sd6,si1000",
        help="comma-separated noise models, of stim-depolarizing, sd6, si1000",
    )  # fmt: skip
    parser.add_argument("--min-errors", type=int, default=100, help="errors wanted per decoder")
    parser.add_argument("--max-shots", type=int, default=100_000, help="shots at most per task")
    parser.add_argument(
        "--chunk",
        type=int,
        default=10_000,
        help="shots per sinter batch at most, and timed shots per task",
    )
    parser.add_argument("--max-seconds-per-task", type=float, default=None)
    parser.add_argument("--model", default="default", help="packaged name or .npz path")
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    parser.add_argument("--skip-backends", action="store_true", help="no inference timing")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tasks = [
        AccuracyTask(basis=b, distance=int(d), p=float(p), noise=n)
        for n in args.noise.split(",")
        for b in args.bases.split(",")
        for d in args.distances.split(",")
        for p in args.ps.split(",")
    ]
    csv_path = args.out / "predecoder_accuracy.csv"
    run_accuracy(
        tasks,
        csv_path=csv_path,
        model=args.model,
        min_errors=args.min_errors,
        max_shots=args.max_shots,
        chunk=args.chunk,
        max_seconds_per_task=args.max_seconds_per_task,
        progress=lambda line: print(line, flush=True),
    )
    write_summary(
        csv_path,
        md_path=args.out / "predecoder_accuracy.md",
        png_path=args.out / "predecoder_accuracy.png",
        machine=machine_description(),
        min_errors=args.min_errors,
    )
    if not args.skip_backends:
        results = bench_backends(model=args.model)
        (args.out / "predecoder_backends.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "predecoder_backends.md").write_text(render_backends(results))
    print((args.out / "predecoder_accuracy.md").read_text(), flush=True)


if __name__ == "__main__":
    main()

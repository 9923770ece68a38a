"""The pre-decoder benchmark's rendering works on real (tiny) measurements; no timings asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qhil.host import bench_backends


def test_backend_timings_render() -> None:
    results = bench_backends(distances=(3,), batches=(1, 4), repeats=3)
    assert {r["backend"] for r in results["rows"]} >= {"numpy", "numba"}
    spec = importlib.util.spec_from_file_location(
        "bench", Path(__file__).with_name("predecoder.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    md = module.render_backends(results)
    assert "| 3 | numba | 4 |" in md and "CUDA backend is unmeasured" in md

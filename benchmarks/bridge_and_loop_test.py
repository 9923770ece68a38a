"""The benchmark script runs end to end at tiny sizes (a smoke test; it asserts no timings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qhil.host import bench_bridge, bench_loop


def test_benchmark_produces_every_figure_it_reports() -> None:
    bridge = bench_bridge(packets=200, warmup=50)
    loop = bench_loop(distances=(3,), shots=200)
    for name in ("shm ring", "shm ring, compiled ends", "zmq ipc://", "zmq tcp://127.0.0.1"):
        assert bridge["round_trip_us"][name]["n"] == 200
        ratio = bridge["ratio_to_floor"][name]["p50"]
        assert (
            ratio == bridge["round_trip_us"][name]["p50"] / bridge["floor"]["round_trip_us"]["p50"]
        )
    assert bridge["floor"]["round_trip_us"]["n"] == 200
    (row,) = loop["rows"]
    assert row["shots_decoded"] == 200 and row["latency_us"]["n"] == 200
    spec = importlib.util.spec_from_file_location(
        "bench", Path(__file__).with_name("bridge_and_loop.py")
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    md = module.render_markdown({"bridge": bridge, "loop": loop})
    assert "| shm ring |" in md and "| 3 | 200 |" in md
    assert "| floor (compiled ping-pong) |" in md

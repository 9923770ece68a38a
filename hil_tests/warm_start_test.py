"""A first run compiles its kernels before the measured loop, and says so; the next
run loads them from the cache. Both reports say the measured run was warm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(tmp: Path, cache: Path) -> tuple[str, dict]:
    env = {**os.environ, "QHIL_CACHE_DIR": str(cache)}
    env.pop("NUMBA_CACHE_DIR", None)
    out = tmp / "out"
    done = subprocess.run(
        [sys.executable, "-m", "qhil.host", "run", "-n", "300", "-d", "3", "-r", "3",
         "--no-progress", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stderr, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_first_run_compiles_before_the_loop_and_the_second_loads(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    said, report = _run(tmp_path, cache)
    assert said.index("compiling kernels, first run only") < said.index("streaming")
    k = report["kernels"]
    assert k["warm"] and k["compiled_during_run"] == 0 and k["compiled_before_run"] > 0
    assert k["cache"] == str(cache / "numba") and list(cache.rglob("*.nbi"))

    said, report = _run(tmp_path, cache)
    assert "compiling" not in said
    k = report["kernels"]
    assert k["warm"] and k["compiled_before_run"] == 0 and k["loaded_from_cache"] > 0

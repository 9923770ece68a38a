"""Shared by the GPU-path tests: run one scenario of a test module in a fresh interpreter.

``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is first imported, so
a simulator scenario runs as ``python -m <module> <name> [args]`` in a child
process with the variable set (or removed, for real-GPU and compile scenarios).
The scenario prints its result as JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["run_scenario"]


def run_scenario(
    module: str,
    name: str,
    *args: str,
    sim: bool = True,
    timeout_s: float = 60.0,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Run ``python -m module name *args``; assert it succeeds; return its last line as JSON.

    ``timeout_s`` bounds the child, so a hung kernel fails the test instead of hanging it.
    ``cwd``: where the child runs (a module outside the installed package, such as one
    of ``hil_tests``, is found from there).
    """
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", module, name, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        cwd=cwd,
    )
    assert proc.returncode == 0, f"scenario {name!r} failed:\n{proc.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result

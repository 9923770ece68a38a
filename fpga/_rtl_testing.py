"""Shared by the RTL tests: building and running cocotb testbenches in Icarus, and yosys.

Everything skips the calling test, naming what is missing, on machines without
the tools (``apt-get install iverilog yosys``, ``pip install 'qhil[hdl]'``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

__all__ = ["RTL", "cell_counts", "icarus_runner", "simulate", "simulator", "synthesize"]

RTL = Path(__file__).resolve().parent / "rtl"
# cocotb rewrites the assertions of every module it imports unless told otherwise,
# compiling each from source in every simulator run (seconds, with numba and stim).
# Only the testbench modules need pytest's assertion messages.
_COCOTB_ENV = {"COCOTB_REWRITE_ASSERTION_FILES": "rtl_*_cocotb.py"}


def icarus_runner() -> Any:
    """cocotb's runner for Icarus Verilog, or a skip naming the missing tool."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            pytest.skip(f"Icarus Verilog is not installed ({tool} not on PATH)")
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    runner = pytest.importorskip("cocotb_tools.runner", reason="cocotb_tools is not installed")
    return runner.get_runner("icarus")


def simulator(
    sources: Sequence[Path],
    toplevel: str,
    build_dir: Path,
    *,
    parameters: Mapping[str, object] | None = None,
) -> Any:
    """Compile ``sources`` (Verilog-2005, with ``fpga/rtl`` on the include path); the runner."""
    runner = icarus_runner()
    runner.build(
        sources=list(sources),
        includes=[RTL],
        hdl_toplevel=toplevel,
        build_dir=build_dir,
        parameters=dict(parameters or {}),
        build_args=["-g2005", "-Wall"],
        timescale=("1ns", "1ps"),
    )
    return runner


def simulate(
    runner: Any,
    test_module: str,
    toplevel: str,
    build_dir: Path,
    *,
    test_dir: Path | None = None,
    testcase: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Run cocotb tests of ``test_module`` (importable, e.g. ``qhil.fpga.rtl_x_cocotb``).

    Under pytest, a failing cocotb test makes this exit non-zero: the pytest test fails.
    Returns the results file (JUnit XML).
    """
    return runner.test(
        test_module=test_module,
        hdl_toplevel=toplevel,
        testcase=list(testcase) if testcase else None,
        build_dir=build_dir,
        test_dir=test_dir or build_dir,
        extra_env={**_COCOTB_ENV, **(env or {})},
    )


def synthesize(script: str, log: Path) -> str:
    """Run a yosys script; assert it succeeds and infers no latch; return the final statistics.

    ``script`` is yosys commands, one per line, ending in ``stat``.
    """
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    script_path = log.with_suffix(".ys")
    script_path.write_text(script)
    proc = subprocess.run(
        ["yosys", "-q", "-l", str(log), "-s", str(script_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, proc.stderr[-2000:] or text[-2000:]
    assert "Latch inferred" not in text, re.findall(r".*Latch inferred.*", text)[:5]
    stats = text[text.rfind("Printing statistics") :]
    assert stats, "no statistics in the yosys log"
    for cell in ("$dlatch", "$_DLATCH", "LDCE", "LDPE"):
        assert cell not in stats, f"latch cell {cell} in the synthesized netlist"
    return stats


def cell_counts(stats: str) -> dict[str, int]:
    """Cell counts of the whole design from ``synthesize``'s statistics (hierarchy totals)."""
    part = stats[stats.find("design hierarchy") :] if "design hierarchy" in stats else stats
    return {m[0]: int(m[1]) for m in re.findall(r"^\s+(\w+)\s+(\d+)\s*$", part, re.M)}

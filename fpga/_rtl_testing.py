"""Shared by the RTL tests: the cocotb runner for Icarus, and yosys's no-latch check.

Both skip the calling test, naming what is missing, on machines without the
tools (``apt-get install iverilog yosys``, ``pip install 'qhil[hdl]'``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

__all__ = ["icarus_runner", "synthesize"]


def icarus_runner() -> Any:
    """cocotb's runner for Icarus Verilog, or a skip naming the missing tool."""
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            pytest.skip(f"Icarus Verilog is not installed ({tool} not on PATH)")
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    runner = pytest.importorskip("cocotb_tools.runner", reason="cocotb_tools is not installed")
    return runner.get_runner("icarus")


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
        timeout=300,
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

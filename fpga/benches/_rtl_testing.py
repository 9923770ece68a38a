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

__all__ = [
    "RTL",
    "cell_counts",
    "icarus_runner",
    "logic_depth",
    "simulate",
    "simulator",
    "synthesize",
]

RTL = Path(__file__).resolve().parents[1] / "rtl"
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
    """Run cocotb tests of ``test_module`` (importable, e.g. ``qhil.fpga.benches.rtl_x_cocotb``).

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


# Combinational cells of a synth_xilinx netlist: LUT levels each adds, and their
# output -> input dependencies (CARRY4 and LUT-RAM reads handled below).
_LEVELS = {f"LUT{n}": 1 for n in range(1, 7)} | {"INV": 0, "MUXF7": 0, "MUXF8": 0, "MUXF9": 0}


def logic_depth(netlist: Mapping[str, Any], top: str) -> tuple[int, dict[str, int], str]:
    """Longest register-to-register path of a flattened ``synth_xilinx`` netlist (yosys JSON).

    Counted in LUT levels: a LUT1..LUT6 or a LUT-RAM read adds one; INV (folded into
    a LUT by Vivado), MUXF7..9 and CARRY4 add none but are tallied along the path.
    Flip-flops, RAM writes and the module's ports start and end paths. Returns
    (levels, {cell type: count on the path}, "from <net> to <net>").
    """
    mod = netlist["modules"][top]
    names: dict[int, str] = {}
    for name, net in mod["netnames"].items():
        for b in net["bits"]:
            if isinstance(b, int) and (b not in names or name.startswith("\\")):
                names[b] = name
    # For every driven bit: (cell name, cell type, the bits it depends on).
    drivers: dict[int, tuple[str, str, list[int]]] = {}
    for cname, cell in mod["cells"].items():
        t, conn = cell["type"], cell["connections"]
        if t in _LEVELS:
            ins = [b for p, bits in conn.items() if p != "O" for b in bits]
            drivers[conn["O"][0]] = (cname, t, ins)
        elif t == "CARRY4":
            chain = list(conn["CI"]) + list(conn["CYINIT"])
            for i in range(4):
                chain += [conn["S"][i], conn["DI"][i]]
                for port in ("O", "CO"):
                    if port in conn:
                        drivers[conn[port][i]] = (cname, t, list(chain))
        elif t.startswith("RAM") and t.endswith("M8"):
            for port, bits in conn.items():
                if port.startswith("DO"):
                    for b in bits:
                        drivers[b] = (cname, t, list(conn["ADDR" + port[2:]]))
    memo: dict[int, tuple[int, int, tuple[str, ...], int]] = {}

    def depth(bit: int) -> tuple[int, int, tuple[str, ...], int]:
        """(levels, other cells, cell types on the path, source bit) ending at ``bit``."""
        if bit in memo:
            return memo[bit]
        stack = [bit]
        while stack:  # iterative post-order: netlists are deep
            b = stack[-1]
            d = drivers.get(b) if isinstance(b, int) else None
            pending = [i for i in (d[2] if d else []) if isinstance(i, int) and i not in memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if b in memo:
                continue
            if d is None:
                memo[b] = (0, 0, (), b)
                continue
            best = max((memo[i] for i in d[2] if isinstance(i, int)), default=(0, 0, (), b))
            step = _LEVELS.get(d[1], 1 if d[1].startswith("RAM") else 0)
            memo[b] = (best[0] + step, best[1] + (step == 0), (*best[2], d[1]), best[3])
        return memo[bit]

    sinks: list[int] = []
    for cell in mod["cells"].values():
        t, conn = cell["type"], cell["connections"]
        if t.startswith("FD") or (t.startswith("RAM") and t.endswith("M8")):
            sinks += [
                b
                for p, bits in conn.items()
                if p not in ("Q", "C", "WCLK") and not p.startswith("DO")
                for b in bits
            ]
    for port in mod["ports"].values():
        if port["direction"] == "output":
            sinks += port["bits"]
    worst = max(((*depth(b), b) for b in sinks if isinstance(b, int)), key=lambda x: x[:2])
    levels, _, path, src, dst = worst
    counts: dict[str, int] = {}
    for t in path:
        counts[t] = counts.get(t, 0) + 1
    return levels, counts, f"from {names.get(src, src)} to {names.get(dst, dst)}"

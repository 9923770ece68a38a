"""The AXI-Lite register block (fpga/rtl/qhil_regs.v) against the Python register map.

Simulation: Icarus Verilog through the cocotb runner, testbench in
``rtl_regs_cocotb.py``. Synthesis: yosys ``synth_xilinx`` for UltraScale+, checked
for latches. Each test skips with a reason when its tool is not installed.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from qhil.fpga import REGISTERS
from qhil.fpga._regmap import CTRL_BITS, STATUS_BITS

RTL = Path(__file__).resolve().parent / "rtl"
REGS_V = RTL / "qhil_regs.v"
TOP = "qhil_regs"


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (needed for the qhil_regs RTL tests)")
    return path


def test_rtl_decodes_every_register_and_bit() -> None:
    """Every register and CTRL bit of the map is used by the RTL, by its generated macro."""
    text = REGS_V.read_text()
    assert '`include "qhil_regmap.vh"' in text
    for r in REGISTERS:
        assert re.search(rf"`QHIL_REG_{r.name}\b(?!_)", text), f"qhil_regs.v ignores {r.name}"
        if r.access == "rw":
            assert f"`QHIL_REG_{r.name}_RESET" in text, f"{r.name} not reset from the header"
    for bit in CTRL_BITS:
        assert f"`QHIL_CTRL_{bit}" in text, f"qhil_regs.v ignores CTRL.{bit}"
    assert "status" in text and len(STATUS_BITS) <= 32
    # No hand-written offsets: decoding goes through the macros only.
    assert not re.search(r"\b\d+'h[0-9A-Fa-f]{2}\s*:", text), "a literal address in a case arm"


@pytest.mark.slow
def test_rtl_regs_cocotb_icarus(tmp_path: Path) -> None:
    _need("iverilog")
    _need("vvp")
    if importlib.util.find_spec("cocotb") is None:
        pytest.skip("cocotb is not installed (pip install 'qhil[hdl]')")
    if importlib.util.find_spec("cocotb_tools") is None:
        pytest.skip("cocotb_tools (the cocotb >= 2.0 runner) is not installed")
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    runner = get_runner("icarus")
    build = tmp_path / "sim_build"
    log = tmp_path / "sim.log"
    runner.build(
        sources=[REGS_V],
        includes=[RTL],
        hdl_toplevel=TOP,
        build_dir=build,
        build_args=["-g2005", "-Wall"],
        timescale=("1ns", "1ps"),
        always=True,
        log_file=tmp_path / "build.log",
    )
    results = tmp_path / "results.xml"
    try:
        runner.test(
            test_module="qhil.fpga.rtl_regs_cocotb",
            hdl_toplevel=TOP,
            build_dir=build,
            test_dir=tmp_path,
            results_xml=str(results),
            log_file=log,
        )
    except SystemExit as exc:  # the runner exits on failures when run under pytest
        tail = log.read_text()[-6000:] if log.exists() else "(no log)"
        pytest.fail(f"cocotb testbench failed (exit {exc.code}):\n{tail}")
    n_tests, n_failed = get_results(results)
    assert n_tests >= 8 and n_failed == 0, log.read_text()[-6000:]


@pytest.mark.slow
def test_rtl_regs_synthesizes_without_latches(tmp_path: Path) -> None:
    yosys = _need("yosys")
    stat = tmp_path / "stat.txt"
    script = (
        f"read_verilog -I{RTL} {REGS_V}; "
        f"synth_xilinx -family xcup -top {TOP} -noiopad; "
        "select -assert-none t:$dlatch t:$adlatch t:$_DLATCH_* t:LDCE t:LDPE; "
        f"tee -q -o {stat} stat"
    )
    proc = subprocess.run(
        [yosys, "-q", "-p", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    cells = dict(re.findall(r"^\s+(\w+)\s+(\d+)\s*$", stat.read_text(), re.M))
    ffs = sum(int(n) for c, n in cells.items() if c.startswith("FD"))
    luts = sum(int(n) for c, n in cells.items() if re.fullmatch(r"LUT\d", c))
    assert not any(c.startswith("LD") for c in cells), cells
    # 5 rw registers, 3 HI latches, RDATA and the write buffer: ~340 flip-flops.
    assert 300 <= ffs <= 400, cells
    assert 0 < luts < 1000, cells

"""The AXI-Lite register block (fpga/rtl/qhil_regs.v) against the Python register map.

Simulation: Icarus Verilog through the cocotb runner, testbench in
``rtl_regs_cocotb.py``. Synthesis: yosys ``synth_xilinx`` for UltraScale+, checked
for latches. Each test skips with a reason when its tool is not installed.
"""

from __future__ import annotations

import re
from pathlib import Path

from qhil.fpga import REGISTERS
from qhil.fpga._regmap import CTRL_BITS, STATUS_BITS
from qhil.fpga.benches._rtl_testing import RTL, cell_counts, simulate, simulator, synthesize

REGS_V = RTL / "qhil_regs.v"
TOP = "qhil_regs"


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


def test_rtl_regs_cocotb_icarus(tmp_path: Path) -> None:
    runner = simulator([REGS_V], TOP, tmp_path / "sim_build")
    results = simulate(runner, "qhil.fpga.benches.rtl_regs_cocotb", TOP, tmp_path / "sim_build")
    from cocotb_tools.check_results import get_results

    n_tests, n_failed = get_results(results)
    assert n_tests >= 8 and n_failed == 0, (n_tests, n_failed)


def test_rtl_regs_synthesizes_without_latches(tmp_path: Path) -> None:
    stats = synthesize(
        f"read_verilog -I{RTL} {REGS_V}\nsynth_xilinx -family xcup -top {TOP} -noiopad\nstat\n",
        tmp_path / "yosys.log",
    )
    cells = cell_counts(stats)
    ffs = sum(n for c, n in cells.items() if c.startswith("FD"))
    luts = sum(n for c, n in cells.items() if re.fullmatch(r"LUT\d", c))
    # 5 rw registers, 3 HI latches, RDATA and the write buffer: ~340 flip-flops.
    assert 300 <= ffs <= 400, cells
    assert 0 < luts < 1000, cells

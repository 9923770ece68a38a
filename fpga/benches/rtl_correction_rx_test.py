"""The RTL correction-packet receiver (fpga/rtl/qhil_correction_rx.v) in Icarus under cocotb.

The testbenches live in ``rtl_correction_rx_cocotb.py`` and compare the RTL's
verdict with ``parse_correction`` and its fields with ``CorrectionPacket.decode``.
What a packet then does (shot table, frame, counters) is qhil_frontend's judge,
tested in ``rtl_frontend_test.py``. Every test skips, saying why, where Icarus
Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from qhil.fpga.benches._rtl_testing import RTL, cell_counts, simulate, simulator, synthesize

SOURCES = [RTL / "qhil_crc32.v", RTL / "qhil_correction_rx.v"]
# Importable in the simulator's Python: qhil is installed, and the runner passes
# this process's sys.path on as PYTHONPATH.
TEST_MODULE = "qhil.fpga.benches.rtl_correction_rx_cocotb"
TOPLEVEL = "qhil_correction_rx"
SEED = int(os.environ.get("QHIL_RTL_SEED", "20240611"))


def test_correction_rx_matches_parse_correction(tmp_path: Path) -> None:
    """3,000 valid and corrupted packets, and the fixed latency."""
    runner = simulator(SOURCES, TOPLEVEL, tmp_path)
    simulate(
        runner,
        TEST_MODULE,
        TOPLEVEL,
        tmp_path,
        testcase=["correction_rx_matches_parse_correction", "correction_rx_latency"],
        env={"QHIL_RTL_SEED": str(SEED), "QHIL_RTL_PACKETS": "3000"},
    )


def test_yosys_synthesizes_without_latches(tmp_path: Path) -> None:
    sources = " ".join(str(s) for s in SOURCES)
    stats = synthesize(
        f"read_verilog {sources}\nsynth_xilinx -family xcup -top {TOPLEVEL}\nstat\n",
        tmp_path / "yosys.log",
    )
    cells = cell_counts(stats)
    luts = sum(n for c, n in cells.items() if c.startswith("LUT"))
    ffs = sum(n for c, n in cells.items() if c.startswith("FD"))
    print(f"{TOPLEVEL}: {luts} LUTs, {ffs} FFs, {cells}")
    assert ffs > 0, "expected flip-flops in the netlist"

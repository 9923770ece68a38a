"""The RTL correction-packet receiver (fpga/rtl/qhil_correction_rx.v) in Icarus under cocotb.

The testbenches live in ``rtl_correction_rx_cocotb.py`` and compare the RTL's
verdict with ``parse_correction`` and its fields with ``CorrectionPacket.decode``.
Every test skips, saying why, where Icarus Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qhil.fpga._rtl_testing import icarus_runner, synthesize

RTL = Path(__file__).resolve().parent / "rtl"
SOURCES = [RTL / "qhil_crc32.v", RTL / "qhil_correction_rx.v"]
# Importable in the simulator's Python: qhil is installed, and the runner passes
# this process's sys.path on as PYTHONPATH.
TEST_MODULE = "qhil.fpga.rtl_correction_rx_cocotb"
TOPLEVEL = "qhil_correction_rx"
SEED = int(os.environ.get("QHIL_RTL_SEED", "20240611"))


def _icarus() -> Any:
    return icarus_runner()


def _run(tmp_path: Path, tests: list[str], n_packets: int, **params: int) -> None:
    runner = _icarus()
    build = tmp_path / TOPLEVEL
    runner.build(
        sources=SOURCES,
        hdl_toplevel=TOPLEVEL,
        build_dir=build,
        parameters=params,
        build_args=["-g2005", "-Wall"],
        timescale=("1ns", "1ps"),
    )
    # Under pytest, test() exits non-zero (a test failure) if any cocotb test failed.
    runner.test(
        test_module=TEST_MODULE,
        hdl_toplevel=TOPLEVEL,
        testcase=tests,
        build_dir=build,
        test_dir=build,
        extra_env={"QHIL_RTL_SEED": str(SEED), "QHIL_RTL_PACKETS": str(n_packets)},
    )


def test_correction_rx_matches_parse_correction(tmp_path: Path) -> None:
    """3,000 valid and corrupted packets, and the fixed latency, with NOBS = 1."""
    _run(
        tmp_path,
        ["correction_rx_matches_parse_correction", "correction_rx_latency"],
        3000,
        NOBS=1,
    )


def test_correction_rx_wider_frame(tmp_path: Path) -> None:
    """NOBS = 8: frame_q takes obs bits below n_obs only."""
    _run(tmp_path, ["correction_rx_matches_parse_correction"], 500, NOBS=8)


def test_yosys_synthesizes_without_latches(tmp_path: Path) -> None:
    sources = " ".join(str(s) for s in SOURCES)
    stats = synthesize(
        f"read_verilog {sources}\nsynth_xilinx -family xcup -top {TOPLEVEL}\nstat\n",
        tmp_path / "yosys.log",
    )
    stats = stats[stats.find("design hierarchy") :]
    cells = {m[0]: int(m[1]) for m in re.findall(r"^\s+(\w+)\s+(\d+)\s*$", stats, re.M)}
    luts = sum(n for c, n in cells.items() if c.startswith("LUT"))
    ffs = sum(n for c, n in cells.items() if c.startswith("FD"))
    print(f"{TOPLEVEL}: {luts} LUTs, {ffs} FFs, {cells}")
    assert ffs > 0, "expected flip-flops in the netlist"

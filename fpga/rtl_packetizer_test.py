"""The RTL packetizer and CRC (fpga/rtl) in Icarus under cocotb, and through yosys.

The testbenches live in ``rtl_packetizer_cocotb.py`` and compare the RTL's bytes
with ``SyndromePacket.encode()`` and ``zlib.crc32``. Every test skips, saying
why, where Icarus Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

RTL = Path(__file__).resolve().parent / "rtl"
SOURCES = [RTL / "qhil_crc32.v", RTL / "qhil_packetizer.v"]
# Importable in the simulator's Python: qhil is installed, and the runner passes
# this process's sys.path on as PYTHONPATH.
TEST_MODULE = "qhil.fpga.rtl_packetizer_cocotb"
MAX_BITS = 1024
SEED = int(os.environ.get("QHIL_RTL_SEED", "20240611"))
N_PACKETS = 2000


def _icarus() -> Any:
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            pytest.skip(f"Icarus Verilog is not installed ({tool} not on PATH)")
    pytest.importorskip("cocotb", reason="cocotb is not installed")
    runner = pytest.importorskip("cocotb_tools.runner", reason="cocotb_tools is not installed")
    return runner.get_runner("icarus")


def _run(tmp_path: Path, toplevel: str, tests: list[str], **params: int) -> None:
    runner = _icarus()
    build = tmp_path / toplevel
    runner.build(
        sources=SOURCES,
        hdl_toplevel=toplevel,
        build_dir=build,
        parameters=params,
        build_args=["-g2005", "-Wall"],
        timescale=("1ns", "1ps"),
    )
    # Under pytest, test() exits non-zero (a test failure) if any cocotb test failed.
    runner.test(
        test_module=TEST_MODULE,
        hdl_toplevel=toplevel,
        testcase=tests,
        build_dir=build,
        test_dir=build,
        extra_env={"QHIL_RTL_SEED": str(SEED), "QHIL_RTL_PACKETS": str(N_PACKETS)},
    )


def test_packetizer_bytes_match_syndrome_packet_encode(tmp_path: Path) -> None:
    _run(
        tmp_path,
        "qhil_packetizer",
        ["packetizer_matches_syndrome_packet_encode", "packetizer_latency"],
        MAX_BITS=MAX_BITS,
    )


def test_packetizer_with_max_bits_not_a_multiple_of_8(tmp_path: Path) -> None:
    """MAX_BITS = 30 pads the held payload to whole bytes; n_bits past it sends zeros."""
    _run(tmp_path, "qhil_packetizer", ["packetizer_latency"], MAX_BITS=30)


def test_crc32_matches_zlib(tmp_path: Path) -> None:
    _run(tmp_path, "qhil_crc32", ["crc32_matches_zlib"])


def test_yosys_synthesizes_without_latches(tmp_path: Path) -> None:
    if shutil.which("yosys") is None:
        pytest.skip("yosys is not installed")
    log = tmp_path / "yosys.log"
    script = (
        f"read_verilog {' '.join(str(s) for s in SOURCES)}; "
        "synth_xilinx -family xcup -top qhil_packetizer; stat"
    )
    proc = subprocess.run(
        ["yosys", "-q", "-l", str(log), "-p", script],
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
    assert re.search(r"\bFDRE\b", stats), "expected flip-flops in the netlist"

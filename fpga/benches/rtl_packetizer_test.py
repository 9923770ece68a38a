"""The RTL packetizer and CRC step (fpga/rtl) in Icarus under cocotb, and through yosys.

The testbenches live in ``rtl_packetizer_cocotb.py`` and compare the RTL's bytes
with ``SyndromePacket.encode()`` and ``zlib.crc32``. Every test skips, saying
why, where Icarus Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from qhil.fpga.benches._rtl_testing import RTL, cell_counts, simulate, simulator, synthesize

SOURCES = [RTL / "qhil_crc32.v", RTL / "qhil_packetizer.v"]
# Importable in the simulator's Python: qhil is installed, and the runner passes
# this process's sys.path on as PYTHONPATH.
TEST_MODULE = "qhil.fpga.benches.rtl_packetizer_cocotb"
SEED = int(os.environ.get("QHIL_RTL_SEED", "20240611"))
N_PACKETS = 2000


def _run(tmp_path: Path, toplevel: str, tests: list[str], **params: int) -> None:
    build = tmp_path / toplevel
    runner = simulator(SOURCES, toplevel, build, parameters=params)
    simulate(
        runner,
        TEST_MODULE,
        toplevel,
        build,
        testcase=tests,
        env={"QHIL_RTL_SEED": str(SEED), "QHIL_RTL_PACKETS": str(N_PACKETS)},
    )


def test_packetizer_bytes_match_syndrome_packet_encode(tmp_path: Path) -> None:
    _run(
        tmp_path,
        "qhil_packetizer",
        ["packetizer_matches_syndrome_packet_encode", "packetizer_latency"],
        MAX_BITS=1024,
    )


def test_packetizer_with_max_bits_not_a_multiple_of_8(tmp_path: Path) -> None:
    """MAX_BITS = 30 pads the held payload to whole bytes; n_bits past it sends zeros."""
    _run(tmp_path, "qhil_packetizer", ["packetizer_latency"], MAX_BITS=30)


def test_crc32_step_matches_zlib(tmp_path: Path) -> None:
    for n in (1, 8):
        _run(tmp_path / f"b{n}", "qhil_crc32_next", ["crc32_next_matches_zlib"], BYTES=n)


def test_yosys_synthesizes_without_latches(tmp_path: Path) -> None:
    sources = " ".join(str(s) for s in SOURCES)
    stats = synthesize(
        f"read_verilog {sources}\n"
        "chparam -set MAX_BITS 168 qhil_packetizer\n"
        "synth_xilinx -family xcup -top qhil_packetizer\nstat\n",
        tmp_path / "yosys.log",
    )
    cells = cell_counts(stats)
    luts = sum(n for c, n in cells.items() if c.startswith("LUT"))
    ffs = sum(n for c, n in cells.items() if c.startswith("FD"))
    print(f"qhil_packetizer (MAX_BITS=168): {luts} LUTs, {ffs} FFs, {cells}")
    assert ffs > 0, cells

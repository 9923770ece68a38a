"""The replay adapter of the block design (fpga/vivado/qhil_replay_adapter.v) in Icarus.

The testbench is ``vivado_replay_cocotb.py``. Each test skips, saying why, where
Icarus Verilog, cocotb or yosys is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

from qhil.fpga.benches._rtl_testing import icarus_runner, synthesize

SOURCE = Path(__file__).resolve().parents[1] / "vivado" / "qhil_replay_adapter.v"
TOPLEVEL = "qhil_replay_adapter"


def test_replay_adapter_turns_header_beats_into_tuser(tmp_path: Path) -> None:
    runner = icarus_runner()
    build = tmp_path / TOPLEVEL
    runner.build(
        sources=[SOURCE],
        hdl_toplevel=TOPLEVEL,
        build_dir=build,
        build_args=["-g2005", "-Wall"],
        timescale=("1ns", "1ps"),
    )
    runner.test(
        test_module="qhil.fpga.benches.vivado_replay_cocotb",
        hdl_toplevel=TOPLEVEL,
        build_dir=build,
        test_dir=build,
        extra_env={"QHIL_RTL_SEED": os.environ.get("QHIL_RTL_SEED", "7")},
    )


def test_replay_adapter_synthesizes_without_latches(tmp_path: Path) -> None:
    stats = synthesize(
        f"read_verilog {SOURCE}\nsynth_xilinx -family xcup -top {TOPLEVEL} -noiopad\nstat\n",
        tmp_path / "yosys.log",
    )
    assert "FDRE" in stats or "FDSE" in stats, "expected the header state in flip-flops"

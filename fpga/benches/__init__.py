"""qhil.fpga.benches: the RTL (``fpga/rtl/``, ``fpga/vivado/``) under test, in Icarus and yosys.

Each ``*_cocotb.py`` module is a cocotb testbench that the simulator imports by
name (``qhil.fpga.benches.rtl_regs_cocotb``, ...); the ``*_test.py`` beside it
builds the Verilog, runs the bench under pytest and synthesizes the design. The
benches hold the RTL equal to its Python references: the register map, the bridge's
packets, ``DetectorProgram`` and ``qhil.fpga.rtl_model.FrontendModel``.

The shared helpers (``_rtl_testing.py``), for tests only: ``simulator`` /
``simulate`` build and run a bench, ``synthesize`` runs yosys and refuses latches,
``cell_counts`` and ``logic_depth`` read its netlist. Each skips the calling test,
naming what is missing, where Icarus, cocotb or yosys is not installed.
"""

from __future__ import annotations

from qhil.fpga.benches._rtl_testing import (
    RTL,
    cell_counts,
    icarus_runner,
    logic_depth,
    simulate,
    simulator,
    synthesize,
)

__all__ = [
    "RTL",
    "cell_counts",
    "icarus_runner",
    "logic_depth",
    "simulate",
    "simulator",
    "synthesize",
]

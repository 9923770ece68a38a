"""qhil.fpga.rtl_model: the ``qhil_frontend`` RTL (``fpga/rtl/``), cycle-accurate, in Python.

- ``FrontendModel``: the RTL at its ports, flip-flop for flip-flop, driven by a
  timed ``Stimulus`` and recording a ``FrontendTrace`` (``_frontend_model.py``; its
  registers, measurement path and correction side in ``_frontend_state.py``,
  ``_frontend_datapath.py`` and ``_frontend_table.py``, the leaf modules in
  ``_frontend_parts.py``).
- ``FrontendParams`` / ``INPUT_PORTS`` / ``OUTPUT_PORTS``: the RTL's parameters and ports.
- ``ScenarioHost``: a random, reactive host, the stimulus of the RTL-vs-model proof.
- ``write_rom`` / ``encode_rom``: the detector-program ROM the RTL's detection unit reads.

The Verilog itself is package data in ``fpga/rtl/``; the testbenches that hold the
two equal are in ``qhil.fpga.benches``.
"""

from __future__ import annotations

from qhil.fpga.rtl_model._detprog_rom import RomLayout, encode_rom, write_rom
from qhil.fpga.rtl_model._frontend_model import FrontendModel
from qhil.fpga.rtl_model._frontend_ports import (
    INPUT_PORTS,
    OUTPUT_PORTS,
    FrontendInputs,
    FrontendOutputs,
    FrontendParams,
)
from qhil.fpga.rtl_model._frontend_scenario import ScenarioHost
from qhil.fpga.rtl_model._frontend_stimulus import FrontendTrace, Stimulus, header_field

__all__ = [
    "INPUT_PORTS",
    "OUTPUT_PORTS",
    "FrontendInputs",
    "FrontendModel",
    "FrontendOutputs",
    "FrontendParams",
    "FrontendTrace",
    "RomLayout",
    "ScenarioHost",
    "Stimulus",
    "encode_rom",
    "header_field",
    "write_rom",
]

"""qhil.fpga: the front end.

The RTL (``fpga/rtl/``), its cycle-accurate model, the loop's wall-clock cycle
model and the PYNQ driver share one register map and one set of correction rules.

- ``CycleModel``: round clock, detection events, packetizer, correction
  receiver, cycle counter and budget check, in software.
- ``DetectorProgram``: the detection-event unit's per-round XOR programs.
- ``REGISTERS`` / ``RegisterFile``: the register map, and its off-board twin.
- ``FrontEnd``: one driver interface to the ``qhil_frontend`` IP, on a PYNQ
  board or on its software twin (``FrontEnd.open(circuit, target="auto")``);
  ``relay`` passes its packets across a bridge to a decoder service.
- ``FrontEndResult`` and ``Fate``: what became of every emitted round.
- ``FrontendModel``: the ``qhil_frontend`` RTL, cycle-accurate at its ports, driven
  by a timed ``Stimulus`` (``FrontendParams``: the RTL's parameters).
"""

from __future__ import annotations

from qhil.fpga._config import MODES, FrontEndConfig
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import REGISTERS, Register, RegisterFile
from qhil.fpga.driver import (
    BITSTREAM_ENV,
    TARGETS,
    BoardProbe,
    BoardUnavailable,
    FrontEnd,
    FrontEndTimeout,
    RelayStats,
    ReplayBuffer,
    find_board,
    relay,
    which_frontend,
)
from qhil.fpga.model import CycleModel, Fate, FrontEndProgress, FrontEndResult, PacingStats
from qhil.fpga.rtl_model import FrontendModel, FrontendParams, FrontendTrace, Stimulus

__all__ = [
    "BITSTREAM_ENV",
    "MODES",
    "REGISTERS",
    "TARGETS",
    "BoardProbe",
    "BoardUnavailable",
    "CycleModel",
    "DetectorProgram",
    "Fate",
    "FrontEnd",
    "FrontEndConfig",
    "FrontEndProgress",
    "FrontEndResult",
    "FrontEndTimeout",
    "FrontendModel",
    "FrontendParams",
    "FrontendTrace",
    "PacingStats",
    "Register",
    "RegisterFile",
    "RelayStats",
    "ReplayBuffer",
    "Stimulus",
    "find_board",
    "relay",
    "which_frontend",
]

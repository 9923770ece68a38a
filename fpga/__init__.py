"""qhil.fpga: the front end.

The RTL (``fpga/rtl/``), its cycle-accurate model, the loop's wall-clock cycle
model and the PYNQ driver share one register map and one set of correction rules.
Each lives in its own room, a subpackage used through its facade:

- ``model/``: ``CycleModel``, the software front end the loop runs (round clock,
  detection events, packetizer, correction receiver, cycle counter and budget
  check), and the ledger: ``FrontEndResult`` and ``Fate``, what became of every
  emitted round.
- ``driver/``: ``FrontEnd``, one driver interface to the ``qhil_frontend`` IP, on a
  PYNQ board or on its software twin (``FrontEnd.open(circuit, target="auto")``),
  with register access, the replay buffers, the bitstream manifest and the board
  probe (``find_board``); ``relay`` passes its packets across a bridge to a
  decoder service.
- ``rtl_model/``: ``FrontendModel``, the ``qhil_frontend`` RTL, cycle-accurate at its
  ports, driven by a timed ``Stimulus`` (``FrontendParams``: the RTL's parameters),
  and the detector-program ROM writer.
- ``benches/``: the cocotb testbenches that hold the RTL equal to its Python
  references in Icarus, and their yosys checks (tests only).

What they all share stays here: the register map (``REGISTERS`` / ``RegisterFile``,
``_regmap.py``, the one definition the RTL's header is generated from by
``_regmap_verilog.py``), ``DetectorProgram`` (the detection-event unit's per-round
XOR programs), the correction rules (``_correction_rules.py``) and
``FrontEndConfig``. ``_testing.py`` holds helpers for the tests of several parts.
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

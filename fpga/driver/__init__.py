"""qhil.fpga.driver: ``FrontEnd``, one driver for the ``qhil_frontend`` IP, on a board or off it.

- ``FrontEnd`` (``_driver.py``): open, start, replay measurements, receive syndrome
  packets, send corrections, read registers. Two backends sit behind it: the PYNQ
  board's ``PynqBackend`` (``_pynq_backend.py``: MMIO and two AXI DMAs) and the
  off-board ``FrontEndTwin`` (``_driver_model.py``: the IP in NumPy), chosen by
  ``_driver_backend.py``.
- ``RegisterBlock`` (``_driver_regs.py``): the IP's and the DMAs' registers by name.
- ``ReplayBuffer`` (``_driver_buffers.py``): measurements laid out for the replay DMA.
- ``ProgramManifest`` (``_driver_program.py``): which circuit a bitstream was built
  for, and the inputs of a Vivado build (``python -m qhil.fpga.driver._driver_program``).
- ``relay`` (``_driver_relay.py``): the packets, unchanged, across a bridge to a decoder.
- ``find_board`` (``_board.py``): whether a PYNQ board is here, and if not, why not.
"""

from __future__ import annotations

from qhil.fpga.driver._board import BoardProbe, find_board
from qhil.fpga.driver._driver import (
    BITSTREAM_ENV,
    TARGETS,
    BoardUnavailable,
    FrontEnd,
    FrontEndTimeout,
    ReplayBuffer,
    which_frontend,
)
from qhil.fpga.driver._driver_model import FrontEndTwin
from qhil.fpga.driver._driver_program import ProgramManifest
from qhil.fpga.driver._driver_regs import RegisterBlock
from qhil.fpga.driver._driver_relay import RelayStats, relay

__all__ = [
    "BITSTREAM_ENV",
    "TARGETS",
    "BoardProbe",
    "BoardUnavailable",
    "FrontEnd",
    "FrontEndTimeout",
    "FrontEndTwin",
    "ProgramManifest",
    "RegisterBlock",
    "RelayStats",
    "ReplayBuffer",
    "find_board",
    "relay",
    "which_frontend",
]

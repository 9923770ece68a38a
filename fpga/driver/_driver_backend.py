"""The backends behind ``FrontEnd``: what it needs of one, and opening the chosen one.

``Backend`` is the interface both implement: the board's ``PynqBackend``
(``_pynq_backend.py``) and the off-board ``FrontEndTwin`` (``_driver_model.py``).
``open_backend`` opens the one ``FrontEnd.open`` chose.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import stim

from qhil.bridge import syndrome_size
from qhil.fpga._detection import DetectorProgram
from qhil.fpga.driver._driver_model import FrontEndTwin
from qhil.fpga.driver._driver_program import ProgramManifest, manifest_path

__all__ = ["Backend", "open_backend"]


class Backend(Protocol):
    target: str
    description: str

    def read(self, offset: int) -> int: ...
    def write(self, offset: int, value: int) -> None: ...
    def allocate(self, shape: tuple[int, ...], dtype: type) -> np.ndarray: ...
    def send_round(self, buf: np.ndarray, start: int, nbytes: int, timeout_s: float) -> bool: ...
    def recv_packet(self, out: np.ndarray, timeout_s: float) -> int: ...
    def send_packet(self, packet: np.ndarray, timeout_s: float) -> bool: ...
    def dma_status(self) -> dict[str, dict[str, bool]]: ...
    def close(self) -> None: ...


def open_backend(
    circuit: stim.Circuit,
    program: DetectorProgram,
    *,
    bitstream: Path | None,
    why: str,
    ip_name: str | None,
    fifo_packets: int,
    check_program: bool,
    download: bool,
) -> Backend:
    """The board with ``bitstream`` loaded (``why``: the board's name), or with no
    bitstream the twin (``why``: why the model runs). See ``FrontEnd.open``."""
    if bitstream is None:
        return FrontEndTwin(program, circuit.num_observables, reason=why, fifo_packets=fifo_packets)
    if check_program:
        ProgramManifest.load(manifest_path(bitstream)).check(circuit)
    # Imported only for a board: pynq is a board-only dependency.
    from qhil.fpga.driver._pynq_backend import PynqBackend

    return PynqBackend.open(
        bitstream,
        board=why,
        ip_name=ip_name,
        syndrome_bytes=syndrome_size(max(program.bits_per_round)),
        download=download,
    )

"""``FrontEnd``: one Python interface to the ``qhil_frontend`` IP, on a PYNQ board or off it.

Write a script once; run it on a laptop and on the rack::

    fe = FrontEnd.open(circuit, target="auto", bitstream="qhil_zcu111.bit", config=cfg)
    fe.start()
    fe.send_measurements(measurements[:1])          # one shot, round by round
    out, lengths = packet_buffers(16, fe.max_packet)
    n = fe.recv_syndromes(out, lengths, timeout_s=0.1)
    fe.send_correction(correction_bytes)
    fe.regs.read64("SHOTS_DECODED"), fe.logical_frame

Two backends sit behind it:

- **board** (``_pynq_backend.py``): the PYNQ ``Overlay`` of a bitstream built by
  ``fpga/vivado/``; registers by MMIO, streams through two AXI DMAs, buffers
  from ``pynq.allocate``.
- **model** (``_driver_model.py``): ``FrontEndTwin``, the IP in software with
  NumPy buffers.

``target="auto"`` takes the board when ``find_board()`` finds one and a
bitstream is named, and otherwise the model, saying why (a logged warning and
``description``). ``target="board"`` with no board is an error naming the fix.

>>> import stim
>>> from qhil.bridge import packet_buffers
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2)
>>> fe = FrontEnd.open(c, target="model")
>>> fe.target, fe.regs["ID"] == int.from_bytes(b"QHIL", "big")
('model', True)
>>> fe.start(); fe.send_measurements(np.zeros((1, c.num_measurements), dtype=bool))
3
>>> out, lengths = packet_buffers(8, fe.max_packet)
>>> fe.recv_syndromes(out, lengths, timeout_s=0.0), fe.regs.read64("ROUNDS_EMITTED")
(3, 3)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

import numpy as np
import stim

from qhil.bridge import syndrome_size
from qhil.fpga._config import FrontEndConfig
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import CTRL_BITS, REGISTERS, STATUS_BITS
from qhil.fpga.driver._board import find_board
from qhil.fpga.driver._driver_backend import Backend, open_backend
from qhil.fpga.driver._driver_buffers import (
    ReplayBuffer,
    check_syndrome_buffers,
    lay_out_replay,
    replay_rows,
)
from qhil.fpga.driver._driver_model import HEADER_END_OF_STREAM
from qhil.fpga.driver._driver_regs import RegisterBlock, frontend_registers

__all__ = [
    "BITSTREAM_ENV",
    "TARGETS",
    "BoardUnavailable",
    "FrontEnd",
    "FrontEndTimeout",
    "ReplayBuffer",
    "which_frontend",
]

TARGETS = ("auto", "board", "model")
BITSTREAM_ENV = "QHIL_BITSTREAM"
_ID = next(r.reset for r in REGISTERS if r.name == "ID")
_VERSION = next(r.reset for r in REGISTERS if r.name == "VERSION")
_log = logging.getLogger("qhil.fpga")


class BoardUnavailable(RuntimeError):
    """``target="board"`` was asked for and no usable board (or bitstream) is here."""


class FrontEndTimeout(TimeoutError):
    """A stream transfer was not taken in time. ``rounds_sent``: rounds that went in
    before it (pass it as ``start_round`` to resume)."""

    def __init__(self, message: str, rounds_sent: int = 0) -> None:
        super().__init__(message)
        self.rounds_sent = rounds_sent


def _check_bitstream(path: Path) -> Path:
    if path.suffix != ".bit":
        raise ValueError(f"bitstream {path} must be a .bit file (with its .hwh beside it)")
    if not path.is_file():
        raise FileNotFoundError(
            f"bitstream {path} does not exist; build it with fpga/vivado/build.tcl "
            f"(fpga/vivado/README.md) or point bitstream= / ${BITSTREAM_ENV} at it"
        )
    if not path.with_suffix(".hwh").is_file():
        raise FileNotFoundError(
            f"{path.with_suffix('.hwh')} is missing: PYNQ's Overlay reads the IP addresses from "
            "the .hwh next to the .bit; copy it from the Vivado export (fpga/vivado/build.tcl)"
        )
    return path


def _resolve(target: str, bitstream: str | os.PathLike[str] | None) -> tuple[str, str, Path | None]:
    """(target to use, board name or why the model, bitstream path)."""
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not valid; choose one of {', '.join(TARGETS)}")
    if target == "model":
        return "model", "chosen with target='model'", None
    probe = find_board()
    if not probe.present:
        if target == "board":
            raise BoardUnavailable(
                f"target='board' but no board is usable: {probe.reason}. Run on the PYNQ board "
                "image with qhil's 'board' extra (docs/board.md), or use target='auto' or 'model'"
            )
        return "model", probe.reason, None
    named = bitstream if bitstream is not None else os.environ.get(BITSTREAM_ENV)
    if not named:
        why = (
            f"a PYNQ board ({probe.name}) is here but no bitstream was named; pass bitstream=... "
            f"or set ${BITSTREAM_ENV}"
        )
        if target == "board":
            raise BoardUnavailable(f"target='board': {why}")
        return "model", why, None
    return "board", probe.name, _check_bitstream(Path(named))


def which_frontend(*, bitstream: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """What ``FrontEnd.open(target="auto")`` would use, without loading anything:
    ``("board", "<board>, bitstream <path>")`` or ``("model", "cycle model (<why>)")``.

    >>> which_frontend(bitstream=None)[0] in ("board", "model")
    True
    """
    try:
        target, why, path = _resolve("auto", bitstream)
    except (OSError, ValueError) as ex:
        return "model", f"cycle model (the board's bitstream is not usable: {ex})"
    if target == "board":
        return "board", f"board {why}, bitstream {path}"
    return "model", f"cycle model ({why})"


class FrontEnd:
    """The ``qhil_frontend`` IP: registers by name, measurement/syndrome/correction streams.

    Build with :meth:`open`. ``target`` is "board" or "model"; ``description``
    names the board and bitstream, or why the model runs. ``regs`` is the IP's
    register block by name (``fe.regs["BUDGET"] = 2500``, ``fe.regs.read64("CYCLE")``).
    """

    def __init__(
        self,
        backend: Backend,
        program: DetectorProgram,
        num_observables: int,
        *,
        timeout_s: float,
    ) -> None:
        self._backend = backend
        self.program = program
        self.num_observables = num_observables
        self.timeout_s = timeout_s
        self.regs: RegisterBlock = frontend_registers(backend)
        self._eos: np.ndarray | None = None  # uint64[2]: the end-of-stream transfer
        # Every packet of this circuit fits; so does an end-of-stream packet (n_bits = 0).
        self.max_packet = syndrome_size(max(program.bits_per_round))
        ident, version = self.regs["ID"], self.regs["VERSION"]
        if ident != _ID or version >> 16 != _VERSION >> 16:
            backend.close()
            raise RuntimeError(
                f"the IP at the front end's address reads ID {ident:#010x}, VERSION "
                f"{version:#010x}; "
                f"a qhil_frontend of wire v{_VERSION >> 16} reads ID {_ID:#010x}: check ip_name= "
                "and that the bitstream was built from fpga/vivado/"
            )

    @classmethod
    def open(
        cls,
        circuit: stim.Circuit,
        *,
        target: str = "auto",
        bitstream: str | os.PathLike[str] | None = None,
        config: FrontEndConfig | None = None,
        ip_name: str | None = None,
        timeout_s: float = 1.0,
        fifo_packets: int = 1024,
        check_program: bool = True,
        download: bool = True,
    ) -> FrontEnd:
        """Open the front end for ``circuit`` (the circuit whose measurements you send).

        Args:
            target: "auto" (board if usable, else the model, saying why), "board", "model".
            bitstream: the ``.bit`` (its ``.hwh`` beside it); default ``$QHIL_BITSTREAM``.
            config: written to the registers at open (``configure``); None keeps them.
            ip_name: the front end's name in the overlay, if not the only ``qhil_frontend``.
            timeout_s: default wait for a stream transfer to be taken.
            fifo_packets: model only: syndrome packets held before it pushes back.
            check_program: board only: refuse a bitstream whose manifest
                (``<name>.qhil.json``) was built for another circuit.
            download: board only: program the PL (True), or attach to the bitstream
                already loaded, keeping the IP's state (False).
        """
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be >= 0; got {timeout_s!r}")
        use, why, path = _resolve(target, bitstream)
        program = DetectorProgram.from_circuit(circuit)
        if use == "model" and target == "auto":
            _log.warning("qhil.fpga: using the cycle model: %s", why)
        backend = open_backend(
            circuit,
            program,
            bitstream=path,
            why=why,
            ip_name=ip_name,
            fifo_packets=fifo_packets,
            check_program=check_program,
            download=download,
        )
        fe = cls(backend, program, circuit.num_observables, timeout_s=timeout_s)
        if config is not None:
            fe.configure(config)
        return fe

    @property
    def target(self) -> str:
        return self._backend.target

    @property
    def description(self) -> str:
        return self._backend.description

    def __repr__(self) -> str:
        return f"FrontEnd({self.description})"

    # -- control ---------------------------------------------------------------------------

    def configure(self, config: FrontEndConfig) -> None:
        """Write ``config``'s stream id, round period, budget, timeout and mode."""
        mhz = self.regs["FABRIC_MHZ"]
        if round(config.fabric_clock_hz) != mhz * 1_000_000:
            raise ValueError(
                f"the IP's fabric clock is {mhz} MHz but config.fabric_clock_hz is "
                f"{config.fabric_clock_hz:g}; use FrontEndConfig(fabric_clock_hz={mhz}e6)"
            )
        self.regs["STREAM_ID"] = config.stream_id
        self.regs["ROUND_PERIOD"] = min(2**32 - 1, config.round_period_cycles)
        self.regs["BUDGET"] = min(2**32 - 1, config.budget_cycles)
        self.regs["CORR_TIMEOUT"] = min(
            2**32 - 1, round(config.correction_timeout_s * config.fabric_clock_hz)
        )
        lock = 1 << CTRL_BITS["LOCKSTEP"]
        ctrl = self.regs["CTRL"] & ~lock
        self.regs["CTRL"] = ctrl | (lock if config.mode == "lockstep" else 0)

    def start(self) -> None:
        """Set CTRL.ENABLE: the IP takes measurements and emits syndrome packets."""
        self.regs["CTRL"] = self.regs["CTRL"] | 1 << CTRL_BITS["ENABLE"]

    def stop(self) -> None:
        """Clear CTRL.ENABLE: the IP takes no more measurements."""
        self.regs["CTRL"] = self.regs["CTRL"] & ~(1 << CTRL_BITS["ENABLE"])

    def clear_counters(self) -> None:
        """Pulse CTRL.CLEAR_COUNTERS (the bit clears itself)."""
        self.regs["CTRL"] = self.regs["CTRL"] | 1 << CTRL_BITS["CLEAR_COUNTERS"]

    def status(self) -> dict[str, bool]:
        """STATUS as named flags (RUNNING, DONE, DECODER_UNRESPONSIVE, BACKPRESSURE)."""
        value = self.regs["STATUS"]
        return {name: bool(value >> bit & 1) for name, bit in STATUS_BITS.items()}

    @property
    def logical_frame(self) -> int:
        """LOGICAL_FRAME: bit i set = observable i flipped an odd number of times."""
        return self.regs["LOGICAL_FRAME"]

    def dma_status(self) -> dict[str, dict[str, bool]]:
        """Each DMA channel's status flags (board: AXI DMA DMASR; model: idle, no error)."""
        return self._backend.dma_status()

    # -- streams ---------------------------------------------------------------------------

    def replay_buffer(self, measurements: np.ndarray) -> ReplayBuffer:
        """Lay out measurement records for the measurement stream (see ``ReplayBuffer``).

        Args:
            measurements: bool or 0/1 uint8 [shots, num_measurements], stim's order.
        """
        return lay_out_replay(self.program, measurements, self._backend.allocate)

    def send_measurements(
        self,
        measurements: np.ndarray | ReplayBuffer,
        *,
        start_round: int = 0,
        stop_round: int | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """Send shots round by round into the measurement stream; return rounds sent.

        Rows ``start_round`` up to ``stop_round`` (default: the end) of the replay
        buffer go in (``replay.shot_rounds(s)`` gives shot ``s``'s).

        Raises ``FrontEndTimeout`` (with ``rounds_sent``) when a round is not taken
        within ``timeout_s``: in lockstep mode the IP holds its input while its
        syndrome output is full, so read syndromes (``recv_syndromes``) as you go.
        """
        replay = (
            measurements
            if isinstance(measurements, ReplayBuffer)
            else self.replay_buffer(measurements)
        )
        rows = replay_rows(replay, self.program.num_rounds, start_round, stop_round)
        if not self.status()["RUNNING"]:
            raise RuntimeError("the front end is stopped (CTRL.ENABLE = 0); call start() first")
        wait = self.timeout_s if timeout_s is None else timeout_s
        row = replay.beats.shape[1] * 8
        rounds = self.program.num_rounds
        for i in rows:
            t = i % rounds
            if not self._backend.send_round(replay.beats, i * row, replay.round_nbytes[t], wait):
                raise FrontEndTimeout(
                    f"round {t} of shot {i // rounds} (replay row {i}) was not taken within "
                    f"{wait} s after {i - start_round} rounds; the IP holds its measurement input "
                    "while it is stopped or (lockstep) while its syndrome output is full: read "
                    "syndromes with recv_syndromes() and resume with start_round=e.rounds_sent",
                    rounds_sent=i,
                )
        return len(rows)

    def send_end_of_stream(self, *, timeout_s: float | None = None) -> None:
        """Ask the IP for its end-of-stream packet (after every round before it): a
        replay transfer whose header beat has END_OF_STREAM set. The decoder
        service answers it, which sets STATUS.DONE."""
        if not self.status()["RUNNING"]:
            raise RuntimeError("the front end is stopped (CTRL.ENABLE = 0); call start() first")
        if self._eos is None:
            self._eos = self._backend.allocate((2,), np.uint64)
            self._eos[:] = (HEADER_END_OF_STREAM, 0)
        wait = self.timeout_s if timeout_s is None else timeout_s
        if not self._backend.send_round(self._eos, 0, 16, wait):
            raise FrontEndTimeout(
                f"the end-of-stream request was not taken within {wait} s; the IP holds it "
                "while its syndrome output is full: read syndromes with recv_syndromes()"
            )

    def recv_syndromes(
        self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float | None = None
    ) -> int:
        """Wait up to ``timeout_s`` for a syndrome packet, then take those ready.

        The ``PacketReceiver.recv_into`` contract: ``out`` uint8[n_max, >= max_packet]
        and ``lengths`` uint32[n_max], C-contiguous (``packet_buffers(n_max,
        fe.max_packet)``); row i gets packet i in ``out[i, :lengths[i]]``. Returns
        the count, 0 if none came.
        """
        check_syndrome_buffers(out, lengths, self.max_packet)
        wait = self.timeout_s if timeout_s is None else timeout_s
        n = 0
        while n < out.shape[0]:
            got = self._backend.recv_packet(out[n], wait if n == 0 else 0.0)
            if got == 0:
                break
            lengths[n] = got
            n += 1
        return n

    def send_correction(
        self, packet: bytes | bytearray | np.ndarray, *, timeout_s: float | None = None
    ) -> None:
        """Send one correction packet (wire v1, e.g. ``CorrectionPacket(...).encode()``).
        Raises ``FrontEndTimeout`` if the correction stream does not take it in time."""
        data = np.frombuffer(bytes(packet), dtype=np.uint8)
        if data.size == 0:
            raise ValueError("a correction packet has at least one byte; got an empty one")
        wait = self.timeout_s if timeout_s is None else timeout_s
        if not self._backend.send_packet(data, wait):
            raise FrontEndTimeout(
                f"the correction stream did not take a {data.size}-byte packet within {wait} s; "
                f"check dma_status() for a halted or errored channel"
            )

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Free the DMA buffers (the bitstream stays loaded). Idempotent."""
        self._backend.close()

    def __enter__(self) -> FrontEnd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

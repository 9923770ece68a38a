"""The buffers ``FrontEnd``'s streams use: the measurement replay layout, and their checks.

``ReplayBuffer`` is the measurement records laid out for the replay DMA, one row
per round (``lay_out_replay`` builds one); ``replay_rows`` checks a range of its
rows against the circuit; ``check_syndrome_buffers`` checks the arrays that
``FrontEnd.recv_syndromes`` fills.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import numpy as np

from qhil.fpga._detection import DetectorProgram
from qhil.fpga.driver._driver_model import HEADER_LAST_ROUND

__all__ = ["ReplayBuffer", "check_syndrome_buffers", "lay_out_replay", "replay_rows"]


@dataclasses.dataclass(frozen=True)
class ReplayBuffer:
    """Measurement records laid out for the measurement-replay DMA, one row per round.

    Attributes:
        beats: uint64[shots * num_rounds, 1 + meas_beats], C-contiguous. Row
            ``s * num_rounds + t`` is round ``t`` of shot ``s``, sent as one DMA
            transfer (the DMA marks its last beat ``tlast``):

            - ``beats[row, 0]``, the header beat that ``qhil_replay_adapter``
              turns into ``s_axis_meas_tuser``: bit 0 LAST_ROUND (set on each
              shot's last round), bit 1 END_OF_STREAM (never set here; see
              ``FrontEnd.send_end_of_stream``), other bits 0.
            - ``beats[row, 1:]``, the round's measurements: result ``j`` (stim's
              order within the round) is bit ``j % 64`` of ``beats[row, 1 + j // 64]``,
              LSB-first and little-endian, as ``s_axis_meas_tdata`` carries
              them. Unused bits are 0.

            On a board this is a ``pynq.allocate`` buffer (physically
            contiguous, DMA-able); off it, a NumPy array.
        round_nbytes: bytes sent for round ``t``: ``8 * (1 + ceil(n_meas[t] / 64))``.
        shots: shots held.
    """

    beats: np.ndarray
    round_nbytes: tuple[int, ...]
    shots: int

    def __post_init__(self) -> None:
        b = self.beats
        rows = self.shots * len(self.round_nbytes)
        if b.dtype != np.uint64 or b.ndim != 2 or not b.flags.c_contiguous or b.shape[0] != rows:
            raise ValueError(
                f"beats must be uint64[{rows}, beats_per_round] C-contiguous; got {b.dtype} "
                f"{b.shape}; build it with FrontEnd.replay_buffer(measurements)"
            )
        if any(n % 8 or not 16 <= n <= 8 * b.shape[1] for n in self.round_nbytes):
            raise ValueError(f"round_nbytes {self.round_nbytes} must be whole beats within a row")

    @property
    def rounds(self) -> int:
        return int(self.beats.shape[0])

    def shot_rounds(self, shot: int) -> tuple[int, int]:
        """``(start_round, stop_round)`` of one shot, for ``send_measurements``."""
        if not 0 <= shot < self.shots:
            raise IndexError(f"shot {shot} is not in this buffer's 0..{self.shots - 1}")
        n = len(self.round_nbytes)
        return shot * n, (shot + 1) * n


def lay_out_replay(
    prog: DetectorProgram,
    measurements: np.ndarray,
    allocate: Callable[[tuple[int, ...], type], np.ndarray],
) -> ReplayBuffer:
    """``measurements`` (bool or 0/1 uint8 [shots, num_measurements], stim's order) in a
    ``ReplayBuffer`` whose ``beats`` come from ``allocate`` (the backend's buffers)."""
    n_meas = int(prog.meas_offsets[-1])
    m = np.asarray(measurements)
    if m.ndim != 2 or m.shape[1] != n_meas or m.dtype not in (np.bool_, np.uint8):
        raise ValueError(
            f"measurements must be bool/uint8[shots, {n_meas}] (the circuit's measurement "
            f"record); got {m.dtype} {m.shape}"
        )
    if sys.byteorder != "little":
        raise RuntimeError("the replay layout assumes a little-endian host (ARM, x86)")
    meas_beats = [max(1, -(-int(n) // 64)) for n in np.diff(prog.meas_offsets)]
    width = 1 + max(meas_beats)
    shots, rounds = m.shape[0], prog.num_rounds
    beats = allocate((shots * rounds, width), np.uint64)
    beats[:] = 0
    beats.reshape(shots, rounds, width)[:, -1, 0] = HEADER_LAST_ROUND
    as_bytes = beats.view(np.uint8).reshape(shots, rounds, 8 * width)
    for t in range(rounds):
        lo, hi = int(prog.meas_offsets[t]), int(prog.meas_offsets[t + 1])
        packed = np.packbits(m[:, lo:hi].astype(np.bool_), axis=1, bitorder="little")
        as_bytes[:, t, 8 : 8 + packed.shape[1]] = packed
    nbytes = tuple(8 * (1 + n) for n in meas_beats)
    return ReplayBuffer(beats=beats, round_nbytes=nbytes, shots=shots)


def replay_rows(
    replay: ReplayBuffer, num_rounds: int, start_round: int, stop_round: int | None
) -> range:
    """Rows ``start_round`` up to ``stop_round`` (None: the end) of ``replay``, checked
    against the circuit's ``num_rounds`` and the buffer's size."""
    if len(replay.round_nbytes) != num_rounds:
        raise ValueError(
            f"the replay buffer has {len(replay.round_nbytes)} rounds per shot but the "
            f"circuit has {num_rounds}; build it with this FrontEnd"
        )
    stop = replay.rounds if stop_round is None else stop_round
    if not 0 <= start_round <= stop <= replay.rounds:
        raise ValueError(
            f"need 0 <= start_round <= stop_round <= {replay.rounds}; "
            f"got start_round={start_round}, stop_round={stop_round}"
        )
    return range(start_round, stop)


def check_syndrome_buffers(out: np.ndarray, lengths: np.ndarray, max_packet: int) -> None:
    """Raise ValueError unless ``out`` is uint8[n_max, >= max_packet], C-contiguous, and
    ``lengths`` uint32[n_max] (as ``packet_buffers(n_max, max_packet)`` makes them)."""
    ok = (
        isinstance(out, np.ndarray)
        and out.dtype == np.uint8
        and out.ndim == 2
        and out.shape[1] >= max_packet
        and out.flags.c_contiguous
        and isinstance(lengths, np.ndarray)
        and lengths.dtype == np.uint32
        and lengths.shape == (out.shape[0],)
    )
    if not ok:
        raise ValueError(
            f"out must be uint8[n_max, >={max_packet}] and lengths uint32[n_max], "
            f"C-contiguous; allocate them with packet_buffers(n_max, fe.max_packet)"
        )

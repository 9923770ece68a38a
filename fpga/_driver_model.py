"""The off-board twin behind ``FrontEnd``: the ``qhil_frontend`` IP in software, at its ports.

What a board does in fabric, ``FrontEndTwin`` does in NumPy, one call per
stream transfer, so the same ``FrontEnd`` script runs with no board:

- **Register port** (``read``/``write`` at byte offsets): the map of
  ``fpga/_regmap.py`` in a ``RegisterFile``. As in the RTL, reading a ``_LO``
  latches its ``_HI`` (HI reads 0 until LO was read once), ``CYCLE`` runs
  free, CTRL.CLEAR_COUNTERS acts once and reads back 0, and a write to a
  read-only register is a bus error (``PermissionError``), changing nothing.
- **Measurement stream** (``send_round``): one round's measurement bits,
  LSB-first in stim's measurement order, as the bytes of its 64-bit beats.
  The twin counts rounds and shots itself (the round index cycles through the
  circuit's rounds), turns the bits into detection events with the circuit's
  ``DetectorProgram``, and queues a wire-v1 syndrome packet stamped with
  ``t_fpga`` = the cycle counter. A disabled IP (CTRL.ENABLE = 0) takes no
  round. When ``fifo_packets`` packets wait unread, lockstep (CTRL.LOCKSTEP)
  takes no more rounds, as the RTL holds ``tready`` low; paced mode drops the
  round, counts it in ROUNDS_BACKPRESSURE and sets STATUS.BACKPRESSURE.
- **Syndrome stream** (``recv_packet``): the queued packets, oldest first.
- **Correction stream** (``send_packet``): always ready, like the RTL. Each
  packet is checked by ``parse_correction`` and then against the shots
  awaiting a correction, by the rules of ``CycleModel``: right stream, a shot
  that awaits one, the seq of that shot's last syndrome packet, ``n_obs``
  equal to the circuit's observables. Every rejection is counted under its
  ``CORR_<REASON>`` register; an accepted DECODED packet flips LOGICAL_FRAME
  and sets LAT_LAST/LAT_MAX (cycles from the echoed ``t_fpga`` to arrival)
  and BUDGET_MISSES.
- A shot still awaiting its correction CORR_TIMEOUT cycles after its last
  packet is counted in SHOTS_TIMED_OUT and sets STATUS.DECODER_UNRESPONSIVE.

The cycle counter is the host's monotonic clock scaled to FABRIC_MHZ, so the
twin's latencies are wall-clock latencies of this process, not the fabric's.
CLEAR_COUNTERS zeroes the counters, LAT_LAST/LAT_MAX and the sticky STATUS
bits; it keeps CYCLE, LOGICAL_FRAME and the shot/seq position.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from qhil.bridge import (
    CORRECTION_HEADER_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    CorrectionStatus,
    Reason,
    parse_correction,
    syndrome_size,
    write_syndrome,
)
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._driver_regs import DMASR_BITS, decode_dmasr
from qhil.fpga._regmap import CTRL_BITS, REGISTERS, STATUS_BITS, RegisterFile

__all__ = ["FrontEndTwin"]

_WIDE = ("CYCLE", "ROUNDS_EMITTED", "SHOTS_DECODED")
_COUNTERS = tuple(
    r.name
    for r in REGISTERS
    if r.access == "ro" and r.name.startswith(("ROUNDS_", "SHOTS_", "CORR_", "BUDGET_", "LAT_"))
)
_ENABLE = 1 << CTRL_BITS["ENABLE"]
_LOCKSTEP = 1 << CTRL_BITS["LOCKSTEP"]
_CLEAR = 1 << CTRL_BITS["CLEAR_COUNTERS"]


class FrontEndTwin:
    """The ``qhil_frontend`` IP in software: its register, measurement, syndrome and
    correction ports (see the module doc).

    Args:
        program: the circuit's detector program (what a bitstream holds in its ROM).
        num_observables: logical observables; a DECODED correction must carry this many.
        reason: why the twin runs instead of a board, for ``description``.
        fifo_packets: syndrome packets the twin holds before it pushes back.
    """

    target = "model"

    def __init__(
        self, program: DetectorProgram, num_observables: int, *, reason: str, fifo_packets: int
    ) -> None:
        if fifo_packets < 1:
            raise ValueError(f"fifo_packets must be >= 1; got {fifo_packets}")
        self.program = program
        self.num_observables = num_observables
        self.description = f"cycle model ({reason})"
        self.fifo_packets = fifo_packets
        self.regs = RegisterFile()
        self._by_offset = {r.offset: r for r in REGISTERS}
        self._t0 = time.monotonic_ns()
        self._fifo: collections.deque[np.ndarray] = collections.deque()
        self._record = np.zeros((1, int(program.meas_offsets[-1])), dtype=np.bool_)
        self._fields = np.zeros(10, dtype=np.uint64)
        self._wide = dict.fromkeys(_WIDE, 0)
        self._hi_latch = dict.fromkeys(_WIDE, 0)
        self._round = 0
        self._shot = 0
        self._seq = 0
        self._shot_emitted = False
        self._last_packet: tuple[int, int] = (0, 0)  # (seq, t_fpga) of this shot's last packet
        self._pending: dict[int, tuple[int, int]] = {}  # shot -> (deadline cycle, last seq)
        self._never_pending: set[int] = set()  # shots whose every round was dropped
        self._frame = 0
        self._sticky = 0

    # -- register port --------------------------------------------------------------------

    def cycles(self) -> int:
        mhz = self.regs.read("FABRIC_MHZ")
        return (time.monotonic_ns() - self._t0) * mhz // 1000

    def read(self, offset: int) -> int:
        reg = self._by_offset.get(offset)
        if reg is None:
            return 0  # the RTL answers SLVERR with RDATA = 0
        self._expire()
        name = reg.name
        base = name[:-3]
        if base in self._wide:
            value = self.cycles() if base == "CYCLE" else self._wide[base]
            if name.endswith("_LO"):
                self._hi_latch[base] = value >> 32
                return value & 0xFFFF_FFFF
            return self._hi_latch[base]
        if name == "STATUS":
            return int(self.regs.read("CTRL") & _ENABLE != 0) << STATUS_BITS["RUNNING"] | (
                self._sticky
            )
        return self.regs.read(offset)

    def write(self, offset: int, value: int) -> None:
        reg = self._by_offset.get(offset)
        if reg is None or reg.access != "rw":
            what = reg.name if reg else f"offset {offset:#x}"
            raise PermissionError(f"bus error (SLVERR): {what} is not a writable register")
        if reg.name == "CTRL" and value & _CLEAR:
            self._clear_counters()
            value &= ~_CLEAR
        self.regs.write(offset, value)

    def _clear_counters(self) -> None:
        for name in _COUNTERS:
            self.regs.set(name, 0)
        for base in ("ROUNDS_EMITTED", "SHOTS_DECODED"):
            self._wide[base] = 0
        self._sticky = 0

    def _count(self, name: str, by: int = 1) -> None:
        self.regs.set(name, self.regs.read(name) + by)

    # -- measurement and syndrome streams -------------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A zeroed C-contiguous NumPy buffer (the twin needs no DMA-able memory)."""
        return np.zeros(shape, dtype=dtype)

    def send_round(self, buf: np.ndarray, start: int, nbytes: int, timeout_s: float) -> bool:
        """Offer one round: ``nbytes`` bytes of ``buf`` from byte ``start`` (its 64-bit
        beats, LSB-first). False if not taken; the twin never waits (nothing else
        would drain it meanwhile), so ``timeout_s`` is unused."""
        data = buf.reshape(-1).view(np.uint8)[start : start + nbytes]
        ctrl = self.regs.read("CTRL")
        if not ctrl & _ENABLE:
            return False
        self._expire()
        program, t = self.program, self._round
        lo, hi = int(program.meas_offsets[t]), int(program.meas_offsets[t + 1])
        self._record[0, lo:hi] = np.unpackbits(data, count=hi - lo, bitorder="little")
        last = t == program.num_rounds - 1
        if len(self._fifo) >= self.fifo_packets:
            if ctrl & _LOCKSTEP:
                return False
            self._count("ROUNDS_BACKPRESSURE")
            self._sticky |= 1 << STATUS_BITS["BACKPRESSURE"]
        else:
            events = program.round_events(self._record, t)[0]
            n_bits = events.shape[0]
            packet = np.zeros(syndrome_size(n_bits), dtype=np.uint8)
            flags = (FLAG_FIRST_ROUND if t == 0 else 0) | (FLAG_LAST_ROUND if last else 0)
            t_fpga = self.cycles()
            u = np.uint64
            write_syndrome(
                packet,
                u(self.regs.read("STREAM_ID")),
                u(self._shot),
                u(t),
                u(self._seq),
                u(t_fpga),
                flags,
                np.packbits(events, bitorder="little"),
                n_bits,
            )
            self._fifo.append(packet)
            self._last_packet = (self._seq, t_fpga)
            self._seq += 1
            self._wide["ROUNDS_EMITTED"] += 1
            self._shot_emitted = True
        if last:
            if self._shot_emitted:
                seq, t_fpga = self._last_packet
                self._pending[self._shot] = (t_fpga + self.regs.read("CORR_TIMEOUT"), seq)
            else:
                self._never_pending.add(self._shot)
            self._shot += 1
            self._round = 0
            self._shot_emitted = False
        else:
            self._round += 1
        return True

    def recv_packet(self, out: np.ndarray, timeout_s: float) -> int:
        """Copy the oldest waiting syndrome packet into ``out`` (uint8, long enough);
        return its length, or 0 if none waits (at once: see ``send_round``)."""
        self._expire()
        if not self._fifo:
            return 0
        packet = self._fifo.popleft()
        out[: packet.shape[0]] = packet
        return int(packet.shape[0])

    # -- correction stream ----------------------------------------------------------------

    def send_packet(self, packet: np.ndarray, timeout_s: float) -> bool:
        """Take one correction packet, uint8[n] (always: the receiver has no back-pressure)."""
        self._expire()
        now = self.cycles()
        f = self._fields
        reason = Reason(parse_correction(packet, packet.shape[0], f))
        if reason == Reason.OK:
            reason = self._apply(packet, now)
        if reason != Reason.OK:
            self._count(f"CORR_{reason.name}")
        return True

    def _apply(self, packet: np.ndarray, now: int) -> Reason:
        flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, _, _ = (
            int(x) for x in self._fields
        )
        if flags & FLAG_END_OF_STREAM:
            return Reason.OK  # acknowledges an end of stream; nothing to apply
        if stream != self.regs.read("STREAM_ID"):
            return Reason.UNKNOWN_STREAM
        if shot not in self._pending:
            resolved = shot < self._shot and shot not in self._never_pending
            return Reason.DUPLICATE if resolved else Reason.UNKNOWN_SHOT
        if status == CorrectionStatus.DECODED:
            if n_obs != self.num_observables:
                return Reason.BAD_LENGTH
            if seq != self._pending[shot][1]:
                return Reason.BAD_FIELD
            o = CORRECTION_HEADER_SIZE
            obs = np.unpackbits(packet[o : o + (n_obs + 7) // 8], count=n_obs, bitorder="little")
            for k in np.flatnonzero(obs[:32]):  # the RTL's frame register is 32 bits
                self._frame ^= 1 << int(k)
            self.regs.set("LOGICAL_FRAME", self._frame)
            latency = (now - t_fpga) % 2**32  # 32-bit registers, as in the RTL
            self.regs.set("LAT_LAST", latency)
            self.regs.set("LAT_MAX", max(self.regs.read("LAT_MAX"), latency))
            if latency > self.regs.read("BUDGET"):
                self._count("BUDGET_MISSES")
            self._wide["SHOTS_DECODED"] += 1
        elif status == CorrectionStatus.INCOMPLETE:
            if n_frame != self.program.num_rounds:
                return Reason.BAD_LENGTH
            self._count("SHOTS_INCOMPLETE")
        else:
            self._count("SHOTS_DECODER_ERROR")
        del self._pending[shot]
        self._count("CORR_ACCEPTED")
        return Reason.OK

    def dma_status(self) -> dict[str, dict[str, bool]]:
        """The twin has no DMA engines: every channel reads as running, idle, no error."""
        idle = 1 << DMASR_BITS["IDLE"]
        return {ch: decode_dmasr(idle) for ch in ("replay", "syndromes", "corrections")}

    def close(self) -> None:
        self._fifo.clear()

    def _expire(self) -> None:
        if not self._pending:
            return
        now = self.cycles()
        late = [shot for shot, (deadline, _) in self._pending.items() if deadline <= now]
        for shot in late:
            del self._pending[shot]
        if late:
            self._count("SHOTS_TIMED_OUT", len(late))
            self._sticky |= 1 << STATUS_BITS["DECODER_UNRESPONSIVE"]

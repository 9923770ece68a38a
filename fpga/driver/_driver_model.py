"""The off-board twin behind ``FrontEnd``: the replay path and ``qhil_frontend`` IP in software.

What a board does in fabric, ``FrontEndTwin`` does with NumPy, one call per DMA
transfer, so the same ``FrontEnd`` script runs with no board. It follows the
behaviour documented in ``rtl/qhil_frontend.v`` at the level a driver sees
(registers, packets, counters); it is not cycle-accurate (that is
``FrontendModel``'s job), and its cycle counter is this host's monotonic clock
scaled to FABRIC_MHZ, so its latencies are this process's, not the fabric's.

- **Registers** (``read``/``write`` at byte offsets, the map of
  ``fpga/_regmap.py``): reading a ``_LO`` latches its ``_HI`` (HI reads 0
  until LO was read once); ``CYCLE`` runs free; a write to a read-only or
  unmapped offset is a bus error (``PermissionError``) and changes nothing.
  CTRL.CLEAR_COUNTERS starts a new run, as in the RTL: every counter, LAT_*,
  the sticky STATUS bits, the logical frame, the pending shots and the
  shot/round/seq counters go to 0; the bit reads back 0.
- **Measurement replay** (``send_round``): one DMA transfer as
  ``qhil_replay_adapter`` (fpga/vivado/) takes it: a header beat whose bits
  0/1 are tuser's LAST_ROUND / END_OF_STREAM, then the round's 64-bit beats
  (LSB-first, stim's measurement order). Rounds are numbered by the front end:
  round 0, 1, ... until a LAST_ROUND, then the next shot. A round past the
  circuit's last gives an ``n_bits = 0`` packet, as a round past the ROM does.
  END_OF_STREAM queues the end-of-stream packet (it takes a seq).
- **Back-pressure**: the twin holds ``fifo_packets`` syndrome packets. A
  disabled IP (CTRL.ENABLE = 0) takes nothing. Lockstep (CTRL.LOCKSTEP)
  takes no round while the queue is full or the shot's pending-table slot
  (shot mod 2**pending_log2) holds an older shot. Paced mode drops a round
  that finds the queue full (ROUNDS_BACKPRESSURE, STATUS.BACKPRESSURE) and
  evicts an older shot from a slot it needs (counted as timed out); it does
  not wait for the round clock.
- **Corrections** (``send_packet``, always ready): ``parse_correction``, then
  the rules and counters of ``_correction_rules`` (the ones the RTL's judge
  implements). An END_OF_STREAM acknowledgement sets STATUS.DONE.
- **Timeouts**: a shot still pending CORR_TIMEOUT cycles after its last
  packet's ``t_fpga`` is counted in SHOTS_TIMED_OUT and sets
  STATUS.DECODER_UNRESPONSIVE.
"""

from __future__ import annotations

import collections
import dataclasses
import time

import numpy as np

from qhil.bridge import (
    CORRECTION_HEADER_SIZE,
    FLAG_END_OF_STREAM,
    FLAG_FIRST_ROUND,
    FLAG_LAST_ROUND,
    Reason,
    parse_correction,
    syndrome_size,
    write_syndrome,
)
from qhil.fpga._correction_rules import ACCEPTED, CorrectionCounters, Verdict, judge
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import CTRL_BITS, REGISTERS, STATUS_BITS, RegisterFile
from qhil.fpga.driver._driver_regs import DMASR_BITS, decode_dmasr

__all__ = ["HEADER_END_OF_STREAM", "HEADER_LAST_ROUND", "FrontEndTwin"]

# Bits of a replay transfer's header beat (qhil_replay_adapter's tuser).
HEADER_LAST_ROUND = 0x1
HEADER_END_OF_STREAM = 0x2

_ENABLE = 1 << CTRL_BITS["ENABLE"]
_LOCKSTEP = 1 << CTRL_BITS["LOCKSTEP"]
_CLEAR = 1 << CTRL_BITS["CLEAR_COUNTERS"]
_U32 = 0xFFFF_FFFF


@dataclasses.dataclass(frozen=True)
class _Pending:
    """A pending-table entry: a shot awaiting its correction."""

    shot: int
    seq: int  # seq of its last syndrome packet
    rounds: int  # rounds it was sent with (an INCOMPLETE correction echoes them)
    deadline: int  # cycle after which it times out


class FrontEndTwin:
    """The ``qhil_frontend`` IP and its replay adapter in software (see the module doc).

    Args:
        program: the circuit's detector program (what a bitstream holds in its ROM).
        num_observables: NUM_OBS, 1..32; a DECODED correction must carry this many.
        reason: why the twin runs instead of a board, for ``description``.
        fifo_packets: syndrome packets the twin holds before it pushes back.
        pending_log2: the pending-shot table has 2**pending_log2 slots (RTL PENDING_LOG2).
    """

    target = "model"

    def __init__(
        self,
        program: DetectorProgram,
        num_observables: int,
        *,
        reason: str,
        fifo_packets: int,
        pending_log2: int = 6,
    ) -> None:
        if fifo_packets < 1:
            raise ValueError(f"fifo_packets must be >= 1; got {fifo_packets}")
        if not 1 <= num_observables <= 32:
            raise ValueError(
                f"the front end keeps 1..32 logical observables (NUM_OBS); the circuit has "
                f"{num_observables}"
            )
        self.program = program
        self.num_observables = num_observables
        self.description = f"cycle model ({reason})"
        self.fifo_packets = fifo_packets
        self.slots = 1 << pending_log2
        self.regs = RegisterFile()
        self._by_offset = {r.offset: r for r in REGISTERS}
        self._t0 = time.monotonic_ns()
        self._fifo: collections.deque[np.ndarray] = collections.deque()
        self._record = np.zeros((1, int(program.meas_offsets[-1])), dtype=np.bool_)
        self._fields = np.zeros(10, dtype=np.uint64)
        self._hi_latch = {"CYCLE": 0, "ROUNDS_EMITTED": 0, "SHOTS_DECODED": 0}
        self._new_run()

    def _new_run(self) -> None:
        """Reset and CTRL.CLEAR_COUNTERS: a new run from shot 0."""
        self.counters = CorrectionCounters()
        self._rounds_emitted = 0
        self._backpressure = 0
        self._sticky = 0  # STATUS bits BACKPRESSURE and DECODER_UNRESPONSIVE
        self._shot = self._round = self._seq = 0
        self._started = 0  # shots below this one have had a round through the front end
        self._cur: tuple[int, int] | None = None  # this shot's last (seq, t_fpga), if any
        self._table: dict[int, _Pending] = {}  # slot -> pending shot

    # -- register port --------------------------------------------------------------------

    def cycles(self) -> int:
        return (time.monotonic_ns() - self._t0) * self.regs.read("FABRIC_MHZ") // 1000

    def _wide(self, base: str) -> int:
        if base == "CYCLE":
            return self.cycles()
        return self._rounds_emitted if base == "ROUNDS_EMITTED" else self.counters.shots_decoded

    def read(self, offset: int) -> int:
        reg = self._by_offset.get(offset)
        if reg is None:
            return 0  # the RTL answers SLVERR with RDATA = 0
        self._expire()
        name = reg.name
        base = name.removesuffix("_LO").removesuffix("_HI")
        if base in self._hi_latch:
            if name.endswith("_HI"):
                return self._hi_latch[base]
            value = self._wide(base)
            self._hi_latch[base] = value >> 32 & _U32
            return value & _U32
        if name == "STATUS":
            running = int(self.regs.read("CTRL") & _ENABLE != 0) << STATUS_BITS["RUNNING"]
            done = int(self.counters.eos_acked) << STATUS_BITS["DONE"]
            return running | done | self._sticky
        if name == "ROUNDS_BACKPRESSURE":
            return self._backpressure & _U32
        counted = self.counters.registers()
        if name in counted:
            return counted[name] & _U32
        return self.regs.read(offset)

    def write(self, offset: int, value: int) -> None:
        reg = self._by_offset.get(offset)
        if reg is None or reg.access != "rw":
            what = reg.name if reg else f"offset {offset:#x}"
            raise PermissionError(f"bus error (SLVERR): {what} is not a writable register")
        if reg.name == "CTRL" and value & _CLEAR:
            self._new_run()
            value &= ~_CLEAR
        self.regs.write(offset, value)

    # -- measurement replay and syndrome streams ------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        """A zeroed C-contiguous NumPy buffer (the twin needs no DMA-able memory)."""
        return np.zeros(shape, dtype=dtype)

    def send_round(self, buf: np.ndarray, start: int, nbytes: int, timeout_s: float) -> bool:
        """Offer one replay transfer: ``nbytes`` bytes of ``buf`` from byte ``start``
        (header beat, then the round's beats). False if not taken; the twin never
        waits (nothing else would drain it meanwhile), so ``timeout_s`` is unused."""
        data = buf.reshape(-1).view(np.uint8)[start : start + nbytes]
        ctrl = self.regs.read("CTRL")
        if not ctrl & _ENABLE:
            return False
        self._expire()
        if data.size <= 8:
            return True  # a header beat with tlast: the adapter drops the transfer
        full = len(self._fifo) >= self.fifo_packets
        if data[0] & HEADER_END_OF_STREAM:
            if full:
                return False  # the RTL holds tready low until the packet is queued
            self._emit(0, 0, FLAG_END_OF_STREAM, np.zeros(0, dtype=np.bool_))
            return True
        last = bool(data[0] & HEADER_LAST_ROUND)
        slot = self._shot % self.slots
        held = self._table.get(slot)
        if ctrl & _LOCKSTEP and (full or (held is not None and held.shot != self._shot)):
            return False
        shot, t = self._shot, self._round
        if full:
            self._backpressure += 1
            self._sticky |= 1 << STATUS_BITS["BACKPRESSURE"]
        else:
            flags = (FLAG_FIRST_ROUND if t == 0 else 0) | (FLAG_LAST_ROUND if last else 0)
            self._cur = self._emit(shot, t, flags, self._events(t, data[8:]))
            self._rounds_emitted += 1
        self._started = shot + 1
        if last:
            if self._cur is not None:
                self._insert(slot, shot, t + 1)
            self._shot, self._round, self._cur = shot + 1, 0, None
        else:
            self._round = t + 1
        return True

    def _events(self, t: int, body: np.ndarray) -> np.ndarray:
        """Round t's detection events from its measurement bytes (none past the program)."""
        program = self.program
        if t >= program.num_rounds:
            return np.zeros(0, dtype=np.bool_)
        lo, hi = int(program.meas_offsets[t]), int(program.meas_offsets[t + 1])
        bits = np.unpackbits(body, count=min(hi - lo, 8 * body.size), bitorder="little")
        self._record[0, lo:hi] = False
        self._record[0, lo : lo + bits.size] = bits
        return program.round_events(self._record, t)[0]

    def _emit(self, shot: int, t: int, flags: int, events: np.ndarray) -> tuple[int, int]:
        """Queue one syndrome packet; return its (seq, t_fpga)."""
        packet = np.zeros(syndrome_size(events.size), dtype=np.uint8)
        seq, t_fpga, u = self._seq, self.cycles(), np.uint64
        stream = u(self.regs.read("STREAM_ID"))
        payload = np.packbits(events, bitorder="little")
        write_syndrome(
            packet, stream, u(shot), u(t), u(seq), u(t_fpga), flags, payload, events.size
        )
        self._fifo.append(packet)
        self._seq += 1
        return seq, t_fpga

    def _insert(self, slot: int, shot: int, rounds: int) -> None:
        assert self._cur is not None
        if slot in self._table:  # paced mode: the older shot is evicted, as if timed out
            self._time_out(slot)
        seq, t_fpga = self._cur
        self._table[slot] = _Pending(shot, seq, rounds, t_fpga + self.regs.read("CORR_TIMEOUT"))

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
        flags, n_obs, stream, status, n_frame, shot, seq, t_fpga, _, _ = (int(x) for x in f)
        slot = shot % self.slots
        held = self._table.get(slot)
        pending = held is not None and held.shot == shot
        verdict, why = judge(
            reason,
            end_of_stream=bool(flags & FLAG_END_OF_STREAM),
            stream_ok=stream == self.regs.read("STREAM_ID"),
            started=shot < self._started,
            pending=pending,
            status=status,
            n_obs_ok=n_obs == self.num_observables,
            seq_ok=held is not None and held.seq == seq,
            n_frame_ok=held is not None and held.rounds == n_frame,
        )
        flips = 0
        if verdict == Verdict.DECODED:
            o = CORRECTION_HEADER_SIZE
            obs = np.unpackbits(packet[o : o + (n_obs + 7) // 8], count=n_obs, bitorder="little")
            flips = sum(1 << int(k) for k in np.flatnonzero(obs))
        self.counters.apply(
            verdict,
            why,
            latency_cycles=now - t_fpga,
            budget_cycles=self.regs.read("BUDGET"),
            flips=flips,
        )
        if verdict in ACCEPTED:
            del self._table[slot]
        return True

    def _time_out(self, slot: int) -> None:
        del self._table[slot]
        self.counters.shots_timed_out += 1
        self._sticky |= 1 << STATUS_BITS["DECODER_UNRESPONSIVE"]

    def _expire(self) -> None:
        if self._table:
            now = self.cycles()
            for slot in [s for s, p in self._table.items() if p.deadline < now]:
                self._time_out(slot)

    def dma_status(self) -> dict[str, dict[str, bool]]:
        """The twin has no DMA engines: every channel reads as running, idle, no error."""
        idle = 1 << DMASR_BITS["IDLE"]
        return {ch: decode_dmasr(idle) for ch in ("replay", "syndromes", "corrections")}

    def close(self) -> None:
        self._fifo.clear()

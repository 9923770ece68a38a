"""A random, reactive host for ``qhil_frontend``: the stimulus of the RTL-vs-model proof.

``ScenarioHost`` is a ``Stimulus`` that plays a whole run: it programs the
registers, streams noisy sampled shots of a circuit round by round (in paced and
lockstep phases, with random gaps), holds ``m_axis_syn_tready`` low at random, and
answers the syndrome packets it receives like a decoder would, and like a broken
one: valid DECODED corrections, INCOMPLETE and DECODER_ERROR ones, and corrupt
(bad CRC, magic, version, status, length, truncated, trailing bytes), duplicate,
unknown-shot, unknown-stream, wrong-seq and late ones, delivered out of order.
It reads registers over AXI-Lite throughout (mapped, unmapped, unaligned), writes
some (and some read-only ones), clears the counters once mid-run, and ends the
stream with END_OF_STREAM. Every choice comes from one seeded RNG, called in a
fixed order, so two copies with the same seed drive two front ends identically
as long as those front ends behave identically.

>>> import stim
>>> from qhil.fpga._detection import DetectorProgram
>>> c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=2)
>>> host = ScenarioHost(DetectorProgram.from_circuit(c), c.compile_sampler(seed=1).sample(4),
...                     seed=1)
>>> host.rounds_planned
12
"""

from __future__ import annotations

import heapq
import random
import zlib

import numpy as np

from qhil.bridge import (
    COR_N_FRAME_AT,
    COR_N_OBS_AT,
    COR_STATUS_AT,
    MAGIC_AT,
    VERSION_AT,
    CorrectionPacket,
    CorrectionStatus,
)
from qhil.fpga._detection import DetectorProgram
from qhil.fpga._regmap import REGISTERS
from qhil.fpga.rtl_model._frontend_ports import FrontendInputs, FrontendOutputs
from qhil.fpga.rtl_model._frontend_stimulus import AxiOp, Stimulus, SyndromeOut

__all__ = ["ScenarioHost"]

_CORRUPT = ("crc", "magic", "version", "status", "truncate", "trailing", "length_field")
_OFFSET = {r.name: r.offset for r in REGISTERS}
_CTRL = _OFFSET["CTRL"]
_READABLE = (*(r.offset for r in REGISTERS), 0x24, 0x88, 0xFC, 0x100, 0x0A, 0xFFC)
_LATENCY_REGS = tuple(_OFFSET[n] for n in ("LAT_LAST", "LAT_MAX", "BUDGET_MISSES", "STATUS"))


def _words(bits: np.ndarray, junk: int) -> list[int]:
    """A round's results as 64-bit beats, LSB first, junk in the unused bits of the last."""
    n = len(bits)
    value = int.from_bytes(np.packbits(bits, bitorder="little").tobytes(), "little")
    value |= junk >> n << n
    return [(value >> (64 * k)) & ((1 << 64) - 1) for k in range(max(1, (n + 63) // 64))]


class ScenarioHost(Stimulus):
    """One run: shots of ``record`` through the front end, corrections back.

    Args:
        program: the circuit's detector program (the ROM the front end holds).
        record: bool[shots, num_measurements], sampled measurement records.
        seed: seeds every random choice.
        stream_id: the STREAM_ID the host programs.
        corr_timeout: CORR_TIMEOUT in cycles (short, so that some shots time out).
    """

    def __init__(
        self,
        program: DetectorProgram,
        record: np.ndarray,
        *,
        seed: int,
        stream_id: int = 7,
        corr_timeout: int = 1500,
    ) -> None:
        self.rng = random.Random(seed)
        super().__init__(ready=self._ready, drain=64)
        self.program = program
        self.stream_id = stream_id
        self.corr_timeout = corr_timeout
        self.num_rounds = program.num_rounds
        self.shots = record.shape[0]
        self.rounds_planned = self.shots * self.num_rounds
        self._p_ready = 1.0
        self._ready_left = 0
        self._due: list[tuple[int, int, bytes]] = []  # corrections: (cycle, order, bytes)
        self._axi_due: list[tuple[int, int, AxiOp]] = []  # accesses: (cycle, order, op)
        self._at_round: list[tuple[int, AxiOp]] = []  # (rounds taken, op), in order
        self._order = 0
        self._seen: dict[int, dict[str, int]] = {}  # shot -> rounds mask, seq, t_fpga
        self._eos_seen = False
        self._final_queued = False
        # Shot 0 is a latency probe: its rounds go in alone, m_axis_syn is never held,
        # and its correction (DECODED, flipping observable 0) goes back at once, alone.
        self.probing = True
        self.probe_packets: list[tuple[int, int]] = []  # (n_bits, cycles)
        self.probe_frame_latency: int | None = None
        self.kinds: dict[str, int] = {}
        rng = self.rng
        for reg, value in (
            ("STREAM_ID", stream_id),
            ("BUDGET", rng.randint(40, 400)),
            ("CORR_TIMEOUT", corr_timeout),
            ("ROUND_PERIOD", rng.choice((0, 12, 30))),
        ):
            self.write(reg, value, cycle=0)
        lockstep = rng.random() < 0.5
        self.write("CTRL", 1 | lockstep << 1, cycle=0)
        # The other mode for the second half; a clear (keeping the mode) at a random round.
        half = self.rounds_planned // 2
        clear_at = rng.randrange(2 * self.num_rounds, self.rounds_planned)
        second = 1 | (not lockstep) << 1
        clear_mode = second if clear_at >= half else 1 | lockstep << 1
        self._at_round = sorted(
            [
                (half, AxiOp(0, True, _CTRL, second)),
                (clear_at, AxiOp(0, True, _CTRL, 4 | clear_mode)),
            ],
            key=lambda x: x[0],
        )
        for shot in range(self.shots):
            for t in range(self.num_rounds):
                lo, hi = int(program.meas_offsets[t]), int(program.meas_offsets[t + 1])
                words = _words(record[shot, lo:hi], rng.getrandbits(64 * 3))
                gaps = [rng.choice((0, 0, 0, 1, 3)) for _ in words]
                gaps[0] += 60 if shot == 0 else rng.choice((0, 0, 2, 5, 12, 40))
                self.add_round(words, last_round=t == self.num_rounds - 1, cycle=0, gaps=gaps)
        self.add_end_of_stream(cycle=0, gap=rng.randint(0, 20))
        span = self.rounds_planned * 14
        for _ in range(self.rounds_planned // 8):
            self._random_access(rng.randrange(span))

    # -- m_axis back-pressure -----------------------------------------------------------------

    def _ready(self, cycle: int) -> int:
        if self.probing:
            return 1
        if self._ready_left == 0:
            self._ready_left = self.rng.randint(8, 96)
            self._p_ready = self.rng.choice((1.0, 1.0, 1.0, 0.9, 0.6, 0.3, 0.0))
        self._ready_left -= 1
        return int(self.rng.random() < self._p_ready)

    def junk(self, width: int) -> int:
        return self.rng.getrandbits(width)

    # -- registers ----------------------------------------------------------------------------

    def _plan(self, cycle: int, op: AxiOp) -> None:
        heapq.heappush(self._axi_due, (cycle, self._order, op))
        self._order += 1

    def _random_access(self, cycle: int) -> None:
        rng = self.rng
        r = rng.random()
        if r < 0.85:
            self._plan(cycle, AxiOp(0, False, rng.choice(_READABLE)))
        elif r < 0.93:
            addr = rng.choice((_OFFSET["BUDGET"], _OFFSET["ID"], _OFFSET["CYCLE_LO"], 0x90, 0x0E))
            self._plan(cycle, AxiOp(0, True, addr, rng.randint(40, 400), rng.choice((0xF, 0x1))))
        else:
            self._plan(cycle, AxiOp(0, False, _OFFSET["CYCLE_LO"]))
            self._plan(cycle, AxiOp(0, False, _OFFSET["CYCLE_HI"]))

    # -- the decoder side ---------------------------------------------------------------------

    def on_packet(self, packet: SyndromeOut) -> None:
        if packet.flags & 0x80:  # END_OF_STREAM: answer every shot still owed, then ack
            for shot in sorted(self._seen):
                self._answer(shot)
            ack = CorrectionPacket(
                stream_id=self.stream_id, shot=0, seq=packet.seq, t_fpga=packet.t_fpga,
                obs=[], flags=0x80,
            ).encode()  # fmt: skip
            self._schedule(ack, self.rng.randint(300, 600))
            self._eos_seen = True
            return
        shot = packet.shot
        if self.probing and shot == 0:
            self.probe_packets.append((packet.n_bits, packet.cycle - packet.t_fpga))
            if packet.flags & 2:
                obs = [1]
                probe = CorrectionPacket(
                    stream_id=self.stream_id, shot=0, seq=packet.seq, t_fpga=packet.t_fpga,
                    obs=obs,
                ).encode()  # fmt: skip
                self._schedule(probe, 0)
                self.kinds["probe"] = 1
            return
        info = self._seen.get(shot)
        if info is None or packet.round == 0:
            info = self._seen[shot] = {"mask": 0, "seq": 0, "t": 0}
        info["mask"] |= 1 << packet.round
        info["seq"], info["t"] = packet.seq, packet.t_fpga
        for older in [s for s in self._seen if s < shot]:  # its last round never came
            self._answer(older)
        if packet.flags & 2:
            self._answer(shot)

    def _answer(self, shot: int) -> None:
        info = self._seen.pop(shot)
        rng = self.rng
        complete = info["mask"] == (1 << self.num_rounds) - 1
        kind = rng.choices(
            ("decoded", "incomplete_len", "error", "obs_len", "seq", "stream", "corrupt", "none"),
            weights=(70, 3, 5, 3, 4, 3, 8, 4),
        )[0]
        if kind == "decoded" and not complete:
            kind = "incomplete"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if kind == "none":
            return
        status = CorrectionStatus.DECODED
        frame: list[int] = []
        obs = [rng.getrandbits(1)]
        if kind in ("incomplete", "incomplete_len"):
            status = CorrectionStatus.INCOMPLETE
            n = self.num_rounds + (rng.choice((-1, 1)) if kind == "incomplete_len" else 0)
            frame = [info["mask"] >> r & 1 for r in range(max(0, n))]
        elif kind == "error":
            status, obs = CorrectionStatus.DECODER_ERROR, []
        elif kind == "obs_len":
            obs = [1, 0]
        packet = CorrectionPacket(
            stream_id=self.stream_id + (kind == "stream"),
            shot=shot,
            seq=info["seq"] + (rng.choice((-1, 1, 2)) if kind == "seq" else 0),
            t_fpga=info["t"],
            obs=obs,
            status=status,
            frame=frame,
            t_host_rx=rng.getrandbits(64),
            t_host_tx=rng.getrandbits(64),
        ).encode()
        delay = rng.choice((0, 20, 60, 150, 300)) + rng.randint(0, 40)
        if kind == "corrupt":  # a corrupt copy, then the real one a little later
            self._schedule(self._corrupt(packet), delay)
            delay += 100
        self._schedule(packet, delay)
        r = rng.random()
        if r < 0.06:  # the same again: a duplicate (or accepted, if the first was not)
            self._schedule(packet, delay + rng.randint(1, 400))
        elif r < 0.10:  # a shot the front end never started
            p = CorrectionPacket.decode(np.frombuffer(packet, np.uint8))
            self._schedule(
                CorrectionPacket(
                    stream_id=p.stream_id,
                    shot=shot + rng.choice((10**6, 2**63)),
                    seq=p.seq,
                    t_fpga=p.t_fpga,
                    obs=p.obs,
                ).encode(),
                delay + rng.randint(0, 50),
            )
        elif r < 0.12:  # very late: after CORR_TIMEOUT
            self._schedule(packet, delay + 2500)
        if rng.random() < 0.3:
            self._plan(self.cycle + rng.randint(0, 100), AxiOp(0, False, rng.choice(_LATENCY_REGS)))

    def _corrupt(self, packet: bytes) -> bytes:
        rng = self.rng
        data = bytearray(packet)
        how = rng.choice(_CORRUPT)
        self.kinds[f"corrupt_{how}"] = self.kinds.get(f"corrupt_{how}", 0) + 1
        if how == "crc":
            i = rng.randrange(len(data) * 8)
            data[i // 8] ^= 1 << (i % 8)
        elif how == "magic":
            data[MAGIC_AT + rng.randrange(4)] ^= rng.randint(1, 255)
        elif how == "version":
            data[VERSION_AT] = rng.choice((0, 2, 255))
        elif how == "truncate":
            del data[rng.randint(1, len(data) - 1) :]
            return bytes(data)
        elif how == "trailing":
            return bytes(data) + rng.randbytes(rng.randint(1, 6))
        elif how == "status":
            data[COR_STATUS_AT] = rng.randint(3, 255)
        else:
            data[rng.choice((COR_N_OBS_AT, COR_N_FRAME_AT))] ^= 1 << rng.randrange(3)
        if how != "crc":
            data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
        return bytes(data)

    def _schedule(self, packet: bytes, delay: int) -> None:
        heapq.heappush(self._due, (self.cycle + delay, self._order, packet))
        self._order += 1

    def drive(self, out: FrontendOutputs) -> FrontendInputs:
        k = self.cycle
        if self.probing and out.frame_update:
            self.probing = False
            self.probe_frame_latency = k - 1 - self.trace.corrections_in[0]
        # Corrections enter the byte stream by due time (so out of order), whole packets.
        if not self.cor and self._due and self._due[0][0] <= k:
            packet = heapq.heappop(self._due)[2]
            self.add_correction(packet, gaps=[self.rng.choice((0, 0, 0, 0, 1)) for _ in packet])
        taken = len(self.trace.rounds_in)
        while self._at_round and self._at_round[0][0] <= taken:
            self._plan(k, self._at_round.pop(0)[1])
        if self._eos_seen and not self._due and not self.cor and not self._final_queued:
            self._final_queued = True  # final snapshot, once the timeouts have fired
            for reg in REGISTERS:
                self._plan(k + self.corr_timeout + 100, AxiOp(0, False, reg.offset))
        if not self.axi and self._op is None and self._axi_due and self._axi_due[0][0] <= k:
            self.axi.append(heapq.heappop(self._axi_due)[2])
        return super().drive(out)

    def busy(self) -> bool:
        return (
            super().busy()
            or bool(self._due or self._axi_due or self._at_round)
            or not self._final_queued
        )

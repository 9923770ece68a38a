"""Timed stimuli for ``qhil_frontend`` and a record of what it put out.

A ``Stimulus`` turns queued intentions into input port values, cycle by cycle,
with AXI handshakes: a measurement beat is offered from its cycle on until the
front end takes it, correction bytes go in at their cycle or later (one a cycle,
in order), ``m_axis_syn_tready`` follows a per-cycle pattern, and AXI-Lite reads
and writes are issued one at a time. ``drive`` sees the outputs of the cycle
(they change only on clock edges), records every handshake that completes on the
coming edge, and returns the inputs. The same object therefore drives the RTL
under cocotb and ``FrontendModel.run`` identically. Subclasses react to what
comes out through ``on_packet``.

>>> s = Stimulus()
>>> s.add_round([0b1011], last_round=True)
>>> s.meas[0].last, s.meas[0].user
(1, 1)
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Sequence

from qhil.bridge import FLAGS_AT, SYN_N_BITS_AT, SYN_T_FPGA_AT, SYNDROME_HEADER_SIZE
from qhil.fpga._regmap import REGISTERS
from qhil.fpga.rtl_model._frontend_ports import FrontendInputs, FrontendOutputs

__all__ = ["AxiOp", "FrontendTrace", "MeasBeat", "Stimulus", "SyndromeOut", "header_field"]

_OFFSET = {r.name: r.offset for r in REGISTERS}
USER_LAST_ROUND = 1
USER_END_OF_STREAM = 2


@dataclasses.dataclass(frozen=True, slots=True)
class MeasBeat:
    """One 64-bit measurement beat, offered from ``cycle`` on, ``gap`` cycles or more
    after the previous beat was taken."""

    cycle: int
    data: int
    last: int
    user: int
    gap: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class AxiOp:
    """An AXI-Lite access issued at ``cycle`` or once the previous one has completed."""

    cycle: int
    write: bool
    addr: int
    data: int = 0
    strb: int = 0xF


@dataclasses.dataclass(frozen=True, slots=True)
class SyndromeOut:
    """A syndrome packet that left on ``m_axis_syn``; ``cycle``: its last beat's edge."""

    cycle: int
    data: bytes

    @property
    def t_fpga(self) -> int:
        return int.from_bytes(self.data[SYN_T_FPGA_AT : SYN_T_FPGA_AT + 8], "little")

    @property
    def n_bits(self) -> int:
        return int.from_bytes(self.data[SYN_N_BITS_AT : SYN_N_BITS_AT + 2], "little")

    @property
    def flags(self) -> int:
        return self.data[FLAGS_AT]

    @property
    def shot(self) -> int:
        return int.from_bytes(self.data[16:24], "little")

    @property
    def round(self) -> int:
        return int.from_bytes(self.data[12:16], "little")

    @property
    def seq(self) -> int:
        return int.from_bytes(self.data[24:32], "little")


@dataclasses.dataclass
class FrontendTrace:
    """What went in and came out, with the edge (cycle) of each handshake.

    Attributes:
        packets: syndrome packets, in order.
        rounds_in: edge of each round's (and END_OF_STREAM's) last measurement beat.
        corrections_in: edge of each correction packet's last byte.
        frames: (cycle, logical_frame) for every cycle frame_update was high; the
            frame changed on the edge before that cycle.
        reads: (edge the read was accepted, address, rdata, rresp).
        writes: (edge the response came, address, bresp).
        cycles: cycles driven.
    """

    packets: list[SyndromeOut] = dataclasses.field(default_factory=list)
    rounds_in: list[int] = dataclasses.field(default_factory=list)
    corrections_in: list[int] = dataclasses.field(default_factory=list)
    frames: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    reads: list[tuple[int, int, int, int]] = dataclasses.field(default_factory=list)
    writes: list[tuple[int, int, int]] = dataclasses.field(default_factory=list)
    cycles: int = 0

    def packet_latencies(self) -> list[tuple[int, int]]:
        """(n_bits, cycles from the round's last measurement beat to its packet's last beat).

        ``t_fpga`` is the cycle count on the edge that took the round's last beat.
        """
        return [(p.n_bits, p.cycle - p.t_fpga) for p in self.packets if not p.flags & 0x80]


class Stimulus:
    """Queued inputs for the front end, played one cycle per ``drive`` call.

    Args:
        ready: ``m_axis_syn_tready`` for a cycle (called once per cycle, in order);
            always 1 by default.
        drain: cycles to keep driving after the last queued input has gone in.
    """

    def __init__(self, *, ready: Callable[[int], int] | None = None, drain: int = 64) -> None:
        self.cycle = 0
        self.meas: deque[MeasBeat] = deque()
        self.cor: deque[tuple[int, int, int]] = deque()  # (cycle, byte, last)
        self.axi: deque[AxiOp] = deque()
        self.ready = ready or (lambda cycle: 1)
        self.drain = drain
        self.trace = FrontendTrace()
        self._idle_since = 0
        self._beat_taken = -1_000_000  # edge that took the last beat
        self._op: AxiOp | None = None
        self._aw = self._w = self._ar = False
        self._beats: list[tuple[int, int]] = []  # (data, keep) of the packet leaving

    # -- queueing ------------------------------------------------------------------------------

    def add_round(
        self,
        words: Sequence[int],
        *,
        last_round: bool = False,
        cycle: int | None = None,
        gaps: Sequence[int] = (),
    ) -> None:
        """A round's 64-bit beats, offered from ``cycle`` (default: now) on.

        ``gaps[k]``: idle cycles between taking beat k-1 (of this or the
        previous round) and offering beat k.
        """
        at = self.cycle if cycle is None else cycle
        for k, w in enumerate(words):
            last = k == len(words) - 1
            user = USER_LAST_ROUND if (last and last_round) else 0
            self.meas.append(MeasBeat(at, w, int(last), user, gaps[k] if k < len(gaps) else 0))

    def add_end_of_stream(self, *, cycle: int | None = None, gap: int = 0) -> None:
        """The END_OF_STREAM marker beat (tuser[1]), after every round queued before it."""
        at = self.cycle if cycle is None else cycle
        self.meas.append(MeasBeat(at, 0, 1, USER_END_OF_STREAM, gap))

    def add_correction(
        self, data: bytes, *, cycle: int | None = None, gaps: Sequence[int] = ()
    ) -> None:
        """A correction packet's bytes; its last byte carries tlast."""
        at = self.cycle if cycle is None else cycle
        for k, b in enumerate(data):
            at += gaps[k] if k < len(gaps) else 0
            self.cor.append((at, b, int(k == len(data) - 1)))

    def read(self, reg: str | int, *, cycle: int | None = None) -> None:
        addr = _OFFSET[reg] if isinstance(reg, str) else reg
        self.axi.append(AxiOp(self.cycle if cycle is None else cycle, False, addr))

    def write(
        self, reg: str | int, value: int, *, strb: int = 0xF, cycle: int | None = None
    ) -> None:
        addr = _OFFSET[reg] if isinstance(reg, str) else reg
        self.axi.append(AxiOp(self.cycle if cycle is None else cycle, True, addr, value, strb))

    # -- playing ---------------------------------------------------------------------------------

    def busy(self) -> bool:
        """Inputs still queued or an access still in flight."""
        return bool(self.meas or self.cor or self.axi or self._op)

    def done(self) -> bool:
        return not self.busy() and self.cycle - self._idle_since >= self.drain

    def progress(self) -> str:
        t = self.trace
        return (
            f"cycle {self.cycle}: {len(self.meas)} beats, {len(self.cor)} correction bytes and "
            f"{len(self.axi) + bool(self._op)} AXI accesses queued; {len(t.packets)} packets out"
        )

    def on_packet(self, packet: SyndromeOut) -> None:
        """Called when a syndrome packet's last beat leaves; subclasses respond to it."""

    def junk(self, width: int) -> int:
        """Value for a data line while its valid is low (0 here; subclasses randomize)."""
        return 0

    def drive(self, out: FrontendOutputs) -> FrontendInputs:
        """This cycle's inputs, given this cycle's outputs; records the coming edge's handshakes."""
        k = self.cycle
        i = FrontendInputs()
        t = self.trace
        was_busy = self.busy()
        # measurements
        b = self.meas[0] if self.meas else None
        if b is not None and b.cycle <= k and self._beat_taken + b.gap < k:
            i.s_axis_meas_tvalid, i.s_axis_meas_tdata = 1, b.data
            i.s_axis_meas_tlast, i.s_axis_meas_tuser = b.last, b.user
            if out.s_axis_meas_tready:
                self.meas.popleft()
                self._beat_taken = k
                if b.last:
                    t.rounds_in.append(k)
        else:
            i.s_axis_meas_tdata = self.junk(64)
            i.s_axis_meas_tlast, i.s_axis_meas_tuser = self.junk(1), self.junk(2)
        # syndrome packets
        i.m_axis_syn_tready = self.ready(k)
        if out.m_axis_syn_tvalid and i.m_axis_syn_tready:
            self._beats.append((out.m_axis_syn_tdata, out.m_axis_syn_tkeep))
            if out.m_axis_syn_tlast:
                data = b"".join(
                    d.to_bytes(8, "little")[: bin(keep).count("1")] for d, keep in self._beats
                )
                self._beats.clear()
                packet = SyndromeOut(k, data)
                t.packets.append(packet)
                self.on_packet(packet)
        # corrections
        if self.cor and self.cor[0][0] <= k:
            _, byte, last = self.cor[0]
            i.s_axis_cor_tvalid, i.s_axis_cor_tdata, i.s_axis_cor_tlast = 1, byte, last
            if out.s_axis_cor_tready:
                self.cor.popleft()
                if last:
                    t.corrections_in.append(k)
        else:
            i.s_axis_cor_tdata, i.s_axis_cor_tlast = self.junk(8), self.junk(1)
        if out.frame_update:
            t.frames.append((k, out.logical_frame))
        self._drive_axi(i, out)
        if was_busy or self.busy():
            self._idle_since = k + 1
        self.cycle = t.cycles = k + 1
        return i

    def _drive_axi(self, i: FrontendInputs, out: FrontendOutputs) -> None:
        k = self.cycle
        i.s_axi_bready = i.s_axi_rready = 1
        op = self._op
        if op is not None and op.write and out.s_axi_bvalid:
            self.trace.writes.append((k, op.addr, out.s_axi_bresp))
            op = self._op = None
        if op is not None and not op.write and out.s_axi_rvalid:
            self.trace.reads.append((k, op.addr, out.s_axi_rdata, out.s_axi_rresp))
            op = self._op = None
        if op is None and self.axi and self.axi[0].cycle <= k:
            op = self._op = self.axi.popleft()
            self._aw, self._w, self._ar = op.write, op.write, not op.write
        if op is None:
            return
        if self._aw:
            i.s_axi_awvalid, i.s_axi_awaddr = 1, op.addr
            self._aw = not out.s_axi_awready
        if self._w:
            i.s_axi_wvalid, i.s_axi_wdata, i.s_axi_wstrb = 1, op.data, op.strb
            self._w = not out.s_axi_wready
        if self._ar:
            i.s_axi_arvalid, i.s_axi_araddr = 1, op.addr
            self._ar = not out.s_axi_arready


def header_field(offset: int, n_bits: int) -> str:
    """Name of the syndrome-packet field holding byte ``offset`` (for mismatch reports)."""
    fields = ((0, 4, "magic"), (4, 1, "version"), (5, 1, "flags"), (6, 2, "n_bits"),
              (8, 4, "stream_id"), (12, 4, "round"), (16, 8, "shot"), (24, 8, "seq"),
              (32, 8, "t_fpga"))  # fmt: skip
    for start, size, name in fields:
        if start <= offset < start + size:
            return f"{name}[{offset - start}]"
    end = SYNDROME_HEADER_SIZE + (n_bits + 7) // 8
    if offset < end:
        return f"payload[{offset - SYNDROME_HEADER_SIZE}]"
    return f"crc32[{offset - end}]" if offset < end + 4 else "past the end"

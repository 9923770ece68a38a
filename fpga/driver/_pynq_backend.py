"""The board backend behind ``FrontEnd``: a PYNQ ``Overlay``, MMIO registers and two AXI DMAs.

pynq is imported here, and this module only when a board is used, so qhil
imports without it (pynq pins numpy<2; see docs/board.md).

The overlay is the block design of ``fpga/vivado/``:

- ``qhil_frontend`` (any name whose IP type or name is ``qhil_frontend``; pick
  one with ``ip_name=`` if several): its AXI-Lite registers through
  ``pynq.MMIO`` at the address the ``.hwh`` gives.
- ``axi_dma_replay`` (MM2S only): measurement rounds into ``s_axis_meas``, one
  simple-mode transfer per round, so the DMA's ``tlast`` ends each round.
- ``axi_dma_link``: S2MM takes ``m_axis_syn`` (one syndrome packet per
  transfer, ended by the IP's ``tlast``; ``transferred`` is its length); MM2S
  feeds ``s_axis_cor`` through the 64->8 width converter, one correction
  packet per transfer.

Buffers come from ``pynq.allocate``: physically contiguous and page aligned,
so every transfer starts 8-byte aligned as the 64-bit DMAs need without a
realignment engine. PYNQ's DMA driver flushes (MM2S) and invalidates (S2MM)
the cache around each transfer.

Waits poll the channel's ``idle`` flag up to a deadline; PYNQ's own
``wait()`` has no timeout and is only called once the channel is idle, to
finish the transfer (it reads the received length). While it waits for
anything, the backend collects finished syndrome transfers into a host-side
queue and re-arms the S2MM at once, so the IP's output does not stall while
Python is busy sending (the twin's ``fifo_packets`` plays that queue's part).
A send counts as taken
once its transfer has started, and the next send on that channel first
waits for it to finish, so a timeout never leaves a round half-sent and
``rounds_sent`` stays exact; keep a replay buffer unchanged while it is
sent.
"""

from __future__ import annotations

import collections
import importlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from qhil.fpga.driver._driver_regs import RegisterBlock, decode_dmasr, dma_registers

__all__ = ["CORRECTION_BYTES", "LINK_DMA", "REPLAY_DMA", "PynqBackend"]

LINK_DMA = "axi_dma_link"
REPLAY_DMA = "axi_dma_replay"
CORRECTION_BYTES = 4096  # the largest correction packet the driver sends (any wire-v1 size fits)
RX_QUEUE = 4096  # syndrome packets held in host memory before the IP is left back-pressured


def _ip_type(entry: dict[str, Any]) -> str:
    """The IP's name inside its VLNV ('vendor:library:name:version')."""
    parts = str(entry.get("type", "")).split(":")
    return parts[2] if len(parts) == 4 else ""


def _find_frontend(ip_dict: dict[str, dict[str, Any]], ip_name: str | None) -> str:
    if ip_name is not None:
        if ip_name not in ip_dict:
            raise KeyError(f"the overlay has no IP {ip_name!r}; its IPs: {', '.join(ip_dict)}")
        return ip_name
    found = [n for n, e in ip_dict.items() if "qhil_frontend" in (_ip_type(e), n.split("/")[-1])]
    found = found or [n for n, e in ip_dict.items() if n.split("/")[-1].startswith("qhil_frontend")]
    if len(found) != 1:
        what = "no qhil_frontend IP" if not found else f"{len(found)} qhil_frontend IPs"
        raise KeyError(
            f"the overlay has {what}; its IPs: {', '.join(ip_dict) or 'none'}. Pass ip_name= "
            "to choose one, or load a bitstream built by fpga/vivado/build.tcl"
        )
    return found[0]


class PynqBackend:
    """The ``qhil_frontend`` IP on a board, through PYNQ. Build with :meth:`open`."""

    target = "board"

    def __init__(
        self,
        pynq: Any,
        overlay: Any,
        *,
        frontend: str,
        board: str,
        bitstream: Path,
        syndrome_bytes: int,
    ) -> None:
        self._pynq = pynq
        self.overlay = overlay
        self.description = f"board {board}, bitstream {bitstream}"
        ip = overlay.ip_dict[frontend]
        self.mmio = pynq.MMIO(int(ip["phys_addr"]), int(ip["addr_range"]))
        dmas = [n for n, e in overlay.ip_dict.items() if _ip_type(e) == "axi_dma"]
        for name in (LINK_DMA, REPLAY_DMA):
            if name not in dmas:
                raise KeyError(
                    f"the overlay has no AXI DMA named {name!r}; its DMAs: "
                    f"{', '.join(dmas) or 'none'}. The driver expects the block design of "
                    "fpga/vivado/bd.tcl"
                )
        self.link = getattr(overlay, LINK_DMA)
        self.replay = getattr(overlay, REPLAY_DMA)
        # uint8[syndrome_bytes rounded up to whole 64-bit beats]: one syndrome packet.
        self._rx_buf = pynq.allocate(shape=(-(-syndrome_bytes // 8) * 8,), dtype=np.uint8)
        # uint8[CORRECTION_BYTES]: one correction packet, copied in before each transfer.
        self._tx_buf = pynq.allocate(shape=(CORRECTION_BYTES,), dtype=np.uint8)
        self._rx_armed = False
        self._rx_queue: collections.deque[np.ndarray] = collections.deque()
        self._used: set[int] = set()  # ids of the channels that have started a transfer
        self._buffers: list[Any] = [self._rx_buf, self._tx_buf]

    @classmethod
    def open(
        cls,
        bitstream: Path,
        *,
        board: str,
        ip_name: str | None,
        syndrome_bytes: int,
        download: bool = True,
    ) -> PynqBackend:
        """Load ``bitstream`` (``download=False`` attaches to the one already loaded)."""
        pynq = importlib.import_module("pynq")
        overlay = pynq.Overlay(str(bitstream), download=download)
        frontend = _find_frontend(overlay.ip_dict, ip_name)
        return cls(
            pynq,
            overlay,
            frontend=frontend,
            board=board,
            bitstream=bitstream,
            syndrome_bytes=syndrome_bytes,
        )

    # -- registers -------------------------------------------------------------------------

    def read(self, offset: int) -> int:
        return int(self.mmio.read(offset))

    def write(self, offset: int, value: int) -> None:
        self.mmio.write(offset, value)

    def dma_registers(self) -> dict[str, RegisterBlock]:
        return {
            LINK_DMA: dma_registers(self.link.mmio, ip=LINK_DMA),
            REPLAY_DMA: dma_registers(self.replay.mmio, ip=REPLAY_DMA),
        }

    def dma_status(self) -> dict[str, dict[str, bool]]:
        regs = self.dma_registers()
        return {
            "replay": decode_dmasr(regs[REPLAY_DMA]["MM2S_DMASR"]),
            "syndromes": decode_dmasr(regs[LINK_DMA]["S2MM_DMASR"]),
            "corrections": decode_dmasr(regs[LINK_DMA]["MM2S_DMASR"]),
        }

    # -- streams ---------------------------------------------------------------------------

    def allocate(self, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        buf = self._pynq.allocate(shape=shape, dtype=dtype)
        self._buffers.append(buf)
        return buf  # type: ignore[no-any-return]

    def _service_rx(self) -> None:
        """Collect finished syndrome transfers into the queue and re-arm the S2MM, so
        the IP's output never waits on Python (until RX_QUEUE packets are unread)."""
        channel = self.link.recvchannel
        while True:
            if self._rx_armed:
                if not channel.idle:
                    return
                channel.wait()  # idle already: finishes the transfer and reads its length
                self._rx_queue.append(self._rx_buf[: int(channel.transferred)].copy())
                self._rx_armed = False
            if len(self._rx_queue) >= RX_QUEUE:
                return
            channel.transfer(self._rx_buf)
            self._rx_armed = True
            self._used.add(id(channel))

    def _wait_idle(self, channel: Any, timeout_s: float) -> bool:
        """Poll ``channel.idle`` (servicing the syndrome channel meanwhile) until it is
        set or ``timeout_s`` passes (0 = look once)."""
        deadline = time.perf_counter() + timeout_s
        while not channel.idle:
            self._service_rx()
            if time.perf_counter() >= deadline:
                return False
        return True

    def _ready(self, channel: Any, timeout_s: float) -> bool:
        """True once ``channel`` can take a transfer: unused so far, or its last one done."""
        return id(channel) not in self._used or self._wait_idle(channel, timeout_s)

    def _start(self, channel: Any, buf: Any, start: int, nbytes: int) -> bool:
        channel.transfer(buf, start=start, nbytes=nbytes)
        self._used.add(id(channel))
        return True

    def send_round(self, buf: np.ndarray, start: int, nbytes: int, timeout_s: float) -> bool:
        """Start the round's transfer once the previous one is done. A started transfer
        counts as taken: the DMA delivers it when the IP takes it, and the next call
        waits for that."""
        channel = self.replay.sendchannel
        return self._ready(channel, timeout_s) and self._start(channel, buf, start, nbytes)

    def send_packet(self, packet: np.ndarray, timeout_s: float) -> bool:
        n = packet.shape[0]
        if n > CORRECTION_BYTES:
            raise ValueError(
                f"a {n}-byte correction packet exceeds the driver's {CORRECTION_BYTES}-byte "
                "buffer; wire-v1 corrections of a circuit with under 30,000 rounds fit"
            )
        channel = self.link.sendchannel
        if not self._ready(channel, timeout_s):
            return False
        self._tx_buf[:n] = packet  # only once the previous packet has left the buffer
        return self._start(channel, self._tx_buf, 0, n)

    def recv_packet(self, out: np.ndarray, timeout_s: float) -> int:
        """Copy the oldest syndrome packet into ``out``; wait up to ``timeout_s`` for one.
        Returns its length, or 0 if none came."""
        deadline = time.perf_counter() + timeout_s
        while True:
            self._service_rx()
            if self._rx_queue:
                packet = self._rx_queue.popleft()
                out[: packet.shape[0]] = packet
                return int(packet.shape[0])
            if time.perf_counter() >= deadline:
                return 0

    def close(self) -> None:
        """Halt the channels this backend used (an armed receive must not write into a
        freed buffer), then free its buffers. Idempotent."""
        for channel in (self.link.recvchannel, self.link.sendchannel, self.replay.sendchannel):
            if id(channel) in self._used:
                channel.stop()
        self._used.clear()
        self._rx_armed = False
        self._rx_queue.clear()
        for buf in self._buffers:
            buf.freebuffer()
        self._buffers.clear()

"""``relay``: what a board runs to close the loop with a decoder on another machine.

The board's Python process sits between the ``qhil_frontend`` IP (through
``FrontEnd``) and a bridge to the GPU host, where ``qhil serve`` decodes::

    replay buffer -> FrontEnd -> syndrome packets -> bridge tx --(zmq tcp)--> qhil serve
                     FrontEnd <- corrections      <- bridge rx <--------------'

Packets are passed on unchanged: the IP stamps and checks them, the service
decodes them. The relay sends one shot at a time, keeping at most
``max_in_flight`` shots unresolved (the IP's CORR_ACCEPTED + SHOTS_TIMED_OUT
say which are resolved), then asks the IP for its end-of-stream packet and
waits for the service's acknowledgement (STATUS.DONE). Off-board the same
function runs on the twin, which is how it is tested.

Latency note: on a board this loop is Python on the ARM cores, between the
DMAs and the network; it is for hardware-in-the-loop runs with replayed
measurements, not for the microsecond budget (docs/board.md).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from qhil.bridge import (
    FLAG_END_OF_STREAM,
    FLAGS_AT,
    PacketReceiver,
    PacketSender,
    TransportClosed,
    packet_buffers,
)
from qhil.fpga.driver._driver import FrontEnd, FrontEndTimeout, ReplayBuffer

__all__ = ["RelayStats", "relay"]


@dataclasses.dataclass(frozen=True)
class RelayStats:
    """What one ``relay`` call moved.

    Attributes:
        shots_sent: shots whose rounds all went into the front end.
        packets_up: syndrome packets passed to the bridge (end of stream included).
        packets_down: correction packets passed to the front end (its ack included).
        end_of_stream_acked: the service acknowledged the end of the stream.
        wall_s: seconds the relay ran.
    """

    shots_sent: int
    packets_up: int
    packets_down: int
    end_of_stream_acked: bool
    wall_s: float

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name != "end_of_stream_acked" and getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0; got {getattr(self, f.name)}")


class _Pump:
    """Moves whatever is ready between the front end and the bridge."""

    def __init__(self, fe: FrontEnd, tx: PacketSender, rx: PacketReceiver, stall_s: float):
        if tx.max_packet < fe.max_packet:
            raise ValueError(
                f"the bridge carries packets up to {tx.max_packet} bytes but this circuit's "
                f"syndrome packets take up to {fe.max_packet}; open it with a larger slot_size"
            )
        self.fe, self.tx, self.rx, self.stall_s = fe, tx, rx, stall_s
        self.up, self.up_len = packet_buffers(64, fe.max_packet)
        self.down, self.down_len = packet_buffers(64, rx.max_packet)
        self.packets_up = self.packets_down = 0
        self.eos_acked = False

    def __call__(self, wait_s: float) -> int:
        """Forward what is ready, waiting up to ``wait_s`` for corrections; return the count."""
        n = self.fe.recv_syndromes(self.up, self.up_len, timeout_s=0.0)
        for i in range(n):
            if not self.tx.send(self.up[i, : self.up_len[i]], timeout_s=self.stall_s):
                raise RuntimeError(
                    f"the bridge to the decoder stayed full for {self.stall_s} s; is `qhil serve` "
                    "still taking packets?"
                )
        self.packets_up += n
        try:
            m = self.rx.recv_into(self.down, self.down_len, timeout_s=wait_s)
        except TransportClosed:
            raise RuntimeError(
                "the decoder closed the bridge before the end of the stream"
            ) from None
        for i in range(m):
            packet = self.down[i, : self.down_len[i]]
            self.eos_acked |= packet.size > FLAGS_AT and bool(packet[FLAGS_AT] & FLAG_END_OF_STREAM)
            self.fe.send_correction(packet)
        self.packets_down += m
        return n + m


def relay(
    fe: FrontEnd,
    replay: ReplayBuffer,
    tx: PacketSender,
    rx: PacketReceiver,
    *,
    max_in_flight: int = 1,
    stall_timeout_s: float = 2.0,
    should_stop: Callable[[], bool] | None = None,
) -> RelayStats:
    """Stream ``replay`` through ``fe`` and the bridge (``tx`` up, ``rx`` down) to a decoder.

    Starts the front end (CTRL.ENABLE). Raises RuntimeError, naming the side,
    when nothing moves for ``stall_timeout_s`` (a dead decoder or bridge).
    ``should_stop`` is polled between shots; True ends the stream early (with
    its end-of-stream packet).
    """
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1; got {max_in_flight}")
    t0 = time.monotonic()
    pump = _Pump(fe, tx, rx, stall_timeout_s)
    fe.start()

    def resolved() -> int:
        return fe.regs["CORR_ACCEPTED"] + fe.regs["SHOTS_TIMED_OUT"]

    def check(last_move: float, what: str) -> None:
        if time.monotonic() - last_move > stall_timeout_s:
            raise RuntimeError(f"nothing moved for {stall_timeout_s} s while {what}")

    def wait_until(done: Callable[[], bool], what: str) -> None:
        last_move = time.monotonic()
        while not done():
            if pump(1e-3):
                last_move = time.monotonic()
            check(last_move, what)

    base = resolved()
    sent = 0
    for shot in range(replay.shots):
        if should_stop is not None and should_stop():
            break
        start, stop = replay.shot_rounds(shot)
        last_move = time.monotonic()
        while start < stop:
            try:
                fe.send_measurements(replay, start_round=start, stop_round=stop, timeout_s=1e-3)
                start = stop
            except FrontEndTimeout as ex:  # pushed back: forward what is waiting, go on
                if ex.rounds_sent > start or pump(1e-3):
                    last_move = time.monotonic()
                start = ex.rounds_sent
                check(last_move, f"sending shot {shot} (the front end keeps pushing back)")
        sent += 1

        def room(limit: int = base + sent - max_in_flight) -> bool:
            return resolved() > limit  # at most max_in_flight - 1 shots still unresolved

        wait_until(
            room,
            f"waiting for shot {shot}'s correction (is `qhil serve` running, on the same circuit?)",
        )
    wait_until(lambda: resolved() - base >= sent, "waiting for the last corrections")
    last_move = time.monotonic()
    while True:
        try:
            fe.send_end_of_stream(timeout_s=1e-3)
            break
        except FrontEndTimeout:
            if pump(1e-3):
                last_move = time.monotonic()
            check(last_move, "sending the end of stream")
    wait_until(lambda: pump.eos_acked, "waiting for the decoder to acknowledge the end")
    return RelayStats(
        shots_sent=sent,
        packets_up=pump.packets_up,
        packets_down=pump.packets_down,
        end_of_stream_acked=pump.eos_acked,
        wall_s=time.monotonic() - t0,
    )

"""The shm ring's own round trip, with compiled code at both ends: the transport without
the Python around it.

``qhil bench bridge`` times each transport from Python, as the loop uses it. Here both
ends are compiled loops over the ring's kernels (``ring_pop``, ``ring_room``,
``ring_publish``) and the ping side stamps with ``clock_ns()``, so the gap between this
row and the compiled ping-pong floor is the ring itself (its copy, length word and
counters), and the gap to the Python row is the language.
"""

from __future__ import annotations

import multiprocessing

import numpy as np

from qhil.bridge import (
    BridgeSpec,
    RingReceiver,
    RingSender,
    clock_ns,
    njit_cached,
    open_bridge,
    packet_buffers,
    ring_pop,
    ring_publish,
    ring_room,
)

__all__ = ["compiled_ring_round_trips"]

_SPINS = 1 << 20


@njit_cached(nogil=True)
def _send(ctrl, slots, local, packet) -> bool:  # type: ignore[no-untyped-def]
    """Copy and publish ``packet``; False if the ring stayed full or was closed."""
    n_slots = slots.shape[0]
    while True:
        r = ring_room(ctrl, n_slots, local, _SPINS)
        if r < 0:
            return False
        if r == 1:
            break
    n = packet.shape[0]
    slots[local[0] & (n_slots - 1), 4 : 4 + n] = packet
    ring_publish(ctrl, slots, local, n)
    return True


@njit_cached(nogil=True)
def _echo(rx_ctrl, rx_slots, rx_local, tx_ctrl, tx_slots, tx_local, buf, lengths, total):  # type: ignore[no-untyped-def]
    done = 0
    while done < total:
        k = ring_pop(rx_ctrl, rx_slots, rx_local, buf, lengths, _SPINS)
        if k < 0:
            return done
        for i in range(k):
            if not _send(tx_ctrl, tx_slots, tx_local, buf[i, : lengths[i]]):
                return done
        done += k
    return done


@njit_cached(nogil=True)
def _ping(tx_ctrl, tx_slots, tx_local, rx_ctrl, rx_slots, rx_local, packet, buf, lengths,
          warmup, out):  # type: ignore[no-untyped-def]  # fmt: skip
    """One round trip per sample into ``out`` (ns); returns how many completed."""
    for i in range(-warmup, out.shape[0]):
        t0 = clock_ns()
        if not _send(tx_ctrl, tx_slots, tx_local, packet):
            return max(i, 0)
        k = 0
        while k == 0:
            k = ring_pop(rx_ctrl, rx_slots, rx_local, buf, lengths, _SPINS)
            if k < 0:
                return max(i, 0)
        t1 = clock_ns()
        if i >= 0:
            out[i] = t1 - t0
    return out.shape[0]


def _echo_process(spec: BridgeSpec, total: int) -> None:
    bridge = open_bridge(spec, side="host")
    try:
        rx, tx = bridge.rx, bridge.tx
        assert isinstance(rx, RingReceiver) and isinstance(tx, RingSender)
        buf, lengths = packet_buffers(64, rx.max_packet)
        _echo(*rx.kernel_args(), *tx.kernel_args(), buf, lengths, total)
    finally:
        bridge.close()


def compiled_ring_round_trips(packets: int, *, warmup: int, packet_bytes: int = 48) -> np.ndarray:
    """int64[packets]: ns per round trip of one ``packet_bytes`` packet through a pair of
    shm rings, both ends compiled. Raises RuntimeError if the echo stops answering."""
    fpga = open_bridge(BridgeSpec(transport="shm", n_slots=256), side="fpga")
    rx, tx = fpga.rx, fpga.tx
    assert isinstance(rx, RingReceiver) and isinstance(tx, RingSender)
    buf, lengths = packet_buffers(4, rx.max_packet)
    packet = np.arange(packet_bytes, dtype=np.uint8)
    out = np.zeros(packets, dtype=np.int64)
    _ping(*tx.kernel_args(), *rx.kernel_args(), packet, buf, lengths, 0, out[:0])  # compile
    proc = multiprocessing.get_context("spawn").Process(
        target=_echo_process, args=(fpga.spec, packets + warmup), daemon=True
    )
    proc.start()
    try:
        done = _ping(*tx.kernel_args(), *rx.kernel_args(), packet, buf, lengths, warmup, out)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
        fpga.close()
    if done != packets:
        raise RuntimeError(f"compiled ring benchmark: the echo stopped after {done} packets")
    return out

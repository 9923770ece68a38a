"""The shared-memory ring's layout, and the compiled kernels that publish and take
packets in it (the ring itself: ``_ring.py``).

Layout (layout version 1; all integers little-endian, offsets in bytes)::

    offset  word  field
    0       0     layout word: magic b"QRNG" as u32 in the high half | version 1 in the low half
    8       1     n_slots   (power of two, >= 2)
    16      2     slot_size (multiple of 64, 64..65536)
    24      3     closed    (0 open; 1 = producer end-of-stream or owner shutdown)
    32      4     creator   (low 32 bits: the creator's PID; high 32: a token of its start
                            time, /proc/PID/stat field 22 mod 2**32, 0 if unknown; the
                            whole word is 0 in rings made before it was added)
    128     16    head      (u64, producer's count of published packets; own cache line)
    256     32    tail      (u64, consumer's count of consumed packets; own cache line)
    384           slot k at 384 + k * slot_size, k = counter % n_slots:
                  u32 length, then the payload (max_packet = slot_size - 4 bytes)

``head``/``tail`` are monotonic, never wrapped, so ``head - tail`` is the
occupancy (full at ``n_slots``). They sit 128 bytes apart, so neither a line
nor its adjacent-line-prefetch pair is written by both sides.

Ordering (acquire/release from ``_atomics.py``; each side caches the other's
counter and re-reads it only when the cache says full/empty):

- Producer: load_acquire(tail) before reusing a slot (the consumer is done
  reading it); write payload and length; store_release(head), which makes the
  slot visible no later than the new head.
- Consumer: load_acquire(head) (slot reads cannot move above it); read slots;
  store_release(tail) (slot reads cannot move below it).
- ``closed`` is stored (release) after the producer's last head; the consumer
  load_acquires ``closed`` *then* head, so it drains every packet before it
  raises :class:`TransportClosed`.

Hot paths are Numba ``njit(nogil=True)`` kernels; Python only loops around a
bounded compiled spin to check the deadline and back off.
"""

from __future__ import annotations

import numpy as np

from qhil.bridge._atomics import cpu_relax, load_acquire_u64, store_release_u64
from qhil.bridge._jit import njit_cached

__all__ = [
    "CONTROL_BYTES",
    "LAYOUT_VERSION",
    "LAYOUT_WORD",
    "MAGIC",
    "MAX_SLOT_SIZE",
    "W_CLOSED",
    "W_CREATOR",
    "W_HEAD",
    "W_LAYOUT",
    "W_NSLOTS",
    "W_SLOTSIZE",
    "W_TAIL",
    "load",
    "pop",
    "publish",
    "push",
    "room",
    "store",
]

MAGIC = 0x51524E47  # b"QRNG" read as a big-endian u32; only needs to be distinctive
LAYOUT_VERSION = 1
LAYOUT_WORD = (MAGIC << 32) | LAYOUT_VERSION
W_LAYOUT, W_NSLOTS, W_SLOTSIZE, W_CLOSED, W_CREATOR, W_HEAD, W_TAIL = 0, 1, 2, 3, 4, 16, 32
CONTROL_BYTES = 384
MAX_SLOT_SIZE = 65536
Arr = (
    np.ndarray
)  # kernel arguments: ctrl uint64[48], slots uint8[n_slots, slot_size], local int64[2]


@njit_cached(nogil=True)
def load(ctrl: Arr, word: int) -> int:
    return load_acquire_u64(ctrl, word)


@njit_cached(nogil=True)
def store(ctrl: Arr, word: int, value: int) -> None:
    store_release_u64(ctrl, word, value)


@njit_cached(nogil=True)
def room(ctrl: Arr, n_slots: int, local: Arr, spins: int) -> int:
    """1 if the producer's next slot is free, 0 if still full after `spins` tries,
    -1 if closed. local: int64[2] = [head, cached tail]."""
    for _ in range(spins):
        if load_acquire_u64(ctrl, W_CLOSED) != 0:
            return -1
        if local[0] - local[1] < n_slots:
            return 1
        local[1] = np.int64(load_acquire_u64(ctrl, W_TAIL))  # acquire: slot reads done
        if local[0] - local[1] >= n_slots:
            cpu_relax()  # still full: let the core's other work run
    return 1 if local[0] - local[1] < n_slots else 0


@njit_cached(nogil=True)
def publish(ctrl: Arr, slots: Arr, local: Arr, n: int) -> None:
    head = local[0]
    slot = slots[head & (slots.shape[0] - 1)]
    for b in range(4):  # u32 little-endian length, byte-wise: endian-explicit, no aliasing
        slot[b] = (n >> (8 * b)) & 0xFF
    store_release_u64(ctrl, W_HEAD, head + 1)  # release: payload+length visible first
    local[0] = head + 1


@njit_cached(nogil=True)
def push(ctrl: Arr, slots: Arr, local: Arr, pkt: Arr, spins: int) -> int:
    r = room(ctrl, slots.shape[0], local, spins)
    if r == 1:
        n = pkt.shape[0]
        slots[local[0] & (slots.shape[0] - 1), 4 : 4 + n] = pkt
        publish(ctrl, slots, local, n)
    return r


@njit_cached(nogil=True)
def pop(ctrl: Arr, slots: Arr, local: Arr, out: Arr, lengths: Arr, spins: int) -> int:
    """Packets taken (>= 1), 0 if none after `spins` tries, -1 closed and drained,
    -2 corrupt length. local: int64[2] = [tail, cached head]."""
    tail, cap = local[0], slots.shape[1] - 4
    for _ in range(spins):
        if local[1] - tail < out.shape[0]:  # cached head can't fill the batch: refresh
            closed = load_acquire_u64(ctrl, W_CLOSED)  # before head: see all pre-close packets
            local[1] = np.int64(load_acquire_u64(ctrl, W_HEAD))  # acquire: slots after this
            if local[1] == tail:
                if closed != 0:
                    return -1
                cpu_relax()  # empty: let the core's other work run
                continue
        k = min(local[1] - tail, out.shape[0])
        for i in range(k):
            slot = slots[(tail + i) & (slots.shape[0] - 1)]
            n = np.int64(slot[0]) | (np.int64(slot[1]) << 8)
            n |= (np.int64(slot[2]) << 16) | (np.int64(slot[3]) << 24)
            if n > cap:
                return -2
            out[i, :n] = slot[4 : 4 + n]
            lengths[i] = n
        store_release_u64(ctrl, W_TAIL, tail + k)  # release: slot reads done before reuse
        local[0] = tail + k
        return k
    return 0

"""Single-producer single-consumer packet ring in POSIX shared memory.

One process creates the ring (the owner); the other attaches by name. One
sender and one receiver at a time.

A ring records which process created it. If every process of a run dies at
once (so nothing unlinks the rings), the next :meth:`ShmRing.create` of that
name finds its creator gone, removes the stale segment, logs a warning and
creates it afresh; if the creator still runs, it refuses, naming that process.

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

>>> from qhil.bridge._transport import packet_buffers
>>> with ShmRing.create(n_slots=4, slot_size=64) as ring:
...     tx, rx = ring.sender(), ring.receiver()
...     [tx.try_send(bytes([i])) for i in range(5)]
...     out, lengths = packet_buffers(8, ring.max_packet)
...     n = rx.recv_into(out, lengths, timeout_s=0.0)
...     n, [bytes(out[i, : lengths[i]]) for i in range(n)]
[True, True, True, True, False]
(4, [b'\\x00', b'\\x01', b'\\x02', b'\\x03'])
"""

from __future__ import annotations

import _posixshmem  # the C core of multiprocessing.shared_memory (POSIX)
import contextlib
import logging
import mmap
import os
import secrets
import time
from multiprocessing.shared_memory import SharedMemory
from typing import Any

import numpy as np

from qhil.bridge._atomics import load_acquire_u64, store_release_u64
from qhil.bridge._jit import njit_cached
from qhil.bridge._transport import Backoff, TransportClosed, as_packet, check_recv_buffers

__all__ = ["LAYOUT_VERSION", "MAGIC", "RingReceiver", "RingSender", "ShmRing"]

MAGIC = 0x51524E47  # b"QRNG" read as a big-endian u32; only needs to be distinctive
LAYOUT_VERSION = 1
LAYOUT_WORD = (MAGIC << 32) | LAYOUT_VERSION
W_LAYOUT, W_NSLOTS, W_SLOTSIZE, W_CLOSED, W_CREATOR, W_HEAD, W_TAIL = 0, 1, 2, 3, 4, 16, 32
CONTROL_BYTES = 384
MAX_SLOT_SIZE = 65536
_SPINS = 2048  # compiled spin iterations between deadline checks (~10 µs)
_log = logging.getLogger("qhil.bridge")
Arr = (
    np.ndarray
)  # kernel arguments: ctrl uint64[48], slots uint8[n_slots, slot_size], local int64[2]


@njit_cached(nogil=True)
def _load(ctrl: Arr, word: int) -> int:
    return load_acquire_u64(ctrl, word)


@njit_cached(nogil=True)
def _store(ctrl: Arr, word: int, value: int) -> None:
    store_release_u64(ctrl, word, value)


@njit_cached(nogil=True)
def _room(ctrl: Arr, n_slots: int, local: Arr, spins: int) -> int:
    """1 if the producer's next slot is free, 0 if still full after `spins` tries,
    -1 if closed. local: int64[2] = [head, cached tail]."""
    for _ in range(spins):
        if load_acquire_u64(ctrl, W_CLOSED) != 0:
            return -1
        if local[0] - local[1] < n_slots:
            return 1
        local[1] = np.int64(load_acquire_u64(ctrl, W_TAIL))  # acquire: slot reads done
    return 1 if local[0] - local[1] < n_slots else 0


@njit_cached(nogil=True)
def _publish(ctrl: Arr, slots: Arr, local: Arr, n: int) -> None:
    head = local[0]
    slot = slots[head & (slots.shape[0] - 1)]
    for b in range(4):  # u32 little-endian length, byte-wise: endian-explicit, no aliasing
        slot[b] = (n >> (8 * b)) & 0xFF
    store_release_u64(ctrl, W_HEAD, head + 1)  # release: payload+length visible first
    local[0] = head + 1


@njit_cached(nogil=True)
def _push(ctrl: Arr, slots: Arr, local: Arr, pkt: Arr, spins: int) -> int:
    r = _room(ctrl, slots.shape[0], local, spins)
    if r == 1:
        n = pkt.shape[0]
        slots[local[0] & (slots.shape[0] - 1), 4 : 4 + n] = pkt
        _publish(ctrl, slots, local, n)
    return r


@njit_cached(nogil=True)
def _pop(ctrl: Arr, slots: Arr, local: Arr, out: Arr, lengths: Arr, spins: int) -> int:
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


def _unique_name() -> str:
    # Short: macOS caps POSIX shm names at 31 characters.
    return f"qhil-{os.getpid() % 100000}-{secrets.token_hex(4)}"


def _map(name: str) -> mmap.mmap:
    """Map the segment ``name`` read-write. Not SharedMemory(name): before 3.13 that
    registers it with this process's resource tracker, which would unlink the
    owner's ring (and warn) when an attacher exits."""
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no ring named {name!r}; is the producer running? "
            "(the owner must ShmRing.create(name=...) it first)"
        ) from None
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


class _RingEnd:
    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        self.name, self.max_packet, self._spin_s = name, slots.shape[1] - 4, spin_s
        self._ctrl: np.ndarray | None = ctrl
        self._slots = slots  # uint8[n_slots, slot_size], C-contiguous view of the slots

    def _live(self) -> np.ndarray:
        if self._ctrl is None:
            raise TransportClosed(f"this end of ring {self.name!r} is closed")
        return self._ctrl

    def _release(self) -> None:  # drop every view of the mapping so it can be unmapped
        self._ctrl, self._slots = None, np.zeros((1, 5), np.uint8)


class RingSender(_RingEnd):
    """Producer end of a :class:`ShmRing` (a PacketSender); get it from ``ring.sender()``."""

    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        super().__init__(name, ctrl, slots, spin_s=spin_s)
        self._local = np.array([_load(ctrl, W_HEAD), _load(ctrl, W_TAIL)], dtype=np.int64)
        self._reserved = False

    def _closed_error(self) -> TransportClosed:
        return TransportClosed(f"ring {self.name!r} was marked closed (peer shut down)")

    def reserve(self) -> np.ndarray | None:
        """Writable uint8[max_packet] view of the next slot, or None if full."""
        n_slots = self._slots.shape[0]
        r = _room(self._live(), n_slots, self._local, 1)
        if r < 0:
            raise self._closed_error()
        self._reserved = r == 1
        return self._slots[self._local[0] & (n_slots - 1), 4:] if r else None

    def commit(self, length: int) -> None:
        """Publish the slot from :meth:`reserve`, holding ``length`` bytes."""
        if not self._reserved:
            raise RuntimeError("commit() needs a successful reserve() first (it returned None?)")
        if not 0 <= length <= self.max_packet:
            raise ValueError(f"length={length} must be in 0..max_packet={self.max_packet}")
        _publish(self._live(), self._slots, self._local, length)
        self._reserved = False

    def try_send(self, packet: bytes | np.ndarray) -> bool:
        """Copy and publish ``packet`` (bytes or uint8 1-D); False if full."""
        return self.send(packet, timeout_s=0.0)

    def send(self, packet: bytes | np.ndarray, *, timeout_s: float) -> bool:
        """Publish ``packet``, spinning then backing off up to ``timeout_s``."""
        pkt = as_packet(packet, self.max_packet)
        ctrl, spins, backoff = self._live(), (1 if timeout_s == 0 else _SPINS), None
        while (r := _push(ctrl, self._slots, self._local, pkt, spins)) == 0:
            backoff = backoff or Backoff(timeout_s, spin_s=self._spin_s)
            if not backoff.keep_waiting():
                return False
        if r < 0:
            raise self._closed_error()
        self._reserved = False  # head moved: a pending reservation is void
        return True

    def close(self) -> None:
        """Mark end-of-stream (the receiver drains, then sees TransportClosed)."""
        if self._ctrl is not None:
            _store(self._ctrl, W_CLOSED, 1)
            self._ctrl = None


class RingReceiver(_RingEnd):
    """Consumer end of a :class:`ShmRing` (a PacketReceiver); get it from ``ring.receiver()``."""

    def __init__(self, name: str, ctrl: np.ndarray, slots: np.ndarray, *, spin_s: float):
        super().__init__(name, ctrl, slots, spin_s=spin_s)
        self._local = np.array([_load(ctrl, W_TAIL), _load(ctrl, W_HEAD)], dtype=np.int64)

    def recv_into(self, out: np.ndarray, lengths: np.ndarray, *, timeout_s: float) -> int:
        """See :meth:`PacketReceiver.recv_into` (out: uint8[n, >=max_packet] C-contiguous,
        lengths: uint32[n] C-contiguous)."""
        check_recv_buffers(out, lengths, self.max_packet)
        ctrl, spins, backoff = self._live(), (1 if timeout_s == 0 else _SPINS), None
        while (k := _pop(ctrl, self._slots, self._local, out, lengths, spins)) == 0:
            backoff = backoff or Backoff(timeout_s, spin_s=self._spin_s)
            if not backoff.keep_waiting():
                return 0
        if k == -1:
            raise TransportClosed(f"ring {self.name!r} is closed and drained (end of stream)")
        if k == -2:
            raise RuntimeError(f"ring {self.name!r}: a slot length exceeds max_packet (corrupt)")
        return int(k)

    def close(self) -> None:
        """Stop receiving on this end. Idempotent."""
        self._release()


class ShmRing:
    """A shared-memory SPSC ring; build with :meth:`create` or :meth:`attach`.

    The segment is owner-only (mode 0600): only processes of the creator's user
    (or root) can attach to it.
    """

    def __init__(self, name: str, mm: Any, *, shm: SharedMemory | None, n_slots: int, size: int):
        # `shm` is set for the owner only (unlinked on close); `mm` maps the segment.
        self.name, self.n_slots, self.slot_size, self.max_packet = name, n_slots, size, size - 4
        self._shm, self._mm, self._open = shm, mm, True
        # ctrl: uint64[CONTROL_BYTES // 8]; slots: uint8[n_slots, slot_size]; both C-contiguous.
        self._ctrl: np.ndarray | None = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        self._slots: Any = np.frombuffer(mm, np.uint8, n_slots * size, CONTROL_BYTES).reshape(
            n_slots, size
        )
        self._sender: RingSender | None = None
        self._receiver: RingReceiver | None = None

    @classmethod
    def create(
        cls, *, n_slots: int = 1024, slot_size: int = 256, name: str | None = None
    ) -> ShmRing:
        """Create and own a new ring (mode 0600, owner-only); :meth:`close` unlinks it.

        ``n_slots``: a power of two >= 2. ``slot_size``: a multiple of 64 in
        64..65536 (max_packet = slot_size - 4). ``name``: the shared-memory name
        (None = a unique one). A ring of that name left by a process that no
        longer runs is removed first (with a warning); one whose creator still
        runs raises FileExistsError naming that process.

        >>> with ShmRing.create(n_slots=8, slot_size=128) as r:
        ...     r.n_slots, r.max_packet, r.occupancy()
        (8, 124, 0)
        """
        _check_geometry(n_slots, slot_size)
        if name is not None and (not name or "/" in name):
            raise ValueError(f"name={name!r} must be a non-empty name without '/', or None")
        size = CONTROL_BYTES + n_slots * slot_size
        name = name or _unique_name()
        # SharedMemory creates (mode 0600) and tracks the name (the tracker unlinks it
        # if we crash); we map it like an attacher so both sides share one code path.
        try:
            shm = SharedMemory(name=name, create=True, size=size)
        except FileExistsError:
            _remove_if_stale(name)
            shm = SharedMemory(name=name, create=True, size=size)
        shm.close()
        try:
            ring = cls(shm.name, _map(shm.name), shm=shm, n_slots=n_slots, size=slot_size)
        except BaseException:
            shm.unlink()
            raise
        ctrl = ring._control()
        ctrl[W_NSLOTS], ctrl[W_SLOTSIZE] = n_slots, slot_size
        ctrl[W_CREATOR] = _process_token(os.getpid()) << 32 | os.getpid()
        _store(ctrl, W_LAYOUT, LAYOUT_WORD)  # last: attachers wait for it
        return ring

    @classmethod
    def attach(cls, name: str, *, wait_s: float = 1.0) -> ShmRing:
        """Attach to the ring another process created as ``name``; waits up to
        ``wait_s`` for a just-created ring to finish initialising.

        >>> ShmRing.attach("qhil-no-such-ring")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: no ring named 'qhil-no-such-ring'; is the producer running? ...
        """
        mm = _map(name)
        try:
            n_slots, slot_size = _read_layout(mm, name, wait_s)
        except BaseException:
            mm.close()
            raise
        return cls(name, mm, shm=None, n_slots=n_slots, size=slot_size)

    def _control(self) -> np.ndarray:
        if self._ctrl is None:
            raise RuntimeError(f"ring {self.name!r} is closed; open a new one")
        return self._ctrl

    def sender(self, *, spin_s: float = 200e-6) -> RingSender:
        """This ring's producer end (one per ring; calling again returns the same)."""
        if self._sender is None:
            self._sender = RingSender(self.name, self._control(), self._slots, spin_s=spin_s)
        return self._sender

    def receiver(self, *, spin_s: float = 200e-6) -> RingReceiver:
        """This ring's consumer end (one per ring; calling again returns the same)."""
        if self._receiver is None:
            self._receiver = RingReceiver(self.name, self._control(), self._slots, spin_s=spin_s)
        return self._receiver

    def occupancy(self) -> int:
        """Packets published and not yet consumed (a snapshot)."""
        ctrl = self._control()
        tail = _load(ctrl, W_TAIL)
        return max(0, min(self.n_slots, int(_load(ctrl, W_HEAD)) - int(tail)))

    def mark_closed(self) -> None:
        """Flag end-of-stream / shutdown: the receiver drains, then raises
        TransportClosed; the sender raises TransportClosed."""
        _store(self._control(), W_CLOSED, 1)

    @property
    def is_closed(self) -> bool:
        """Whether the ring is marked closed (or this handle is detached)."""
        return self._ctrl is None or bool(_load(self._ctrl, W_CLOSED))

    def close(self) -> None:
        """Detach; the owner also marks the ring closed and unlinks it. Idempotent."""
        if not self._open:
            return
        self._open = False
        for end in (self._sender, self._receiver):
            if end is not None:
                end.close()
                end._release()
        if self._shm is not None:
            self.mark_closed()
        self._ctrl = self._slots = self._sender = self._receiver = None
        mm, self._mm = self._mm, None
        with contextlib.suppress(BufferError):  # a held reserve() view keeps the map
            mm.close()
        if self._shm is not None:
            self._shm.unlink()
            self._shm = None

    def __enter__(self) -> ShmRing:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "owner" if self._shm is not None else "attached" if self._open else "detached"
        geometry = f"n_slots={self.n_slots}, slot_size={self.slot_size}"
        return f"ShmRing(name={self.name!r}, {geometry}, {state})"


def _check_geometry(n_slots: Any, slot_size: Any) -> None:
    if not isinstance(n_slots, int) or n_slots < 2 or n_slots & (n_slots - 1):
        lo = 1 << max(1, int(n_slots).bit_length()) if isinstance(n_slots, int) else 1024
        raise ValueError(
            f"n_slots={n_slots!r} must be a power of two >= 2 (e.g. {lo} or {max(2, lo // 2)}); "
            "slots are indexed with counter % n_slots"
        )
    if not isinstance(slot_size, int) or not 64 <= slot_size <= MAX_SLOT_SIZE or slot_size % 64:
        raise ValueError(
            f"slot_size={slot_size!r} must be a multiple of 64 in 64..{MAX_SLOT_SIZE} "
            "(one u32 length + payload per slot; e.g. 256 gives max_packet 252)"
        )


def _process_token(pid: int) -> int:
    """When process ``pid`` started (Linux clock ticks since boot, mod 2**32), so a
    reused PID is not taken for a ring's creator; 0 where unknown (not Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()  # the name in (...) may hold spaces
        return int(fields[19]) & 0xFFFF_FFFF  # field 22, counting from the state (field 3)
    except (OSError, IndexError, ValueError):
        return 0


def _creator_runs(pid: int, token: int) -> bool:
    """Whether the process that recorded (``pid``, ``token``) as a ring's creator still runs."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    return token == 0 or _process_token(pid) in (0, token)


def _remove_if_stale(name: str) -> None:
    """The segment ``name`` exists: unlink it if its creator is gone, else raise
    FileExistsError naming the fix. (Two processes recovering one stale name at the
    same instant could both unlink; names are per run, so that race is left open.)"""
    fix = "pick another name, or leave it unset for a unique one"
    try:
        creator = _creator_of(name)
    except PermissionError:
        raise FileExistsError(
            f"a ring named {name!r} exists and is another user's; {fix}"
        ) from None
    except ValueError as ex:
        raise FileExistsError(f"cannot reuse the name {name!r}: {ex}; or {fix}") from None
    if creator is None:
        return  # unlinked meanwhile
    pid, token = creator & 0xFFFF_FFFF, creator >> 32
    if not 0 < pid < 2**31:  # made before rings recorded their creator
        raise FileExistsError(
            f"a ring named {name!r} already exists and does not record its creator; {fix}, "
            f"or remove it if no qhil process uses it (/dev/shm/{name} on Linux)"
        )
    if _creator_runs(pid, token):
        raise FileExistsError(
            f"a ring named {name!r} already exists and process {pid}, which created it, "
            f"still runs; stop that process or {fix}"
        )
    _posixshmem.shm_unlink("/" + name)
    _log.warning("removed stale ring %r left by process %d, which no longer runs", name, pid)


def _creator_of(name: str) -> int | None:
    """Ring ``name``'s creator word (``W_CREATOR``), or None if it no longer exists."""
    try:
        mm = _map(name)
    except FileNotFoundError:
        return None
    try:
        _read_layout(mm, name, wait_s=1.0)  # a ring being created writes its layout last
        ctrl = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        creator = int(ctrl[W_CREATOR])
        del ctrl  # drop the export so the map can close
        return creator
    finally:
        mm.close()


def _read_layout(mm: mmap.mmap, name: str, wait_s: float) -> tuple[int, int]:
    word, n_slots, slot_size = 0, 0, 0
    if len(mm) >= CONTROL_BYTES:
        ctrl = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        deadline = time.perf_counter() + wait_s
        while (word := int(_load(ctrl, W_LAYOUT))) == 0 and time.perf_counter() < deadline:
            time.sleep(1e-3)  # the creator writes the layout word last
        n_slots, slot_size = int(ctrl[W_NSLOTS]), int(ctrl[W_SLOTSIZE])
        del ctrl  # drop the export so the caller can close the map on error
    if word != LAYOUT_WORD:
        raise ValueError(
            f"shared memory {name!r} has layout word {word:#018x}, expected {LAYOUT_WORD:#018x} "
            f"(magic 'QRNG', version {LAYOUT_VERSION}); it is not a qhil ring or was made by "
            "another qhil version: recreate it with this version"
        )
    _check_geometry(n_slots, slot_size)
    if len(mm) < CONTROL_BYTES + n_slots * slot_size:
        raise ValueError(
            f"ring {name!r} is {len(mm)} bytes but its header says {n_slots} x {slot_size}; "
            "it is truncated or corrupt: recreate it"
        )
    return n_slots, slot_size

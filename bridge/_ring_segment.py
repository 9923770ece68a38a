"""A ring's POSIX shared-memory segment by name: naming, mapping and checking one,
and removing one whose creator no longer runs (the ring itself: ``_ring.py``)."""

from __future__ import annotations

import _posixshmem  # the C core of multiprocessing.shared_memory (POSIX)
import logging
import mmap
import os
import secrets
import time
from typing import Any

import numpy as np

from qhil.bridge._ring_kernels import (
    CONTROL_BYTES,
    LAYOUT_VERSION,
    LAYOUT_WORD,
    MAX_SLOT_SIZE,
    W_CREATOR,
    W_LAYOUT,
    W_NSLOTS,
    W_SLOTSIZE,
    load,
)

__all__ = [
    "check_geometry",
    "map_segment",
    "process_token",
    "read_layout",
    "remove_if_stale",
    "unique_name",
]

_log = logging.getLogger("qhil.bridge")


def unique_name() -> str:
    # Short: macOS caps POSIX shm names at 31 characters.
    return f"qhil-{os.getpid() % 100000}-{secrets.token_hex(4)}"


def map_segment(name: str) -> mmap.mmap:
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


def check_geometry(n_slots: Any, slot_size: Any) -> None:
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


def read_layout(mm: mmap.mmap, name: str, wait_s: float) -> tuple[int, int]:
    """``(n_slots, slot_size)`` from the header of the mapped ring ``name``, waiting up
    to ``wait_s`` for its creator to finish it; ValueError if it is not a ring of
    this layout version or is truncated."""
    word, n_slots, slot_size = 0, 0, 0
    if len(mm) >= CONTROL_BYTES:
        ctrl = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        deadline = time.perf_counter() + wait_s
        while (word := int(load(ctrl, W_LAYOUT))) == 0 and time.perf_counter() < deadline:
            time.sleep(1e-3)  # the creator writes the layout word last
        n_slots, slot_size = int(ctrl[W_NSLOTS]), int(ctrl[W_SLOTSIZE])
        del ctrl  # drop the export so the caller can close the map on error
    if word != LAYOUT_WORD:
        raise ValueError(
            f"shared memory {name!r} has layout word {word:#018x}, expected {LAYOUT_WORD:#018x} "
            f"(magic 'QRNG', version {LAYOUT_VERSION}); it is not a qhil ring or was made by "
            "another qhil version: recreate it with this version"
        )
    check_geometry(n_slots, slot_size)
    if len(mm) < CONTROL_BYTES + n_slots * slot_size:
        raise ValueError(
            f"ring {name!r} is {len(mm)} bytes but its header says {n_slots} x {slot_size}; "
            "it is truncated or corrupt: recreate it"
        )
    return n_slots, slot_size


def process_token(pid: int) -> int:
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
    return token == 0 or process_token(pid) in (0, token)


def remove_if_stale(name: str) -> None:
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
        mm = map_segment(name)
    except FileNotFoundError:
        return None
    try:
        read_layout(mm, name, wait_s=1.0)  # a ring being created writes its layout last
        ctrl = np.frombuffer(mm, np.uint64, CONTROL_BYTES // 8, 0)
        creator = int(ctrl[W_CREATOR])
        del ctrl  # drop the export so the map can close
        return creator
    finally:
        mm.close()

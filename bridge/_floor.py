"""The physical floor of a two-process transport on this machine: a compiled ping-pong.

Two processes share two 64-byte cache lines, one each way. The pinger stores round
``i`` into its line (release) and spins on the other line until the ponger echoes
``i`` (acquire); the ponger spins and echoes. Nothing is copied, framed or checked,
so no transport between two processes can beat it: a benchmark reports each
transport as a ratio to it, measured in the same run (these VMs drift from run to
run; the ratio travels, the absolute time does not).

Two implementations, best first:

- ``"c"``: a 40-line C program built with the system C compiler (``cc``) into a
  temporary folder, timed inside with ``clock_gettime(CLOCK_MONOTONIC)``;
- ``"numba"``: where there is no C compiler, the same protocol as numba kernels in two
  processes, each round trip timed from Python around one compiled call. That adds
  the call's overhead (about 0.1 µs), which the result names.

>>> from qhil.bridge import FLOOR_METHODS
>>> FLOOR_METHODS
('c', 'numba')
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from qhil.bridge._atomics import load_acquire_u64, store_release_u64
from qhil.bridge._jit import njit_cached

__all__ = ["FLOOR_METHODS", "Floor", "floor_round_trips"]

FLOOR_METHODS = ("c", "numba")

_C_SOURCE = r"""
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    _Alignas(64) _Atomic uint64_t ping;
    _Alignas(64) _Atomic uint64_t pong;
} lines_t;

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: pingpong N WARMUP\n"); return 2; }
    uint64_t n = strtoull(argv[1], 0, 10), warm = strtoull(argv[2], 0, 10);
    lines_t *l = mmap(0, sizeof *l, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int64_t *out = malloc((n ? n : 1) * sizeof *out);
    if (l == MAP_FAILED || !out) { perror("pingpong"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        for (uint64_t i = 1; i <= n + warm; i++) {
            while (atomic_load_explicit(&l->ping, memory_order_acquire) != i) {}
            atomic_store_explicit(&l->pong, i, memory_order_release);
        }
        _exit(0);
    }
    for (uint64_t i = 1; i <= n + warm; i++) {
        uint64_t t0 = now_ns();
        atomic_store_explicit(&l->ping, i, memory_order_release);
        while (atomic_load_explicit(&l->pong, memory_order_acquire) != i) {}
        uint64_t t1 = now_ns();
        if (i > warm) out[i - 1 - warm] = (int64_t)(t1 - t0);
    }
    waitpid(pid, 0, 0);
    fwrite(out, sizeof *out, n, stdout);
    return 0;
}
"""


@dataclasses.dataclass(frozen=True)
class Floor:
    """A ping-pong run: ``round_trip_ns`` int64[n], one sample per round trip.

    ``method`` is one of ``FLOOR_METHODS``; ``detail`` says how it was built and timed.
    """

    method: str
    detail: str
    round_trip_ns: np.ndarray


def floor_round_trips(n: int = 20_000, *, warmup: int = 2_000, method: str | None = None,
                      timeout_s: float = 60.0) -> Floor:  # fmt: skip
    """Run the ping-pong ``n`` times after ``warmup``; ``method=None`` picks the best here.

    Raises ``ValueError`` for an unknown method or ``n < 1``, ``RuntimeError`` when the
    chosen method cannot run (naming why), ``TimeoutError`` past ``timeout_s``.
    """
    if n < 1 or warmup < 0:
        raise ValueError(f"need n >= 1 and warmup >= 0; got n={n}, warmup={warmup}")
    if method not in (None, *FLOOR_METHODS):
        raise ValueError(f"unknown floor method {method!r}; choose one of {FLOOR_METHODS}")
    cc = shutil.which(os.environ.get("CC", "cc"))
    if method == "c" or (method is None and cc is not None):
        if cc is None:
            raise RuntimeError("no C compiler found (cc, or $CC): use method='numba'")
        return _c_floor(cc, n, warmup, timeout_s)
    return _numba_floor(n, warmup, timeout_s)


def _c_floor(cc: str, n: int, warmup: int, timeout_s: float) -> Floor:
    with tempfile.TemporaryDirectory(prefix="qhil-floor-") as tmp:
        src, exe = Path(tmp) / "pingpong.c", Path(tmp) / "pingpong"
        src.write_text(_C_SOURCE)
        cmd = [cc, "-O2", "-std=c11", "-o", str(exe), str(src)]
        build = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if build.returncode != 0:
            raise RuntimeError(f"the C ping-pong did not build with {cc}: {build.stderr[-800:]}")
        try:
            run = subprocess.run([str(exe), str(n), str(warmup)], capture_output=True,
                                 timeout=timeout_s, check=False)  # fmt: skip
        except subprocess.TimeoutExpired as ex:
            raise TimeoutError(f"the C ping-pong did not finish within {timeout_s} s") from ex
    if run.returncode != 0 or len(run.stdout) != 8 * n:
        raise RuntimeError(f"the C ping-pong failed (exit {run.returncode}): {run.stderr[-800:]!r}")
    ns = np.frombuffer(run.stdout, dtype=np.int64).copy()
    return Floor("c", f"C ({Path(cc).name} -O2), timed inside with clock_gettime", ns)


@njit_cached(nogil=True)
def _ping(lines: np.ndarray, i: int, max_spins: int) -> bool:
    store_release_u64(lines, 0, i)
    for _ in range(max_spins):
        if load_acquire_u64(lines, 8) == i:
            return True
    return False


@njit_cached(nogil=True)
def _pong(lines: np.ndarray, total: int) -> None:
    for i in range(1, total + 1):
        while load_acquire_u64(lines, 0) != i:
            if load_acquire_u64(lines, 16) != 0:
                return  # the pinger gave up
        store_release_u64(lines, 8, i)


def _pong_process(name: str, total: int) -> None:
    shm = shared_memory.SharedMemory(name=name)
    try:
        _pong(np.ndarray(24, dtype=np.uint64, buffer=shm.buf), total)
    finally:
        shm.close()


def _numba_floor(n: int, warmup: int, timeout_s: float) -> Floor:
    # words 0 (ping), 8 (pong), 16 (abort): one 64-byte line each
    shm = shared_memory.SharedMemory(create=True, size=24 * 8)
    lines = np.ndarray(24, dtype=np.uint64, buffer=shm.buf)
    lines[:] = 0
    proc = multiprocessing.get_context("spawn").Process(
        target=_pong_process, args=(shm.name, n + warmup), daemon=True
    )
    out = np.zeros(n, dtype=np.int64)
    try:
        _ping(lines, 0, 1)  # compiled before the child starts answering
        proc.start()
        clock, deadline = time.perf_counter_ns, time.monotonic() + timeout_s
        for i in range(1, n + warmup + 1):
            t0 = clock()
            while not _ping(lines, i, 1 << 22):
                if time.monotonic() > deadline or not proc.is_alive():
                    raise TimeoutError(f"the numba ping-pong stalled at round {i}")
            if i > warmup:
                out[i - 1 - warmup] = clock() - t0
    finally:
        lines[16] = 1
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
        del lines
        shm.close()
        shm.unlink()
    return Floor("numba", "numba in two processes, timed from Python (+ one call's overhead)", out)

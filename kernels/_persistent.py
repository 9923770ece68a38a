"""``PersistentPreDecoder``: the CNN pre-decoder as a persistent GPU kernel on mapped memory.

The kernel is launched ONCE and loops until told to stop::

    pd = PersistentPreDecoder.start(geometry, model, n_slots=64)
    pd.submit(shot_id, dets)            # bool[num_detectors]; False if the ring is full
    for shot_id, residual, obs_flip in pd.poll():
        ...                             # residual bool[num_detectors], obs_flip bool[n_obs]
    report = pd.stop(timeout_s=5.0)

Each loop iteration of the kernel (one thread block; thread 0 polls, the whole
block computes):

1. wait for window ``n`` in the input ring (``qhil.bridge._gpu_ring``: a slot
   whose sequence flag reads ``n + 1``), honouring the shutdown flag on every
   poll and bumping the heartbeat while it waits;
2. copy the window's detection events (one 0/1 byte per detector, stim order;
   header: stream, shot, seq) to device memory and hand the slot back;
3. run the integer CNN on it: exactly ``reference_logits`` for one shot
   (int64 accumulators, zero padding, ReLU then ``>> weight_bits``), then
   binarize ``logits > cut`` and mask to ``geometry.output_mask``;
4. residual and ``pre_L`` from dense footprint tables built once on the host
   from ``PreDecoderGeometry.footprint`` of every unit output: for detector
   ``i``, ``residual[i] = dets[i] XOR (XOR of the outputs that flip it)``; the
   same for each observable. These are the outputs of ``PreDecoder.predecode``;
5. write residual, logical flips and header into the output ring, fence,
   publish the slot's flag.

A host WATCHDOG thread watches the heartbeat. If it does not advance for
``watchdog_s`` seconds it records :class:`KernelStalled` (naming the stall:
heartbeat value, how long, windows submitted / taken / returned), sets the
shutdown flag, and every later ``submit``/``poll`` raises it. So a stuck kernel
never leaves a process waiting forever on results.

Real GPU versus the simulator
-----------------------------
- On a GPU, ``start`` compiles and launches the kernel on its own CUDA stream
  and returns; the kernel runs concurrently with the host. ``stop`` sets the
  shutdown flag, waits (up to ``timeout_s``) for the kernel's exit flag, then
  synchronizes that stream. A kernel that ignores the flag (a device hang)
  cannot be killed from the host short of destroying the CUDA context (process
  exit); ``stop`` then reports it instead of blocking. While the kernel runs,
  do no work on the legacy default stream (it would wait behind the kernel)
  and do not free device memory (``cudaFree`` synchronizes the device).
- Under ``NUMBA_ENABLE_CUDASIM=1`` a launch runs the kernel's threads as Python
  threads and returns only when the kernel ends, so ``start`` runs it in a
  background (daemon) thread instead. Blocks run one after another there, so
  the kernel uses one block and no inter-block handshake. Mapped arrays are
  NumPy arrays shared with those threads and the fences are no-ops: the
  simulator checks the protocol's logic and the arithmetic, not the hardware
  memory ordering. While a simulated kernel runs, the simulator swaps this
  module's ``cuda`` global for its fake one, so host code here makes no
  ``cuda.*`` call between launch and exit (``start`` prepares everything first).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from numba import cuda

from qhil.bridge._gpu_ring import (
    H_AUX,
    H_SEQ,
    H_SHOT,
    H_STREAM,
    HEARTBEAT_EVERY,
    STATE_EXITED,
    STATE_RUNNING,
    W_HEARTBEAT,
    W_IN_DONE,
    W_OUT_DONE,
    W_SHUTDOWN,
    W_STALL,
    W_STATE,
    MappedRingSpec,
    MappedSlotRing,
    flag_load,
    flag_store,
    simulator_enabled,
)
from qhil.kernels._geometry import PreDecoderGeometry
from qhil.kernels._model import QuantizedModel

__all__ = [
    "KERNEL_SIGNATURE",
    "KernelStalled",
    "PersistentKernelError",
    "PersistentPreDecoder",
    "PersistentResult",
    "PersistentTables",
    "StopReport",
    "build_tables",
    "persistent_kernel",
]

# dims: int64[D_LEN] scalar parameters of one (geometry, model) pair.
D_T, D_D, D_ACT_BITS, D_WEIGHT_BITS, D_CUT, D_LAYERS, D_LEN = 0, 1, 2, 3, 4, 5, 6
# layers: int64[n_layers, L_LEN] per-layer shape and offsets into wflat / bflat.
L_CIN, L_COUT, L_K, L_WOFF, L_BOFF, L_LEN = 0, 1, 2, 3, 4, 5


# --------------------------------------------------------------------------- host tables


@dataclasses.dataclass(frozen=True, eq=False)
class PersistentTables:
    """Everything the kernel needs about one (geometry, model) pair; all C-contiguous.

    Attributes:
        dims: int64[6] = (T, d, act_bits, weight_bits, cut, n_layers).
        layers: int64[n_layers, 5] = (c_in, c_out, k, offset into wflat, offset into bflat).
        wflat: int64[sum of weight sizes], each layer's [c_out, c_in, k, k, k] in C order.
        bflat: int64[sum of c_out], the biases.
        det_cell: int64[n_det], flat index into the input tensor [4, T, d, d] of detector i.
        mask_act: int64[4 * T * d * d], the input tensor with no events, times
            2**act_bits (channels 2 and 3: the X / Z present masks).
        out_valid: uint8[4 * T * d * d], ``geometry.output_mask`` flattened.
        det_ptr: int64[n_det + 1], det_src: int64[nnz]: CSR, detector i is flipped by
            the outputs ``det_src[det_ptr[i]:det_ptr[i + 1]]`` (flat [4, T, d, d] index).
        obs_ptr: int64[n_obs + 1], obs_src: int64[nnz]: the same for each observable.
        act_len: int64 entries per activation buffer (max channels times T*d*d).
    """

    dims: np.ndarray
    layers: np.ndarray
    wflat: np.ndarray
    bflat: np.ndarray
    det_cell: np.ndarray
    mask_act: np.ndarray
    out_valid: np.ndarray
    det_ptr: np.ndarray
    det_src: np.ndarray
    obs_ptr: np.ndarray
    obs_src: np.ndarray
    act_len: int

    @property
    def num_detectors(self) -> int:
        return int(self.det_cell.shape[0])

    @property
    def num_observables(self) -> int:
        return int(self.obs_ptr.shape[0] - 1)

    def device_args(self) -> tuple[np.ndarray, ...]:
        """Kernel arguments, in the kernel's order (after the ring's)."""
        return (
            self.dims, self.layers, self.wflat, self.bflat, self.det_cell, self.mask_act,
            self.out_valid, self.det_ptr, self.det_src, self.obs_ptr, self.obs_src,
        )  # fmt: skip


def _csr(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise CSR of a bool matrix: (int64[rows + 1] pointers, int64[nnz] columns)."""
    rows, cols = np.nonzero(m)
    ptr = np.zeros(m.shape[0] + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=m.shape[0]), out=ptr[1:])
    return ptr, np.ascontiguousarray(cols, dtype=np.int64)


def build_tables(
    geometry: PreDecoderGeometry, model: QuantizedModel, *, threshold: float = 0.0
) -> PersistentTables:
    """Flatten ``model`` and ``geometry``'s footprints into the kernel's dense tables.

    ``threshold`` is ``PreDecoder``'s: apply a correction where its logit exceeds
    ``floor(threshold * 2**(weight_bits + act_bits))``.
    """
    t_n, d, _ = geometry.shape
    vol = t_n * d * d
    n_out = 4 * vol
    n_det = geometry.num_detectors
    # Every unit output's footprint, through the very function the CPU path uses
    # (footprint is linear mod 2, so XOR-ing these rows reproduces it exactly).
    flips = np.zeros((n_out, n_det), dtype=bool)
    obs = np.zeros((n_out, 1), dtype=bool)
    for lo in range(0, n_out, 512):
        hi = min(n_out, lo + 512)
        e = np.zeros((hi - lo, n_out), dtype=np.uint8)
        e[np.arange(hi - lo), np.arange(lo, hi)] = 1
        flips[lo:hi], obs[lo:hi] = geometry.footprint(e.reshape(hi - lo, 4, t_n, d, d))
    det_ptr, det_src = _csr(flips.T)
    obs_ptr, obs_src = _csr(obs.T)
    k_idx, t_idx, r_idx, c_idx = np.nonzero(geometry.det_index >= 0)
    det_cell = np.empty(n_det, dtype=np.int64)
    det_cell[geometry.det_index[k_idx, t_idx, r_idx, c_idx]] = (
        (k_idx * t_n + t_idx) * d + r_idx
    ) * d + c_idx
    mask_act = np.zeros((4, vol), dtype=np.int64)
    mask_act[2:] = geometry.input_mask.reshape(2, vol).astype(np.int64) << model.act_bits
    layers, ws, bs, w_off, b_off = [], [], [], 0, 0
    for w, b in zip(model.weights, model.biases, strict=True):
        c_out, c_in, k = w.shape[:3]
        layers.append((c_in, c_out, k, w_off, b_off))
        ws.append(w.astype(np.int64).ravel())
        bs.append(b.astype(np.int64))
        w_off, b_off = w_off + w.size, b_off + b.size
    cut = int(np.floor(threshold * 2 ** (model.weight_bits + model.act_bits)))
    dims = (t_n, d, model.act_bits, model.weight_bits, cut, len(layers))
    return PersistentTables(
        dims=np.array(dims, dtype=np.int64),
        layers=np.array(layers, dtype=np.int64).reshape(-1, L_LEN),
        wflat=np.ascontiguousarray(np.concatenate(ws)),
        bflat=np.ascontiguousarray(np.concatenate(bs)),
        det_cell=det_cell,
        mask_act=np.ascontiguousarray(mask_act.ravel()),
        out_valid=np.ascontiguousarray(geometry.output_mask.ravel().astype(np.uint8)),
        det_ptr=det_ptr,
        det_src=det_src,
        obs_ptr=obs_ptr,
        obs_src=obs_src,
        act_len=max(model.widths) * vol,
    )


# --------------------------------------------------------------------------- device code
#
# One kernel function with no calls to ``cuda.jit(device=True)`` helpers: Numba
# compiles a called device function for the *current device*, which needs a GPU,
# whereas a self-contained kernel (plus the ring's flag intrinsics) compiles with
# ``numba.cuda.compile_ptx(..., cc=(9, 0))`` on a machine without one.


@cuda.jit
def persistent_kernel(
    ctrl, in_seq, in_hdr, in_data, out_seq, out_hdr, out_data, out_obs,
    dims, layers, wflat, bflat, det_cell, mask_act, out_valid, det_ptr, det_src, obs_ptr, obs_src,
    dets, act, e_buf,
):  # fmt: skip
    """Launch as ``[1, threads]`` once; loops over windows until ``ctrl[W_SHUTDOWN]``.

    Ring buffers: see ``qhil.bridge._gpu_ring`` (mapped memory). Tables: see
    :class:`PersistentTables` (device memory). Scratch (device memory):
    dets uint8[n_det], act int64[2, act_len], e_buf uint8[4 * T * d * d].
    Thread 0 polls, heart-beats and publishes; the whole block computes.
    """
    tid, nth = cuda.threadIdx.x, cuda.blockDim.x
    sh = cuda.shared.array(1, dtype=np.int64)  # thread 0's poll verdict: 1 go, -1 shut down
    n_slots = in_seq.shape[0]
    n_det = det_cell.shape[0]
    t_n, d = dims[D_T], dims[D_D]
    plane = d * d
    vol = t_n * plane
    one = np.int64(1) << dims[D_ACT_BITS]
    wbits, cut, n_layers = dims[D_WEIGHT_BITS], dims[D_CUT], dims[D_LAYERS]
    stream, shot, seq = np.int64(0), np.int64(0), np.int64(0)  # thread 0's copy of the header
    beat = np.int64(0)  # thread 0's heartbeat count
    if tid == 0:
        flag_store(ctrl, W_STATE, STATE_RUNNING)
    n = np.int64(0)
    while True:
        slot = n & (n_slots - 1)
        # 1. thread 0 waits for window n; shutdown is honoured on every poll
        if tid == 0:
            status, spins = 0, 0
            while status == 0:
                if flag_load(ctrl, W_SHUTDOWN) != 0:
                    status = -1
                elif flag_load(ctrl, W_STALL) == 0:  # (test hook: spin, no progress, no beat)
                    if np.int64(flag_load(in_seq, slot)) == n + 1:  # acquire, system scope
                        status = 1
                    else:
                        spins += 1
                        if spins % HEARTBEAT_EVERY == 0:
                            beat += 1
                            flag_store(ctrl, W_HEARTBEAT, beat)
            cuda.threadfence_system()  # the payload reads below stay after the flag read
            sh[0] = status
        cuda.syncthreads()
        if sh[0] < 0:
            break
        # 2. copy the window to device memory, then hand the slot back to the producer
        for i in range(tid, n_det, nth):
            dets[i] = in_data[slot, i]
        if tid == 0:
            stream, shot, seq = in_hdr[slot, H_STREAM], in_hdr[slot, H_SHOT], in_hdr[slot, H_SEQ]
        cuda.threadfence_system()  # this thread's slot reads are complete
        cuda.syncthreads()
        if tid == 0:
            flag_store(ctrl, W_IN_DONE, n + 1)
        # 3. the CNN: input tensor [4, T, d, d] (events times 2**act_bits, plus the masks)
        for j in range(tid, 4 * vol, nth):
            act[0, j] = mask_act[j]
        cuda.syncthreads()
        for i in range(tid, n_det, nth):
            if dets[i] != 0:
                act[0, det_cell[i]] = one
        cuda.syncthreads()
        src = 0
        for li in range(n_layers):
            c_in, c_out, k = layers[li, L_CIN], layers[li, L_COUT], layers[li, L_K]
            w_off, b_off = layers[li, L_WOFF], layers[li, L_BOFF]
            p = k // 2
            last = li == n_layers - 1
            for j in range(tid, c_out * vol, nth):  # output (channel, voxel) = j
                co = j // vol
                v = j - co * vol
                t = v // plane
                y = (v - t * plane) // d
                x = v - t * plane - y * d
                acc = bflat[b_off + co]
                for ci in range(c_in):
                    w_ci = w_off + (co * c_in + ci) * k * k * k
                    a_ci = ci * vol
                    for dt in range(k):
                        tt = t + dt - p
                        if tt < 0 or tt >= t_n:
                            continue  # zero padding in time
                        for dy in range(k):
                            yy = y + dy - p
                            if yy < 0 or yy >= d:
                                continue
                            for dx in range(k):
                                xx = x + dx - p
                                if xx < 0 or xx >= d:
                                    continue
                                a = act[src, a_ci + tt * plane + yy * d + xx]
                                if a != 0:
                                    acc += a * wflat[w_ci + (dt * k + dy) * k + dx]
                if last:
                    e_buf[j] = 1 if acc > cut and out_valid[j] != 0 else 0
                else:
                    act[1 - src, j] = (acc if acc > 0 else 0) >> wbits  # ReLU, rescale (floor)
            cuda.syncthreads()
            if tid == 0 and flag_load(ctrl, W_STALL) == 0:
                beat += 1  # a layer done: progress, even while one window is slow
                flag_store(ctrl, W_HEARTBEAT, beat)
            src = 1 - src
        # 4. thread 0 waits until the host has consumed result n - n_slots
        if tid == 0:
            status, spins = 0, 0
            while status == 0:
                if flag_load(ctrl, W_SHUTDOWN) != 0:
                    status = -1
                elif n - np.int64(flag_load(ctrl, W_OUT_DONE)) < n_slots:
                    status = 1
                else:
                    spins += 1
                    if spins % HEARTBEAT_EVERY == 0 and flag_load(ctrl, W_STALL) == 0:
                        beat += 1
                        flag_store(ctrl, W_HEARTBEAT, beat)
            cuda.threadfence_system()  # the slot stores below stay after that read
            sh[0] = status
        cuda.syncthreads()
        if sh[0] < 0:
            break
        # 5. residual and logical flips via the footprint tables, straight into the slot
        for i in range(tid, n_det, nth):
            r = dets[i]
            for q in range(det_ptr[i], det_ptr[i + 1]):
                r ^= e_buf[det_src[q]]
            out_data[slot, i] = r
        for o in range(tid, obs_ptr.shape[0] - 1, nth):
            r = np.uint8(0)
            for q in range(obs_ptr[o], obs_ptr[o + 1]):
                r ^= e_buf[obs_src[q]]
            out_obs[slot, o] = r
        if tid == 0:
            corrections = np.int64(0)
            for j in range(e_buf.shape[0]):
                corrections += e_buf[j]
            out_hdr[slot, H_STREAM] = stream
            out_hdr[slot, H_SHOT] = shot
            out_hdr[slot, H_SEQ] = seq
            out_hdr[slot, H_AUX] = corrections
        cuda.threadfence_system()  # this thread's result stores reach the host first
        cuda.syncthreads()
        if tid == 0:
            flag_store(out_seq, slot, n + 1)  # publish (release, system scope)
            if flag_load(ctrl, W_STALL) == 0:
                beat += 1
                flag_store(ctrl, W_HEARTBEAT, beat)
        n += 1
    if tid == 0:
        cuda.threadfence_system()
        flag_store(ctrl, W_STATE, STATE_EXITED)


KERNEL_SIGNATURE = (
    "void(uint64[::1], uint64[::1], int64[:, ::1], uint8[:, ::1], "
    "uint64[::1], int64[:, ::1], uint8[:, ::1], uint8[:, ::1], "
    "int64[::1], int64[:, ::1], int64[::1], int64[::1], int64[::1], int64[::1], uint8[::1], "
    "int64[::1], int64[::1], int64[::1], int64[::1], "
    "uint8[::1], int64[:, ::1], uint8[::1])"
)
"""The kernel's argument types, for ``numba.cuda.compile_ptx`` without a GPU."""


# --------------------------------------------------------------------------- host API


class PersistentKernelError(RuntimeError):
    """The persistent kernel failed, exited unexpectedly or would not stop."""


class KernelStalled(PersistentKernelError):
    """The watchdog saw the kernel's heartbeat stop advancing."""


@dataclasses.dataclass(frozen=True, eq=False)
class PersistentResult:
    """One window's result; unpacks as ``(shot_id, residual, obs_flip)``.

    Attributes:
        shot_id: the id given to ``submit``.
        residual: bool[num_detectors], the detection events the corrections leave.
        obs_flip: bool[num_observables], the logical flip of the corrections (``pre_L``).
        stream: the stream id given to ``submit``.
        seq: the window's sequence number (0, 1, 2, ... in submission order).
        corrections: how many corrections the network applied.
    """

    shot_id: int
    residual: np.ndarray
    obs_flip: np.ndarray
    stream: int = 0
    seq: int = 0
    corrections: int = 0

    def __iter__(self) -> Iterator[Any]:
        return iter((self.shot_id, self.residual, self.obs_flip))


@dataclasses.dataclass(frozen=True)
class StopReport:
    """How a :class:`PersistentPreDecoder` ended.

    Attributes:
        exited: the kernel reported its exit (``STATE_EXITED``) within the timeout.
        submitted: windows published to the input ring.
        taken: windows the kernel copied out of the input ring.
        returned: results the host polled.
        heartbeat: the last heartbeat value.
        error: the recorded failure (a stall, a kernel exception, a timeout), or None.
    """

    exited: bool
    submitted: int
    taken: int
    returned: int
    heartbeat: int
    error: str | None


class PersistentPreDecoder:
    """The pre-decoder as one persistent kernel; build with :meth:`start`."""

    def __init__(self, geometry: PreDecoderGeometry, tables: PersistentTables,
                 ring: MappedSlotRing, *, threads: int, watchdog_s: float) -> None:  # fmt: skip
        self.geometry = geometry
        self.tables = tables
        self.ring = ring
        self.threads = threads
        self.watchdog_s = watchdog_s
        self.simulated = simulator_enabled()
        self._error: PersistentKernelError | None = None
        self._lock = threading.Lock()
        self._stopped = False
        self._launcher: threading.Thread | None = None
        self._cuda_stream: Any = None
        self._wd_stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        geometry: PreDecoderGeometry,
        model: QuantizedModel,
        *,
        n_slots: int = 64,
        threads: int | None = None,
        watchdog_s: float = 2.0,
        threshold: float = 0.0,
    ) -> PersistentPreDecoder:
        """Build the tables, allocate the rings and launch the kernel once.

        Args:
            geometry, model: the circuit's layout and the integer CNN.
            n_slots: slots per ring direction (a power of two >= 2).
            threads: threads in the kernel's single block (default 128 on a GPU,
                4 in the simulator, where each is a Python thread).
            watchdog_s: heartbeat silence that counts as a stall. The kernel beats
                while polling, after each layer and after each window, so this
                must exceed one layer's time (milliseconds in the simulator at d=3).
            threshold: as ``PreDecoder``'s (0 = binarize the logits at 0).
        """
        if watchdog_s <= 0:
            raise ValueError(f"watchdog_s must be > 0; got {watchdog_s}")
        tables = build_tables(geometry, model, threshold=threshold)
        spec = MappedRingSpec(
            n_slots=n_slots,
            in_width=tables.num_detectors,
            out_width=tables.num_detectors,
            n_obs=tables.num_observables,
        )
        sim = simulator_enabled()
        nthreads = threads if threads is not None else (4 if sim else 128)
        if nthreads < 1:
            raise ValueError(f"threads must be >= 1; got {nthreads}")
        self = cls(geometry, tables, MappedSlotRing(spec), threads=nthreads, watchdog_s=watchdog_s)
        self._launch()
        self._watchdog = threading.Thread(target=self._watch, name="qhil-gpu-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def _kernel_args(self, stream: Any) -> tuple[Any, ...]:
        t = self.tables
        dev = tuple(cuda.to_device(a, stream=stream) for a in t.device_args())
        scratch = (
            cuda.device_array(t.num_detectors, dtype=np.uint8, stream=stream),
            cuda.device_array((2, t.act_len), dtype=np.int64, stream=stream),
            cuda.device_array(t.out_valid.shape[0], dtype=np.uint8, stream=stream),
        )
        return (*self.ring.device_args(), *dev, *scratch)

    def _launch(self) -> None:
        if self.simulated:
            args = self._kernel_args(0)

            def run() -> None:
                try:
                    persistent_kernel[1, self.threads](*args)
                except BaseException as ex:  # recorded; the watchdog and the API report it
                    self._fail(PersistentKernelError(f"persistent kernel raised {ex!r}"))

            self._launcher = threading.Thread(target=run, name="qhil-cudasim-kernel", daemon=True)
            self._launcher.start()
        else:
            self._cuda_stream = cuda.stream()  # never the legacy default stream
            args = self._kernel_args(self._cuda_stream)
            self._cuda_stream.synchronize()  # tables are on the device before the kernel runs
            persistent_kernel[1, self.threads, self._cuda_stream](*args)  # async; compiles once

    def _fail(self, err: PersistentKernelError) -> None:
        with self._lock:
            if self._error is None:
                self._error = err
        self.ring.request_shutdown()

    def _watch(self) -> None:
        ring, period = self.ring, min(0.05, self.watchdog_s / 10)
        last, since = ring.heartbeat, time.monotonic()
        while not self._wd_stop.wait(period):
            if self._error is not None:
                return
            if ring.state == STATE_EXITED:
                if not ring.word(W_SHUTDOWN):
                    self._fail(PersistentKernelError("persistent kernel exited without shutdown"))
                return
            beat, now = ring.heartbeat, time.monotonic()
            if beat != last:
                last, since = beat, now
            elif now - since >= self.watchdog_s:
                where = "never started" if ring.state != STATE_RUNNING else "running"
                self._fail(
                    KernelStalled(
                        f"persistent pre-decoder kernel stalled: heartbeat stuck at {beat} for "
                        f"{now - since:.2f} s (watchdog_s={self.watchdog_s}; kernel {where}; "
                        f"windows submitted {ring.pushed}, taken {ring.in_done}, "
                        f"returned {ring.popped}); shutdown requested"
                    )
                )
                return

    @property
    def error(self) -> PersistentKernelError | None:
        """The recorded failure (stall, kernel exception), or None."""
        return self._error

    def _check(self) -> None:
        if self._error is not None:
            raise self._error
        if self._stopped:
            raise PersistentKernelError("this PersistentPreDecoder is stopped; start a new one")

    def submit(self, shot_id: int, dets: np.ndarray, *, stream: int = 0) -> bool:
        """Queue one shot (bool/uint8[num_detectors]); False if the input ring is full.

        Raises the recorded error (e.g. :class:`KernelStalled`) once the kernel failed.
        """
        self._check()
        d = np.asarray(dets)
        if d.shape != (self.tables.num_detectors,):
            raise ValueError(f"dets must have shape ({self.tables.num_detectors},); got {d.shape}")
        return self.ring.try_push(stream, shot_id, d.astype(np.uint8))

    def poll(self) -> list[PersistentResult]:
        """The results published since the last call, in submission order.

        Results already published are returned even after a failure; once none
        are left, the recorded error is raised.
        """
        hdr, data, obs = self.ring.pop()
        if not len(hdr):
            self._check()
        return [
            PersistentResult(
                shot_id=int(h[H_SHOT]),
                residual=data[i].astype(bool),
                obs_flip=obs[i].astype(bool),
                stream=int(h[H_STREAM]),
                seq=int(h[H_SEQ]),
                corrections=int(h[H_AUX]),
            )
            for i, h in enumerate(hdr)
        ]

    @property
    def in_flight(self) -> int:
        """Windows submitted whose results have not been polled yet."""
        return self.ring.pushed - self.ring.popped

    def _debug_stall(self, on: bool = True) -> None:
        """Test hook: make the kernel spin without heart-beating (it still honours shutdown)."""
        self.ring.set_word(W_STALL, 1 if on else 0)

    def stop(self, timeout_s: float = 5.0) -> StopReport:
        """Set the shutdown flag and wait up to ``timeout_s`` for the kernel to exit.

        Never blocks longer than about ``timeout_s``; a kernel that does not exit is
        reported in ``StopReport.error`` (on a GPU only process exit can reclaim it).
        """
        if not self._stopped:
            self._stopped = True
            self.ring.request_shutdown()
        deadline = time.monotonic() + timeout_s
        while self.ring.state != STATE_EXITED and time.monotonic() < deadline:
            if self._launcher is not None and not self._launcher.is_alive():
                break
            time.sleep(1e-3)
        exited = self.ring.state == STATE_EXITED
        if self._launcher is not None:
            self._launcher.join(max(0.0, deadline - time.monotonic()))
            exited = exited and not self._launcher.is_alive()
        elif exited and self._cuda_stream is not None:
            self._cuda_stream.synchronize()
        self._wd_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(1.0)
        if not exited:
            self._fail(
                PersistentKernelError(
                    f"persistent kernel did not exit within {timeout_s} s of the shutdown flag "
                    f"(state {self.ring.state}, heartbeat {self.ring.heartbeat})"
                )
            )
        err = self._error
        return StopReport(
            exited=exited,
            submitted=self.ring.pushed,
            taken=self.ring.in_done,
            returned=self.ring.popped,
            heartbeat=self.ring.heartbeat,
            error=None if err is None else str(err),
        )

    def __enter__(self) -> PersistentPreDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

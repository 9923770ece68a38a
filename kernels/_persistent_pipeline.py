"""The persistent GPU pre-decoder followed by PyMatching, behind the loop's decoder interface.

``qhil run --decoder predecoder --backend cuda-persistent`` uses it. The
pre-decoder kernel (``PersistentPreDecoder``) is launched ONCE, when the decoder
is built; then each ``decode_batch`` call

1. cuts its shots into wire-v1 syndrome packets, one per round, and writes them
   straight into the kernel's mapped input ring in one compiled call per ring's
   worth (``GpuPacketSender``), waiting for room while the ring is full: the
   kernel frees slots as it takes packets, and the collector below keeps
   draining results so it never blocks. The kernel streams each round as it
   lands;
2. waits while a host *collector* thread polls the mapped output ring, runs
   PyMatching on each batch of residuals as it arrives (overlapping the
   kernel's work on later shots) and files ``obs_flip ^ PyMatching(residual)``
   under the shot's id;
3. returns the predictions in submission order.

The result is exactly ``PreDecodedMatching``'s (same model, same threshold):
the kernel reproduces ``PreDecoder.predecode`` bit for bit.

The service hands this decoder whole shots (it assembles rounds on the host),
so the per-round streaming saves no latency here yet: that needs the bridge to
forward each round's packet as it arrives (``benchmarks/gpu.py`` measures that
path directly). A shot the kernel returns INCOMPLETE cannot happen on this
path (its packets are whole and in order); if it does, it is a failure.

A kernel the watchdog finds stalled (``KernelStalled``) or one that failed turns
into a ``RuntimeError`` from ``decode_batch`` naming the failure; the decoder is
unusable from then on. ``close()`` (also the context manager, a
``weakref.finalize`` when the object is collected, and interpreter exit) sets
the kernel's shutdown flag, waits for it to exit and stops the collector.

Without a GPU the backend is refused with the reason and the fix, unless
``NUMBA_ENABLE_CUDASIM=1`` was set before Numba's CUDA target was imported: the
kernel then runs in Numba's CUDA simulator (slow, but exact; for testing).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pymatching
import stim

from qhil.kernels._geometry import PreDecoderGeometry
from qhil.kernels._model import QuantizedModel
from qhil.kernels._predecoder import resolve_model

__all__ = ["PersistentPreDecodedMatching", "persistent_available"]

BACKEND = "cuda-persistent"
_FIX = (
    "use --backend cuda, numba or numpy (the same pre-decoder, launched per batch), "
    "or set NUMBA_ENABLE_CUDASIM=1 to run the persistent kernel in Numba's CUDA simulator "
    "(slow; for testing)"
)


def persistent_available() -> tuple[bool, str]:
    """(True, what it runs on) if the persistent kernel can run here, else (False, why not).

    It needs Numba's CUDA target (the 'gpu' extra: numba-cuda) and a usable NVIDIA
    GPU and driver, or the Numba CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).
    """
    try:
        from numba import cuda

        from qhil.bridge._gpu_ring import simulator_enabled
    except Exception as ex:  # no numba.cuda, or a broken install underneath
        return False, (
            f"Numba's CUDA target is not importable ({type(ex).__name__}: {ex}); "
            "install the 'gpu' extra (numba-cuda)"
        )
    if simulator_enabled():
        return True, "Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): slow but exact"
    late = ""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        late = (
            " (NUMBA_ENABLE_CUDASIM=1 is set, but only after Numba's CUDA target was "
            "imported in this process: set it before starting Python)"
        )
    try:
        ok = bool(cuda.is_available())
    except Exception as ex:
        return False, f"Numba cannot initialize CUDA ({type(ex).__name__}: {ex}){late}"
    if not ok:
        why = "no usable NVIDIA GPU or CUDA driver"
        try:
            from numba.cuda.cudadrv import driver as _driver

            err = getattr(_driver.driver, "initialization_error", None)
            if err:
                why += f" ({' '.join(str(err).split())})"
        except Exception:  # the reason is a courtesy; is_available() already said no
            pass
        return False, f"Numba's CUDA target found {why}{late}"
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, f"CUDA device {dev.id}: {name}, compute capability {dev.compute_capability}"
    except Exception as ex:
        return False, f"the CUDA device is unusable ({type(ex).__name__}: {ex}){late}"


class _Shared:
    """State the collector thread and the finalizer share; never refers to the decoder."""

    def __init__(self, predecoder: Any, matching: pymatching.Matching, n_obs: int) -> None:
        self.pd = predecoder
        self.matching = matching
        self.n_obs = n_obs
        self.cv = threading.Condition()
        self.done: dict[int, np.ndarray] = {}  # shot id -> bool[n_obs], filled by the collector
        self.floor = 0  # ids below this were abandoned (an interrupted call): not filed
        self.error: BaseException | None = None  # the collector's failure, sticky
        self.wake = threading.Event()  # decode_batch -> collector: shots are in flight
        self.closing = threading.Event()
        self.closed = False
        self.report: Any = None  # the kernel's StopReport once closed
        self.thread: threading.Thread | None = None
        self.close_lock = threading.Lock()


def _collect(s: _Shared, poll_sleep_s: float) -> None:
    """The collector thread: poll results, match residuals, file predictions by shot id."""
    pd = s.pd
    try:
        while not s.closing.is_set():
            if pd.in_flight == 0:
                s.wake.wait(0.05)
                s.wake.clear()  # anything pushed before this is counted in in_flight
                continue
            results = pd.poll()  # raises the kernel's recorded error once drained
            if not results:
                time.sleep(poll_sleep_s)  # also lets other Python threads run
                continue
            for r in results:
                if not r.decoded:
                    bad = {k: v for k, v in pd.counters().items() if v and k != "packets"}
                    raise RuntimeError(
                        f"the kernel returned shot {r.shot_id} {r.status.name} after {r.rounds} "
                        f"of {pd.tables.rounds} rounds (kernel counters: {bad})"
                    )
            residual = np.stack([r.residual for r in results]).astype(np.uint8)
            obs_flip = np.stack([r.obs_flip for r in results])
            rest = s.matching.decode_batch(residual)
            pred = obs_flip ^ np.asarray(rest, dtype=bool).reshape(len(results), s.n_obs)
            with s.cv:
                for r, p in zip(results, pred, strict=True):
                    if r.shot_id >= s.floor:
                        s.done[r.shot_id] = p
                s.cv.notify_all()
    except BaseException as ex:  # recorded; decode_batch reports it
        if s.closing.is_set():
            return  # close() stopped the kernel under a poll: not a failure
        with s.cv:
            s.error = ex
            s.cv.notify_all()


def _shutdown(s: _Shared, timeout_s: float = 5.0) -> Any:
    """Stop the kernel (shutdown flag, wait for its exit) and the collector; idempotent."""
    with s.close_lock:
        if s.closed:
            return s.report
        s.closed = True
        s.closing.set()
        s.wake.set()
        try:
            s.report = s.pd.stop(timeout_s=timeout_s)
        finally:
            t = s.thread
            if t is not None and t is not threading.current_thread():
                t.join(max(1.0, timeout_s))
            with s.cv:
                s.cv.notify_all()
        return s.report


class PersistentPreDecodedMatching:
    """``obs_flip ^ PyMatching(residual)`` with the pre-decoder as a persistent GPU kernel.

    Build with :meth:`from_circuit`; release with :meth:`close` (or ``with``).
    ``decode_batch`` may be called from one thread at a time (calls are serialized).
    """

    name = "predecoder"
    backend = BACKEND

    def __init__(
        self,
        predecoder: Any,
        matching: pymatching.Matching,
        *,
        num_observables: int,
        poll_sleep_s: float | None = None,
    ) -> None:
        self.predecoder = predecoder  # a started qhil.kernels._persistent.PersistentPreDecoder
        self.matching = matching
        self.num_detectors = int(predecoder.tables.num_detectors)
        self.num_observables = num_observables
        self.simulated = bool(predecoder.simulated)
        if poll_sleep_s is None:
            # On a GPU, yield the GIL between polls but do not sleep (latency); in the
            # simulator the kernel's threads are Python threads that need the GIL.
            poll_sleep_s = 1e-3 if self.simulated else 0.0
        self._s = _Shared(predecoder, matching, num_observables)
        self._submit_lock = threading.Lock()
        self._next_id = 0
        self._s.thread = threading.Thread(
            target=_collect, args=(self._s, poll_sleep_s), name="qhil-persistent-collector",
            daemon=True,
        )  # fmt: skip
        self._s.thread.start()
        # Safety net: stop the kernel when this object is collected or at interpreter exit.
        self._finalizer = weakref.finalize(self, _shutdown, self._s)

    @classmethod
    def from_circuit(
        cls,
        circuit: stim.Circuit,
        *,
        model: str | Path | QuantizedModel = "default",
        threshold: float = 0.0,
        watchdog_s: float = 2.0,
        n_slots: int = 256,
        threads: int | None = None,
    ) -> PersistentPreDecodedMatching:
        """Lay the pre-decoder out for ``circuit`` and launch its persistent kernel.

        Args:
            circuit: as for ``PreDecoder.for_circuit``.
            model: a packaged model name, a ``.npz`` model file, or a ``QuantizedModel``.
            threshold: as ``PreDecoder``'s.
            watchdog_s: heartbeat silence after which the kernel counts as stalled.
            n_slots: slots per ring direction (a power of two >= 2).
            threads: threads of the kernel's block (``PersistentPreDecoder.start``'s default).

        Raises:
            RuntimeError: the persistent kernel cannot run here (no GPU, no Numba CUDA),
                with the reason and what to do instead.
        """
        ok, why = persistent_available()
        if not ok:
            raise RuntimeError(
                f"the {BACKEND!r} pre-decoder backend needs an NVIDIA GPU with Numba's CUDA "
                f"target (the 'gpu' extra: numba-cuda, CuPy): {why}; {_FIX}"
            )
        from qhil.kernels._persistent import PersistentPreDecoder  # imports numba.cuda

        geometry = PreDecoderGeometry.from_circuit(circuit)
        qmodel = resolve_model(model)
        dem = circuit.detector_error_model(decompose_errors=True)
        matching = pymatching.Matching.from_detector_error_model(dem)
        pd = PersistentPreDecoder.start(
            geometry, qmodel, n_slots=n_slots, threads=threads, watchdog_s=watchdog_s,
            threshold=threshold,
        )  # fmt: skip
        try:
            return cls(pd, matching, num_observables=circuit.num_observables)
        except BaseException:
            pd.stop()
            raise

    # ------------------------------------------------------------------ decoding

    def _failed(self, err: BaseException) -> RuntimeError:
        return RuntimeError(
            f"the {BACKEND!r} pre-decoder failed ({type(err).__name__}): {err}. This decoder "
            "is unusable now; close it and build a new one"
        )

    def _check(self) -> None:
        s = self._s
        if s.closed:
            raise RuntimeError("this PersistentPreDecodedMatching is closed; build a new one")
        if s.error is not None:
            raise self._failed(s.error) from s.error
        t = s.thread
        if t is None or not t.is_alive():
            raise RuntimeError("the persistent pre-decoder's collector thread is not running")

    def _submit(self, first_id: int, dets: np.ndarray) -> None:
        from qhil.kernels._persistent import PersistentKernelError

        s, pd = self._s, self.predecoder
        try:
            batch = pd.rounds_of(first_id, dets)
            s.wake.set()  # in flight from now on: the collector polls
            k = pd.push(batch)
            while k < batch.num_packets:
                # The input ring is full: the kernel frees slots as it takes packets,
                # and the collector keeps draining its results meanwhile.
                self._check()
                time.sleep(2e-5)
                k = pd.push(batch, k)
        except PersistentKernelError as ex:
            raise self._failed(ex) from ex

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        """bool/uint8[shots, num_detectors] -> bool[shots, num_observables]."""
        d = np.asarray(dets)
        if d.ndim != 2 or d.shape[1] != self.num_detectors:
            raise ValueError(f"dets must have shape (shots, {self.num_detectors}); got {d.shape}")
        n = d.shape[0]
        out = np.zeros((n, self.num_observables), dtype=bool)
        if n == 0:
            return out
        d = np.ascontiguousarray(d, dtype=np.uint8)
        s = self._s
        with self._submit_lock:
            self._check()
            base = self._next_id
            self._next_id += n
            with s.cv:  # results of an earlier, interrupted call are never asked for
                s.floor = base
                s.done.clear()
            try:
                self._submit(base, d)
                with s.cv:
                    for i in range(n):
                        while base + i not in s.done:
                            if s.error is not None or s.closed or not _alive(s.thread):
                                self._check()
                            s.cv.wait(0.1)
                        out[i] = s.done.pop(base + i)
            except BaseException:
                with s.cv:  # forget this call's results (a later call never asks for them)
                    for i in range(n):
                        s.done.pop(base + i, None)
                raise
        return out

    # ------------------------------------------------------------------ lifetime

    @property
    def closed(self) -> bool:
        return self._s.closed

    def close(self, timeout_s: float = 5.0) -> Any:
        """Stop the kernel and the collector; returns the kernel's ``StopReport``. Idempotent."""
        self._finalizer.detach()
        return _shutdown(self._s, timeout_s)

    def __enter__(self) -> PersistentPreDecodedMatching:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _alive(t: threading.Thread | None) -> bool:
    return t is not None and t.is_alive()

"""The persistent GPU pre-decoder followed by PyMatching, behind the loop's decoder interface.

``qhil run --decoder predecoder --backend cuda-persistent`` uses it. The
pre-decoder kernel (``PersistentPreDecoder``) is launched ONCE, when the decoder
is built. A host *collector* thread polls the kernel's mapped output ring, runs
PyMatching on each batch of residuals as it arrives (overlapping the kernel's
work on later shots) and files ``obs_flip ^ PyMatching(residual)`` per shot.
The result is exactly ``PreDecodedMatching``'s (same model, same threshold):
the kernel reproduces ``PreDecoder.predecode`` bit for bit. Two ways in, and
one decoder uses one of them for its whole life (mixing them raises):

**Streaming** (``qhil.host.StreamingDecoder``; the decoder service uses it).
``on_round(packet)`` writes each round's raw wire-v1 packet into the kernel's
mapped input ring the moment the service accepted it (``GpuPacketSender``;
waiting for room while the ring is full, at most ``forward_timeout_s``), so the
kernel computes on a shot while it is still arriving and only the last round's
work is left when the shot completes. ``decode_streamed(streams, shots, dets)``
then waits for the collector to file those shots' results, keyed by the
(stream, shot) their packets carried; it never re-sends detection events.

What happens off the happy path (nothing is lost silently, nothing hangs):

- *The kernel could not finish a shot the host completed.* The kernel takes
  rounds strictly in order (it computes on each as it lands); the host's
  assembler also takes rounds that arrive out of order. Such a shot comes
  back INCOMPLETE from the kernel, or never opens there (its round 0 arrived
  late). ``decode_streamed`` knows no result will come once a later shot's
  result arrived (the kernel emits results in shot order) or the kernel has
  processed every packet forwarded so far (``packets_processed``) and the
  collector drained the ring after that; it then decodes the host's copy,
  ``dets``, with the same pre-decoder on the CPU (``fallback``, bit for bit
  the kernel's arithmetic) and counts it in ``shots_fallback``. Shots of a
  stream other than the kernel's take that path at once.
- *The host gave a shot up* (INCOMPLETE: rounds missing). ``abandon`` drops
  its result if it is filed, or marks it so the collector drops it on arrival
  (the kernel emits it INCOMPLETE when the next shot opens, at end of stream
  or at shutdown). Counted in ``shots_abandoned``.
- *A packet the kernel rejects* (it judges seq and round order itself) is
  counted by the kernel under its ``Reason`` (``kernel_*`` in
  ``streaming_counts()``); its shot then takes one of the two paths above.
- *A packet that cannot be forwarded* (the ring stayed full for
  ``forward_timeout_s``, or the kernel failed) is counted in
  ``rounds_not_forwarded``; its shot falls back as above, or, once the kernel
  failed, ``decode_streamed`` raises.
- *A restarted stream.* The kernel keeps the stream's seq and shot numbers for
  its whole life, so a front end that starts again from seq 0 is judged stale
  there and every shot takes the CPU fallback (counted); serve each session
  with a new decoder, as ``qhil serve`` and ``qhil run`` do.

**Batch** (``decode_batch(dets)``, for benchmarks and direct use) cuts whole
shots into per-round packets with the decoder's own shot ids and seq numbers,
pushes them into the ring in one compiled call per ring's worth, and returns
the predictions in submission order. Its packets are whole and in order, so a
shot the kernel returns INCOMPLETE is a failure there.

A kernel the watchdog finds stalled (``KernelStalled``) or one that failed turns
into a ``RuntimeError`` from ``decode_batch`` / ``decode_streamed`` naming the
failure; the decoder is unusable from then on. ``close()`` (also the context
manager, a ``weakref.finalize`` when the object is collected, and interpreter
exit) sets the kernel's shutdown flag, waits for it to exit and stops the
collector.

Without a GPU the backend is refused with the reason and the fix, unless
``NUMBA_ENABLE_CUDASIM=1`` was set before Numba's CUDA target was imported: the
kernel then runs in Numba's CUDA simulator (slow, but exact; for testing).
"""

from __future__ import annotations

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
from qhil.kernels._pipeline import PreDecodedMatching
from qhil.kernels._predecoder import (
    PreDecoder,
    available_backends,
    default_threshold,
    resolve_model,
)
from qhil.kernels.persistent._available import BACKEND, FIX, persistent_available
from qhil.kernels.persistent._collector import NO_RESULT, Shared, alive, collect, shutdown
from qhil.kernels.persistent._tables import D_STREAM

__all__ = ["PersistentPreDecodedMatching", "persistent_available"]

_FALLBACK_BACKENDS = ("auto", "numba", "numpy")


class PersistentPreDecodedMatching:
    """``obs_flip ^ PyMatching(residual)`` with the pre-decoder as a persistent GPU kernel.

    Build with :meth:`from_circuit`; release with :meth:`close` (or ``with``).
    ``decode_batch`` may be called from one thread at a time (calls are serialized);
    the streaming methods (``on_round``, ``decode_streamed``, ``abandon``) from one
    thread, the decoder service's.
    """

    name = "predecoder"
    backend = BACKEND

    def __init__(
        self,
        predecoder: Any,
        matching: pymatching.Matching,
        *,
        num_observables: int,
        fallback: Any = None,
        forward_timeout_s: float = 1.0,
        poll_sleep_s: float | None = None,
        correlated: bool = False,
    ) -> None:
        self.predecoder = predecoder  # a started PersistentPreDecoder
        self.matching = matching
        # Decodes, on the CPU, shots the kernel could not finish (PreDecodedMatching or None).
        self.fallback = fallback
        self.forward_timeout_s = forward_timeout_s
        self._counts = dict.fromkeys(
            ("rounds_forwarded", "rounds_not_forwarded", "shots_kernel", "shots_fallback",
             "shots_abandoned", "batch_calls"), 0,
        )  # fmt: skip
        self._kernel_stream = int(predecoder.tables.dims[D_STREAM])
        from qhil.bridge import TransportClosed
        from qhil.kernels.persistent._launch import PersistentKernelError  # loaded: the kernel runs

        self._forward_errors = (PersistentKernelError, TransportClosed)
        self.num_detectors = int(predecoder.tables.num_detectors)
        self.num_observables = num_observables
        self.simulated = bool(predecoder.simulated)
        if poll_sleep_s is None:
            # On a GPU, yield the GIL between polls but do not sleep (latency); in the
            # simulator the kernel's threads are Python threads that need the GIL.
            poll_sleep_s = 1e-3 if self.simulated else 0.0
        self.correlated = correlated
        self._s = Shared(predecoder, matching, num_observables, correlated=correlated)
        self._submit_lock = threading.Lock()
        self._next_id = 0
        self._s.thread = threading.Thread(
            target=collect, args=(self._s, poll_sleep_s), name="qhil-persistent-collector",
            daemon=True,
        )  # fmt: skip
        self._s.thread.start()
        # Safety net: stop the kernel when this object is collected or at interpreter exit.
        self._finalizer = weakref.finalize(self, shutdown, self._s)

    @classmethod
    def from_circuit(
        cls,
        circuit: stim.Circuit,
        *,
        model: str | Path | QuantizedModel = "default",
        threshold: float | None = None,
        watchdog_s: float = 2.0,
        n_slots: int = 256,
        threads: int | None = None,
        fallback_backend: str = "auto",
        forward_timeout_s: float = 1.0,
        correlated: bool = True,
    ) -> PersistentPreDecodedMatching:
        """Lay the pre-decoder out for ``circuit`` and launch its persistent kernel.

        Args:
            circuit: as for ``PreDecoder.for_circuit``.
            model: a packaged model name, a ``.npz`` model file, or a ``QuantizedModel``.
            threshold: as ``PreDecoder``'s.
            watchdog_s: heartbeat silence after which the kernel counts as stalled.
            n_slots: slots per ring direction (a power of two >= 2).
            threads: threads of the kernel's block (``PersistentPreDecoder.start``'s default).
            fallback_backend: the CPU pre-decoder for streamed shots the kernel could
                not finish: "numba", "numpy", or "auto" (numba where it imports).
                Never a GPU backend: it would queue behind the persistent kernel.
            forward_timeout_s: how long ``on_round`` waits for room in the input ring.
            correlated: as ``PreDecodedMatching.from_circuit``'s (correlated PyMatching
                on the residual by default).

        Raises:
            RuntimeError: the persistent kernel cannot run here (no GPU, no Numba CUDA),
                with the reason and what to do instead.
        """
        if fallback_backend not in _FALLBACK_BACKENDS:
            raise ValueError(
                f"fallback_backend={fallback_backend!r}; choose one of {_FALLBACK_BACKENDS}"
            )
        if not forward_timeout_s > 0:
            raise ValueError(f"forward_timeout_s must be > 0; got {forward_timeout_s!r}")
        ok, why = persistent_available()
        if not ok:
            raise RuntimeError(
                f"the {BACKEND!r} pre-decoder backend needs an NVIDIA GPU with Numba's CUDA "
                f"target (the 'gpu' extra: numba-cuda, CuPy): {why}; {FIX}"
            )
        from qhil.kernels.persistent._predecoder import PersistentPreDecoder  # imports numba.cuda

        geometry = PreDecoderGeometry.from_circuit(circuit)
        qmodel = resolve_model(model)
        if threshold is None:
            threshold = default_threshold(qmodel, correlated=correlated)
        dem = circuit.detector_error_model(decompose_errors=True)
        matching = pymatching.Matching.from_detector_error_model(
            dem, enable_correlations=correlated
        )
        if fallback_backend == "auto":
            cpu = [b for b in available_backends() if b in _FALLBACK_BACKENDS]
            fallback_backend = cpu[0] if cpu else "numpy"
        fallback = PreDecodedMatching(  # its own Matching: the collector thread uses the other
            PreDecoder(geometry, qmodel, fallback_backend, threshold=threshold),
            pymatching.Matching.from_detector_error_model(dem, enable_correlations=correlated),
            num_observables=circuit.num_observables,
            correlated=correlated,
        )
        fallback.decode_batch(np.zeros((1, circuit.num_detectors), dtype=np.uint8))  # compile
        pd = PersistentPreDecoder.start(
            geometry, qmodel, n_slots=n_slots, threads=threads, watchdog_s=watchdog_s,
            threshold=threshold,
        )  # fmt: skip
        try:
            return cls(
                pd, matching, num_observables=circuit.num_observables, fallback=fallback,
                forward_timeout_s=forward_timeout_s, correlated=correlated,
            )  # fmt: skip
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

    def _enter(self, mode: str) -> None:
        """Fix this decoder's mode on first use; refuse the other one afterwards."""
        s = self._s
        if s.mode == mode:
            return
        if s.mode is not None:
            raise RuntimeError(
                f"this decoder is in {s.mode!r} mode and cannot switch to {mode!r}: the kernel "
                "takes one packet stream, and batch shots (the decoder's own shot ids and seq "
                "numbers) would be judged stale or out of order within the streamed ones; "
                "build a second PersistentPreDecodedMatching for the other use"
            )
        s.mode = mode

    def _submit(self, first_id: int, dets: np.ndarray) -> None:
        from qhil.kernels.persistent._launch import PersistentKernelError

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
            self._enter("batch")
            self._counts["batch_calls"] += 1
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
                            if s.error is not None or s.closed or not alive(s.thread):
                                self._check()
                            s.cv.wait(0.1)
                        out[i] = s.done.pop(base + i)
            except BaseException:
                with s.cv:  # forget this call's results (a later call never asks for them)
                    for i in range(n):
                        s.done.pop(base + i, None)
                raise
        return out

    # ------------------------------------------------------------------ streaming

    def on_round(self, packet: np.ndarray) -> None:
        """Write one round's raw packet (uint8[length]) into the kernel's input ring now.

        Never raises for a dead kernel or a ring that stayed full for
        ``forward_timeout_s``: the packet is counted in ``rounds_not_forwarded``
        and its shot is settled by ``decode_streamed`` (fallback, or the
        kernel's error).
        """
        self._enter("stream")
        s, c = self._s, self._counts
        if s.error is not None or s.closed:
            c["rounds_not_forwarded"] += 1
            return
        try:
            ok = self.predecoder.sender.send(packet, timeout_s=self.forward_timeout_s)
        except self._forward_errors:  # recorded by the kernel's owner; decode_streamed reports
            ok = False
        if ok:
            c["rounds_forwarded"] += 1
            s.wake.set()  # the collector polls while packets are unprocessed
        else:
            c["rounds_not_forwarded"] += 1

    def decode_streamed(
        self, streams: np.ndarray, shots: np.ndarray, dets: np.ndarray
    ) -> np.ndarray:
        """int64[n] streams and wire shot numbers -> bool[n, num_observables].

        Waits for the kernel's result of each shot (filed by the collector). A
        shot whose result cannot come (see the module docs) is decoded from
        ``dets`` (uint8[n, num_detectors], the host's assembled copy) by the CPU
        fallback, the same pre-decoder, and counted in ``shots_fallback``.
        Raises RuntimeError once the kernel failed or the decoder is closed.
        """
        self._enter("stream")
        self._check()
        s, n = self._s, len(shots)
        out = np.zeros((n, self.num_observables), dtype=bool)
        need = self.predecoder.ring.pushed  # every round of these shots went in by now
        missing: list[int] = []
        with s.cv:
            for i in range(n):
                key = (int(streams[i]), int(shots[i]))
                mine = key[0] == self._kernel_stream
                while mine and key not in s.streamed:
                    if s.drained >= need or s.last_shot > key[1]:
                        break  # no result will come for it
                    if s.error is not None or s.closed or not alive(s.thread):
                        self._check()
                    s.cv.wait(0.1)
                value = s.streamed.pop(key, NO_RESULT)
                if value is None or value is NO_RESULT:
                    missing.append(i)
                    if value is NO_RESULT and mine and key[1] > s.last_shot:
                        s.dropped.add(key)  # the kernel holds it open: drop its record later
                else:
                    out[i] = value
        if missing:
            if self.fallback is None:
                raise RuntimeError(
                    f"the kernel could not finish {len(missing)} streamed shot(s) and this "
                    "decoder has no CPU fallback; build it with from_circuit"
                )
            out[missing] = self.fallback.decode_batch(np.asarray(dets)[missing])
        self._counts["shots_kernel"] += n - len(missing)
        self._counts["shots_fallback"] += len(missing)
        return out

    def abandon(self, stream: int, shot: int) -> None:
        """Forget a shot the host gave up: drop its result now, or when it arrives."""
        s, key = self._s, (int(stream), int(shot))
        self._counts["shots_abandoned"] += 1
        with s.cv:
            if s.streamed.pop(key, NO_RESULT) is NO_RESULT:
                if key[0] == self._kernel_stream and key[1] > s.last_shot:
                    s.dropped.add(key)

    def streaming_counts(self) -> dict[str, int]:
        """This decoder's counters, and the kernel's as ``kernel_<name>``.

        ``rounds_forwarded`` + ``rounds_not_forwarded`` = ``on_round`` calls;
        ``shots_kernel`` + ``shots_fallback`` = shots ``decode_streamed`` returned;
        ``kernel_records_incomplete``: INCOMPLETE results the kernel emitted in
        stream mode; ``batch_calls``: ``decode_batch`` calls. The kernel's counters
        are exact once it is idle or stopped.
        """
        out = dict(self._counts)
        out["kernel_records_incomplete"] = self._s.records_incomplete
        out.update({f"kernel_{k}": v for k, v in self.predecoder.counters().items()})
        return out

    # ------------------------------------------------------------------ lifetime

    @property
    def closed(self) -> bool:
        return self._s.closed

    def close(self, timeout_s: float = 5.0) -> Any:
        """Stop the kernel and the collector; returns the kernel's ``StopReport``. Idempotent."""
        self._finalizer.detach()
        return shutdown(self._s, timeout_s)

    def __enter__(self) -> PersistentPreDecodedMatching:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

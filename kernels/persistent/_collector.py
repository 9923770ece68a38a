"""The host side of ``PersistentPreDecodedMatching``: its collector thread and shutdown.

The collector polls the persistent kernel's mapped output ring, runs PyMatching
on each batch of DECODED residuals and files ``obs_flip ^ PyMatching(residual)``:

- batch mode: by the decoder's own shot id (``Shared.done``); a result that
  is not DECODED is a failure there (the batch path sends whole, ordered shots);
- stream mode: by the (stream, shot) the packets carried (``Shared.streamed``),
  ``None`` where the kernel reports INCOMPLETE; results of shots the host
  already gave up (``Shared.dropped``) are dropped on arrival. The kernel
  emits results in increasing shot order, so once shot X's result is filed,
  no result of an older shot will come; and ``Shared.drained`` says how many
  of the packets forwarded so far the kernel processed with every result of
  theirs filed. ``decode_streamed`` waits on those two facts, never on a clock.

A failure in the collector (the kernel's recorded error, a stall) is kept in
``Shared.error``, sticky, for the decoder's calls to raise.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pymatching

__all__ = ["NO_RESULT", "Shared", "alive", "collect", "shutdown"]

NO_RESULT = object()


class Shared:
    """State the collector thread and the finalizer share; never refers to the decoder."""

    def __init__(
        self, predecoder: Any, matching: pymatching.Matching, n_obs: int, *, correlated: bool
    ) -> None:
        self.pd = predecoder
        self.matching = matching
        self.correlated = correlated
        self.n_obs = n_obs
        self.cv = threading.Condition()
        self.mode: str | None = None  # "batch" or "stream", fixed by the first use
        # batch mode: shot id -> bool[n_obs], filled by the collector
        self.done: dict[int, np.ndarray] = {}
        self.floor = 0  # ids below this were abandoned (an interrupted call): not filed
        # stream mode: (stream, shot) -> bool[n_obs], or None where the kernel said INCOMPLETE
        self.streamed: dict[tuple[int, int], np.ndarray | None] = {}
        self.dropped: set[tuple[int, int]] = set()  # abandoned before their result came
        self.last_shot = -1  # newest shot with a result (the kernel emits them in shot order)
        self.drained = 0  # packets the kernel processed whose results are all filed
        self.records_incomplete = 0
        self.error: BaseException | None = None  # the collector's failure, sticky
        self.wake = threading.Event()  # decode_batch -> collector: shots are in flight
        self.closing = threading.Event()
        self.closed = False
        self.report: Any = None  # the kernel's StopReport once closed
        self.thread: threading.Thread | None = None
        self.close_lock = threading.Lock()


def collect(s: Shared, poll_sleep_s: float) -> None:
    """The collector thread: poll results, match residuals, file predictions by shot id."""
    pd = s.pd
    n_slots = pd.ring.spec.n_slots
    try:
        while not s.closing.is_set():
            if pd.in_flight <= 0 and pd.ring.pushed <= s.drained:
                s.wake.wait(0.05)
                s.wake.clear()  # anything pushed before this shows in in_flight / pushed
                continue
            processed = pd.packets_processed  # before the poll: their results are all in it
            results = pd.poll()  # raises the kernel's recorded error once drained
            if s.mode == "stream":
                _file_streamed(s, results, processed if len(results) < n_slots else None)
            elif results:
                _file_batch(s, results)
            if not results:
                time.sleep(poll_sleep_s)  # also lets other Python threads run
    except BaseException as ex:  # recorded; decode_batch reports it
        if s.closing.is_set():
            return  # close() stopped the kernel under a poll: not a failure
        with s.cv:
            s.error = ex
            s.cv.notify_all()


def _match(s: Shared, results: list[Any]) -> np.ndarray:
    """bool[len(results), n_obs]: ``obs_flip ^ PyMatching(residual)`` of DECODED results."""
    residual = np.stack([r.residual for r in results]).astype(np.uint8)
    obs_flip = np.stack([r.obs_flip for r in results])
    rest = s.matching.decode_batch(residual, enable_correlations=s.correlated)
    return obs_flip ^ np.asarray(rest, dtype=bool).reshape(len(results), s.n_obs)


def _file_batch(s: Shared, results: list[Any]) -> None:
    for r in results:
        if not r.decoded:
            bad = {k: v for k, v in s.pd.counters().items() if v and k != "packets"}
            raise RuntimeError(
                f"the kernel returned shot {r.shot_id} {r.status.name} after {r.rounds} "
                f"of {s.pd.tables.rounds} rounds (kernel counters: {bad})"
            )
    pred = _match(s, results)
    with s.cv:
        for r, p in zip(results, pred, strict=True):
            if r.shot_id >= s.floor:
                s.done[r.shot_id] = p
        s.cv.notify_all()


def _file_streamed(s: Shared, results: list[Any], processed: int | None) -> None:
    """File stream-mode results by (stream, shot); ``processed``: all of theirs are in."""
    if not results and (processed is None or processed <= s.drained):
        return
    keep = [r for r in results if r.decoded]
    pred = _match(s, keep) if keep else None
    with s.cv:
        k = 0
        for r in results:
            key = (r.stream, r.shot_id)
            s.last_shot = max(s.last_shot, r.shot_id)
            value = None
            if r.decoded:
                value, k = pred[k], k + 1  # type: ignore[index]
            else:
                s.records_incomplete += 1
            if key in s.dropped:
                s.dropped.discard(key)
            else:
                s.streamed[key] = value
        if s.dropped and results:  # results come in shot order: older ones never will
            s.dropped = {key for key in s.dropped if key[1] > s.last_shot}
        if processed is not None:
            s.drained = max(s.drained, processed)
        s.cv.notify_all()


def shutdown(s: Shared, timeout_s: float = 5.0) -> Any:
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


def alive(t: threading.Thread | None) -> bool:
    return t is not None and t.is_alive()

"""Sliding-window matching: a shot decoded window by window, as its rounds arrive.

Block decoding waits for a shot's last round and then matches all of it, so the work left
after the last round grows with the round count. A sliding-window decoder (the
"overlapping recovery" of Dennis et al. 2002; commit and buffer regions as in Skoric et
al. 2023) matches a window of ``commit + buffer`` rounds as soon as they are in, keeps
(*commits*) the matched edges that touch its first ``commit`` rounds, and moves on by
``commit`` rounds. The last window, which reaches the shot's end, commits everything. So
the work after the last round is one window's, whatever the round count.

Each window is a PyMatching graph cut from the circuit's detector error model:

- edges between two detectors of the window are kept;
- an edge from a window detector to a later one (beyond the window) becomes a boundary
  edge of the same weight: the artificial boundary at the window's top;
- an edge to an earlier, already committed detector is dropped: that side was settled
  when the earlier window committed.

Committing edge ``(u, v)`` flips the logical observables it carries; if ``v`` lies in
the buffer, its detection event is flipped for the next window (the correction is
applied, so the syndrome it leaves moves on). With ``buffer >= 1`` no committed edge
reaches the artificial boundary. Windows are cut once, when the decoder is built.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=9,
...                            after_clifford_depolarization=0.01)
>>> dec = WindowedMatching.from_circuit(c, commit=2, buffer=3)
>>> [(w.first_round, w.commit_end, w.end) for w in dec.windows]
[(0, 2, 5), (2, 4, 7), (4, 6, 9), (6, 10, 10)]
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pymatching
import stim

__all__ = ["Window", "WindowedMatching"]


@dataclasses.dataclass(frozen=True)
class Window:
    """One window: rounds ``first_round .. end - 1``; edges touching rounds below
    ``commit_end`` are committed (``commit_end == end`` for the last window). In
    detectors the window holds ``lo .. hi - 1`` and commits ``lo .. commit_hi - 1``."""

    first_round: int
    commit_end: int
    end: int
    lo: int
    commit_hi: int
    hi: int
    matching: pymatching.Matching
    obs: dict[tuple[int, int], int]  # window-local (u, v) or (u, -1) -> observable mask


class WindowedMatching:
    """Sliding-window PyMatching over one circuit's detector error model.

    ``det_offsets[t] .. det_offsets[t + 1] - 1`` are round ``t``'s detectors (stim's
    order, as the front end sends them: ``DetectorProgram.det_offsets``).
    """

    def __init__(self, dem: stim.DetectorErrorModel, det_offsets: np.ndarray, *,
                 num_observables: int, commit: int, buffer: int) -> None:  # fmt: skip
        rounds = len(det_offsets) - 1
        if commit < 1 or buffer < 1:
            raise ValueError(f"commit and buffer must be >= 1 round; got {commit}, {buffer}")
        self.name = "pymatching-windowed"
        self.det_offsets = np.asarray(det_offsets, dtype=np.int64)
        self.num_detectors = int(self.det_offsets[-1])
        self.num_observables = num_observables
        self.commit, self.buffer = commit, buffer
        self._obs_weights = (1 << np.arange(num_observables)).astype(object)
        edges = pymatching.Matching.from_detector_error_model(dem).edges()
        windows, first = [], 0
        while True:
            end = min(first + commit + buffer, rounds)
            windows.append(self._cut(edges, first, end, rounds))
            if end == rounds:  # the last window reaches the end and commits all of it
                break
            first += commit
        self.windows: tuple[Window, ...] = tuple(windows)

    @classmethod
    def from_circuit(
        cls,
        circuit: stim.Circuit,
        *,
        det_offsets: np.ndarray | None = None,
        commit: int | None = None,
        buffer: int | None = None,
    ) -> WindowedMatching:
        """Windows for ``circuit``; ``commit`` and ``buffer`` default to the code distance
        (estimated from the detectors per round), which keeps the logical error rate at
        block decoding's. ``det_offsets`` default: one round per detector time
        coordinate."""
        if det_offsets is None:
            det_offsets = _offsets_by_time(circuit)
        per_round = int(np.median(np.diff(det_offsets)))
        d = max(3, round(math.sqrt(per_round + 1)))  # a bulk round: d^2 - 1 stabilizers
        return cls(
            circuit.detector_error_model(decompose_errors=True),
            det_offsets,
            num_observables=circuit.num_observables,
            commit=d if commit is None else commit,
            buffer=d if buffer is None else buffer,
        )

    def _cut(self, edges: list, first: int, end: int, rounds: int) -> Window:
        off = self.det_offsets
        commit_end = end if end == rounds else first + self.commit
        lo, commit_hi, hi = int(off[first]), int(off[commit_end]), int(off[end])
        m = pymatching.Matching()
        m.ensure_num_fault_ids(self.num_observables)
        obs: dict[tuple[int, int], int] = {}
        for u, v, data in edges:
            if v is not None and u > v:
                u, v = v, u
            if not lo <= u < hi and (v is None or not lo <= v < hi):
                continue
            w, ids = data["weight"], data["fault_ids"]
            mask = sum(1 << int(f) for f in ids)
            if v is None:  # the code's own boundary
                m.add_boundary_edge(
                    u - lo, fault_ids=ids, weight=w, merge_strategy="smallest-weight"
                )
                obs[(u - lo, -1)] = mask
            elif lo <= u and v < hi:
                m.add_edge(
                    u - lo, v - lo, fault_ids=ids, weight=w, merge_strategy="smallest-weight"
                )
                obs[(u - lo, v - lo)] = mask
            elif v >= hi and u >= lo:  # to a later round: the window's artificial top
                m.add_boundary_edge(u - lo, weight=w, merge_strategy="smallest-weight")
            # else: to a committed round (u < lo): settled already
        if m.num_detectors < hi - lo:  # detectors with no edge still need a node
            m.add_boundary_edge(hi - lo - 1, weight=1e9, merge_strategy="smallest-weight")
        return Window(first, commit_end, end, lo, commit_hi, hi, m, obs)

    def commit_window(self, w: Window, syndrome: np.ndarray) -> int:
        """Match window ``w`` on ``syndrome`` (uint8[num_detectors], updated in place:
        the committed edges' events carried into the buffer); returns the observable
        mask of the committed edges."""
        if w.end == w.commit_end:  # the last window keeps every match: PyMatching's own answer
            pred = w.matching.decode_batch(syndrome[None, w.lo : w.hi])[0]
            return int(pred[0]) if len(pred) == 1 else int(np.dot(pred, self._obs_weights))
        edges = w.matching.decode_to_edges_array(syndrome[w.lo : w.hi])
        final, c = False, w.commit_hi - w.lo
        flips = 0
        for a, b in edges:
            a, b = int(a), int(b)
            if b != -1 and a > b:
                a, b = b, a
            if b == -1:
                if final or a < c:
                    flips ^= w.obs.get((a, -1), 0)
                continue
            if not final and a >= c:
                continue  # wholly in the buffer: the next window decides it
            flips ^= w.obs[(a, b)]
            if b >= c and not final:
                syndrome[w.lo + b] ^= 1  # carried: the next window sees what it leaves
        return flips

    def decode_batch(self, dets: np.ndarray) -> np.ndarray:
        """bool[shots, num_observables] predictions of uint8/bool[shots, num_detectors]."""
        if dets.ndim != 2 or dets.shape[1] != self.num_detectors:
            raise ValueError(
                f"dets must have shape (shots, {self.num_detectors}); got {dets.shape}"
            )
        out = np.zeros((dets.shape[0], self.num_observables), dtype=np.bool_)
        for i in range(dets.shape[0]):
            syndrome = dets[i].astype(np.uint8)  # a copy: commit_window writes carries into it
            out[i] = self.obs_bits(self.commit_from(0, syndrome))
        return out

    def commit_from(self, first_window: int, syndrome: np.ndarray) -> int:
        """Commit windows ``first_window ..`` to the end; their observable mask."""
        flips = 0
        for w in self.windows[first_window:]:
            flips ^= self.commit_window(w, syndrome)
        return flips

    def obs_bits(self, flips: int) -> np.ndarray:
        """bool[num_observables] of an observable mask."""
        return ((flips >> np.arange(self.num_observables)) & 1).astype(np.bool_)


def _offsets_by_time(circuit: stim.Circuit) -> np.ndarray:
    """Round boundaries in detector order, from each detector's last (time) coordinate."""
    coords = circuit.get_detector_coordinates()
    t = np.array([coords[i][-1] for i in range(circuit.num_detectors)])
    if np.any(np.diff(t) < 0):
        raise ValueError("detectors are not in time order; pass det_offsets explicitly")
    starts = np.flatnonzero(np.diff(t)) + 1
    return np.concatenate([[0], starts, [circuit.num_detectors]]).astype(np.int64)

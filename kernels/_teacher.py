"""Teacher labels: a stronger decoder's correction of each shot, as pre-decoder outputs.

A shot's label under ``CanonicalLabels`` is the XOR of the canonical
corrections of the mechanisms that fired. Two different fault sets can leave
the same detection events and get different labels, so close pairs of faults
teach the network contradictions (46% of close-pair syndromes had more than one
valid label). A teacher decoder fixes that: the label of a syndrome is what
*correlated PyMatching* does with it, one deterministic answer per syndrome.

Each edge of the teacher's matching (``decode_to_edges_array``: a detector
pair, or a detector and the boundary) is one graph-like component, with the
observable flip the matching graph stores for that edge. It maps to output
entries by the same canonical rules as a DEM component (``kernels/_labels.py``).
The label of a shot is the XOR of its edges' corrections, so
``footprint(label) == (dets, teacher's prediction)`` holds exactly: the network
learns to do locally what the teacher does globally.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=3,
...                            after_clifford_depolarization=0.004)
>>> teacher = TeacherLabels.from_circuit(c)
>>> dets, labels, predicted = teacher.sample(200, seed=1)
>>> fp_dets, fp_obs = teacher.geometry.footprint(labels)
>>> bool((fp_dets == dets).all() and (fp_obs == predicted).all())
True
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pymatching
import stim

from ._geometry import PreDecoderGeometry
from ._labels import _EntryTable, _map_component

__all__ = ["TeacherLabels"]

_BOUNDARY = -1


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherLabels:
    """Labels a circuit's shots with correlated PyMatching's corrections.

    Build it with :meth:`from_circuit`.

    Attributes:
        geometry: the pre-decoder layout of the circuit.
        dem: the decomposed detector error model shots are sampled from.
        matching: the teacher, built from ``dem`` with correlations enabled.
    """

    geometry: PreDecoderGeometry
    dem: stim.DetectorErrorModel
    matching: pymatching.Matching
    _table: _EntryTable
    _edges: dict[tuple[int, int], np.ndarray]

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> TeacherLabels:
        """The teacher for ``circuit`` (a rotated memory circuit with one observable)."""
        geometry = PreDecoderGeometry.from_circuit(circuit)
        dem = circuit.detector_error_model(decompose_errors=True)
        matching = pymatching.Matching.from_detector_error_model(dem, enable_correlations=True)
        return cls(geometry, dem, matching, _EntryTable(geometry), {})

    @property
    def label_shape(self) -> tuple[int, int, int, int]:
        """(4, T, d, d): one shot's label."""
        return (4, *self.geometry.shape)

    def _edge_entries(self, u: int, v: int) -> np.ndarray:
        """Flat output entries of one matched edge (v = -1: the boundary), cached."""
        key = (u, v) if v == _BOUNDARY or u < v else (v, u)
        if key not in self._edges:
            a, b = key
            if b == _BOUNDARY:
                data = self.matching.get_boundary_edge_data(a)
                dets = frozenset([a])
            else:
                data = self.matching.get_edge_data(a, b)
                dets = frozenset([a, b])
            obs = bool(len(data["fault_ids"]) % 2)
            _, entries = _map_component(self._table, dets, obs)
            if entries is None:
                raise ValueError(f"no output entries reproduce the matching edge {key} (L0={obs})")
            self._edges[key] = np.array(entries, dtype=np.int64)
        return self._edges[key]

    def labels(self, dets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Label shots by the teacher's decoding of them.

        Args:
            dets: bool or uint8[shots, num_detectors], stim detector order.

        Returns:
            (labels uint8[shots, 4, T, d, d], 0/1, zero outside ``output_mask``;
            predicted bool[shots, 1], the teacher's observable prediction).
        """
        dets = np.asarray(dets, dtype=np.uint8)
        if dets.ndim != 2 or dets.shape[1] != self.geometry.num_detectors:
            raise ValueError(
                f"dets must have shape (shots, {self.geometry.num_detectors}); got {dets.shape}"
            )
        shots = dets.shape[0]
        size = int(np.prod(self.label_shape))
        out = np.zeros((shots, size), dtype=np.uint8)
        for s in np.flatnonzero(dets.any(axis=1)):
            edges = self.matching.decode_to_edges_array(dets[s], enable_correlations=True)
            for u, v in edges.tolist():
                out[s, self._edge_entries(u, v)] ^= 1
        labels = out.reshape(shots, *self.label_shape)
        _, predicted = self.geometry.footprint(labels)
        return labels, predicted

    def sample(self, shots: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample the DEM and label the shots with the teacher's corrections.

        Returns:
            (dets bool[shots, num_detectors], labels uint8[shots, 4, T, d, d],
            predicted bool[shots, 1]); ``geometry.footprint(labels) == (dets, predicted)``.
        """
        dets, _, _ = self.dem.compile_sampler(seed=seed).sample(shots)
        labels, predicted = self.labels(dets)
        return dets, labels, predicted

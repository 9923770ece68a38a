"""Where each detector of a rotated surface-code memory circuit sits on the D×D grid.

Data qubit at stim coordinates (x, y) (odd, 1..2d-1) is cell (row=(y-1)//2, col=(x-1)//2).
A stabilizer (measure qubit at even coordinates) sits on the cell of the *first data qubit
of its support in row-major order*, i.e. its smallest (row, col). For a bulk plaquette at
(x, y) that is the data qubit at (x-1, y-1), cell (y/2-1, x/2-1); boundary plaquettes
(weight 2) land on their own support too. Per stabilizer type the map is injective: bulk
plaquettes fill a checkerboard of rows/cols 0..d-2; a top (y=0) or left (x=0) boundary
plaquette lands on row 0 / col 0 where the bulk neighbour sharing that cell has the
other type; bottom/right ones use row/col d-1, which no bulk plaquette uses.
``layout_test.py`` checks this for d=3..15.

The stabilizer type comes from the circuit, not from coordinates: a measure qubit that
is the control of its CX gates measures X parity (kind 0); one that is the target
measures Z parity (kind 1).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import stim

from ._scan import X_KIND, Z_KIND, scan_memory_circuit, scan_memory_dem

__all__ = ["X_KIND", "Z_KIND", "DetectorLayout"]


def _frozen(array: npt.ArrayLike, dtype: npt.DTypeLike) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class DetectorLayout:
    """Detector → (kind, time, row, col) map of a rotated surface-code memory circuit.

    Build it with :meth:`from_circuit` or :meth:`from_dem`. Array fields are read-only numpy arrays:

    - ``time``: int32[num_detectors], detector time coordinate t in 0..rounds; t ==
      rounds are the final detectors built from the data-qubit measurements.
    - ``row``, ``col``: int32[num_detectors], grid cell of the detector's stabilizer.
    - ``kind``: uint8[num_detectors], 0 = X-type stabilizer, 1 = Z-type.
    - ``round_offsets``: int64[rounds+2], detectors of time t are the indices
      ``round_offsets[t]:round_offsets[t+1]``.
    - ``x_present``, ``z_present``: bool[d, d], cells holding an X / Z stabilizer.
    - ``logical_support``: bool[d, d], data qubits in the observable's support.
    - ``data_qubits``: int32[d, d], stim qubit index of the data qubit on each cell.
    - ``stabilizer_qubits``: int32[2, d, d], stim index of the measure qubit of each
      (kind, cell), -1 where there is none.
    - ``parity_check``: uint8[2, d*d, d*d], ``parity_check[k, r*d+c, r2*d+c2] == 1``
      when the type-k stabilizer on cell (r, c) acts on data cell (r2, c2); rows of
      empty cells are zero. ``parity_check[0] @ z_flips % 2`` is the X syndrome.

    >>> layout = DetectorLayout.from_circuit(
    ...     stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2))
    >>> layout.distance, layout.rounds, layout.basis, layout.num_detectors
    (3, 2, 'z', 16)
    >>> layout.round_offsets.tolist()
    [0, 4, 12, 16]
    >>> layout.x_present.astype(int).tolist()
    [[1, 1, 0], [1, 0, 0], [0, 1, 0]]
    >>> layout
    DetectorLayout(distance=3, rounds=2, basis='z', num_detectors=16, num_observables=1)
    """

    distance: int
    rounds: int
    basis: str
    num_observables: int
    time: np.ndarray
    row: np.ndarray
    col: np.ndarray
    kind: np.ndarray
    round_offsets: np.ndarray
    x_present: np.ndarray
    z_present: np.ndarray
    logical_support: np.ndarray
    data_qubits: np.ndarray
    stabilizer_qubits: np.ndarray
    parity_check: np.ndarray
    data_qubit_cells: Mapping[int, tuple[int, int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d, t_max = self.distance, self.rounds
        if isinstance(d, bool) or not isinstance(d, int) or d < 3 or d % 2 == 0:
            raise ValueError(f"distance must be an odd integer >= 3; got {d!r}")
        if isinstance(t_max, bool) or not isinstance(t_max, int) or t_max < 1:
            raise ValueError(f"rounds must be an integer >= 1; got {t_max!r}")
        if self.basis not in ("x", "z"):
            raise ValueError(f"basis must be one of 'x', 'z'; got {self.basis!r}")
        if self.num_observables < 0:
            raise ValueError(f"num_observables must be >= 0; got {self.num_observables}")
        specs: dict[str, tuple[npt.DTypeLike, tuple[int, ...] | None]] = {
            "time": (np.int32, None),
            "row": (np.int32, None),
            "col": (np.int32, None),
            "kind": (np.uint8, None),
            "round_offsets": (np.int64, (t_max + 2,)),
            "x_present": (np.bool_, (d, d)),
            "z_present": (np.bool_, (d, d)),
            "logical_support": (np.bool_, (d, d)),
            "data_qubits": (np.int32, (d, d)),
            "stabilizer_qubits": (np.int32, (2, d, d)),
            "parity_check": (np.uint8, (2, d * d, d * d)),
        }
        n = np.shape(self.time)
        for name, (dtype, shape) in specs.items():
            value = _frozen(getattr(self, name), dtype)
            want = n if shape is None else shape
            if value.shape != want:
                raise ValueError(f"{name} must have shape {want}; got {value.shape}")
            object.__setattr__(self, name, value)
        if len(n) != 1:
            raise ValueError(f"time must be 1-D; got shape {n}")
        self._check_detectors()
        cells = {int(q): (r, c) for (r, c), q in np.ndenumerate(self.data_qubits)}
        object.__setattr__(self, "data_qubit_cells", types.MappingProxyType(cells))

    def _check_detectors(self) -> None:
        d, t_max = self.distance, self.rounds
        t, r, c, k = self.time, self.row, self.col, self.kind
        if t.size and (t.min() < 0 or t.max() > t_max):
            raise ValueError(f"time must lie in 0..{t_max}; got {t.min()}..{t.max()}")
        for name, a in (("row", r), ("col", c)):
            if a.size and (a.min() < 0 or a.max() >= d):
                raise ValueError(f"{name} must lie in 0..{d - 1}; got {a.min()}..{a.max()}")
        if k.size and k.max() > 1:
            raise ValueError(f"kind must be 0 (X) or 1 (Z); got {k.max()}")
        expected = np.searchsorted(t, np.arange(t_max + 2), side="left")
        if np.any(np.diff(t) < 0) or not np.array_equal(self.round_offsets, expected):
            raise ValueError("detectors must be ordered by time and match round_offsets")
        present = np.stack([self.x_present, self.z_present])
        if not present[k, r, c].all():
            raise ValueError("every detector must sit on a cell holding its stabilizer type")
        keys = ((k.astype(np.int64) * (t_max + 1) + t) * d + r) * d + c
        if np.unique(keys).size != keys.size:
            raise ValueError("two detectors share one (kind, time, row, col) grid slot")
        final_kind = X_KIND if self.basis == "x" else Z_KIND
        if np.any(k[t == t_max] != final_kind):
            raise ValueError(f"final detectors (t={t_max}) must all have the {self.basis} type")

    def __repr__(self) -> str:
        return (
            f"DetectorLayout(distance={self.distance}, rounds={self.rounds}, "
            f"basis={self.basis!r}, num_detectors={self.num_detectors}, "
            f"num_observables={self.num_observables})"
        )

    @property
    def num_detectors(self) -> int:
        """Number of detectors (length of the per-detector arrays)."""
        return int(self.time.size)

    @property
    def detector_present(self) -> np.ndarray:
        """bool[2, rounds+1, d, d]: grid slots that hold a detector (kind, time, row, col).

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=3, rounds=1)
        >>> int(DetectorLayout.from_circuit(c).detector_present.sum())
        8
        """
        out = np.zeros((2, self.rounds + 1, self.distance, self.distance), dtype=np.bool_)
        out[self.kind, self.time, self.row, self.col] = True
        out.flags.writeable = False
        return out

    def stabilizer_support(self, *, kind: int, row: int, col: int) -> list[tuple[int, int]]:
        """Data cells (row, col) the type-``kind`` stabilizer on cell (row, col) acts on.

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
        >>> DetectorLayout.from_circuit(c).stabilizer_support(kind=1, row=0, col=0)
        [(0, 0), (0, 1), (1, 0), (1, 1)]
        """
        if kind not in (X_KIND, Z_KIND):
            raise ValueError(f"kind must be one of 0 (X), 1 (Z); got {kind!r}")
        d = self.distance
        if not (0 <= row < d and 0 <= col < d):
            raise ValueError(f"cell ({row}, {col}) is outside the {d}x{d} grid")
        if self.stabilizer_qubits[kind, row, col] < 0:
            raise ValueError(f"no {'XZ'[kind]}-type stabilizer on cell ({row}, {col})")
        hits = np.flatnonzero(self.parity_check[kind, row * d + col])
        return [(int(i) // d, int(i) % d) for i in hits]

    def to_grid(self, dets: npt.ArrayLike) -> np.ndarray:
        """Scatter detection events onto the grid.

        ``dets``: bool or uint8 [shots, num_detectors], detection events per shot.
        Returns uint8[shots, 2, rounds+1, d, d]: channel 0 X syndrome, 1 Z syndrome,
        indexed by (time, row, col); 0 where no detector sits.

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
        >>> layout = DetectorLayout.from_circuit(c)
        >>> layout.to_grid(np.ones((2, layout.num_detectors), dtype=bool)).shape
        (2, 2, 2, 3, 3)
        """
        array = self._check_dets(dets)
        d = self.distance
        grid = np.zeros((array.shape[0], 2, self.rounds + 1, d, d), dtype=np.uint8)
        grid[:, self.kind, self.time, self.row, self.col] = array
        return grid

    def from_grid(self, grid: npt.ArrayLike) -> np.ndarray:
        """Gather detection events back from a grid made like :meth:`to_grid`'s output.

        ``grid``: any integer or bool [shots, 2, rounds+1, d, d]; nonzero means fired.
        Slots that hold no detector are ignored. Returns bool[shots, num_detectors].

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=1)
        >>> layout = DetectorLayout.from_circuit(c)
        >>> dets = np.eye(2, layout.num_detectors, dtype=bool)
        >>> bool((layout.from_grid(layout.to_grid(dets)) == dets).all())
        True
        """
        array = np.asarray(grid)
        want = (2, self.rounds + 1, self.distance, self.distance)
        if array.ndim != 5 or array.shape[1:] != want:
            raise ValueError(
                f"grid must have shape (shots, {', '.join(map(str, want))}); got {array.shape}"
            )
        return array[:, self.kind, self.time, self.row, self.col] != 0

    def _check_dets(self, dets: npt.ArrayLike) -> np.ndarray:
        array = np.asarray(dets)
        if array.ndim != 2 or array.shape[1] != self.num_detectors:
            raise ValueError(
                f"dets must have shape (shots, {self.num_detectors}); got {array.shape}"
            )
        if array.dtype != np.bool_ and array.dtype != np.uint8:
            raise ValueError(f"dets dtype must be one of bool, uint8; got {array.dtype}")
        return array

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> DetectorLayout:
        """Lay out a rotated surface-code memory circuit (stim's or :func:`memory_circuit`).

        Raises ValueError naming the problem when the circuit is not one: missing or
        non-grid coordinates, gates other than CX between qubits, unexpected stabilizer
        supports, detectors not ordered by time, and so on.

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=5,
        ...                            rounds=3, after_clifford_depolarization=0.01)
        >>> layout = DetectorLayout.from_circuit(c)
        >>> layout.basis, layout.rounds, int(layout.logical_support.sum())
        ('x', 3, 5)
        """
        return cls(**scan_memory_circuit(circuit))

    @classmethod
    def from_dem(cls, dem: stim.DetectorErrorModel) -> DetectorLayout:
        """Lay out the circuit a detector error model came from, by its detector coordinates.

        The detectors of ``dem`` must sit at the (x, y, t) coordinates of stim's
        ``surface_code:rotated_memory_{basis}`` circuit (``qhil.sim.memory_circuit``'s,
        any noise), in any order grouped by time. The stabilizers and the observable's
        support are that circuit's, ``data_qubits`` and ``stabilizer_qubits`` its qubit
        indices; the model's own errors are checked against that observable. Raises
        ValueError naming the problem otherwise.

        >>> c = stim.Circuit.generated("surface_code:rotated_memory_x", distance=5,
        ...                            rounds=3, after_clifford_depolarization=0.01)
        >>> layout = DetectorLayout.from_dem(c.detector_error_model(decompose_errors=True))
        >>> layout.basis, layout.rounds
        ('x', 3)
        >>> bool((layout.kind == DetectorLayout.from_circuit(c).kind).all())
        True
        """
        return cls(**scan_memory_dem(dem))

"""Training labels: every error mechanism of a circuit's DEM as a canonical pre-decoder output.

docs/design.md (the canonical training labels): sample the detector error model,
not the circuit, with ``return_errors=True``, so each shot says which mechanisms fired.
Each mechanism is mapped once to a *canonical correction*, a set of entries
``(channel, t, row, col)`` of the pre-decoder's output tensor ``[4, T, d, d]``
(channels: 0 data Z flip, 1 data X flip, 2 X-measurement flip, 3 Z-measurement flip)
whose :meth:`PreDecoderGeometry.footprint` is exactly the mechanism's detectors and
observable flip. A shot's label is the XOR of its fired mechanisms' corrections, so
``footprint(label) == (dets, obs)`` holds for every shot.

The DEM is built with ``decompose_errors=True``; each ``^``-separated graph-like component
(one or two detectors, maybe ``L0``) is mapped on its own and the components' corrections
are XORed. For a component, with detectors (kind k, slice t, cell) and its ``L0`` flag:

- **timelike**: k, cell equal, slices t and t+1: the measurement flip of that stabilizer at
  round t (channel 2 + k).
- **spacelike**: k and t equal, cells differ: a data flip at slice t on the qubit the two
  stabilizers share, in the channel that stabilizer kind sees (X stabilizers see Z flips,
  channel 0; Z stabilizers see X flips, channel 1).
- **diagonal**: k equal, cells differ, slices t and t+1: the data flip at slice t+1 on the
  shared qubit (the error lands during round t, so the data are flipped from slice t+1 on)
  plus the measurement flip at round t of the stabilizer whose detector is at slice t.
- **boundary**: one detector: a data flip at its slice on a data qubit that no other
  stabilizer of its kind touches; failing that, a measurement flip at round t or t-1 whose
  other detector does not exist (e.g. the first round of the stabilizers of the type other
  than the memory basis, or their last round).
- **hook**: a spacelike or diagonal pair whose stabilizers share no qubit (an ancilla of
  their kind between them spread the error onto two of its qubits): data flips at the later
  slice on one qubit next to each stabilizer, both on that third stabilizer, plus the
  diagonal rule's measurement flip where the slices differ.
- **fallback**: anything else: the first single output entry, then the first pair, then
  the first triple of entries touching the component's detectors, whose footprint fits.
  No component of stim's or ``qhil.sim``'s rotated memory circuits needs it.

Where several candidates fit the detectors, the first (in the order above, then by flat
index) whose observable effect equals the component's ``L0`` flag wins. Only entries inside
``geometry.output_mask`` are ever used. If nothing fits, ``from_circuit`` raises ValueError
naming the mechanism; for rotated memory circuits every mechanism maps.

>>> import stim
>>> c = stim.Circuit.generated("surface_code:rotated_memory_z", distance=3, rounds=2,
...                            after_clifford_depolarization=0.001)
>>> lab = CanonicalLabels.from_circuit(c)
>>> dets, labels, obs = lab.sample(100, seed=1)
>>> labels.shape, labels.dtype
((100, 4, 3, 3, 3), dtype('uint8'))
>>> fp_dets, fp_obs = lab.geometry.footprint(labels)
>>> bool((fp_dets == dets).all() and (fp_obs == obs).all())
True
"""

from __future__ import annotations

import dataclasses
import itertools
import types
from collections.abc import Mapping

import numpy as np
import stim

from ._geometry import PreDecoderGeometry

__all__ = ["RULES", "CanonicalLabels"]

RULES = ("timelike", "spacelike", "diagonal", "hook", "boundary", "fallback")
_X, _Z = 0, 1
_DATA_CHANNEL = {_X: 0, _Z: 1}  # the data flip a stabilizer kind sees
_CHUNK = 2048  # entries per footprint batch when tabulating


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


class _EntryTable:
    """The footprint of every output entry inside ``output_mask``, for quick lookups."""

    def __init__(self, geometry: PreDecoderGeometry) -> None:
        self.geometry = geometry
        self.shape = (4, *geometry.shape)
        mask = geometry.output_mask.reshape(-1)
        self.valid = mask.copy()
        flat = np.flatnonzero(mask)
        self.dets: dict[int, frozenset[int]] = {}
        self.obs: dict[int, bool] = {}
        size = mask.size
        for start in range(0, flat.size, _CHUNK):
            idx = flat[start : start + _CHUNK]
            e = np.zeros((idx.size, size), dtype=np.uint8)
            e[np.arange(idx.size), idx] = 1
            fp_dets, fp_obs = geometry.footprint(e.reshape(idx.size, *self.shape))
            for j, i in enumerate(idx.tolist()):
                self.dets[i] = frozenset(np.flatnonzero(fp_dets[j]).tolist())
                self.obs[i] = bool(fp_obs[j, 0])
        # (dets, obs) -> entries with that footprint, ascending; detector -> entries touching it.
        self.by_effect: dict[tuple[frozenset[int], bool], list[int]] = {}
        self.touching: dict[int, list[int]] = {}
        for i in sorted(self.dets):
            self.by_effect.setdefault((self.dets[i], self.obs[i]), []).append(i)
            for det in self.dets[i]:
                self.touching.setdefault(det, []).append(i)

    def flat(self, channel: int, t: int, row: int, col: int) -> int | None:
        """Flat index of an entry, or None where it is outside the tensor or the mask."""
        _, t_n, d, _ = self.shape
        if not (0 <= t < t_n and 0 <= row < d and 0 <= col < d):
            return None
        i = int(np.ravel_multi_index((channel, t, row, col), self.shape))
        return i if self.valid[i] else None

    def effect(self, entries: list[int]) -> tuple[frozenset[int], bool]:
        dets: set[int] = set()
        obs = False
        for i in entries:
            dets ^= self.dets[i]
            obs ^= self.obs[i]
        return frozenset(dets), obs


@dataclasses.dataclass(frozen=True, eq=False)
class CanonicalLabels:
    """Canonical corrections of every error mechanism of a memory circuit's DEM.

    Build it with :meth:`from_circuit`.

    Attributes:
        geometry: the pre-decoder layout of the circuit.
        dem: the flattened, decomposed detector error model; its ``error`` instructions
            are the mechanisms, in the order ``dem.compile_sampler()`` reports them.
        num_errors: number of mechanisms (``dem.num_errors``).
        rows: int64[nnz], the mechanism index of each nonzero of the correction matrix.
        cols: int64[nnz], its flat index into the ``4*T*d*d`` output tensor; the
            (rows, cols) pairs are unique (corrections are reduced mod 2) and sorted.
        rule_counts: how many graph-like components each rule of :data:`RULES` mapped.
    """

    geometry: PreDecoderGeometry
    dem: stim.DetectorErrorModel
    num_errors: int
    rows: np.ndarray
    cols: np.ndarray
    rule_counts: Mapping[str, int]

    @classmethod
    def from_circuit(cls, circuit: stim.Circuit) -> CanonicalLabels:
        """Map every mechanism of ``circuit``'s decomposed DEM to its canonical correction.

        Raises ValueError naming the mechanism when no correction reproduces it.
        """
        geometry = PreDecoderGeometry.from_circuit(circuit)
        dem = circuit.detector_error_model(decompose_errors=True).flattened()
        table = _EntryTable(geometry)
        counts = dict.fromkeys(RULES, 0)
        rows: list[int] = []
        cols: list[int] = []
        index = 0
        for inst in dem:
            if not isinstance(inst, stim.DemInstruction) or inst.type != "error":
                continue
            correction: set[int] = set()
            for dets, obs in _components(inst):
                rule, entries = _map_component(table, dets, obs)
                if entries is None:
                    raise ValueError(
                        f"no canonical correction reproduces the mechanism {inst} "
                        f"(component detectors {sorted(dets)}, L0={obs})"
                    )
                counts[rule] += 1
                correction ^= set(entries)
            for col in sorted(correction):
                rows.append(index)
                cols.append(col)
            index += 1
        if index != dem.num_errors:  # pragma: no cover - stim guarantees this
            raise ValueError(f"mapped {index} mechanisms but the DEM has {dem.num_errors}")
        return cls(
            geometry=geometry,
            dem=dem,
            num_errors=index,
            rows=_ro(np.array(rows, dtype=np.int64)),
            cols=_ro(np.array(cols, dtype=np.int64)),
            rule_counts=types.MappingProxyType(counts),
        )

    @property
    def label_shape(self) -> tuple[int, int, int, int]:
        """(4, T, d, d): one shot's label."""
        return (4, *self.geometry.shape)

    def labels(self, errors: np.ndarray) -> np.ndarray:
        """The label of each shot: the XOR of its fired mechanisms' corrections.

        Args:
            errors: bool or uint8[shots, num_errors], which mechanisms fired (as from
                ``dem.compile_sampler().sample(shots, return_errors=True)``).

        Returns:
            uint8[shots, 4, T, d, d], 0/1, zero outside ``geometry.output_mask``.
        """
        errors = np.asarray(errors)
        if errors.ndim != 2 or errors.shape[1] != self.num_errors:
            raise ValueError(
                f"errors must have shape (shots, {self.num_errors}); got {errors.shape}"
            )
        shots = errors.shape[0]
        size = int(np.prod(self.label_shape))
        out = np.zeros(shots * size, dtype=np.uint8)
        shot, err = np.nonzero(errors)
        # CSR view of the correction matrix: mechanism i owns cols[start[i]:start[i] + n[i]].
        n = np.bincount(self.rows, minlength=self.num_errors)
        start = np.concatenate(([0], np.cumsum(n)[:-1]))
        reps = n[err]
        total = int(reps.sum())
        if total:
            first = np.repeat(start[err] - np.cumsum(reps) + reps, reps)
            pos = first + np.arange(total)
            flat = np.repeat(shot.astype(np.int64) * size, reps) + self.cols[pos]
            np.bitwise_xor.at(out, flat, np.uint8(1))
        return out.reshape(shots, *self.label_shape)

    def sample(self, shots: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample the DEM and label the shots.

        Returns:
            (dets bool[shots, num_detectors], labels uint8[shots, 4, T, d, d],
            obs bool[shots, 1]); ``geometry.footprint(labels) == (dets, obs)``.
        """
        sampler = self.dem.compile_sampler(seed=seed)
        dets, obs, errors = sampler.sample(shots, return_errors=True)
        return dets, self.labels(errors), obs


def _components(inst: stim.DemInstruction) -> list[tuple[frozenset[int], bool]]:
    """The ``^``-separated components of an error: (detector ids, L0 flag), each reduced mod 2."""
    parts: list[tuple[frozenset[int], bool]] = []
    dets: set[int] = set()
    obs = False
    for target in [*inst.targets_copy(), None]:
        if target is None or target.is_separator():
            parts.append((frozenset(dets), obs))
            dets, obs = set(), False
        elif target.is_relative_detector_id():
            dets ^= {target.val}
        elif target.is_logical_observable_id():
            if target.val != 0:
                raise ValueError(f"mechanism {inst} flips observable L{target.val}; want L0 only")
            obs = not obs
        else:  # pragma: no cover - no other DEM target kinds exist
            raise ValueError(f"unexpected target {target!r} in mechanism {inst}")
    return parts


def _support(geometry: PreDecoderGeometry, kind: int, cell: tuple[int, int]) -> np.ndarray:
    """bool[d*d]: the data qubits the type-``kind`` stabilizer on ``cell`` acts on."""
    d = geometry.distance
    return geometry.layout.parity_check[kind, cell[0] * d + cell[1]].astype(bool)


def _cell(geometry: PreDecoderGeometry, q: int) -> tuple[int, int]:
    return divmod(int(q), geometry.distance)


def _shared(
    geometry: PreDecoderGeometry, kind: int, a: tuple[int, int], b: tuple[int, int]
) -> list[tuple[int, int]]:
    """Data cells both type-``kind`` stabilizers on cells ``a`` and ``b`` act on."""
    both = _support(geometry, kind, a) & _support(geometry, kind, b)
    return [_cell(geometry, int(q)) for q in np.flatnonzero(both)]


def _hook_pairs(
    geometry: PreDecoderGeometry, kind: int, a: tuple[int, int], b: tuple[int, int]
) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Qubit pairs (one on ``a``'s support, one on ``b``'s) of a third type-``kind`` stabilizer."""
    sa, sb = _support(geometry, kind, a), _support(geometry, kind, b)
    pairs = []
    for m in np.flatnonzero(geometry.layout.parity_check[kind].any(axis=1)):
        sm = geometry.layout.parity_check[kind, m].astype(bool)
        for qa in np.flatnonzero(sa & sm & ~sb):
            for qb in np.flatnonzero(sb & sm & ~sa):
                pairs.append((_cell(geometry, int(qa)), _cell(geometry, int(qb))))
    return pairs


def _rule_candidates(table: _EntryTable, dets: frozenset[int]) -> tuple[str, list[list[int]]]:
    """The rule for a component's detectors and its candidates, in preference order.

    Candidates that use an entry outside the tensor or ``output_mask`` are dropped; the
    caller still checks each one's footprint.
    """
    geometry = table.geometry
    layout = geometry.layout
    info = sorted(
        (int(layout.time[i]), int(layout.kind[i]), int(layout.row[i]), int(layout.col[i]))
        for i in dets
    )
    rule = "fallback"
    cands: list[list[int | None]] = []
    if len(info) == 2 and info[0][1] == info[1][1] and info[1][0] - info[0][0] in (0, 1):
        (t0, k, r0, c0), (t1, _, r1, c1) = info
        a, b = (r0, c0), (r1, c1)
        channel = _DATA_CHANNEL[k]
        meas = [] if t1 == t0 else [table.flat(2 + k, t0, r0, c0)]
        if a == b and t1 == t0 + 1:
            rule = "timelike"
            cands.append(meas)
        elif a != b:
            # Data flips at the later slice t1; for a diagonal pair, the stabilizer seen at
            # the earlier slice t0 also gets a measurement flip at round t0.
            rule = "spacelike" if t1 == t0 else "diagonal"
            for q in _shared(geometry, k, a, b):
                cands.append([table.flat(channel, t1, *q), *meas])
            if not cands:
                rule = "hook"
                for qa, qb in _hook_pairs(geometry, k, a, b):
                    cands.append(
                        [table.flat(channel, t1, *qa), table.flat(channel, t1, *qb), *meas]
                    )
    elif len(info) == 1:
        rule = "boundary"
        t, k, r, c = info[0]
        h = layout.parity_check[k]
        for qi in np.flatnonzero(h[r * geometry.distance + c]):
            if h[:, qi].sum() == 1:  # no other stabilizer of this kind touches qi
                cands.append([table.flat(_DATA_CHANNEL[k], t, *_cell(geometry, int(qi)))])
        cands.append([table.flat(2 + k, t, r, c)])
        cands.append([table.flat(2 + k, t - 1, r, c)] if t > 0 else [None])
    return rule, [[i for i in cand if i is not None] for cand in cands if None not in cand]


def _map_component(
    table: _EntryTable, dets: frozenset[int], obs: bool
) -> tuple[str, list[int] | None]:
    """The rule used and the canonical entries of one graph-like component (None: no fit)."""
    want = (dets, obs)
    rule, cands = _rule_candidates(table, dets)
    for cand in cands:
        if table.effect(cand) == want:
            return rule, cand
    return "fallback", _search(table, dets, obs)


def _search(table: _EntryTable, dets: frozenset[int], obs: bool) -> list[int] | None:
    """The first single entry, then pair, then triple near ``dets`` whose footprint fits."""
    want = (dets, obs)
    single = table.by_effect.get(want)
    if single:
        return [single[0]]
    near = sorted({i for det in dets for i in table.touching.get(det, [])})
    for a in near:  # a pair: one entry touching the detectors, the other whatever is left
        rest = table.effect([a])
        need = (dets ^ rest[0], obs ^ rest[1])
        if need[0] and (match := table.by_effect.get(need)):
            return sorted([a, match[0]])
    for a, b in itertools.combinations(near, 2):
        rest = table.effect([a, b])
        need = (dets ^ rest[0], obs ^ rest[1])
        if (match := table.by_effect.get(need)) and match[0] not in (a, b):
            return sorted([a, b, match[0]])
    return None

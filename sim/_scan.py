"""Read the structure of a rotated surface-code memory circuit: qubits, stabilizers,
detectors and the observable. :class:`DetectorLayout` is built from what this finds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import stim

__all__ = ["X_KIND", "Z_KIND", "scan_memory_circuit"]

X_KIND = 0
Z_KIND = 1
_MEASURE_BASIS = {"M": "z", "MR": "z", "MX": "x", "MRX": "x", "MY": "y", "MRY": "y"}
_ANNOTATIONS = frozenset(
    {"DETECTOR", "OBSERVABLE_INCLUDE", "QUBIT_COORDS", "SHIFT_COORDS", "TICK", "MPAD"}
)


def _fail(problem: str) -> ValueError:
    return ValueError(f"not a rotated surface-code memory circuit: {problem}")


def _grid_coords(circuit: stim.Circuit) -> dict[int, tuple[int, int]]:
    coords: dict[int, tuple[int, int]] = {}
    for q, xy in circuit.get_final_qubit_coordinates().items():
        if len(xy) != 2 or any(v != int(v) for v in xy):
            raise _fail(f"qubit {q} has coordinates {xy}; expected two integers (x, y)")
        coords[q] = (int(xy[0]), int(xy[1]))
    return coords


def _walk(
    circuit: stim.Circuit,
) -> tuple[list[tuple[int, str]], set[tuple[int, int]], list[int]]:
    """Measurements as (qubit, basis), CX (control, target) pairs, observable 0's records."""
    measurements: list[tuple[int, str]] = []
    cx_pairs: set[tuple[int, int]] = set()
    observable: list[int] = []
    for inst in circuit.flattened():
        name = inst.name
        data = stim.gate_data(name)
        if name == "OBSERVABLE_INCLUDE":
            if inst.gate_args_copy() != [0]:
                raise _fail(f"expected exactly one observable (index 0); got {inst}")
            for t in inst.targets_copy():
                if not t.is_measurement_record_target:
                    raise _fail(f"observable target {t} is not a measurement record")
                observable.append(len(measurements) + t.value)
        elif name == "MPAD":
            measurements.extend((-1, "pad") for _ in inst.targets_copy())
        elif name in _ANNOTATIONS:
            continue
        elif data.produces_measurements:
            if name not in _MEASURE_BASIS:
                raise _fail(f"unsupported measurement {name}")
            measurements.extend((t.value, _MEASURE_BASIS[name]) for t in inst.targets_copy())
        elif data.is_noisy_gate or data.is_reset or data.is_single_qubit_gate:
            continue  # noise, resets and 1-qubit gates do not change the layout
        elif name == "CX":
            targets = [t.value for t in inst.targets_copy()]
            cx_pairs.update(zip(targets[::2], targets[1::2], strict=True))
        else:
            raise _fail(f"unsupported instruction {name}; only CX may couple qubits")
    return measurements, cx_pairs, observable


def scan_memory_circuit(circuit: stim.Circuit) -> dict[str, Any]:
    """Keyword arguments for :class:`DetectorLayout` describing ``circuit``."""
    if circuit.num_detectors == 0:
        raise _fail("it has no detectors")
    coords = _grid_coords(circuit)
    measurements, cx_pairs, observable = _walk(circuit)
    used = {q for pair in cx_pairs for q in pair} | {q for q, _ in measurements if q >= 0}
    missing = sorted(used - set(coords))
    if missing:
        raise _fail(f"qubits {missing[:5]} have no QUBIT_COORDS")

    data = {q: xy for q, xy in coords.items() if q in used and xy[0] % 2 and xy[1] % 2}
    anc = {q: xy for q, xy in coords.items() if q in used and not (xy[0] % 2 or xy[1] % 2)}
    stray = sorted(q for q in used if q not in data and q not in anc)
    if stray:
        raise _fail(
            f"qubit {stray[0]} at {coords[stray[0]]} is neither data (odd, odd) nor "
            f"measure (even, even)"
        )
    d = math.isqrt(len(data))
    grid = {(2 * c + 1, 2 * r + 1) for r in range(d) for c in range(d)}
    if d < 3 or d % 2 == 0 or set(data.values()) != grid:
        raise _fail(f"the {len(data)} data qubits do not fill an odd d x d grid at odd (x, y)")

    def cell(q: int) -> tuple[int, int]:
        x, y = data[q]
        return (y - 1) // 2, (x - 1) // 2

    # Stabilizer type from the CX direction: a measure qubit that controls its CXs
    # copies X onto the data (X parity, kind 0); one that is targeted collects Z parity.
    kind_of: dict[int, int] = {}
    support: dict[int, set[int]] = {q: set() for q in anc}
    for control, target in cx_pairs:
        if control in anc and target in data:
            m, k = control, X_KIND
        elif target in anc and control in data:
            m, k = target, Z_KIND
        else:
            raise _fail(f"CX {control} {target} does not couple a data and a measure qubit")
        if kind_of.setdefault(m, k) != k:
            raise _fail(f"measure qubit {m} is both CX control and target")
        support[m].add(target if k == X_KIND else control)

    measured_rounds: dict[int, int] = {}
    for q, _ in measurements:
        if q in anc:
            measured_rounds[q] = measured_rounds.get(q, 0) + 1
    stabilizers = sorted(q for q in anc if support[q])
    if set(measured_rounds) != set(stabilizers):
        raise _fail("the measured non-data qubits are not the CX-coupled measure qubits")
    if len(stabilizers) != d * d - 1:
        raise _fail(f"expected {d * d - 1} stabilizers for d={d}; got {len(stabilizers)}")

    stab_qubits = np.full((2, d, d), -1, dtype=np.int32)
    parity = np.zeros((2, d * d, d * d), dtype=np.uint8)
    stab_cell: dict[int, tuple[int, int, int]] = {}
    for m in stabilizers:
        x, y = anc[m]
        near = {(x + dx, y + dy) for dx in (-1, 1) for dy in (-1, 1)} & grid
        if {data[q] for q in support[m]} != near:
            raise _fail(f"measure qubit {m} at {(x, y)} does not act on its diagonal neighbours")
        # The stabilizer sits on its support's first cell in row-major order.
        r, c = min(cell(q) for q in support[m])
        k = kind_of[m]
        if stab_qubits[k, r, c] >= 0:
            raise _fail(f"two {'XZ'[k]} stabilizers map to cell ({r}, {c})")
        stab_qubits[k, r, c] = m
        stab_cell[m] = (k, r, c)
        for q in support[m]:
            dr, dc = cell(q)
            parity[k, r * d + c, dr * d + dc] = 1

    rounds_seen = set(measured_rounds.values())
    if len(rounds_seen) != 1:
        raise _fail(f"measure qubits are measured unequal numbers of times {sorted(rounds_seen)}")
    rounds = rounds_seen.pop()

    if not observable:
        raise _fail("it has no observable")
    obs_qubits = [measurements[i] for i in observable]
    bases = {b for _, b in obs_qubits}
    if any(q not in data for q, _ in obs_qubits) or len(bases) != 1 or bases <= {"y"}:
        raise _fail("the observable is not a product of X- or Z-basis data measurements")
    basis = bases.pop()
    logical = np.zeros((d, d), dtype=np.bool_)
    for q, _ in obs_qubits:
        logical[cell(q)] ^= True

    data_at = np.empty((d, d), dtype=np.int32)
    for q in data:
        data_at[cell(q)] = q

    by_xy = {xy: m for m, xy in anc.items() if m in stab_cell}
    n = circuit.num_detectors
    time = np.empty(n, dtype=np.int32)
    cells = np.empty((n, 3), dtype=np.int32)
    for i, xyt in circuit.get_detector_coordinates().items():
        if len(xyt) < 3:
            raise _fail(f"detector {i} has coordinates {xyt}; expected (x, y, t)")
        xy = (int(xyt[0]), int(xyt[1]))
        if xy != (xyt[0], xyt[1]) or xy not in by_xy or xyt[2] != int(xyt[2]):
            raise _fail(f"detector {i} at {xyt} is not on a measure qubit at an integer time")
        time[i] = int(xyt[2])
        cells[i] = stab_cell[by_xy[xy]]
    if time.min() != 0 or time.max() != rounds:
        raise _fail(f"detector times span {time.min()}..{time.max()}, expected 0..{rounds}")
    if np.any(np.diff(time) < 0):
        raise _fail("detectors are not grouped by time coordinate")

    return {
        "distance": d,
        "rounds": rounds,
        "basis": basis,
        "num_observables": circuit.num_observables,
        "time": time,
        "row": cells[:, 1],
        "col": cells[:, 2],
        "kind": cells[:, 0],
        "round_offsets": np.searchsorted(time, np.arange(rounds + 2), side="left"),
        "x_present": stab_qubits[X_KIND] >= 0,
        "z_present": stab_qubits[Z_KIND] >= 0,
        "logical_support": logical,
        "data_qubits": data_at,
        "stabilizer_qubits": stab_qubits,
        "parity_check": parity,
    }

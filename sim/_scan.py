"""Read the structure of a rotated surface-code memory circuit: qubits, stabilizers,
detectors and the observable. :class:`DetectorLayout` is built from what this finds.

A detector error model names no qubits and no gates, only detector coordinates:
:func:`scan_memory_dem` takes the stabilizers and the observable from stim's noiseless
``surface_code:rotated_memory_{basis}`` circuit (the one ``qhil.sim.memory_circuit``
adds noise to) whose detectors sit at the same (x, y, t), and places the model's own
detectors with the same code the circuit path uses.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import stim

__all__ = ["X_KIND", "Z_KIND", "scan_memory_circuit", "scan_memory_dem"]

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


def _qubits(
    circuit: stim.Circuit, used: set[int]
) -> tuple[dict[int, tuple[int, int]], dict[int, tuple[int, int]], int]:
    """Data qubits at (odd, odd), measure qubits at (even, even), and the distance."""
    coords = _grid_coords(circuit)
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
    return data, anc, d


def _stabilizers(
    data: dict[int, tuple[int, int]],
    anc: dict[int, tuple[int, int]],
    d: int,
    cx_pairs: set[tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, int, int]]]:
    """Measure qubit per (kind, cell), the parity checks, and each measure qubit's slot."""
    grid = set(data.values())

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

    stab_qubits = np.full((2, d, d), -1, dtype=np.int32)
    parity = np.zeros((2, d * d, d * d), dtype=np.uint8)
    stab_cell: dict[int, tuple[int, int, int]] = {}
    for m in sorted(q for q in anc if support[q]):
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
    if len(stab_cell) != d * d - 1:
        raise _fail(f"expected {d * d - 1} stabilizers for d={d}; got {len(stab_cell)}")
    return stab_qubits, parity, stab_cell


def _scan_structure(
    circuit: stim.Circuit,
) -> tuple[dict[str, Any], dict[tuple[int, int], tuple[int, int, int]]]:
    """Every :class:`DetectorLayout` field but the detectors', and (kind, row, col) per (x, y)."""
    measurements, cx_pairs, observable = _walk(circuit)
    used = {q for pair in cx_pairs for q in pair} | {q for q, _ in measurements if q >= 0}
    data, anc, d = _qubits(circuit, used)
    stab_qubits, parity, stab_cell = _stabilizers(data, anc, d, cx_pairs)

    measured_rounds: dict[int, int] = {}
    for q, _ in measurements:
        if q in anc:
            measured_rounds[q] = measured_rounds.get(q, 0) + 1
    if set(measured_rounds) != set(stab_cell):
        raise _fail("the measured non-data qubits are not the CX-coupled measure qubits")
    rounds_seen = set(measured_rounds.values())
    if len(rounds_seen) != 1:
        raise _fail(f"measure qubits are measured unequal numbers of times {sorted(rounds_seen)}")

    if not observable:
        raise _fail("it has no observable")
    obs_qubits = [measurements[i] for i in observable]
    bases = {b for _, b in obs_qubits}
    if any(q not in data for q, _ in obs_qubits) or len(bases) != 1 or bases <= {"y"}:
        raise _fail("the observable is not a product of X- or Z-basis data measurements")
    logical = np.zeros((d, d), dtype=np.bool_)
    data_at = np.empty((d, d), dtype=np.int32)
    for q, (x, y) in data.items():
        data_at[(y - 1) // 2, (x - 1) // 2] = q
    for q, _ in obs_qubits:
        x, y = data[q]
        logical[(y - 1) // 2, (x - 1) // 2] ^= True

    fields = {
        "distance": d,
        "rounds": rounds_seen.pop(),
        "basis": bases.pop(),
        "num_observables": circuit.num_observables,
        "x_present": stab_qubits[X_KIND] >= 0,
        "z_present": stab_qubits[Z_KIND] >= 0,
        "logical_support": logical,
        "data_qubits": data_at,
        "stabilizer_qubits": stab_qubits,
        "parity_check": parity,
    }
    return fields, {anc[m]: slot for m, slot in stab_cell.items()}


def _place_detectors(
    coords: dict[int, list[float]],
    slots: dict[tuple[int, int], tuple[int, int, int]],
    *,
    rounds: int,
) -> dict[str, np.ndarray]:
    """Each detector's time and (kind, row, col), from its (x, y, t) coordinates."""
    n = len(coords)
    time = np.empty(n, dtype=np.int32)
    cells = np.empty((n, 3), dtype=np.int32)
    for i, xyt in coords.items():
        if len(xyt) < 3:
            raise _fail(f"detector {i} has coordinates {xyt}; expected (x, y, t)")
        xy = (int(xyt[0]), int(xyt[1]))
        if xy != (xyt[0], xyt[1]) or xy not in slots or xyt[2] != int(xyt[2]):
            raise _fail(f"detector {i} at {xyt} is not on a measure qubit at an integer time")
        time[i] = int(xyt[2])
        cells[i] = slots[xy]
    if time.min() != 0 or time.max() != rounds:
        raise _fail(f"detector times span {time.min()}..{time.max()}, expected 0..{rounds}")
    if np.any(np.diff(time) < 0):
        raise _fail("detectors are not grouped by time coordinate")
    return {
        "time": time,
        "row": cells[:, 1],
        "col": cells[:, 2],
        "kind": cells[:, 0],
        "round_offsets": np.searchsorted(time, np.arange(rounds + 2), side="left"),
    }


def scan_memory_circuit(circuit: stim.Circuit) -> dict[str, Any]:
    """Keyword arguments for :class:`DetectorLayout` describing ``circuit``."""
    if circuit.num_detectors == 0:
        raise _fail("it has no detectors")
    fields, slots = _scan_structure(circuit)
    coords = circuit.get_detector_coordinates()
    return {**fields, **_place_detectors(coords, slots, rounds=fields["rounds"])}


def _template(points: set[tuple[float, ...]]) -> stim.Circuit:
    """stim's noiseless rotated memory circuit whose detectors sit at exactly ``points``."""
    d = int(max(max(x, y) for x, y, _ in points)) // 2  # measure qubits span 0..2d
    rounds = int(max(t for *_, t in points))
    if d >= 3 and d % 2 and rounds >= 1:
        for basis in ("z", "x"):
            circuit = stim.Circuit.generated(
                f"surface_code:rotated_memory_{basis}", distance=d, rounds=rounds
            )
            if {tuple(v) for v in circuit.get_detector_coordinates().values()} == points:
                return circuit
    raise _fail(
        "its detector coordinates (x, y, t) are not those of stim's "
        "surface_code:rotated_memory_x or _z (qhil.sim.memory_circuit) at any distance and rounds"
    )


def scan_memory_dem(dem: stim.DetectorErrorModel) -> dict[str, Any]:
    """Keyword arguments for :class:`DetectorLayout` describing the circuit ``dem`` came from.

    The qubit indices (``data_qubits``, ``stabilizer_qubits``) are those of stim's
    generated circuit. Raises ValueError when the coordinates match no such circuit, or
    when the model's own errors show another observable than that circuit's.
    """
    if dem.num_detectors == 0:
        raise _fail("it has no detectors")
    coords = dem.get_detector_coordinates()
    bad = [i for i, v in coords.items() if len(v) < 3]
    if bad:
        raise _fail(f"detector {bad[0]} has coordinates {coords[bad[0]]}; expected (x, y, t)")
    fields, slots = _scan_structure(_template({tuple(v[:3]) for v in coords.values()}))
    fields.update(_place_detectors(coords, slots, rounds=fields["rounds"]))
    fields["num_observables"] = dem.num_observables
    _check_observable(dem, fields)
    return fields


def _check_observable(dem: stim.DetectorErrorModel, fields: dict[str, Any]) -> None:
    """The model's final-slice data errors must flip L0 as the template's support says.

    An error seen by final detectors alone is a data flip before the data measurement;
    its detectors name the flipped qubit up to a stabilizer, and whether it flips L0
    tells the template's logical operator apart from another representative.
    """
    d, kind = fields["distance"], X_KIND if fields["basis"] == "x" else Z_KIND
    final = np.flatnonzero(fields["time"] == fields["rounds"])
    det_at = {int(fields["row"][i]) * d + int(fields["col"][i]): int(i) for i in final}
    support = fields["logical_support"].reshape(-1)
    checks = fields["parity_check"][kind]  # [stabilizer cell, data cell]
    expected = {}
    for q in range(d * d):
        seen_by = frozenset(det_at[int(s)] for s in np.flatnonzero(checks[:, q]))
        expected[seen_by] = bool(support[q])
    for inst in dem.flattened():
        if inst.type != "error":
            continue
        dets: set[int] = set()
        flips = False
        for t in [*inst.targets_copy(), stim.target_separator()]:
            if t.is_separator():
                if expected.get(frozenset(dets), flips) != flips:
                    raise _fail(
                        f"its error {inst} flips the observable differently from stim's "
                        "generated circuit with these detectors; lay it out from the "
                        "circuit instead (DetectorLayout.from_circuit)"
                    )
                dets, flips = set(), False
            elif t.is_relative_detector_id():
                dets.add(t.val)
            elif t.is_logical_observable_id() and t.val == 0:
                flips = not flips
